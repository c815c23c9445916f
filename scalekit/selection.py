"""Choosing one stage of a study by a named rule, and exporting it as a standalone MedNeXt (config + weights).

Rules (``--select``):

- ``best``: the highest mean Dice among valid stages (completed, with a Dice); ties go to the lower peak memory,
  then to the smaller stage id.
- ``knee``: the knee of the Pareto front in (mean Dice up, peak memory down) space. Both axes are scaled to
  [0, 1] over the front; the knee is the front point furthest above the straight line that joins the front's
  extremes (its lowest-memory and its highest-Dice point), i.e. where extra memory stops buying much Dice.
  When no front point lies strictly above that line (a front of one or two points, or a concave one), the
  knee falls back to ``best`` and its explanation says so and why. Ties go to the lower memory, then to the
  smaller stage id.
- ``max-dice-under=24GB``: the highest mean Dice among valid stages whose measured peak memory is at most the
  budget (GB as GPU memory is quoted, 2**30 bytes, like ``StageRecord.peak_memory_gb``; GiB is the same, MB
  and MiB are 2**20 bytes; a bare number means GB); ties go to the lower memory.
- any stage id: that stage, which must be valid.

A rule refuses to choose (:class:`NoSignalError`) when the valid stages' Dice cannot tell them apart
(:func:`scalekit.fidelity.dice_signal`: all near zero, or closer than the spread between validation cases),
unless forced; a forced choice, or one by stage id, says so in its explanation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from scalekit._atomic import Staging, staged_dir
from scalekit.errors import ScalekitError
from scalekit.faults import fault_point
from scalekit.fidelity import dice_signal
from scalekit.pareto import pareto_front, require_study
from scalekit.records import GIB, Objective, StageRecord, read_results
from scalekit.rules import parse_rule

if TYPE_CHECKING:
    from scalekit.mednext import MedNeXtConfig
    from scalekit.nnunet.export import NnunetExport

log = logging.getLogger(__name__)

DICE_MEMORY = (Objective("mean_dice", "maximize"), Objective("peak_memory_gb", "minimize"))
CONFIG_FILE = "mednext_config.json"
WEIGHTS_FILE = "weights.pt"
SELECTION_FILE = "selection.json"
TARGETS = ("config", "nnunet")


@dataclass(frozen=True)
class Selection:
    """The stage a rule chose and why, in words."""

    rule: str
    stage: StageRecord
    explanation: str
    no_signal: str = ""
    """Why the stages' Dice could not tell them apart, when they could not (the choice is then noise)."""
    fallback: str = ""
    """Why the ``knee`` rule found no knee and chose the ``best`` stage instead, when it did."""

    def to_dict(self) -> dict[str, Any]:
        s = self.stage
        return {
            "rule": self.rule,
            "stage_id": s.stage_id,
            "explanation": self.explanation,
            "no_signal": self.no_signal,
            "fallback": self.fallback,
            "family_id": s.family_id,
            "family_label": s.family_label,
            "kernel_size": s.kernel_size,
            "init": s.init,
            "parent_stage": s.parent_stage,
            "status": s.status,
            "mean_dice": s.mean_dice,
            "mean_nsd": s.mean_nsd,
            "peak_memory_gb": s.peak_memory_gb,
            "gflops_train": s.gflops_train,
            "params": s.params,
            "checkpoint": s.checkpoint,
        }


def _memory_key(record: StageRecord) -> float:
    return np.inf if record.peak_memory_bytes is None else float(record.peak_memory_bytes)


def _highest_dice(records: list[StageRecord]) -> StageRecord:
    return min(records, key=lambda r: (-(r.mean_dice or 0.0), _memory_key(r), r.stage_id))


def _valid(records: list[StageRecord]) -> list[StageRecord]:
    valid = [r for r in records if r.is_valid]
    if not valid:
        counts = {s: sum(r.status == s for r in records) for s in sorted({r.status for r in records})}
        raise ScalekitError(
            f"no completed stage to select from (stages by status: {counts or 'none'}); "
            "wait for the study to finish a stage"
        )
    return valid


@dataclass(frozen=True)
class Knee:
    """The knee stage, or the ``best`` stage with the reason when the front has no knee."""

    stage: StageRecord
    fallback: str = ""


def find_knee(records: list[StageRecord]) -> Knee:
    """The knee of the Dice-memory Pareto front (definition in the module docstring)."""
    valid = _valid(records)
    front = pareto_front(valid, DICE_MEMORY)
    if not front:
        raise ScalekitError("no valid stage has both a mean Dice and a peak memory: the knee is undefined")
    memory = np.array([r.peak_memory_gb for r in front], dtype=float)
    dice = np.array([r.mean_dice for r in front], dtype=float)
    x = (memory - memory.min()) / (np.ptp(memory) or 1.0)
    y = (dice - dice.min()) / (np.ptp(dice) or 1.0)
    low = int(np.lexsort((-y, x))[0])  # lowest memory, highest Dice among those
    high = int(np.lexsort((x, -y))[0])  # highest Dice, lowest memory among those
    dx, dy = x[high] - x[low], y[high] - y[low]
    norm = float(np.hypot(dx, dy))
    if norm == 0.0:
        return Knee(_highest_dice(front), "the front is a single point: its lowest-memory stage also has the "
                                          "highest Dice")
    above = (dx * (y - y[low]) - dy * (x - x[low])) / norm  # signed distance, > 0 above the chord
    best_distance = above.max()
    if best_distance <= 1e-12:
        shape = f"a front of {len(front)} points" if len(front) <= 2 else "a concave front"
        return Knee(_highest_dice(front), f"no front point lies above the line joining its extremes ({shape})")
    tied = [r for r, d in zip(front, above) if d >= best_distance - 1e-12]
    return Knee(min(tied, key=lambda r: (_memory_key(r), r.stage_id)))


def max_dice_under(records: list[StageRecord], budget_bytes: float) -> StageRecord | None:
    """The highest-Dice valid stage whose peak memory is at most ``budget_bytes`` (None when none fits)."""
    fitting = [r for r in _valid(records) if r.peak_memory_bytes is not None and r.peak_memory_bytes <= budget_bytes]
    return _highest_dice(fitting) if fitting else None


class NoSignalError(ScalekitError):
    """A rule was asked to choose among stages whose Dice carries no signal."""


def select_stage(records: list[StageRecord], rule: str, force: bool = False) -> Selection:
    """Apply a selection rule (``best``, ``knee``, ``max-dice-under=BUDGET`` or a stage id) to a study's stages.

    Raises :class:`NoSignalError` when a rule (not a stage id) would choose by Dice that carries no signal,
    unless ``force``.
    """
    selection = _select(records, rule)
    signal = dice_signal(_valid(records))
    if signal.carries_signal:
        return selection
    if parse_rule(rule).kind != "stage" and not force:
        raise NoSignalError(
            f"--select {rule}: the completed stages' Dice carry no signal ({signal.reason}), so the choice would "
            "be noise; raise training.epochs and rerun, name a stage id, or pass --force to export anyway"
        )
    return dataclasses.replace(selection, explanation=f"{selection.explanation} (NO SIGNAL: {signal.reason})",
                               no_signal=signal.reason)


def _select(records: list[StageRecord], rule: str) -> Selection:
    parsed = parse_rule(rule)
    rule = parsed.text
    by_id = {r.stage_id: r for r in records}
    fallback = ""
    if rule == "best":
        stage = _highest_dice(_valid(records))
        why = f"highest mean Dice ({stage.mean_dice:.4f}) of the valid stages"
    elif rule == "knee":
        knee = find_knee(records)
        stage, fallback = knee.stage, knee.fallback
        if fallback:
            why = (f"no knee ({fallback}), so the rule fell back to best: the highest mean Dice "
                   f"({stage.mean_dice:.4f})")
        else:
            why = "knee of the Dice-memory Pareto front (furthest above the line joining its extremes)"
    elif parsed.kind == "budget":
        budget = parsed.budget_bytes
        if budget is None:
            raise ValueError(f"the budget rule {rule!r} was parsed without its budget")
        found = max_dice_under(records, budget)
        if found is None:
            measured = [r.peak_memory_gb for r in _valid(records) if r.peak_memory_gb is not None]
            smallest = f"{min(measured):.2f} GB" if measured else "none measured"
            raise ScalekitError(
                f"no valid stage fits {rule.split('=', 1)[1]} ({budget / GIB:.2f} GB); "
                f"the smallest peak memory is {smallest}: raise the budget"
            )
        stage = found
        why = f"highest mean Dice ({stage.mean_dice:.4f}) with peak memory <= {budget / GIB:.2f} GB"
    elif rule in by_id:
        stage = by_id[rule]
        if not stage.is_valid:
            raise ScalekitError(
                f"stage {rule} is {stage.status}{': ' + stage.reason if stage.reason else ''}; "
                "only completed stages with a Dice can be selected"
            )
        why = "chosen by stage id"
    else:
        known = ", ".join(sorted(by_id)[:8]) + (", ..." if len(by_id) > 8 else "")
        raise ScalekitError(
            f"--select {rule!r} is neither a rule (best, knee, max-dice-under=24GB) nor a stage id of this "
            f"study ({known or 'no stages yet'})"
        )
    return Selection(rule, stage, f"{stage.stage_id}: {why}", fallback=fallback)


def rule_choices(records: list[StageRecord]) -> dict[str, Selection]:
    """The ``best`` and ``knee`` stages where they exist (none while no stage has finished)."""
    choices = {}
    for rule in ("best", "knee"):
        try:
            choices[rule] = select_stage(records, rule, force=True)
        except ValueError as err:
            log.debug("no %s stage yet: %s", rule, err)
    return choices


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
    """``mednext_config.json`` (a ``MedNeXtConfig.to_dict()``) and ``weights.pt`` (the stage's checkpoint).

    Rebuild with ``MedNeXt(MedNeXtConfig.from_dict(json.load(f)))`` or ``load_mednext("weights.pt")``.
    """

    config: MedNeXtConfig
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
    from scalekit.mednext import MedNeXtConfig, load_state

    checkpoint = _checkpoint_path(study_dir, stage)
    _, stored, kind = load_state(checkpoint)
    if kind != "scalekit":
        raise ScalekitError(f"stage {stage.stage_id}: {checkpoint} is a {kind} checkpoint, not a scalekit one")
    if stage.config and MedNeXtConfig.from_dict(stage.config) != stored:
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
    nnU-Net v2 export starting from the trained weights; the batch size is the study's. The plans file
    (default :func:`plans_name_of`) records the stage as its owner: another stage's file is never replaced."""
    import yaml

    from scalekit.mednext import MedNeXtConfig
    from scalekit.nnunet import PreparedDataset
    from scalekit.nnunet.export import build_nnunet_export

    prepared_file = study_dir / "prepared.json"
    if not prepared_file.is_file():
        raise ScalekitError(f"{prepared_file} is missing: the study never prepared its nnU-Net dataset; use --to config")
    if not stage.config:
        raise ScalekitError(f"stage {stage.stage_id}: results.csv records no architecture; it cannot be exported")
    prepared = PreparedDataset.from_dict(json.loads(prepared_file.read_text()))
    study = yaml.safe_load((study_dir / "study.yaml").read_text()) if (study_dir / "study.yaml").is_file() else {}
    batch_size = (study.get("dataset") or {}).get("batch_size")
    return build_nnunet_export(
        prepared, MedNeXtConfig.from_dict(stage.config), out_dir, weights=_checkpoint_path(study_dir, stage),
        name=f"mednext_{stage.family_id}", batch_size=batch_size,
        plans_name=plans_name or plans_name_of(stage.stage_id),
        owner={"study": str(study.get("name") or study_dir.resolve().name), "stage_id": stage.stage_id},
    )


def export_stage(
    study_dir: str | Path, rule: str, to: str, out_dir: str | Path, force: bool = False, plans_name: str | None = None
) -> tuple[Selection, list[Path]]:
    """Select a stage of ``study_dir`` by ``rule``, export it ``to`` ``config`` or ``nnunet`` in ``out_dir``.

    ``config``: ``mednext_config.json`` and ``weights.pt``. ``nnunet``: the plans (also in the study's
    preprocessed dataset, outside ``out_dir``, named ``plans_name`` or :func:`plans_name_of` the stage), the
    trainer module for ``nnUNet_extTrainer``, the starting weights, ``dataset.json``, ``nnunet_export.json``
    (what ``scalekit predict --export`` reads) and ``train.sh`` with the exact commands. Both get ``selection.json`` (the rule, the explanation and the stage's
    measurements). Returns the selection and every file written.

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
                  "files": [p.name for p in files]}
        files.append(staging.write(SELECTION_FILE, json.dumps(record, indent=2) + "\n"))
    export.finish()
    log.info("exported %s (%s) to %s", selection.stage.stage_id, rule, out_dir)
    return selection, files
