"""What short training says about long training: stages ranked at a rung, whether a rung's Dice can tell its
stages apart, and whether the rankings of two rungs agree.

Successive halving promotes the best stages of a rung (a number of epochs) by non-dominated sorting over the
study's objectives; it only helps when the low rungs rank networks the way the full budget does, and only when
their Dice carries signal at all. Plain numpy over the results contract, shared by the study engine, the
terminal view and the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scalekit.pareto import pareto_mask
from scalekit.records import CONTROL_SUFFIX, Objective, StageRecord

NO_SIGNAL_DICE = 0.01
"""Below this mean Dice every stage of a rung counts as having learnt nothing."""


def nondominated_fronts(values: np.ndarray, maximize: Sequence[bool]) -> list[int]:
    """The non-dominated sorting rank of each row of ``values`` (0: the Pareto front, 1: the front once the
    first is removed, ...). Equal rows share a rank; rows holding NaN come last."""
    values = np.asarray(values, dtype=float).reshape(len(values), len(maximize))
    ranks = [-1] * len(values)
    left = np.flatnonzero(~np.isnan(values).any(axis=1))
    rank = 0
    while left.size:
        on_front = left[pareto_mask(values[left], maximize)]
        for index in on_front:
            ranks[index] = rank
        left = np.setdiff1d(left, on_front)
        rank += 1
    return [r if r >= 0 else rank for r in ranks]


def hypervolume(costs: np.ndarray, reference: np.ndarray) -> float:
    """The volume that the rows of ``costs`` (every objective minimised) dominate up to ``reference``: exact,
    by slicing along the first objective (fine for the few dozen stages of a rung)."""
    costs = np.asarray(costs, dtype=float)
    costs = costs[(costs < reference).all(axis=1)] if len(costs) else costs
    if len(costs) == 0:
        return 0.0
    if costs.shape[1] == 1:
        return float(reference[0] - costs[:, 0].min())
    order = np.argsort(costs[:, 0], kind="stable")
    costs = costs[order]
    volume = 0.0
    for index in range(len(costs)):
        upper = costs[index + 1, 0] if index + 1 < len(costs) else reference[0]
        if upper > costs[index, 0]:
            volume += (upper - costs[index, 0]) * hypervolume(costs[: index + 1, 1:], reference[1:])
    return volume


def contribution_order(values: np.ndarray, maximize: Sequence[bool]) -> list[int]:
    """An order of points of one front, each next point the one that adds the most hypervolume to those already
    taken (in objectives scaled to [0, 1], reference point 1.1 beyond the worst), as SMS-EMOA selects: the first
    is the best-balanced trade-off, then the points that widen the front most. Ties go to the earlier row."""
    values = np.asarray(values, dtype=float).reshape(len(values), len(maximize))
    if len(values) == 0:
        return []
    costs = values * np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    span = costs.max(axis=0) - costs.min(axis=0)
    scaled = (costs - costs.min(axis=0)) / np.where(span > 0, span, 1.0)
    reference = np.full(scaled.shape[1], 1.1)
    order: list[int] = []
    while len(order) < len(values):
        base = hypervolume(scaled[order], reference)
        gains = [-1.0 if i in order else hypervolume(scaled[order + [i]], reference) - base
                 for i in range(len(values))]
        order.append(int(np.argmax(gains)))
    return order


def promotion_order(values: np.ndarray, maximize: Sequence[bool]) -> list[int]:
    """Rows of ``values`` best first: by non-dominated sorting, each front in :func:`contribution_order`."""
    ranks = nondominated_fronts(values, maximize)
    order: list[int] = []
    for rank in sorted(set(ranks)):
        members = [i for i, r in enumerate(ranks) if r == rank]
        order += [members[i] for i in contribution_order(np.asarray(values, dtype=float)[members], maximize)]
    return order


def rung_values(record: StageRecord, epochs: int, objectives: Sequence[Objective]) -> list[float]:
    """A stage's objective values at a rung: its Dice there, the other metrics as recorded (profiled memory and
    FLOPs are known before training). NaN where a value is missing."""
    values = []
    for objective in objectives:
        if objective.metric == "mean_dice":
            value = record.dice_curve.get(str(epochs))
        else:
            value = objective.value(record)
        values.append(math.nan if value is None else float(value))
    return values


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two paired samples (NaN with fewer than two pairs or a constant sample)."""
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else math.nan


@dataclass(frozen=True)
class RankAgreement:
    """Kendall's tau between the Dice ranks of the stages scored at both of two rungs."""

    low: int
    high: int
    stages: int
    tau: float

    def describe(self) -> str:
        tau = "n/a" if math.isnan(self.tau) else f"{self.tau:+.2f}"
        return f"{self.low} -> {self.high} epochs: tau {tau} over {self.stages} stages"


def scored_rungs(records: Sequence[StageRecord]) -> list[int]:
    """Every epoch count at which some stage was scored, ascending."""
    return sorted({int(e) for r in records for e in r.dice_curve})


def rank_agreement(records: Sequence[StageRecord]) -> list[RankAgreement]:
    """Agreement of every scored rung with every higher one, over the stages scored at both."""
    rungs = scored_rungs(records)
    out = []
    for low, high in ((a, b) for i, a in enumerate(rungs) for b in rungs[i + 1:]):
        pairs = [(r.dice_curve[str(low)], r.dice_curve[str(high)]) for r in records
                 if str(low) in r.dice_curve and str(high) in r.dice_curve]
        if len(pairs) >= 2:
            out.append(RankAgreement(low, high, len(pairs), kendall_tau(*zip(*pairs))))
    return out


@dataclass(frozen=True)
class Signal:
    """Whether the Dice of a set of stages tells them apart: ``False`` with the reason when all are near zero
    or their range is below the standard error of a stage's Dice over the validation cases."""

    carries_signal: bool
    reason: str = ""

    def warning(self, where: str) -> str:
        return (f"{where}: no signal ({self.reason}); the ranking is noise. Raise training.epochs (or "
                "search.min_epochs), or validate on more cases, before trusting it.")


def dice_signal(records: Sequence[StageRecord], epochs: int | None = None) -> Signal:
    """Whether the stages' Dice (at the rung ``epochs``, else their last score) can tell them apart."""
    dice, errors = [], []
    for record in records:
        value = record.dice_curve.get(str(epochs)) if epochs is not None else record.mean_dice
        if value is None:
            continue
        dice.append(float(value))
        cases = [c for c in record.case_dice if not math.isnan(c)]
        if len(cases) >= 2:
            errors.append(float(np.std(cases, ddof=1) / math.sqrt(len(cases))))
    if not dice:
        return Signal(False, "no stage was scored")
    if max(dice) < NO_SIGNAL_DICE:
        return Signal(False, f"every Dice is below {NO_SIGNAL_DICE:g}")
    noise = float(np.median(errors)) if errors else 0.0
    if len(dice) >= 2 and max(dice) - min(dice) < noise:
        return Signal(False, f"Dice range {max(dice) - min(dice):.3f} is below the spread between validation "
                             f"cases (standard error {noise:.3f})")
    return Signal(True)


def signal_warnings(records: Sequence[StageRecord]) -> list[str]:
    """A warning for each rung (and for the completed stages) whose Dice cannot tell its stages apart."""
    ranked = [r for r in records if not r.is_control]
    warnings = []
    for epochs in scored_rungs(ranked):
        scored = [r for r in ranked if str(epochs) in r.dice_curve]
        signal = dice_signal(scored, epochs)
        if len(scored) >= 2 and not signal.carries_signal:
            warnings.append(signal.warning(f"rung {epochs} epochs ({len(scored)} stages)"))
    valid = [r for r in records if r.is_valid]
    signal = dice_signal(valid)
    if valid and not signal.carries_signal:
        warnings.append(signal.warning(f"the {len(valid)} completed stages"))
    return warnings


@dataclass(frozen=True)
class UpkernStep:
    """An UpKern step's gain over its parent and over its continuation control, and what each cost."""

    stage_id: str
    parent: str
    control: str
    gain_over_parent: float
    gain_over_control: float | None
    step_tflops: float | None
    control_tflops: float | None

    @property
    def continuing_pays_more(self) -> bool:
        """Whether the control gained more Dice per TFLOP over the parent than the UpKern step did."""
        if self.gain_over_control is None or not self.step_tflops or not self.control_tflops:
            return False
        control_gain = self.gain_over_parent - self.gain_over_control
        return control_gain / self.control_tflops > self.gain_over_parent / self.step_tflops

    def describe(self) -> str:
        text = f"{self.stage_id}: {self.gain_over_parent:+.4f} Dice over its parent {self.parent}"
        if self.gain_over_control is None:
            return text + " (no continuation control)"
        verdict = ("continuing the parent paid more per TFLOP than the larger kernel" if self.continuing_pays_more
                   else "the larger kernel paid more per TFLOP than continuing")
        return text + f", {self.gain_over_control:+.4f} over the continuation {self.control}: {verdict}"


def upkern_steps(records: Sequence[StageRecord]) -> list[UpkernStep]:
    """Every UpKern step trained to the full budget whose parent was, with its control where it has one."""
    by_id = {r.stage_id: r for r in records}
    steps = []
    for record in records:
        parent = by_id.get(record.parent_stage)
        if record.init != "upkern" or not record.is_valid or parent is None or not parent.is_valid:
            continue
        control = by_id.get(parent.stage_id + CONTROL_SUFFIX)
        measured = control is not None and control.is_valid
        steps.append(UpkernStep(
            record.stage_id, parent.stage_id, control.stage_id if control is not None else "",
            record.mean_dice - parent.mean_dice,
            record.mean_dice - control.mean_dice if measured else None,
            record.train_tflops, control.train_tflops if measured else None,
        ))
    return steps


def findings(records: Sequence[StageRecord]) -> list[str]:
    """What ``scalekit study show`` and the report say about the search: rank agreement between rungs, each
    UpKern step's gains, and the signal warnings."""
    lines = [f"rank agreement (Kendall's tau) {a.describe()}" for a in rank_agreement(records)]
    lines += [step.describe() for step in upkern_steps(records)]
    return lines + signal_warnings(records)
