"""The search timeline as plain records: each stage as a bar over the epochs trained since scratch, the rungs
it was scored at, how it ended, and the compute the search spent against what the full chain would have spent.

A stage's bar runs from where its parent left off (``cum_epochs - epochs``: an UpKern stage or a continuation
control starts from its parent's weights) to ``cum_epochs``; where ``cum_epochs`` is not recorded, from its
parent's end (0 for a scratch stage) for its own ``epochs``. Its ticks are the rungs of ``dice_curve`` (keys:
its own epochs), placed at ``start + rung``. The full chain trains every planned stage (all but the
infeasible ones, which never train) for the study's full budget (``training.epochs``); a stage's TFLOPs per
epoch is ``train_tflops / epochs`` where it trained, else its profiled training GFLOPs per step times the
study's iterations per epoch. No plotting here: :mod:`scalekit.report.drawing` draws :class:`Timeline`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scalekit.report.geometry import Style, text_size
from scalekit.records import StageRecord

END_KINDS = ("completed", "halted", "running", "failed", "infeasible", "not trained")
"""How a bar ends: trained to the full budget; halted at a rung (or waiting there to be promoted); still
training; failed; never trained because it breaks a constraint; never trained (pending, or its chain stopped)."""


@dataclass(frozen=True)
class TimelineBar:
    """One stage on the timeline (epochs counted since scratch along its chain)."""

    stage_id: str
    name: str
    family_id: str
    parent_id: str
    start: int
    end: int
    rungs: tuple[int, ...]
    """Where on the epoch axis it was scored (``start`` + each rung of its ``dice_curve``)."""
    end_kind: str
    """One of :data:`END_KINDS`."""
    epochs: int
    """Epochs it trained itself."""

    @property
    def note(self) -> str:
        """The text beside its end: ``@2 ep`` for a halted stage, the status for one that did not complete."""
        if self.end_kind == "halted":
            return f"@{self.epochs} ep"
        return "" if self.end_kind == "completed" else self.end_kind


def _tflops(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


@dataclass(frozen=True)
class ChainCompute:
    """Compute the search spent against the full chain (every planned stage trained to the full budget)."""

    spent_epochs: int
    spent_tflops: float | None
    """Sum of the recorded ``train_tflops`` (None when no stage recorded any)."""
    planned: int
    budget_epochs: int
    full_epochs: int
    full_tflops: float | None
    unknown: int
    """Planned stages whose TFLOPs per epoch is unknown: left out of ``full_tflops``."""

    def share(self) -> float | None:
        """Spent over the full chain: of its TFLOPs where both are known, else of its epochs."""
        if self.spent_tflops is not None and self.full_tflops and not self.unknown:
            return self.spent_tflops / self.full_tflops
        return self.spent_epochs / self.full_epochs if self.full_epochs else None

    def lines(self) -> list[str]:
        """Short lines (they fit a one-column figure): what was spent, what the full chain would spend, and
        how many stages its TFLOPs leave out."""
        spent = f"spent: {self.spent_epochs} epochs"
        full = f"full chain: {self.full_epochs} epochs"
        if self.spent_tflops is not None:
            spent += f", {_tflops(self.spent_tflops)} TFLOPs"
        if self.full_tflops is not None:
            full += f", {_tflops(self.full_tflops)} TFLOPs"
        share = self.share()
        if share is not None:
            spent += f" ({share:.0%})"
        return [spent, full] + ([f"({self.unknown} stages without a FLOPs count)"] if self.unknown else [])

    def sentence(self) -> str:
        """The same in words, for the page."""
        def amount(epochs: int, tflops: float | None) -> str:
            return f"{epochs} epochs" + ("" if tflops is None else f" ({_tflops(tflops)} training TFLOPs)")

        share = self.share()
        return (f"The search spent {amount(self.spent_epochs, self.spent_tflops)}; the full chain, every one of "
                f"the {self.planned} planned stages trained the full {self.budget_epochs} epochs, would spend "
                f"{amount(self.full_epochs, self.full_tflops)}"
                + (f" ({self.unknown} stages without a FLOPs count left out)" if self.unknown else "")
                + ("." if share is None else f": the search spent {share:.0%} of it."))


@dataclass(frozen=True)
class Timeline:
    """The bars, ordered by family, then start, then stage id; and the compute line."""

    bars: list[TimelineBar]
    compute: ChainCompute


def end_kind(record: StageRecord) -> str:
    """How ``record``'s bar ends (:data:`END_KINDS`)."""
    if record.status == "paused" or (record.status == "stopped" and record.epochs):
        return "halted"
    return {"completed": "completed", "running": "running", "failed": "failed",
            "infeasible": "infeasible"}.get(record.status, "not trained")


def _spans(records: Sequence[StageRecord]) -> dict[str, tuple[int, int]]:
    """(start, end) of every stage in epochs since scratch (a parent cycle, a broken file, starts at 0)."""
    by_id = {r.stage_id: r for r in records}
    spans: dict[str, tuple[int, int]] = {}

    def span(record: StageRecord, seen: frozenset[str]) -> tuple[int, int]:
        if record.stage_id not in spans:
            own = record.epochs or 0
            parent = by_id.get(record.parent_stage)
            if record.cum_epochs is not None:
                spans[record.stage_id] = (record.cum_epochs - own, record.cum_epochs)
            else:
                start = (span(parent, seen | {record.stage_id})[1]
                         if parent is not None and parent.stage_id not in seen | {record.stage_id} else 0)
                spans[record.stage_id] = (start, start + own)
        return spans[record.stage_id]

    for record in records:
        span(record, frozenset())
    return spans


def _rungs(record: StageRecord, start: int, end: int) -> tuple[int, ...]:
    rungs = {start + int(key) for key in record.dice_curve if key.isdigit()}
    if not rungs and record.mean_dice is not None and end > start:
        rungs = {end}  # scored once, at its end, with no curve recorded
    return tuple(sorted(rungs))


def _per_epoch(record: StageRecord, iterations: int | None) -> float | None:
    if record.train_tflops is not None and record.epochs:
        return record.train_tflops / record.epochs
    if record.gflops_train is not None and iterations:
        return record.gflops_train * iterations / 1000
    return None


def chain_compute(records: Sequence[StageRecord], budget_epochs: int, iterations: int | None) -> ChainCompute:
    """What ``records`` spent against every planned stage trained ``budget_epochs`` (``iterations`` per epoch:
    the study's, for the TFLOPs of stages that did not train)."""
    planned = [r for r in records if r.status != "infeasible"]
    recorded = [r.train_tflops for r in records if r.train_tflops is not None]
    per_epoch = [_per_epoch(r, iterations) for r in planned]
    known = [v for v in per_epoch if v is not None]
    return ChainCompute(
        sum(r.epochs or 0 for r in records), sum(recorded) if recorded else None, len(planned), budget_epochs,
        len(planned) * budget_epochs, sum(v * budget_epochs for v in known) if known else None,
        len(per_epoch) - len(known),
    )


def build_timeline(records: Sequence[StageRecord], budget_epochs: int, iterations: int | None = None) -> Timeline:
    """The timeline of ``records`` (any order) for a study whose full budget is ``budget_epochs`` per stage."""
    spans = _spans(records)
    bars = [TimelineBar(r.stage_id, r.name, r.family_id, r.parent_stage, *spans[r.stage_id],
                        _rungs(r, *spans[r.stage_id]), end_kind(r), r.epochs or 0) for r in records]
    label = {r.family_id: r.family_label or r.family_id for r in records}
    bars.sort(key=lambda b: (label[b.family_id], b.family_id, b.start, b.stage_id))
    return Timeline(bars, chain_compute(records, budget_epochs, iterations))


@dataclass(frozen=True)
class TimelineGeometry:
    """Size of the timeline figure: one row per bar, margins for the names, the notes and the compute lines."""

    width_px: int
    height_px: int
    margins: tuple[float, float, float, float]
    """Left, right, top, bottom, in pixels."""
    x_range: tuple[float, float]
    budget_marks: tuple[int, ...]
    """Multiples of the full budget per stage up to the longest chain: where a fully trained chain's stages end."""


def timeline_geometry(timeline: Timeline, style: Style) -> TimelineGeometry:
    """Rows of 1.5 fonts, the names' width on the left, on the right what the notes near the axis's end need
    beyond it, the compute lines (and the title, where shown) on top."""
    f = style.font_px
    left = max((text_size(b.name, f)[0] for b in timeline.bars), default=0.0) + 12
    budget = timeline.compute.budget_epochs
    hi = max([b.end for b in timeline.bars] + [budget])
    lo, top_x = -0.03 * hi, hi * 1.03
    per_epoch = (style.width_px - left - 12) / (top_x - lo)
    right = max([12.0] + [text_size(b.note, f)[0] + style.marker_px + 4 - (top_x - b.end) * per_epoch
                          for b in timeline.bars if b.note])
    top = len(timeline.compute.lines()) * 1.35 * f + 12 + (2.0 * f if style.show_title else 0)
    bottom = 2.6 * f + 16
    height = max(style.height_px, round(top + bottom + 1.5 * f * max(len(timeline.bars), 1)))
    marks = tuple(budget * i for i in range(1, hi // budget + 1)) if budget else ()
    return TimelineGeometry(style.width_px, height, (left, right, top, bottom), (lo, top_x), marks)
