"""Exporting the stage a selection rule chose: a standalone network (config and weights) or an nnU-Net v2
training setup (plans, trainer, starting weights, ``train.sh``; a ResEnc's for nnU-Net's stock trainer, with
nnU-Net's trained-model folder of the stage), written whole or not at all."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from scalekit._atomic import Staging, staged_dir
from scalekit.errors import ScalekitError
from scalekit.faults import fault_point
from scalekit.records import StageRecord, StudyDir, read_results
from scalekit.results.pareto import require_study
from scalekit.results.selection import Selection, select_stage

if TYPE_CHECKING:
    from scalekit.networks import NetworkConfig
    from scalekit.nnunet.export import NnunetExport

log = logging.getLogger(__name__)

CONFIG_FILE = "network_config.json"
WEIGHTS_FILE = "weights.pt"
SELECTION_FILE = "selection.json"
TARGETS = ("config", "nnunet")


def _checkpoint_path(study_dir: Path, stage: StageRecord) -> Path:
    """The stage's checkpoint file: relative paths in results.csv are relative to the study directory."""
    path = stage.checkpoint_path(study_dir)
    if path is None:
        raise ScalekitError(f"stage {stage.stage_id} has no checkpoint in results.csv; it cannot be exported")
    if not path.is_file():
        raise ScalekitError(
            f"stage {stage.stage_id}: checkpoint {path} does not exist; rerun `scalekit study run` on the study "
            f"file (its copy is {study_dir / 'study.yaml'}) to retrain the stage"
        )
    return path


class _Export(Protocol):
    """An export whose inputs are all read and checked, held in memory until it is written."""

    def write(self, staging: Staging) -> list[Path]:
        """Write the export's files into ``staging``; returns their paths once the folder is in place."""

    def finish(self) -> None:
        """Write what lives outside the export folder, once the folder is in place."""


@dataclass(frozen=True)
class _ConfigExport:
    """``network_config.json`` (the config's ``to_dict()``, with its ``arch``) and ``weights.pt`` (the stage's
    checkpoint). Rebuild with ``networks.build(networks.config_from_dict(json.load(f)))``, or read both with
    ``networks.load_state("weights.pt")``.
    """

    config: NetworkConfig
    checkpoint: Path

    def write(self, staging: Staging) -> list[Path]:
        config = staging.write(CONFIG_FILE, json.dumps(self.config.to_dict(), indent=2) + "\n")
        with staging.file(WEIGHTS_FILE) as weights:
            shutil.copyfile(self.checkpoint, weights)
        return [config, staging.final / WEIGHTS_FILE]

    def finish(self) -> None:
        """Nothing: a config export is only its folder."""


def _config_export(study_dir: Path, stage: StageRecord) -> _ConfigExport:
    """Check the stage's checkpoint: read safely, a scalekit one, with the architecture results.csv records."""
    from scalekit.networks import config_from_dict, load_state

    checkpoint = _checkpoint_path(study_dir, stage)
    _, stored, kind = load_state(checkpoint)
    if kind != "scalekit":
        raise ScalekitError(f"stage {stage.stage_id}: {checkpoint} is a {kind} checkpoint, not a scalekit one")
    if stage.config and config_from_dict(stage.config) != stored:
        raise ScalekitError(
            f"stage {stage.stage_id}: the checkpoint {checkpoint} holds another architecture than results.csv "
            f"records ({stored.to_dict()} vs {stage.config}); the study directory is inconsistent"
        )
    return _ConfigExport(stored, checkpoint)


def plans_name_of(stage_id: str) -> str:
    """The nnU-Net plans identifier of a stage's export: one per stage, so exports never share a plans file."""
    return f"scalekitPlans_{stage_id}"


def _nnunet_export(study_dir: Path, stage: StageRecord, out_dir: Path, plans_name: str | None) -> NnunetExport:
    """Check the study's prepared dataset, the stage's architecture and its checkpoint (read safely) for an
    nnU-Net v2 export starting from the trained weights; the batch size is the one the stage trained with (its
    own where results.csv records one, else the study's). The plans file (default :func:`plans_name_of`)
    records the stage as its owner: another stage's file is never replaced."""
    import yaml

    from scalekit.networks import config_from_dict
    from scalekit.nnunet import PreparedDataset
    from scalekit.nnunet.export import build_nnunet_export

    layout = StudyDir(study_dir)
    prepared_file = layout.prepared
    if not prepared_file.is_file():
        raise ScalekitError(f"{prepared_file} is missing: the study never prepared its nnU-Net dataset; use --to config")
    if not stage.config:
        raise ScalekitError(f"stage {stage.stage_id}: results.csv records no architecture; it cannot be exported")
    prepared = PreparedDataset.from_dict(json.loads(prepared_file.read_text()))
    study = yaml.safe_load(layout.study_file.read_text()) if layout.study_file.is_file() else {}
    batch_size = stage.batch_size if stage.batch_size is not None else (study.get("dataset") or {}).get("batch_size")
    arch = config_from_dict(stage.config)
    return build_nnunet_export(
        prepared, arch, out_dir, weights=_checkpoint_path(study_dir, stage),
        name=f"{arch.arch}_{stage.family_id}", batch_size=batch_size,
        plans_name=plans_name or plans_name_of(stage.stage_id),
        owner={"study": str(study.get("name") or study_dir.resolve().name), "stage_id": stage.stage_id},
    )


def _listed(path: Path, out_dir: Path) -> str:
    """How selection.json lists a written file: its path inside the export folder, or its name (the shared plans
    file outside it)."""
    inside = path.resolve().is_relative_to(out_dir.resolve())
    return path.resolve().relative_to(out_dir.resolve()).as_posix() if inside else path.name


def export_stage(
    study_dir: str | Path, rule: str, to: str, out_dir: str | Path, force: bool = False, plans_name: str | None = None
) -> tuple[Selection, list[Path]]:
    """Select a stage of ``study_dir`` by ``rule``, export it ``to`` ``config`` or ``nnunet`` in ``out_dir``.

    ``config``: ``network_config.json`` and ``weights.pt``. ``nnunet``: the plans (also in the study's
    preprocessed dataset, outside ``out_dir``, named ``plans_name`` or :func:`plans_name_of` the stage), the
    starting weights, ``dataset.json``, ``nnunet_export.json`` (what ``scalekit predict --export`` reads) and
    ``train.sh`` with the exact commands; a MedNeXt's also the trainer module for ``nnUNet_extTrainer``, while a
    ResEnc trains with nnU-Net's stock ``nnUNetTrainer`` and its weights are nnU-Net's trained-model folder
    (``nnUNet_trained_model/...``, which nnU-Net's predictor loads as it is). Both get ``selection.json`` (the
    rule, the explanation and the stage's measurements). Returns the selection and every file written.

    Every input is read and checked before anything is written. The export is written into a hidden sibling
    folder that takes ``out_dir``'s place (replacing an earlier export there, or an empty folder) only when
    complete, so a failure or a kill leaves ``out_dir`` as it was. nnU-Net's shared plans file is written
    last, atomically.
    """
    if to not in TARGETS:
        raise ScalekitError(f"--to {to!r} is unknown; use one of {', '.join(TARGETS)}")
    study_dir, out_dir = require_study(study_dir), Path(out_dir)
    selection = select_stage(read_results(study_dir), rule, force)
    export: _Export = (_config_export(study_dir, selection.stage) if to == "config"
                       else _nnunet_export(study_dir, selection.stage, out_dir, plans_name))
    with staged_dir(out_dir, SELECTION_FILE) as staging:
        files = export.write(staging)
        fault_point("export", selection.stage.stage_id)
        record = {**selection.to_dict(), "study_dir": str(study_dir.resolve()), "to": to,
                  "files": [_listed(p, out_dir) for p in files]}
        files.append(staging.write(SELECTION_FILE, json.dumps(record, indent=2) + "\n"))
    export.finish()
    log.info("exported %s (%s) to %s", selection.stage.stage_id, rule, out_dir)
    return selection, files
