"""Leave scalekit as something nnU-Net v2 trains directly: plans, trainer, starting weights and commands.

:func:`export_to_nnunet` adds configurations (inheriting the preprocessed one) to a plans file in the dataset's
preprocessed folder, optionally writes starting weights, and returns the exact commands. The trainer is the
kind's (:class:`~scalekit.nnunet.plans.KindExport`): a MedNeXt trains with scalekit's trainer, for which the
export writes a one-line trainer module for ``nnUNet_extTrainer``, UpKern-initialised starting weights and the
UpKern chain (train k3, resample, train k5); a ResEnc is nnU-Net's own network, trained by nnU-Net's stock
``nnUNetTrainer`` from nnU-Net's own ResEnc plans entry (no scalekit code), and its weights are written as
nnU-Net's trained-model folder (:mod:`scalekit.nnunet.native`), which nnU-Net's predictor loads as it is.
:func:`build_nnunet_export` does all of its reading and checking and holds the export in memory, for callers
that write it into a folder of their own (``scalekit study export``). A plans file may record its owner (the
study stage it was exported from); an export never replaces another owner's plans. The export folder also
holds dataset.json and ``nnunet_export.json``, which ``scalekit predict --export`` reads.
:func:`run_exported_training` runs a training of scalekit's trainer without nnU-Net's trainer lookup by name
(which fails where torchvision does not import).
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scalekit._atomic import Staging, staged_dir, write_atomic
from scalekit.errors import ScalekitError
from scalekit import networks
from scalekit.networks import NetworkConfig, count_parameters, load_state, recipe, state_mismatch
from scalekit.networks.mednext import MedNeXtConfig

from . import _env
from .checkpoints import read_nnunet_checkpoint, write_starting_weights
from .native import TrainedModelFolder, nnunet_fold
from .networks import check_plans, effective_configuration
from .plans import (SETTINGS_KEY, STOCK_TRAINER, TRAINER_NAME, TrainerSettings, kind_export,
                    plans_with, read_json_object)
from .dataset import PreparedDataset

log = logging.getLogger(__name__)

TRAINER_MODULE = "scalekit_nnunet_trainers.py"
TRAINER_DIR = "nnunet_trainers"
TRAINER_SOURCE = (
    '"""Makes scalekit\'s trainer visible to nnUNetv2_train through nnUNet_extTrainer."""\n\n'
    f"from scalekit.nnunet.trainer import {TRAINER_NAME}  # noqa: F401\n"
)
SCRIPT = "train.sh"
DATASET_JSON = "dataset.json"
MANIFEST = "nnunet_export.json"
"""What ``scalekit predict --export`` reads: the plans file, configuration and weights of the export folder."""
OWNER_KEY = "scalekit_export"
"""Key of the plans' owner (the study stage it was exported from) inside a plans file (nnU-Net keeps unknown keys)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_to_nnunet` wrote.

    Attributes:
        plans_file: the plans JSON in the preprocessed dataset folder (nnU-Net's ``-p`` name: ``plans_identifier``).
        configurations: configuration names in training order (the UpKern chain's k3 first, the target last).
        trainer_name: the trainer of ``nnUNetv2_train -tr``.
        trainer_dir: folder to put in ``nnUNet_extTrainer`` (None: nnU-Net's stock trainer needs none).
        initial_weights: starting weights for the target configuration (``-pretrained_weights``), or None.
        parameter_count: parameters of the target network as nnU-Net builds it (deep supervision on).
        commands: shell commands, in order; also written to ``out_dir/train.sh``.
        model_folder: nnU-Net's trained-model folder of the weights (stock trainer only; its fold's
            ``checkpoint_final.pth`` is ``initial_weights``), or None.
    """

    plans_file: Path
    plans_identifier: str
    configurations: tuple[str, ...]
    trainer_name: str
    trainer_dir: Path | None
    initial_weights: Path | None
    parameter_count: int
    commands: tuple[str, ...]
    script: Path
    model_folder: Path | None = None

    @property
    def configuration(self) -> str:
        return self.configurations[-1]


def _starting_weights(source: Path, arch: NetworkConfig, exact: bool) -> torch.nn.Module:
    """``arch`` (deep supervision on) initialised from the checkpoint ``source``, read safely; kernels that
    differ are resampled as the kind does it (MedNeXt: UpKern). ``exact``: the checkpoint must hold ``arch``
    itself, loaded strictly (what a trained-model folder carries is the trained network as it is)."""
    state, config, kind = load_state(source)
    target = networks.build(arch.replace(deep_supervision=True))
    if exact:
        if config.replace(deep_supervision=True) != arch.replace(deep_supervision=True):
            raise ScalekitError(f"{source} holds another network ({config.to_dict()}) than the export's "
                                f"({arch.to_dict()}); an export to nnU-Net's own trainer carries trained weights "
                                "as they are: give that network's checkpoint")
        problems = state_mismatch(target.state_dict(), state)
        if problems:
            raise ScalekitError(f"{source}: the weights do not fit the network its config describes: {problems}")
        target.load_state_dict(state)
        return target
    report = networks.initialise(target, state)
    log.info("starting weights from %s (%s, %s): %s", source, kind, config, report.summary())
    return target


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


@dataclass(frozen=True)
class NnunetExport:
    """An nnU-Net export whose inputs are all read and checked, held in memory until it is written.

    :meth:`write` puts the files of the export folder into a staging folder; :meth:`finish` then writes the
    plans into the dataset's shared preprocessed folder, where nnU-Net reads them.
    """

    result: ExportResult
    plans: dict[str, Any]
    starting_weights: torch.nn.Module | None
    dataset_json: dict[str, Any]
    model_folder: TrainedModelFolder | None = None

    def manifest(self) -> dict[str, Any]:
        """The export folder's description for inference (file names relative to the folder)."""
        result = self.result
        weights = (result.initial_weights.relative_to(result.script.parent).as_posix()
                   if result.initial_weights is not None else None)
        return {"plans": f"{result.plans_identifier}.json", "configuration": result.configuration,
                "dataset_json": DATASET_JSON, "weights": weights}

    def write(self, staging: Staging) -> list[Path]:
        """Write the export folder's files into ``staging``; returns every path of the export as it will be
        once in place (the shared plans file first: :meth:`finish` writes it)."""
        result = self.result
        staging.write(f"{result.plans_identifier}.json", _json(self.plans))
        staging.write(DATASET_JSON, _json(self.dataset_json))
        written = [result.plans_file, result.script]
        if result.trainer_dir is not None:
            staging.write(f"{TRAINER_DIR}/{TRAINER_MODULE}", TRAINER_SOURCE)
            written.append(result.trainer_dir)
        written.append(staging.write(MANIFEST, _json(self.manifest())))
        if self.model_folder is not None and self.starting_weights is not None:
            written += self.model_folder.write(staging, self.starting_weights.state_dict(), self.plans,
                                               self.dataset_json)
        elif result.initial_weights is not None and self.starting_weights is not None:
            with staging.file(result.initial_weights.name) as path:
                write_starting_weights(path, self.starting_weights)
            written.append(result.initial_weights)
        with staging.file(SCRIPT) as path:
            path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + "\n".join(result.commands) + "\n")
            path.chmod(0o755)
        return written

    def finish(self) -> None:
        """Write the plans into the preprocessed dataset folder, atomically; call it once the export folder is
        in place."""
        write_atomic(self.result.plans_file, _json(self.plans))


def build_nnunet_export(
    prepared: PreparedDataset,
    arch: NetworkConfig,
    out_dir: Path,
    weights: Path | None = None,
    settings: TrainerSettings | None = None,
    plans_name: str = "scalekitPlans",
    name: str = "mednext",
    fold: int | str = 0,
    results_dir: Path | None = None,
    batch_size: int | None = None,
    owner: dict[str, str] | None = None,
) -> NnunetExport:
    """Read and check everything an export of ``arch`` to ``out_dir`` needs, writing nothing.

    The architecture is checked against the dataset, the plans are read from the preprocessed folder and
    ``weights`` is loaded (``weights_only``: a checkpoint with arbitrary Python objects is refused) and
    resampled; :func:`export_to_nnunet` then writes it.

    Args:
        prepared: the prepared dataset (the plans file is written into its preprocessed folder).
        arch: the network to train (a kind of :data:`KIND_EXPORTS`); channels and classes must match the dataset.
        out_dir: receives the trainer module (scalekit's trainer), starting weights (a ResEnc's: nnU-Net's
            trained-model folder), a copy of the plans and ``train.sh``.
        weights: a scalekit checkpoint (e.g. a stage's ``final.pt``) to start from; a MedNeXt checkpoint with
            another kernel size is resampled with UpKern (a ResEnc's must hold ``arch`` itself). Without it, a
            MedNeXt with kernels above 3 gets the UpKern chain: a k3 configuration trained first, then resampled.
        settings: scalekit's trainer's epochs, iterations, learning rate, AMP (default: the paper's 1000 x 250);
            nnU-Net's stock trainer (ResEnc) takes none: it trains its own schedule.
        plans_name: nnU-Net plans identifier (``-p``); an existing file of that name keeps its other
            configurations.
        owner: whose plans these are (a study stage: ``{"study": name, "stage_id": id}``), recorded in the
            plans file; an existing plans file of another owner (or of none, when ``owner`` is given) is
            refused rather than overwritten.
        name: prefix of the configuration names (``{name}_k3``, ``{name}_k5``).
        fold: fold in the printed commands.
        results_dir: ``nnUNet_results`` in the printed commands (default: ``out_dir/nnUNet_results``).
        batch_size: training batch size (default: nnU-Net's planned one).
    """
    kind = kind_export(arch.arch)
    if kind.native and settings not in (None, TrainerSettings()):
        raise ScalekitError(f"nnU-Net's {kind.trainer_name} trains a {arch.arch} with its own schedule and "
                            "recipe; trainer settings are for scalekit's trainer only")
    settings = settings or TrainerSettings()
    out_dir = Path(out_dir).resolve()
    chain = kind.chain(arch, weights is not None)
    configurations = {
        kind.configuration_name(name, a): kind.configuration(prepared, a, settings, batch_size) for a in chain
    }
    plans_file = prepared.preprocessed_dir / f"{plans_name}.json"
    base_file = plans_file if plans_file.is_file() else prepared.plans_file
    if not base_file.is_file():
        raise ScalekitError(f"{base_file} does not exist: dataset {prepared.dataset_name} is not preprocessed; "
                         "run `scalekit data prepare` first")
    base = read_json_object(base_file, "the plans to export into")
    if base_file == plans_file and base.get(OWNER_KEY) != owner:
        raise ScalekitError(
            f"{plans_file} holds the plans of {_describe_owner(base.get(OWNER_KEY))}; exporting "
            f"{_describe_owner(owner)} would overwrite them: choose another plans name (--plans NAME), or delete "
            "that file if its export is no longer used"
        )
    plans = plans_with(prepared, configurations, plans_name=plans_name, base=base)
    if owner is not None:
        plans[OWNER_KEY] = owner
    names = list(configurations)
    for configuration in names:  # what train.sh makes nnU-Net build
        check_plans(plans, configuration, plans_file)
    starting = _starting_weights(weights, arch, exact=kind.native) if weights is not None else None
    model = (TrainedModelFolder(prepared.dataset_name, plans_name, names[-1], nnunet_fold(fold), arch.dim)
             if kind.native and starting is not None else None)
    initial = None if starting is None else out_dir / (model.checkpoint if model else f"{names[-1]}_init.pth")
    model_dir = out_dir / model.folder if model else None
    with torch.device("meta"):
        parameter_count = count_parameters(networks.build(arch.replace(deep_supervision=True)))
    trainer_dir = None if kind.native else out_dir / TRAINER_DIR
    commands = _commands(prepared, plans_name, names, fold, out_dir, kind.trainer_name, trainer_dir, initial,
                         arch, Path(results_dir) if results_dir else out_dir / "nnUNet_results", model_dir)
    result = ExportResult(plans_file, plans_name, tuple(names), kind.trainer_name, trainer_dir, initial,
                          parameter_count, tuple(commands), out_dir / SCRIPT, model_dir)
    return NnunetExport(result, plans, starting, prepared.load_dataset_json(), model)


def _describe_owner(owner: dict[str, str] | None) -> str:
    if owner is None:
        return "a `scalekit nnunet export`"
    return f"stage {owner.get('stage_id')} of study {owner.get('study')}"


def export_to_nnunet(prepared: PreparedDataset, arch: NetworkConfig, out_dir: Path, **options: Any) -> ExportResult:
    """Export ``arch`` for training with nnU-Net v2 on ``prepared`` (``options`` as for
    :func:`build_nnunet_export`, which reads and checks every input first).

    The folder is then written beside ``out_dir`` and takes its place (replacing an earlier export there, or an
    empty folder) only when complete; the plans file in the preprocessed folder is written last, atomically. A
    failure leaves both as they were.
    """
    export = build_nnunet_export(prepared, arch, out_dir, **options)
    with staged_dir(export.result.script.parent, SCRIPT) as staging:
        export.write(staging)
    export.finish()
    result = export.result
    log.info("exported %s to %s:\n%s", result.configuration, result.plans_file, "\n".join(result.commands))
    return result


def _commands(
    prepared: PreparedDataset, plans_name: str, names: list[str], fold: int | str, out_dir: Path, trainer_name: str,
    trainer_dir: Path | None, initial: Path | None, arch: NetworkConfig, results: Path, model_folder: Path | None,
) -> list[str]:
    q = shlex.quote
    dataset = prepared.dataset_id
    commands = [
        f"export nnUNet_raw={q(str(prepared.raw_dir.parent))}",
        f"export nnUNet_preprocessed={q(str(prepared.preprocessed_root))}",
        f"export nnUNet_results={q(str(results))}",
    ]
    train = f"nnUNetv2_train {dataset} {{}} {fold} -tr {trainer_name} -p {plans_name}"
    weights = f" -pretrained_weights {q(str(initial))}" if initial else ""
    if trainer_dir is None:  # nnU-Net's stock trainer: nothing of scalekit's is needed
        heads = "; -pretrained_weights loads all but the segmentation heads (.seg_layers.)" if initial else ""
        commands += [f"# nnU-Net's own {trainer_name}, its recipe and schedule{heads}",
                     train.format(names[0]) + weights]
        if model_folder is not None:
            commands.append("# the exported network, as nnU-Net's predictor loads it: nnUNetv2_predict_from_modelfolder"
                            f" -m {q(str(model_folder))} -f {fold} -i IMAGES -o OUTPUT")
        return commands
    commands.append(f"export nnUNet_extTrainer={q(str(trainer_dir))}")
    fallback = (f"# where nnU-Net's trainer lookup fails (no working torchvision): scalekit train {dataset} {{}} "
                f"{fold} --plans {plans_name}")
    if len(names) == 2 and isinstance(arch, MedNeXtConfig):
        k3_final = (results / prepared.dataset_name / f"{trainer_name}__{plans_name}__{names[0]}" / f"fold_{fold}"
                    / "checkpoint_final.pth")
        init = out_dir / f"{names[1]}_init.pth"
        commands += [
            f"# UpKern chain: train k3, resample its kernels to k{arch.enc_kernel_size}, train k{arch.enc_kernel_size}",
            train.format(names[0]),
            f"scalekit nnunet upkern-weights {q(str(k3_final))} --kernel {arch.enc_kernel_size} --out {q(str(init))}",
            train.format(names[1]) + f" -pretrained_weights {q(str(init))}",
            fallback.format(names[0]),
            fallback.format(names[1]) + f" --pretrained-weights {q(str(init))}",
        ]
    else:
        commands += [train.format(names[0]) + weights,
                     fallback.format(names[0]) + (f" --pretrained-weights {q(str(initial))}" if initial else "")]
    return commands


def run_exported_training(
    dataset: int | str,
    configuration: str,
    fold: int | str,
    plans_identifier: str,
    preprocessed_root: Path,
    results_root: Path,
    pretrained_weights: Path | None = None,
    continue_training: bool = False,
    validate: bool = True,
    device: str = "auto",
) -> Path:
    """Train an exported configuration with :class:`ScalekitMedNeXtTrainer` as ``nnUNetv2_train`` would
    (including nnU-Net's final validation when ``validate``), without the trainer lookup by name. A
    configuration exported for nnU-Net's own trainer (a ResEnc without scalekit's settings) is refused: it trains
    with ``nnUNetv2_train -tr nnUNetTrainer``, which its ``train.sh`` runs.

    Returns the fold's output folder.
    """
    if pretrained_weights is not None and continue_training:
        raise ScalekitError("pretrained weights only start a new training; drop them to continue one")
    torch_device = recipe.resolve_device(device)
    _env.configure(preprocessed=preprocessed_root, results=results_root)
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    dataset_name = maybe_convert_to_dataset_name(str(dataset) if not str(dataset).isdigit() else int(dataset))
    folder = Path(preprocessed_root) / dataset_name
    plans_file = folder / f"{plans_identifier}.json"
    plans = read_json_object(plans_file, "run `scalekit nnunet export` first")
    kind = check_plans(plans, configuration, plans_file)  # before nnU-Net imports anything the plans name
    if kind_export(kind.arch).native and SETTINGS_KEY not in effective_configuration(plans, configuration,
                                                                                     plans_file)[0]:
        raise ScalekitError(f"{plans_file}: configurations.{configuration} has no {SETTINGS_KEY}: it is for "
                            f"nnU-Net's own trainer (nnUNetv2_train {dataset} {configuration} {fold} -tr "
                            f"{STOCK_TRAINER} -p {plans_identifier}, as the export's train.sh says)")
    dataset_json = read_json_object(folder / DATASET_JSON, "the preprocessed dataset is incomplete")
    fold_value = nnunet_fold(fold)
    from .trainer import ScalekitMedNeXtTrainer

    with _env.nnunet_output_to_log():
        trainer = ScalekitMedNeXtTrainer(
            plans={**plans, "continue_training": continue_training}, configuration=configuration, fold=fold_value,
            dataset_json=dataset_json, device=torch_device,
        )
        trainer.initialize()
    output = Path(trainer.output_folder)
    if continue_training:
        for name in ("checkpoint_final.pth", "checkpoint_latest.pth"):
            if (output / name).is_file():
                trainer.load_checkpoint(output / name)
                break
    elif pretrained_weights is not None:
        state = read_nnunet_checkpoint(Path(pretrained_weights))["network_weights"]
        trainer.bare_network().load_state_dict(state)
    try:
        with _env.nnunet_output_to_log():
            if trainer.current_epoch < trainer.num_epochs:
                trainer.run_training()
            if validate:
                trainer.perform_actual_validation(False)
    finally:
        trainer.shutdown_dataloaders()
    return output
