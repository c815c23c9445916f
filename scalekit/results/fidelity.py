"""What short training says about long training: stages compared at a rung within the noise, whether a rung's
Dice can tell its stages apart, and whether the rankings of two rungs agree.

Successive halving promotes the best stages of a rung (a number of epochs); it only helps when the low rungs
rank networks the way the full budget does, and only when their Dice carries signal at all. A stage's Dice at a
rung is a mean over the validation cases, so two stages are compared by the difference of their means and its
standard error over those cases (:func:`difference`): closer than :data:`TIE_SE` standard errors is a tie.
Plain numpy over the results contract, shared by the study engine, the terminal view and the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scalekit.records import CONTROL_SUFFIX, StageRecord

NO_SIGNAL_DICE = 0.01
"""Below this mean Dice every stage of a rung counts as having learnt nothing."""

TIE_SE = 1.0
"""A difference of mean Dice within this many standard errors of the difference is a tie."""


@dataclass(frozen=True)
class Contender:
    """A stage scored at a rung: its mean Dice there, each validation case's Dice (for the noise), its
    predicted peak memory, and whether it waits at the rung (else it went on already)."""

    stage_id: str
    dice: float
    cases: tuple[float, ...] = ()
    memory_gb: float | None = None
    waiting: bool = True
    label: str = ""
    """How messages name the stage (default: its id)."""

    @property
    def name(self) -> str:
        return self.label or self.stage_id

    @property
    def standard_error(self) -> float:
        finite = [c for c in self.cases if math.isfinite(c)]
        return float(np.std(finite, ddof=1) / math.sqrt(len(finite))) if len(finite) >= 2 else 0.0


@dataclass(frozen=True)
class Difference:
    """``a`` minus ``b`` in mean Dice, with the standard error of that difference."""

    value: float
    error: float
    paired: bool

    @property
    def significant(self) -> bool:
        return self.value > TIE_SE * self.error

    def describe(self) -> str:
        return f"{self.value:+.3f} ± {self.error:.3f}{'' if self.paired else ' (unpaired)'}"


def difference(a: Contender, b: Contender) -> Difference:
    """``a``'s mean Dice minus ``b``'s: paired over the validation cases when both have the same number of
    finite per-case values (the same cases, in the same order), else from the two standard errors."""
    pairs = [(x, y) for x, y in zip(a.cases, b.cases) if math.isfinite(x) and math.isfinite(y)]
    if len(a.cases) == len(b.cases) and len(pairs) >= 2:
        gaps = np.array([x - y for x, y in pairs])
        return Difference(a.dice - b.dice, float(np.std(gaps, ddof=1) / math.sqrt(len(gaps))), True)
    return Difference(a.dice - b.dice, math.hypot(a.standard_error, b.standard_error), False)


def beats(a: Contender, b: Contender) -> bool:
    """Whether ``a``'s Dice is ahead of ``b``'s by more than the noise."""
    return difference(a, b).significant


def no_signal(contenders: Sequence[Contender]) -> str:
    """Why the stages of a rung cannot be told apart (empty when they can)."""
    if len(contenders) < 2:
        return ""
    if max(c.dice for c in contenders) < NO_SIGNAL_DICE:
        return f"every Dice is below {NO_SIGNAL_DICE:g}"
    if not any(beats(a, b) for a in contenders for b in contenders if a is not b):
        return f"no Dice is ahead of another by more than {TIE_SE:g} standard error of the difference"
    return ""


LEVEL = 0.95
"""The confidence level of every interval the tool states."""
RESAMPLES = 4000
"""Bootstrap resamples of the validation cases."""


def bootstrap_interval(values: Sequence[float], seed: int = 0) -> tuple[float, float] | None:
    """The :data:`LEVEL` percentile-bootstrap interval of the mean of ``values`` (the validation cases' Dice, or
    paired differences of two stages' Dice over the same cases), resampling cases with a seeded generator, so
    the same cases always give the same interval; None with fewer than two finite values."""
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    if len(finite) < 2:
        return None
    draws = np.random.default_rng(seed).integers(0, len(finite), size=(RESAMPLES, len(finite)))
    means = finite[draws].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def paired_interval(a: Sequence[float], b: Sequence[float], seed: int = 0) -> tuple[float, float] | None:
    """The interval of the mean of ``a - b`` case by case (the same validation cases in the same order)."""
    if len(a) != len(b):
        return None
    return bootstrap_interval([x - y for x, y in zip(a, b)], seed)


def interval_digits(interval: tuple[float, float] | None, least: int = 2, most: int = 4) -> int:
    """Decimals an interval supports: two significant digits of its half-width, within [least, most]."""
    if interval is None or interval[1] <= interval[0]:
        return most
    half = (interval[1] - interval[0]) / 2
    return max(least, min(most, 1 - math.floor(math.log10(half))))


def with_interval(value: float, interval: tuple[float, float] | None) -> str:
    """``0.652 [0.612, 0.692]`` with the decimals the interval supports; the value alone (4 decimals) without."""
    if interval is None:
        return f"{value:.4f}"
    d = interval_digits(interval)
    return f"{value:.{d}f} [{interval[0]:.{d}f}, {interval[1]:.{d}f}]"


def dice_interval(record: StageRecord) -> tuple[float, float] | None:
    """A stage's mean-Dice interval over its validation cases (last scoring)."""
    return bootstrap_interval(record.case_dice)


def contender_at(record: StageRecord, epochs: int) -> Contender | None:
    """A stage as scored at the rung ``epochs`` (None when it was not): its Dice there and each case's Dice
    there (from ``case_curve``; its last ``case_dice`` when that was this rung's, for tables written before
    per-rung cases were kept)."""
    key = str(epochs)
    if key not in record.dice_curve:
        return None
    cases = record.case_curve.get(key) or (record.case_dice if record.epochs == epochs else [])
    return Contender(record.stage_id, float(record.dice_curve[key]), tuple(float(c) for c in cases),
                     record.peak_memory_gb, record.status == "paused" and record.epochs == epochs, record.name)


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
    """A warning for each rung of each kernel (and for the completed stages) whose Dice cannot tell its stages
    apart (:func:`no_signal`, as promotion decides: such a rung promoted every stage)."""
    ranked = [r for r in records if not r.is_control]
    warnings = []
    for kernel in sorted({r.kernel_size for r in ranked}):
        stages = [r for r in ranked if r.kernel_size == kernel]
        for epochs in scored_rungs(stages):
            scored = [c for c in (contender_at(r, epochs) for r in stages) if c is not None]
            why = no_signal(scored)
            if why:
                warnings.append(f"rung {epochs} epochs, the {len(scored)} k{kernel} stages: no signal ({why}); "
                                "promotion decided nothing there and every stage went on. The rung is too "
                                "short: raise search.min_epochs (or training.epochs).")
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
    parent_interval: tuple[float, float] | None = None
    control_interval: tuple[float, float] | None = None
    """The :data:`LEVEL` intervals of the two gains, paired over the validation cases (None where the stages
    were not scored on the same cases)."""

    @property
    def continuing_pays_more(self) -> bool:
        """Whether the control gained more Dice per TFLOP over the parent than the UpKern step did."""
        if self.gain_over_control is None or not self.step_tflops or not self.control_tflops:
            return False
        control_gain = self.gain_over_parent - self.gain_over_control
        return control_gain / self.control_tflops > self.gain_over_parent / self.step_tflops

    def describe(self) -> str:
        text = (f"{self.stage_id}: {self.gain_over_parent:+.4f} Dice{noise(self.parent_interval)} over its parent "
                f"{self.parent}")
        if self.gain_over_control is None:
            return text + " (no continuation control)"
        if holds_zero(self.control_interval):
            cheaper = ("continuing the parent" if (self.control_tflops or 0.0) < (self.step_tflops or 0.0)
                       else "the larger kernel")
            verdict = f"within noise of each other in Dice, so the cheaper, {cheaper}, paid more per TFLOP"
        else:
            verdict = ("continuing the parent paid more per TFLOP than the larger kernel"
                       if self.continuing_pays_more else "the larger kernel paid more per TFLOP than continuing")
        return (f"{text}, {self.gain_over_control:+.4f}{noise(self.control_interval)} over the continuation "
                f"{self.control}: {verdict}")


def holds_zero(interval: tuple[float, float] | None) -> bool:
    """Whether a difference's interval holds zero: the difference is within noise (False when unknown)."""
    return interval is not None and interval[0] <= 0.0 <= interval[1]


def noise(interval: tuple[float, float] | None) -> str:
    """A paired difference's interval as text, `` [lo, hi]``, with ``, within noise`` when it holds zero (and
    nothing when it is unknown)."""
    if interval is None:
        return ""
    d = interval_digits(interval)
    return f" [{interval[0]:+.{d}f}, {interval[1]:+.{d}f}]" + (", within noise" if holds_zero(interval) else "")


def upkern_steps(records: Sequence[StageRecord]) -> list[UpkernStep]:
    """Every UpKern step trained to the full budget whose parent was, with its control where it has one."""
    by_id = {r.stage_id: r for r in records}
    steps = []
    for record in records:
        parent = by_id.get(record.parent_stage)
        dice, parent_dice = _valid_dice(record), _valid_dice(parent)
        if record.init != "upkern" or dice is None or parent is None or parent_dice is None:
            continue
        control = by_id.get(parent.stage_id + CONTROL_SUFFIX)
        control_dice = _valid_dice(control)
        measured = control if control_dice is not None else None
        steps.append(UpkernStep(
            record.stage_id, parent.stage_id, control.stage_id if control is not None else "",
            dice - parent_dice,
            dice - control_dice if control_dice is not None else None,
            record.train_tflops, measured.train_tflops if measured is not None else None,
            paired_interval(record.case_dice, parent.case_dice),
            paired_interval(record.case_dice, measured.case_dice) if measured is not None else None,
        ))
    return steps


def _valid_dice(record: StageRecord | None) -> float | None:
    """A stage's mean Dice when it is trained and measured (:attr:`StageRecord.is_valid`), else None."""
    return record.mean_dice if record is not None and record.is_valid else None


def findings(records: Sequence[StageRecord]) -> list[str]:
    """What ``scalekit study show`` and the report say about the search: rank agreement between rungs, each
    UpKern step's gains, and the signal warnings."""
    lines = [f"rank agreement (Kendall's tau) {a.describe()}" for a in rank_agreement(records)]
    lines += [step.describe() for step in upkern_steps(records)]
    return lines + signal_warnings(records)
