"""Per-class scores of a study's stages as plain records: the stages × classes matrix behind the report's
per-class table and heatmap.

The classes are named after the dataset's labels (``label_names`` of the study's prepared dataset, background
first, as ``prepared.json`` records them) when their number matches the scores; otherwise ``class 1…N``. A
missing score (a class absent from every validation case is NaN) stays a gap. Stages are ordered by mean
score, best first, then by id; a stage scored at a rung only is marked with that rung (it is not trained to
the full budget and must not be read as if it were).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scalekit.report.geometry import Style, text_size
from scalekit.records import StageRecord
from scalekit.results.tables import Table

METRICS = {"dice": "Dice", "nsd": "NSD"}


@dataclass(frozen=True)
class ClassRow:
    """One stage's score per class (None: no score)."""

    stage_id: str
    name: str
    mean: float | None
    values: list[float | None]
    rung: int | None = None
    """Epochs of the rung it was scored at, for a stage halted there (or waiting to be promoted)."""
    answer: bool = False

    @property
    def label(self) -> str:
        """How a figure names the row: the stage's name, its rung if halted, and ``answer`` for the answer."""
        return self.name + (f" @{self.rung} ep" if self.rung else "") + (" (answer)" if self.answer else "")


@dataclass(frozen=True)
class ClassScores:
    """Stages × classes of one metric (``dice`` or ``nsd``)."""

    metric: str
    classes: list[str]
    named: bool
    """The class names come from the dataset's labels (else ``class 1…N``)."""
    rows: list[ClassRow]


def class_names(count: int, label_names: Sequence[str] | None) -> tuple[list[str], bool]:
    """The names of ``count`` foreground classes from the dataset's labels (background first), and whether
    they were found there; ``class 1…N`` when there are none or their number does not match."""
    if label_names is not None and len(label_names) == count + 1:
        return list(label_names[1:]), True
    return [f"class {i}" for i in range(1, count + 1)], False


def _value(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _halted(record: StageRecord) -> bool:
    return record.status == "paused" or (record.status == "stopped" and bool(record.epochs))


def class_scores(records: Sequence[StageRecord], label_names: Sequence[str] | None, answer_id: str | None = None,
                 metric: str = "dice") -> ClassScores:
    """Every stage with per-class scores of ``metric``, best mean first (ties by stage id)."""
    scored = [r for r in records if (r.per_class_dice if metric == "dice" else r.per_class_nsd)]
    count = max((len(r.per_class_dice if metric == "dice" else r.per_class_nsd) for r in scored), default=0)
    names, named = class_names(count, label_names)
    rows = []
    for r in scored:
        values = [_value(v) for v in (r.per_class_dice if metric == "dice" else r.per_class_nsd)]
        mean = r.mean_dice if metric == "dice" else r.mean_nsd
        rows.append(ClassRow(r.stage_id, r.name, mean, values + [None] * (count - len(values)),
                             r.epochs if _halted(r) else None, r.stage_id == answer_id))
    rows.sort(key=lambda row: (row.mean is None, -(row.mean or 0.0), row.stage_id))
    return ClassScores(metric, names, named, rows)


def class_table(scores: ClassScores) -> Table:
    """The per-class table: a row per stage, a column per class, the worst class of each row marked ``▼``."""
    label = METRICS[scores.metric]
    rows = []
    for row in scores.rows:
        present = [v for v in row.values if v is not None]
        worst = min(present) if len(present) > 1 else None
        cells = ["—" if v is None else f"{v:.3f}" + (" ▼" if v == worst else "") for v in row.values]
        rows.append([row.stage_id, row.name, f"@{row.rung} ep (halted)" if row.rung else "full budget",
                     "—" if row.mean is None else f"{row.mean:.4f}", *cells])
    source = "" if scores.named else " (the study records no label names: classes numbered as in the dataset)"
    return Table(f"Per-class {label} of each scored stage, best mean first; ▼ its worst class{source}",
                 ["stage", "name", "scored at", f"mean {label}", *scores.classes], rows)


@dataclass(frozen=True)
class HeatmapGeometry:
    """Size of the per-class heatmap: a row per stage, a column per class, names on the left."""

    width_px: int
    height_px: int
    margins: tuple[float, float, float, float]
    """Left, right, top, bottom, in pixels."""
    turned: bool = False
    """The class names are written upwards (they do not fit their columns across)."""


def heatmap_geometry(scores: ClassScores, style: Style) -> HeatmapGeometry:
    """Rows of 1.6 fonts; columns wide enough for a score, and for the class names written across while
    that keeps the figure within twice the style's width (the figure grows wider than the style where they
    need it); the longest row label's width on the left; the class names below (turned when they do not fit
    their column)."""
    f = style.font_px
    left = max((text_size(r.label, f)[0] for r in scores.rows), default=0.0) + 10
    right = 3.5 * f + 30  # the colour bar
    widest = max((text_size(c, f)[0] for c in scores.classes), default=0.0)
    across = max(3 * f, widest + 8)
    need = across if left + right + across * len(scores.classes) <= 2 * style.width_px else 3 * f
    width = max(style.width_px, round(left + right + need * len(scores.classes)))
    column = (width - left - right) / max(len(scores.classes), 1)
    turned = widest > column
    bottom = (widest + 10 if turned else 1.6 * f + 10)
    top = 10 + (2.0 * f if style.show_title else 0)
    height = max(round(style.height_px * 0.6), round(top + bottom + 1.6 * f * max(len(scores.rows), 1)))
    return HeatmapGeometry(width, height, (left, right, top, bottom), turned)
