"""The layout of each report figure as plain records: fitted axes, colours, markers, chain arrows, placed
labels and legend entries. The report draws these with plotly and nothing else; tests read them.

One meaning per visual channel: colour is the family (named by a label at its chain's last stage, or in the
legend where no label fits), the marker shape is the kernel size, arrows are chain steps (solid: UpKern,
labelled with the gain of the y value; dotted: a continuation control), hollow markers are stages scored at a
rung only (halted, or waiting to be promoted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scalekit.plotlayout import (
    GAPS, Axis, Box, LabelRequest, PlotArea, Style, beside, fit_axis, place_labels, text_size,
)

FAMILY_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
                  "#bcbd22", "#7f7f7f")
KERNEL_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "pentagon", "star")
KEY_COLOUR = "#555555"
BUDGET_COLOUR = "firebrick"
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


@dataclass(frozen=True)
class PointSpec:
    """A stage to draw: its values, family (id and name), kernel, and whether it is only scored at a rung."""

    stage_id: str
    x: float
    y: float
    family_id: str
    family: str
    kernel: int
    memory_method: str = ""
    hollow: bool = False


@dataclass(frozen=True)
class LinkSpec:
    """A chain step between two stages: ``upkern`` (with the gain of the y value) or ``continue``."""

    from_id: str
    to_id: str
    kind: str
    delta: float | None = None


@dataclass(frozen=True)
class DrawnLabel:
    """A text on the plot: ``kind`` is ``delta``, ``family`` or ``budget``; ``at`` its centre in data values,
    ``box`` its estimated extent in plot-area pixels."""

    key: str
    kind: str
    text: str
    at: tuple[float, float]
    box: Box
    colour: str
    leader: tuple[tuple[float, float], tuple[float, float]] | None = None
    """A thin line from the point the label names to the label (data values), when it sits away from it."""


@dataclass(frozen=True)
class PanelLayout:
    """Everything one scatter figure shows, in data values and plot-area pixels."""

    name: str
    style: Style
    title: str
    x_title: str
    y_title: str
    area: PlotArea
    margins: tuple[float, float, float, float]
    """Left, right, top, bottom, in pixels."""
    points: list[PointSpec]
    colours: dict[str, str]
    """Family id -> colour."""
    symbols: dict[int, str]
    """Kernel size -> marker symbol."""
    links: list[LinkSpec]
    labels: list[DrawnLabel]
    legend_families: list[str]
    """Family ids named in the legend (no label fitted on the plot); the rest are labelled on the plot."""
    left_off: list[str]
    """Keys of the labels that found no free place (their information stays in the hover)."""

    @property
    def x(self) -> Axis:
        return self.area.x

    @property
    def y(self) -> Axis:
        return self.area.y


def memory_title(methods: set[str]) -> str:
    """The memory axis title, saying whether the values were measured, predicted or both."""
    known = sorted(m for m in methods if m)
    prefix = "/".join(sorted(known, key=lambda m: m != "predicted")) + " " if known else ""
    return prefix + LABELS["peak_memory_gb"]


def family_colours(family_ids: Sequence[str]) -> dict[str, str]:
    """A colour per family, in order of first appearance (the same in every figure of a report)."""
    unique = list(dict.fromkeys(family_ids))
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
    y axis), the axis titles, a horizontal legend of ``legend`` above the plot and, if shown, the title."""
    f = style.font_px
    left = 6.5 * 0.62 * f + 1.3 * f + 14
    bottom = 2.6 * f + 16
    right = 1.6 * f
    top = legend_rows(legend, style.width_px - left, f) * 1.6 * f + 8 + (2.0 * f if style.show_title else 0)
    return left, right, top, bottom


def legend_entries(points: Sequence[PointSpec], links: Sequence[LinkSpec], y_metric: str) -> list[str]:
    """The key's entries (before family names that find no place on the plot): kernels, front, arrows."""
    entries = [f"k{k}" for k in sorted({p.kernel for p in points})] + ["Pareto front"]
    if any(link.kind == "upkern" for link in links):
        entries.append(f"UpKern step ({SHORT.get(y_metric, 'Δ')})")
    if any(link.kind == "continue" for link in links):
        entries.append("continued (control)")
    if any(p.hollow for p in points):
        entries.append("scored at a rung only")
    return entries


def _budget_request(axis: Axis, metric: str, area: PlotArea, font_px: float) -> LabelRequest | None:
    if axis.budget_mode == "none" or axis.budget is None:
        return None
    text = f"budget {axis.budget:g} {UNITS.get(metric, '')}".rstrip()
    w, h = text_size(text + " →", font_px)
    top, bottom, right = area.height_px - h / 2, h / 2, area.width_px
    if axis.budget_mode == "edge":
        text = f"{text} →" if axis.budget_side == "high" else f"← {text}"
        x = right - w / 2 if axis.budget_side == "high" else w / 2
        ys = [top, bottom] + [area.height_px * f for f in (0.5, 0.25, 0.75)]
        return LabelRequest("budget", text, tuple((x, y) for y in ys))
    line_x = area.px(axis.budget, area.y.lo)[0]
    ys = [top, bottom, area.height_px / 2]
    return LabelRequest("budget", text, tuple((line_x + s * (w / 2 + 3), y) for y in ys for s in (-1, 1)))


def _lines(area: PlotArea, points: list[PointSpec], links: list[LinkSpec], front: Sequence[str]) -> list[Box]:
    """The small boxes of every line drawn: chain arrows, the front's steps and the budget line."""
    by_id = {p.stage_id: p for p in points}
    segments = [((by_id[link.from_id].x, by_id[link.from_id].y), (by_id[link.to_id].x, by_id[link.to_id].y))
                for link in links]
    steps = [(by_id[sid].x, by_id[sid].y) for sid in front if sid in by_id]
    for (x0, y0), (x1, y1) in zip(steps, steps[1:]):  # drawn as "hv": across, then up
        segments += [((x0, y0), (x1, y0)), ((x1, y0), (x1, y1))]
    if area.x.budget_mode == "line" and area.x.budget is not None:
        segments.append(((area.x.budget, area.y.lo), (area.x.budget, area.y.hi)))
    return [b for a, z in segments for b in area.segment_boxes(a, z)]


def _labels(area: PlotArea, points: list[PointSpec], links: list[LinkSpec], front: Sequence[str], x_metric: str,
            colours: dict[str, str], style: Style, families: bool) -> tuple[list[DrawnLabel], list[str]]:
    """Place the budget label, each UpKern step's gain beside its arrow and (with ``families``) each family's
    name beside its chain's last stage, in that order of priority; each as near its anchor as it can be
    without covering a line, with a leader line when it had to move away."""
    by_id = {p.stage_id: p for p in points}
    f, radius = style.font_px, style.marker_px / 2 + 2
    markers = [Box.around(*area.px(p.x, p.y), radius, radius) for p in points]
    leader_after = radius + 0.6 * f
    requests = [r for r in [_budget_request(area.x, x_metric, area, f)] if r is not None]
    for link in links:
        if link.kind == "upkern" and link.delta is not None:
            a, b = by_id[link.from_id], by_id[link.to_id]
            text = f"{link.delta:+.3f}"
            mid, size = area.px((a.x + b.x) / 2, (a.y + b.y) / 2), text_size(text, f)
            requests.append(LabelRequest(f"delta:{link.to_id}", text,
                                         tuple(c for gap in GAPS for c in beside(mid, size, gap)), mid,
                                         leader_after))
    for fid in dict.fromkeys(p.family_id for p in points) if families else ():
        end = max((p for p in points if p.family_id == fid), key=lambda p: (p.kernel, not p.hollow, p.x))
        anchor, size = area.px(end.x, end.y), text_size(end.family, f)
        requests.append(LabelRequest(f"family:{fid}", end.family,
                                     tuple(c for gap in GAPS for c in beside(anchor, size, radius + gap)), anchor,
                                     radius + leader_after))
    placed, left_off = place_labels(requests, area.box, markers, f, soft=_lines(area, points, links, front))
    labels = []
    for label in placed:
        kind, _, ref = label.key.partition(":")
        colour = (colours[ref] if kind == "family" else colours[by_id[ref].family_id] if kind == "delta"
                  else BUDGET_COLOUR)
        leader = None if label.leader is None else (area.data(*label.leader[0]), area.data(*label.leader[1]))
        labels.append(DrawnLabel(label.key, kind, label.text, area.data(*label.box.centre), label.box, colour,
                                 leader))
    return labels, left_off


def panel_layout(name: str, title: str, x_metric: str, y_metric: str, points: Sequence[PointSpec],
                 links: Sequence[LinkSpec], budget: float | None, colours: dict[str, str],
                 style: Style, front: Sequence[str] = ()) -> PanelLayout:
    """Fit the axes to ``points`` (and the budget, see :func:`scalekit.plotlayout.fit_axis`) and place the
    labels, none overlapping another, a marker or the plot's edge, and each kept off the drawn lines (arrows,
    the steps through ``front``, the budget) where it can be. A family whose name finds no place is
    named in the legend instead; the legend's room is taken from the top margin, so the plot area is
    recomputed (at most three times) until the families in the legend are those that found no place; failing
    that, every family is named in the legend."""
    points = list(points)
    by_id = {p.stage_id: p for p in points}
    links = [link for link in links if link.from_id in by_id and link.to_id in by_id]
    x_axis = fit_axis([p.x for p in points], budget)
    y_axis = fit_axis([p.y for p in points], None, 0.0, 1.0 if y_metric in BOUNDED else None)
    entries = legend_entries(points, links, y_metric)
    names = {p.family_id: p.family for p in points}
    in_legend: list[str] = []
    for attempt in range(4):
        named_on_plot = attempt < 3
        if not named_on_plot:
            in_legend = list(names)
        margins = legend_margins(style, entries + [names[fid] for fid in in_legend])
        left, right, top, bottom = margins
        area = PlotArea(x_axis, y_axis, style.width_px - left - right, style.height_px - top - bottom)
        labels, left_off = _labels(area, points, links, front, x_metric, colours, style, named_on_plot)
        on_plot = {label.key.partition(":")[2] for label in labels if label.kind == "family"}
        missing = [fid for fid in names if fid not in on_plot]
        if set(missing) <= set(in_legend):
            break
        in_legend = list(dict.fromkeys(in_legend + missing))
    symbols = {k: KERNEL_SYMBOLS[i % len(KERNEL_SYMBOLS)] for i, k in enumerate(sorted({p.kernel for p in points}))}
    return PanelLayout(
        name, style, title if style.show_title else "",
        memory_title({p.memory_method for p in points}) if x_metric == "peak_memory_gb" else LABELS[x_metric],
        LABELS[y_metric], area, margins, points, colours, symbols, links, labels, missing, left_off,
    )
