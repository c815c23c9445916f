"""Choosing one stage of a study by a named rule (:mod:`scalekit.results.export` writes the chosen one out).

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
(:func:`scalekit.results.fidelity.dice_signal`: all near zero, or closer than the spread between validation cases),
unless forced; a forced choice, or one by stage id, says so in its explanation.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from scalekit.errors import ScalekitError
from scalekit.results.fidelity import dice_signal
from scalekit.results.pareto import pareto_front
from scalekit.records import GIB, Objective, StageRecord
from scalekit.studyfile.rules import parse_rule

log = logging.getLogger(__name__)

DICE_MEMORY = (Objective("mean_dice", "maximize"), Objective("peak_memory_gb", "minimize"))


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
