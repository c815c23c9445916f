"""The stage tables of a study as plain cells, shared by the HTML report and ``scalekit study show``, and the
choice of the columns that fit a terminal.

Free of plotly, so the terminal view starts fast and works where the report's dependencies are missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from scalekit.results.fidelity import dice_interval, interval_digits
from scalekit.records import StageRecord

NOT_TRAINED = ("infeasible", "failed", "stopped")
COLUMN_GAP = 2
"""Characters between two columns of a terminal table (the renderer must draw them so)."""
MAX_DECIMALS = 6


def fmt(value: float | int | None, digits: int = 4) -> str:
    """A table cell: thousands separators, ``digits`` decimals for floats, an em dash for a missing value."""
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.{digits}f}"


def decimals(values: Iterable[float | None], minimum: int = 2, significant: int = 3) -> int:
    """Decimals to print ``values`` with: at least ``minimum``, enough for ``significant`` digits of the smallest
    non-zero value, and more until distinct values print distinct (at most :data:`MAX_DECIMALS`)."""
    present = {float(v) for v in values if v is not None}
    positive = [abs(v) for v in present if v]
    digits = max(minimum, significant - 1 - math.floor(math.log10(min(positive)))) if positive else minimum
    while digits < MAX_DECIMALS and len({f"{v:.{digits}f}" for v in present}) < len(present):
        digits += 1
    return min(digits, MAX_DECIMALS)


@dataclass(frozen=True)
class Table:
    """A titled table of preformatted cells.

    For a terminal: ``compact`` names the columns of the default view, most important first (kept first when
    the width runs out); ``short`` gives some of them a shorter header there; ``text_column``, a column of free
    text, is printed under the compact view as ``<first cell>: <text>`` lines instead.
    """

    title: str
    headers: list[str]
    rows: list[list[str]]
    compact: tuple[str, ...] = ()
    short: dict[str, str] = field(default_factory=dict)
    text_column: str = ""


@dataclass(frozen=True)
class TableView:
    """The columns of a table that a terminal shows, and the lines printed under them."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str]
    """``<first cell>: <text>`` for each row's free text, when its column is not shown."""
    hidden: list[str]
    """Headers of the columns left out (``--wide`` shows them)."""

    @property
    def width(self) -> int:
        return table_width(self.headers, self.rows)


def table_width(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    """Characters a table takes with every cell whole and :data:`COLUMN_GAP` between columns."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    return sum(widths) + COLUMN_GAP * max(len(widths) - 1, 0)


def fit_table(table: Table, width: int, wide: bool = False) -> TableView:
    """The view of ``table`` for a terminal ``width`` characters wide: with ``wide`` every column; otherwise the
    ``compact`` columns, in priority order, as many as fit whole (the first always), in the table's order, and
    the free text as lines under them. No cell is ever shortened."""
    if wide or not table.compact:
        return TableView(table.title, table.headers, table.rows, [], [])
    chosen: list[int] = []
    for header in table.compact:
        trial = sorted(chosen + [table.headers.index(header)])
        cells = [[row[i] for i in trial] for row in table.rows]
        if not chosen or table_width([table.short.get(table.headers[i], table.headers[i]) for i in trial],
                                     cells) <= width:
            chosen = trial
    notes = []
    if table.text_column:
        text = table.headers.index(table.text_column)
        notes = [f"{row[0]}: {row[text]}" for row in table.rows if row[text] and row[text] != "—"]
    hidden = [h for i, h in enumerate(table.headers) if i not in chosen and h != table.text_column]
    return TableView(
        table.title, [table.short.get(table.headers[i], table.headers[i]) for i in chosen],
        [[row[i] for i in chosen] for row in table.rows], notes, hidden,
    )


def _interval(record: StageRecord) -> str:
    """``[0.61, 0.69]`` over the validation cases, with the decimals the interval supports."""
    interval = dice_interval(record)
    if interval is None:
        return "—"
    d = interval_digits(interval)
    return f"[{interval[0]:.{d}f}, {interval[1]:.{d}f}]"


def _trained(record: StageRecord) -> bool:
    """Trained, training or waiting to: everything but stages that never trained (a stage halted at a rung
    trained and was scored there)."""
    return record.status not in NOT_TRAINED or bool(record.epochs)


TRAINED_HEADERS = ["stage", "family", "kernel", "init", "parent", "status", "mean Dice", "95% interval", "NSD",
                   "peak GiB", "GFLOPs train", "params", "epochs", "TFLOPs since scratch", "study front", "note"]
TRAINED_COMPACT = ("stage", "mean Dice", "peak GiB", "status", "study front", "kernel", "family", "init", "NSD",
                   "95% interval", "GFLOPs train", "epochs")
SHORT = {"kernel": "k", "mean Dice": "Dice", "GFLOPs train": "GFLOPs", "study front": "front"}


def stage_tables(records: Sequence[StageRecord], front_ids: frozenset[str]) -> list[Table]:
    """The stage tables of the report and of ``scalekit study show``: trained or in progress, then not trained.

    Memory and GFLOPs get as many decimals as tell the stages apart (:func:`decimals`)."""
    shown = [r for r in records if _trained(r)]
    memory = decimals(r.peak_memory_gb for r in shown)
    gflops = decimals((r.gflops_train for r in shown), minimum=1)
    trained = [
        [r.stage_id, r.family_label or r.family_id, f"k{r.kernel_size}", r.init, r.parent_stage, r.status,
         fmt(r.mean_dice), _interval(r), fmt(r.mean_nsd), fmt(r.peak_memory_gb, memory), fmt(r.gflops_train, gflops),
         fmt(r.params), fmt(r.epochs), fmt(r.cum_train_tflops, 1), "✓" if r.stage_id in front_ids else "", r.reason]
        for r in shown
    ]
    failed = [[r.stage_id, r.family_label or r.family_id, f"k{r.kernel_size}", r.status, r.reason or "—"]
              for r in records if not _trained(r)]
    return [
        Table("All trained or scheduled stages (a stage halted at a rung keeps its Dice there)", TRAINED_HEADERS,
              trained, TRAINED_COMPACT, SHORT, "note"),
        Table("Not trained (infeasible, failed or stopped)", ["stage", "family", "kernel", "status", "reason"],
              failed, ("stage", "status", "kernel", "family"), SHORT, "reason"),
    ]
