"""What the colours, markers, lines and units of the report's figures mean, shared by every figure and by
the page's key, and the room a legend takes. Plain values; no plotting library.

One meaning per visual channel: colour is the family, the marker shape is the kernel size (a hexagram: a
network of another kind, a ResEnc baseline), a thick
translucent black step line beneath everything is the Pareto front, coloured arrows are UpKern steps and grey
dotted lines continuation controls (:data:`LINE_STYLES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scalekit.report.geometry import Style, text_size

FAMILY_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
                  "#bcbd22", "#a6761d")
"""No grey: grey is the key's colour and that of the continuation lines."""
KERNEL_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "pentagon", "star")
KEY_COLOUR = "#555555"
BUDGET_COLOUR = "firebrick"
ANSWER_COLOUR = "#c99700"
LABELS = {
    "mean_dice": "mean Dice",
    "mean_nsd": "mean surface Dice (NSD)",
    "peak_memory_gb": "peak GPU memory (GiB)",
    "gflops_train": "training GFLOPs per step",
    "params": "parameters",
}
SHORT = {"mean_dice": "ΔDice", "mean_nsd": "ΔNSD"}
BOUNDED = {"mean_dice", "mean_nsd"}
"""Metrics in [0, 1]: their axes never pass 1."""
UNITS = {"peak_memory_gb": "GiB", "gflops_train": "GFLOPs"}
MIB_BELOW = 0.1
"""GiB: a memory axis (or change of memory) whose values all lie below this is drawn in MiB (1/1024 GiB)."""


@dataclass(frozen=True)
class LineStyle:
    """How one kind of line is drawn: ``colour`` (empty: the family's), width in pixels, plotly dash."""

    colour: str
    width: float
    dash: str


LINE_STYLES = {
    "front": LineStyle("rgba(0,0,0,0.45)", 5.0, "solid"),
    "upkern": LineStyle("", 1.5, "solid"),
    "continue": LineStyle(KEY_COLOUR, 1.5, "dot"),
}
"""The Pareto front, UpKern arrows and continuation controls: no two alike in colour, width and dash."""


KIND_SYMBOL = "hexagram"
"""The marker of a network kind other than MedNeXt (a ResEnc baseline), in every figure."""


def kernel_symbol(kernel: int) -> str:
    """The marker of a kernel size, the same in every figure: k3 circle, k5 diamond, k7 square, then on."""
    return KERNEL_SYMBOLS[max(kernel - 3, 0) // 2 % len(KERNEL_SYMBOLS)]


def memory_unit(gib: Sequence[float]) -> tuple[str, float]:
    """The unit of a memory axis (or of a change of memory) and the factor from GiB to it."""
    return ("MiB", 1024.0) if gib and max(abs(v) for v in gib) < MIB_BELOW else ("GiB", 1.0)


def memory_title(methods: set[str], unit: str = "GiB") -> str:
    """The memory axis title, saying whether the values were measured, predicted or both."""
    known = sorted(m for m in methods if m)
    prefix = "/".join(sorted(known, key=lambda m: m != "predicted")) + " " if known else ""
    return prefix + LABELS["peak_memory_gb"].replace("GiB", unit)


def family_colours(family_ids: Sequence[str]) -> dict[str, str]:
    """A colour per family, in the order of the family ids (the same in every figure of a report)."""
    unique = sorted(set(family_ids))
    return {fid: FAMILY_COLOURS[i % len(FAMILY_COLOURS)] for i, fid in enumerate(unique)}


def legend_rows(entries: Sequence[str], width: float, font_px: float) -> int:
    """Rows a horizontal legend of ``entries`` needs within ``width`` pixels (greedy, as plotly wraps)."""
    rows, used = 1, 0.0
    for entry in entries:
        need = 40 + text_size(entry, font_px)[0]
        if used and used + need > width:
            rows, used = rows + 1, 0.0
        used += need
    return rows


def legend_margins(style: Style, legend: Sequence[str]) -> tuple[float, float, float, float]:
    """Margins (left, right, top, bottom; pixels) with room for the tick labels (up to six characters on the
    y axis), the axis titles, a horizontal legend of ``legend`` above the plot (none when empty) and, if
    shown, the title."""
    f = style.font_px
    left = 6.5 * 0.62 * f + 1.3 * f + 14
    bottom = 2.6 * f + 16
    right = 1.6 * f
    rows = legend_rows(legend, style.width_px - left, f) * 1.6 * f if legend else 0.0
    top = rows + 10 + (2.0 * f if style.show_title else 0)
    return left, right, top, bottom


