"""The answer of a study in a few lines, before the evidence: the stage to train for the study's memory budget and
for common GPU sizes, the knee, what UpKern bought, how the best of each other network kind compares (a study
with ResEnc baselines: is a MedNeXt worth it?), and what not to trust yet.

Every stage it names is chosen by the selection rules (:mod:`scalekit.results.selection`), so ``scalekit study export
--select max-dice-under=24GB`` (or ``knee``) exports the stage the answer names. Plain data and text, shared by
``scalekit study show`` and the report.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scalekit.networks import get_kind
from scalekit.results.fidelity import (
    UpkernStep, dice_interval, holds_zero, noise, paired_interval, signal_warnings, upkern_steps, with_interval,
)
from scalekit.results.pareto import StudyGoals, study_front
from scalekit.records import GIB, StageRecord
from scalekit.results.seeds import Confirmation, read_confirmation
from scalekit.results.selection import Selection, max_dice_under, rule_choices
from scalekit.results.tables import decimals

GPU_SIZES_GB = (16.0, 24.0, 40.0, 80.0)
"""Common GPU memory sizes (GiB, as GPU memory is quoted) the answer names a stage for."""
PREDICTED_ONLY = ("peak memory of every completed stage is predicted on CPU, not measured: measure it on the GPU "
                  "you will train on (`scalekit study profile STUDY.yaml` or `scalekit profile` there) before "
                  "trusting the stages per GPU size")


@dataclass(frozen=True)
class Fit:
    """The best-Dice completed stage whose peak memory fits each of ``sizes_gb`` (None: none fits)."""

    sizes_gb: tuple[float, ...]
    stage: StageRecord | None
    and_larger: bool = False
    """Larger GPUs give the same stage (every completed stage fits the largest of these sizes)."""


@dataclass(frozen=True)
class UpkernGain:
    """What UpKern steps gained in Dice: over their parent, and over the parent continued (where controlled)."""

    steps: int
    median_over_parent: float
    best: UpkernStep
    controls: int = 0
    median_over_control: float | None = None


@dataclass(frozen=True)
class StudyAnswer:
    """The study's answer as plain data; :meth:`lines` says it in words."""

    budget_gb: float | None
    budget: Fit | None
    """The stage for the study's own budget (for no budget: the best stage); None while nothing completed."""
    gpus: list[Fit]
    beyond_budget: tuple[float, ...]
    """Common GPU sizes above the study's budget: the study trained nothing that large."""
    choices: dict[str, Selection]
    upkern: UpkernGain | None
    smallest_gb: float | None = None
    """The smallest peak memory of a completed stage."""
    warnings: list[str] = field(default_factory=list)
    memory_decimals: int = 2
    duel: UpkernStep | None = None
    """The UpKern step whose lane the budget's stage belongs to, when that step has a measured control: which of
    the two the study found better for this data."""
    confirmation: Confirmation | None = None
    """The finalists retrained with other seeds (``finish.confirm``), when the study has them."""
    runner_up: StageRecord | None = None
    """The best other completed stage within the budget: how far the answer's stage leads, and whether by more
    than the noise."""
    rivals: list[StageRecord] = field(default_factory=list)
    """For each network kind other than the answer's that the study trained: its best completed stage within the
    budget, else its stage that got furthest (a baseline halted at a rung), by kind name."""

    def _gib(self, value: float) -> str:
        return f"{value:.{self.memory_decimals}f} GiB"

    def _stage(self, stage: StageRecord) -> str:
        if stage.mean_dice is None:
            raise ValueError(f"stage {stage.stage_id} has no mean Dice: only completed stages are an answer")
        memory = ("memory unknown" if stage.peak_memory_gb is None else
                  " ".join(filter(None, (self._gib(stage.peak_memory_gb), stage.memory_method))))
        how = f" trained on from {stage.parent_stage}" if stage.init == "continue" else ""  # a control won
        if stage.batch_size is not None:  # a baseline at its planner's batch, not the study's
            how += f", batch {stage.batch_size}"
        return (f"{stage.stage_id} ({self._named(stage)}{how}, "
                f"Dice {with_interval(stage.mean_dice, dice_interval(stage))}, {memory})")

    def _named(self, stage: StageRecord) -> str:
        """The stage's name, led by its kind's (``MedNeXt wide k5``) in a study of several kinds."""
        label = kind_label(stage)
        return f"{label} {stage.name}" if self.rivals and not stage.name.startswith(label) else stage.name

    def _fit(self, fit: Fit) -> str:
        if fit.stage is not None:
            return self._stage(fit.stage)
        smallest = "" if self.smallest_gb is None else f" (the smallest needs {self._gib(self.smallest_gb)})"
        return f"no completed stage fits{smallest}"

    def lines(self) -> list[str]:
        """The answer in a few lines, most important first."""
        if self.budget is None:
            return ["no completed stage yet: no answer", *self.warnings]
        budget = (f"train for the study's {self.budget_gb:g} GiB budget: " if self.budget_gb is not None
                  else "train (the study sets no memory budget): ")
        lead = ""
        if self.budget.stage is not None and self.runner_up is not None:
            lead = f"; ahead of the runner-up {self.runner_up.stage_id} by {gap(self.budget.stage, self.runner_up)}"
        lines = [budget + self._fit(self.budget) + lead]
        for fit in self.gpus:
            sizes = _sizes(fit.sizes_gb[:1] if fit.and_larger else fit.sizes_gb)
            lines.append(f"on a {sizes}{' or larger' if fit.and_larger else ''} GPU: {self._fit(fit)}")
        if self.beyond_budget:
            lines.append(f"on a {_sizes(self.beyond_budget)} GPU: the study trained nothing above its {self.budget_gb:g} GiB budget; "
                         "raise constraints.max_memory_gb to look at larger networks")
        knee = self.choices.get("knee")
        if knee is not None and knee.fallback:
            lines.append(f"knee: none ({knee.fallback}); fell back to best: {self._stage(knee.stage)}")
        elif knee is not None:
            best = self.choices["best"].stage
            against = "" if best.stage_id == knee.stage.stage_id else \
                f" ({gap(knee.stage, best)} against the best, {best.stage_id})"
            lines.append(f"knee: {self._stage(knee.stage)}, where more memory stops buying much Dice{against}")
        lines += [self._rival(rival) for rival in self.rivals if self.budget.stage is not None]
        lines.append(self._upkern())
        if self.duel is not None:
            lines.append(self._duel(self.duel))
        if self.confirmation is not None:
            lines += self.confirmation.lines()
        return lines + [f"warning: {w}" for w in self.warnings]

    def _rival(self, rival: StageRecord) -> str:
        """The answer's stage against the best of another kind: who leads, by how much, and whether by more
        than the noise (paired over the validation cases); a rival that never completed says where it stopped."""
        chosen = self.budget.stage if self.budget is not None else None
        if chosen is None:
            raise ValueError("a rival is compared with the answer's stage")
        ours, theirs = kind_label(chosen), kind_label(rival)
        where = f"for the {self.budget_gb:g} GiB budget" if self.budget_gb is not None else "for the best Dice"
        if not rival.is_valid:
            at = f"{rival.epochs} epochs, Dice {rival.mean_dice:.4f}" if rival.mean_dice is not None else "no score"
            return (f"{ours} or {theirs} {where}: {ours}; the best {theirs}, {self._named(rival)}, never completed "
                    f"({rival.status} at {at}: {rival.reason or 'no reason recorded'})")
        gain = (chosen.mean_dice or 0.0) - (rival.mean_dice or 0.0)
        interval = paired_interval(chosen.case_dice, rival.case_dice)
        if interval is None:
            verdict = f"{ours} leads by {gain:+.4f} Dice (the noise is unknown: no paired validation cases)"
        elif holds_zero(interval):
            verdict = f"within noise ({gain:+.4f} Dice{noise(interval)})"
        else:
            verdict = f"{ours} wins by {gain:+.4f} Dice{noise(interval)}"
        return (f"{ours} or {theirs} {where}: {self._stage(chosen)} or {self._stage(rival)}: {verdict}")

    @staticmethod
    def _duel(step: UpkernStep) -> str:
        """UpKern or training longer, for the answer's own lane, with the paired noise."""
        gain, interval = step.gain_over_control or 0.0, step.control_interval
        verb = "led" if interval is not None and interval[0] <= 0.0 <= interval[1] else "beat"
        if gain < 0:
            flipped = None if interval is None else (-interval[1], -interval[0])
            return (f"training longer: the continuation {step.control} {verb} the UpKern step {step.stage_id} by "
                    f"{-gain:+.4f}{noise(flipped)}")
        return f"UpKern: {step.stage_id} {verb} continuing its parent ({step.control}) by {gain:+.4f}{noise(interval)}"

    def _upkern(self) -> str:
        gain = self.upkern
        if gain is None:
            return "UpKern: no UpKern step and its parent both completed yet"
        text = (f"UpKern: {gain.median_over_parent:+.4f} Dice over the parent (median of {gain.steps} steps; best "
                f"{gain.best.gain_over_parent:+.4f}, {gain.best.stage_id})")
        if gain.median_over_control is None:
            return text + "; no continuation control to tell it from training longer"
        return text + (f", {gain.median_over_control:+.4f} over continuing the parent as long "
                       f"(median of {gain.controls} controls)")


def kind_label(stage: StageRecord) -> str:
    """How people name a stage's network kind (``MedNeXt``, ``ResEnc``)."""
    return get_kind(stage.arch).label


def _rivals(records: list[StageRecord], chosen: StageRecord | None, budget_gb: float | None) -> list[StageRecord]:
    """The best stage of each kind other than ``chosen``'s: completed within the budget (the highest Dice), else
    the one that got furthest (most epochs, then Dice); kinds in name order."""
    if chosen is None:
        return []
    rivals = []
    for arch in sorted({r.arch for r in records} - {chosen.arch}):
        mine = [r for r in records if r.arch == arch]
        completed = [r for r in mine if r.is_valid]
        best = max_dice_under(completed, budget_gb * GIB if budget_gb is not None else float("inf")) \
            if completed else None
        scored = [r for r in mine if r.mean_dice is not None and r.status not in ("failed", "infeasible")]
        if best is None and scored:
            best = min(scored, key=lambda r: (-(r.epochs or 0), -(r.mean_dice or 0.0), r.stage_id))
        if best is not None:
            rivals.append(best)
    return rivals


def gap(a: StageRecord, b: StageRecord) -> str:
    """``a``'s mean Dice minus ``b``'s (``+0.0100 Dice``) with its interval paired over the validation cases (``, within noise``
    when it holds zero)."""
    return f"{(a.mean_dice or 0.0) - (b.mean_dice or 0.0):+.4f} Dice{noise(paired_interval(a.case_dice, b.case_dice))}"


def _sizes(sizes: Sequence[float]) -> str:
    """``16 GiB``, ``16 or 24 GiB``, ``16, 24 or 40 GiB``."""
    names = [f"{s:g}" for s in sizes]
    return (" or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]) + " GiB"


def _upkern_gain(steps: Sequence[UpkernStep]) -> UpkernGain | None:
    if not steps:
        return None
    controlled = [s.gain_over_control for s in steps if s.gain_over_control is not None]
    return UpkernGain(
        len(steps), statistics.median(s.gain_over_parent for s in steps),
        min(steps, key=lambda s: (-s.gain_over_parent, s.stage_id)), len(controlled),
        statistics.median(controlled) if controlled else None,
    )


def _gpu_fits(records: list[StageRecord], budget_gb: float | None) -> tuple[list[Fit], tuple[float, ...]]:
    """A fit per common GPU size up to the budget (not the budget itself), consecutive sizes with the same
    stage merged, none after the first size every completed stage fits."""
    largest = max((r.peak_memory_gb for r in records if r.is_valid and r.peak_memory_gb is not None), default=None)
    fits: list[Fit] = []
    for size in (s for s in GPU_SIZES_GB if budget_gb is None or s < budget_gb):
        stage = max_dice_under(records, size * GIB)
        every = largest is not None and largest <= size
        if fits and fits[-1].stage == stage:
            fits[-1] = Fit((*fits[-1].sizes_gb, size), stage, every)
        else:
            fits.append(Fit((size,), stage, every))
        if every:
            return fits, ()
    return fits, tuple(s for s in GPU_SIZES_GB if budget_gb is not None and s > budget_gb)


def read_answer(study_dir: str | Path) -> StudyAnswer:
    """The answer of the study in ``study_dir``, with its confirmation over seeds where it has one."""
    study = study_front(study_dir)
    return study_answer(study.records, study.goals, read_confirmation(study_dir, study.records))


def study_answer(records: list[StageRecord], goals: StudyGoals,
                 confirmation: Confirmation | None = None) -> StudyAnswer:
    """The answer of a study (complete or running) with these stages and goals (and its confirmation)."""
    choices = rule_choices(records)
    valid = [r for r in records if r.is_valid]
    warnings = signal_warnings(records)
    memory = [r for r in valid if r.peak_memory_bytes is not None]
    if memory and not any(r.memory_method == "measured" for r in memory):
        warnings.append(PREDICTED_ONLY)
    digits = decimals(r.peak_memory_gb for r in valid)
    if not valid:
        return StudyAnswer(goals.max_memory_gb, None, [], (), choices, None, None, warnings, digits)
    budget_gb = goals.max_memory_gb
    budget = (Fit((budget_gb,), max_dice_under(records, budget_gb * GIB)) if budget_gb is not None
              else Fit((), choices["best"].stage))
    gpus, beyond = _gpu_fits(records, budget_gb)
    smallest = min((gb for r in memory if (gb := r.peak_memory_gb) is not None), default=None)
    steps = upkern_steps(records)
    chosen = budget.stage.stage_id if budget.stage is not None else ""
    duel = next((s for s in steps if s.gain_over_control is not None and chosen in (s.stage_id, s.control)), None)
    rivals = [r for r in valid if r.stage_id != chosen]
    runner_up = None if not rivals else (max_dice_under(rivals, budget_gb * GIB) if budget_gb is not None
                                          else min(rivals, key=lambda r: (-(r.mean_dice or 0.0), r.stage_id)))
    return StudyAnswer(budget_gb, budget, gpus, beyond, choices, _upkern_gain(steps), smallest, warnings, digits,
                       duel, confirmation, runner_up if budget.stage is not None else None,
                       _rivals(records, budget.stage, budget_gb))
