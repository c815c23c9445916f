"""Inference with a trained network: nnU-Net v2's predictor, set up directly with the network and its weights.

nnU-Net's ``nnUNetv2_predict`` finds the trainer by its class name, a lookup that imports modules needing
torchvision; here the predictor gets the network that the plans describe (built by its registered kind,
:mod:`scalekit.nnunet.networks`), the weights, the plans and dataset.json (:func:`~scalekit.nnunet.inference.make_predictor`, which
the validation of a study stage uses too, so a prediction repeats that validation exactly). Two sources of a trained network:

- :func:`stage_model`: a stage of a study (its ``final.pt``, the weights its validation Dice was measured with,
  and the plans and dataset.json nnU-Net saved in the stage's model folder);
- :func:`export_model`: an nnU-Net export (``scalekit study export --to nnunet`` or ``scalekit nnunet export``),
  with the weights it carries (a MedNeXt's starting weights; a ResEnc's ``checkpoint_final.pth`` in nnU-Net's
  trained-model folder, :mod:`~scalekit.nnunet.native`) or any trained checkpoint of it.

:func:`predict` writes nnU-Net's output layout: one segmentation per case, named like the case and in the
dataset's file ending, beside ``plans.json``, ``dataset.json`` and ``predict_from_raw_data_args.json``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from scalekit import networks
from scalekit._atomic import staged_dir
from scalekit.errors import ScalekitError
from scalekit.faults import fault_point
from scalekit.networks import load_state, read_checkpoint, recipe, state_mismatch
from scalekit.records import read_results

from . import _env
from .export import MANIFEST
from .inference import make_predictor
from .networks import check_plans
from .plans import read_json_object
from .validate import validate_images
from .stage import STAGE_CONFIGURATION

log = logging.getLogger(__name__)

PREDICTION_MARKER = "predict_from_raw_data_args.json"
"""The file nnU-Net writes into every prediction folder (an earlier prediction may be replaced)."""
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class TrainedModel:
    """What inference needs: plans, the configuration to predict with, dataset.json and a weights file.

    ``source`` says where it came from, in words (``stage f…-k5 of runs/demo``); ``plans_file`` is the file
    the plans were read from. The plans are checked on creation (:func:`~scalekit.nnunet.networks.check_plans`):
    a model whose plans name other code than scalekit's networks cannot be made.
    """

    plans: dict[str, Any]
    configuration: str
    dataset_json: dict[str, Any]
    weights: Path
    source: str
    plans_file: Path

    def __post_init__(self) -> None:
        check_plans(self.plans, self.configuration, self.plans_file)

    @property
    def file_ending(self) -> str:
        return str(self.dataset_json["file_ending"])

    @property
    def num_input_channels(self) -> int:
        return len(self.dataset_json["channel_names"])


def stage_model(study_dir: str | Path, stage_id: str, weights: str | Path | None = None) -> TrainedModel:
    """A stage of the study in ``study_dir``: its final weights (or ``weights``) and the plans and dataset.json
    nnU-Net saved in the stage's model folder when it trained."""
    study_dir = Path(study_dir)
    if not (study_dir / "results.csv").is_file():
        raise ScalekitError(f"{study_dir} is not a study directory (no results.csv); give the study's output_dir")
    by_id = {r.stage_id: r for r in read_results(study_dir)}
    if stage_id not in by_id:
        known = ", ".join(sorted(by_id)[:8]) + (", ..." if len(by_id) > 8 else "")
        raise ScalekitError(f"--stage {stage_id!r} is not a stage of {study_dir} (stages: {known or 'none yet'}); "
                            "see `scalekit study show`")
    record = by_id[stage_id]
    checkpoint = record.checkpoint_path(study_dir)
    if checkpoint is None:
        raise ScalekitError(f"stage {stage_id} is {record.status}: it has no trained weights to predict with")
    if weights is None and not checkpoint.is_file():
        raise ScalekitError(f"stage {stage_id}: weights {checkpoint} do not exist; rerun `scalekit study run` on "
                            f"{study_dir / 'study.yaml'} to retrain the stage")
    folders = sorted(checkpoint.parent.glob(f"nnunet/*/*__{STAGE_CONFIGURATION}/plans.json"))
    if not folders:
        raise ScalekitError(f"stage {stage_id}: no nnU-Net model folder with plans.json under "
                            f"{checkpoint.parent / 'nnunet'}; rerun `scalekit study run` to retrain the stage")
    model_dir = folders[-1].parent
    return TrainedModel(
        plans=read_json_object(model_dir / "plans.json", "the stage's plans"), configuration=STAGE_CONFIGURATION,
        dataset_json=read_json_object(model_dir / "dataset.json", "the stage's dataset.json"),
        weights=Path(weights) if weights is not None else checkpoint, source=f"stage {stage_id} of {study_dir}",
        plans_file=model_dir / "plans.json",
    )


def _member(export_dir: Path, manifest: dict[str, Any], key: str) -> Path:
    """The file that field ``key`` of an export's manifest names: a relative path inside the export folder (no
    ``..``, not absolute, not leading out of the folder through a link)."""
    name = manifest.get(key)
    parts = PurePosixPath(name).parts if isinstance(name, str) and "\\" not in name else ()
    path = export_dir.joinpath(*parts)
    if (not parts or parts[0] == "/" or ".." in parts
            or not path.resolve().is_relative_to(export_dir.resolve())):
        raise ScalekitError(f"{export_dir / MANIFEST}: field {key!r} is {name!r}, not the name of a file in the "
                            "export folder; export the stage again with `scalekit study export --to nnunet`")
    return path


def export_model(export_dir: str | Path, weights: str | Path | None = None) -> TrainedModel:
    """The network of an nnU-Net export folder: its plans copy, configuration and dataset.json, with the
    weights it carries (a study export: the stage's trained weights; a ResEnc's lie in nnU-Net's trained-model
    folder inside the export) or ``weights`` (for example the ``checkpoint_final.pth`` of training it with its
    ``train.sh``). Every file the manifest names must lie in the export folder."""
    export_dir = Path(export_dir)
    manifest = read_json_object(export_dir / MANIFEST, "not an nnU-Net export of this scalekit version; export it "
                                "again with `scalekit study export --to nnunet`")
    plans_file = _member(export_dir, manifest, "plans")
    configuration = manifest.get("configuration")
    if not isinstance(configuration, str):
        raise ScalekitError(f"{export_dir / MANIFEST}: field 'configuration' is {configuration!r}, not a "
                            "configuration name; export the stage again")
    if weights is None:
        if manifest.get("weights") is None:
            raise ScalekitError(f"{export_dir} carries no trained weights (it starts {configuration} "
                                "from scratch); train it with its train.sh and pass --weights "
                                ".../fold_0/checkpoint_final.pth")
        weights = _member(export_dir, manifest, "weights")
    return TrainedModel(plans=read_json_object(plans_file, "the export is incomplete; export it again"),
                        configuration=configuration,
                        dataset_json=read_json_object(_member(export_dir, manifest, "dataset_json"),
                                                      "the export is incomplete"),
                        weights=Path(weights), source=f"export {export_dir}", plans_file=plans_file)


def input_cases(folder: str | Path, file_ending: str, num_channels: int) -> dict[str, list[Path]]:
    """The images of ``folder`` grouped by case, in nnU-Net's naming (``CASE_0000<ending>`` for channel 0,
    ...): case id -> its channel files in order, sorted by case; every case must have exactly the channels
    0..num_channels-1."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ScalekitError(f"input folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.name.endswith(file_ending)]
    if not images:
        endings = sorted({"".join(p.suffixes) or p.name for p in files})
        raise ScalekitError(f"{folder} holds no images ending in {file_ending}, the dataset's file ending "
                            f"(found: {', '.join(endings) or 'nothing'})")
    cases: dict[str, dict[int, Path]] = {}
    for path in images:
        match = _CHANNEL.match(path.name[: -len(file_ending)])
        if match is None:
            raise ScalekitError(f"{path}: name images CASE_0000{file_ending} (a case id, '_' and a 4-digit "
                                "channel number), as in nnU-Net's imagesTr")
        cases.setdefault(match["case"], {})[int(match["channel"])] = path
    expected = list(range(num_channels))
    for case, channels in sorted(cases.items()):
        if sorted(channels) != expected:
            raise ScalekitError(
                f"case {case} in {folder} has channel(s) {sorted(channels)} but the network takes {num_channels} "
                f"({', '.join(f'{case}_{c:04d}{file_ending}' for c in expected)})"
            )
    return {case: [channels[c] for c in expected] for case, channels in sorted(cases.items())}


def check_images(model: TrainedModel, cases: dict[str, list[Path]], folder: Path) -> None:
    """Check the images to segment as training images are checked (:func:`~scalekit.nnunet.validate.
    validate_images`, with the plans' image reader and the network's dimensionality); every bad case is named
    in one :class:`~scalekit.nnunet.validate.ImagesValidationError`."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(model.plans)
    try:
        reader = plans_manager.image_reader_writer_class
    except (KeyError, RuntimeError):
        raise ScalekitError(f"{model.plans_file}: field 'image_reader_writer' names no image reader of nnU-Net "
                            f"({model.plans.get('image_reader_writer')!r}); export the stage again") from None
    dim = len(plans_manager.get_configuration(model.configuration).patch_size)
    validate_images(cases, reader, dim, folder)


def _network_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from an nnU-Net checkpoint or starting-weights file (``network_weights``) or a scalekit
    checkpoint (``final.pt``, ``weights.pt``), read with ``weights_only``."""
    data = read_checkpoint(path)
    if isinstance(data, Mapping) and isinstance(data.get("network_weights"), Mapping):
        return dict(data["network_weights"])
    state, _, _ = load_state(path)
    return state


def load_network(model: TrainedModel) -> torch.nn.Module:
    """The network the plans' configuration describes (of the kind its class names), with the model's weights
    loaded strictly, in eval mode and without deep supervision (the weights may hold the extra heads or not)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(model.plans)
    configuration = plans_manager.get_configuration(model.configuration)
    state = _network_weights(model.weights)
    kind = check_plans(model.plans, model.configuration, model.plans_file)
    outputs = plans_manager.get_label_manager(model.dataset_json).num_segmentation_heads
    network = kind.build(model.num_input_channels, outputs, True, **configuration.network_arch_init_kwargs)
    if set(state) != set(network.state_dict()):
        network = kind.build(model.num_input_channels, outputs, False, **configuration.network_arch_init_kwargs)
    problems = state_mismatch(network.state_dict(), state)
    if problems:
        raise ScalekitError(f"{model.weights}: these weights do not fit the network of {model.source}: {problems}")
    network.load_state_dict(state, strict=True)
    networks.set_deep_supervision(network, False)
    return network.eval()


def predict(model: TrainedModel, input_dir: str | Path, output_dir: str | Path, device: str = "auto",
            mirror: bool = False, on_case: Callable[[str, int, int], None] | None = None) -> list[Path]:
    """Segment every case of ``input_dir`` with ``model`` into ``output_dir`` in nnU-Net's layout; returns the
    segmentation files. ``on_case(case, done, total)`` hears each case as it is written.

    Everything is checked before any case is predicted: the images' names, channels and file ending, every
    image as training images are (:func:`check_images`: intact, finite, the network's dimensionality, a
    spacing), the weights against the plans' network. The folder is written beside ``output_dir`` and takes
    its place only when every case is done, so a failure or a kill leaves no segmentation under a final name;
    an existing ``output_dir`` must be empty or an earlier prediction (it holds ``predict_from_raw_data_args.json``).
    """
    torch_device = recipe.resolve_device(device)
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    cases = input_cases(input_dir, model.file_ending, model.num_input_channels)
    if output_dir.is_file() or (output_dir.is_dir() and any(output_dir.iterdir())
                                and not (output_dir / PREDICTION_MARKER).is_file()):
        raise ScalekitError(f"{output_dir} is not empty and not an earlier prediction (it has no "
                            f"{PREDICTION_MARKER}); choose a new or an empty folder")
    _env.configure()
    with _env.nnunet_output_to_log():  # nnunetv2's first import prints notes on its folder variables
        check_images(model, cases, input_dir)
        network = load_network(model)
    log.info("predicting %d case(s) of %s with %s on %s", len(cases), input_dir, model.source, torch_device)
    predictor = make_predictor(network, model.plans, model.configuration, model.dataset_json, torch_device, mirror,
                               source=model.plans_file)
    inputs = [[str(p) for p in files] for files in cases.values()]
    with staged_dir(output_dir, PREDICTION_MARKER) as staging:
        for done, (case, files) in enumerate(zip(cases, inputs), start=1):
            with _env.nnunet_output_to_log():
                predictor.predict_from_files_sequential([files], str(staging.folder))
            if on_case is not None:
                on_case(case, done, len(cases))
            if done < len(cases):
                fault_point("predict-case", case)
        # nnU-Net records its arguments (of the last call): name every case and the folder the prediction ends
        # up in, not the staging folder
        recorded = json.loads((staging.folder / PREDICTION_MARKER).read_text())
        recorded.update(list_of_lists_or_source_folder=inputs,
                        output_folder_or_list_of_truncated_output_files=str(output_dir.resolve()))
        staging.write(PREDICTION_MARKER, json.dumps(recorded, indent=2) + "\n")
    return [output_dir / f"{case}{model.file_ending}" for case in cases]
