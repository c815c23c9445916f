"""The layout of each scatter figure of the report as plain records: fitted axes, colours, markers, chain
arrows, placed labels, the answer's highlight, crowded points and the legend. The report draws these with
plotly and nothing else; tests read them.

One meaning per visual channel: colour is the family (named by a label at its chain's last stage, or in the
legend where no label fits), the marker shape is the kernel size, a thick translucent black step line beneath
everything is the Pareto front, coloured arrows are UpKern steps (labelled with the gain of the y value) and
grey dotted lines continuation controls. Hollow markers are stages scored at a rung only (halted there, or
waiting to be promoted): each is labelled with its rung (``@2 ep``), is never on a front and no gain is
measured to or from it. The answer's stage wears a gold ring and the label ``answer``.

Points whose markers would cover each other (:func:`crowds`) are handled in one of two ways: the largest such
crowd that is not an exact tie is boxed and drawn again, spread out, in a zoom panel (:func:`zoom_layout`);
every other crowd gets a label counting its stages (``2 tied``, ``3 close``) whose hover lists them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

from scalekit.plotlayout import (
    GAPS, Axis, Box, LabelRequest, PlotArea, Style, beside, fit_axis, line_boxes, place_labels, text_size,
)

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


@dataclass(frozen=True)
class PointSpec:
    """A stage to draw: its values, family (id and name), kernel, and, for a stage scored at a rung only
    (``hollow``), the epochs of that rung."""

    stage_id: str
    x: float
    y: float
    family_id: str
    family: str
    kernel: int
    memory_method: str = ""
    hollow: bool = False
    rung: int | None = None


@dataclass(frozen=True)
class LinkSpec:
    """A chain step between two stages: ``upkern`` (with the gain of the y value) or ``continue``."""

    from_id: str
    to_id: str
    kind: str
    delta: float | None = None


@dataclass(frozen=True)
class DrawnLabel:
    """A text on the plot: ``kind`` is ``budget``, ``answer``, ``rung``, ``crowd``, ``zoom``, ``delta`` or
    ``family``; ``at`` its centre in data values, ``box`` its estimated extent in plot-area pixels."""

    key: str
    kind: str
    text: str
    at: tuple[float, float]
    box: Box
    colour: str
    leader: tuple[tuple[float, float], tuple[float, float]] | None = None
    """A thin line from the point the label names to the label (data values), when it sits away from it."""


@dataclass(frozen=True)
class Crowd:
    """Stages whose markers would cover each other; ``tie``: all at exactly the same values."""

    stage_ids: tuple[str, ...]
    tie: bool


@dataclass(frozen=True)
class PanelLayout:
    """Everything one scatter figure shows, in data values and plot-area pixels."""

    name: str
    style: Style
    title: str
    """Shown above the plot only where the style shows titles."""
    x_metric: str
    y_metric: str
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
    front: list[str]
    """Stage ids of the front, ordered by x: the step line is drawn through them."""
    labels: list[DrawnLabel]
    legend: list[tuple[str, str]]
    """(kind, text) of each legend entry: ``kernel:<k>``, ``front``, ``upkern``, ``continue``, ``halted``,
    ``family:<id>`` (a family whose name found no place on the plot). Empty for a figure without a legend."""
    left_off: list[str]
    """Keys of the labels that found no free place (their information stays in the hover)."""
    answer_id: str | None = None
    """The answer's stage, when it is among the points."""
    crowds: list[Crowd] = field(default_factory=list)
    zoom: tuple[str, ...] = ()
    """The crowd drawn again in a zoom panel (boxed here), if any."""
    zoom_box: tuple[float, float, float, float] | None = None
    """The box around :attr:`zoom` in data values: x0, y0, x1, y1."""

    @property
    def x(self) -> Axis:
        return self.area.x

    @property
    def y(self) -> Axis:
        return self.area.y

    @property
    def legend_families(self) -> list[str]:
        return [kind.partition(":")[2] for kind, _ in self.legend if kind.startswith("family:")]


def memory_title(methods: set[str]) -> str:
    """The memory axis title, saying whether the values were measured, predicted or both."""
    known = sorted(m for m in methods if m)
    prefix = "/".join(sorted(known, key=lambda m: m != "predicted")) + " " if known else ""
    return prefix + LABELS["peak_memory_gb"]


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


def legend_entries(points: Sequence[PointSpec], links: Sequence[LinkSpec], y_metric: str) -> list[tuple[str, str]]:
    """The key's entries (before family names that find no place on the plot): kernels, front, arrows."""
    entries = [(f"kernel:{k}", f"k{k}") for k in sorted({p.kernel for p in points})] + [("front", "front")]
    if any(link.kind == "upkern" for link in links):
        entries.append(("upkern", f"UpKern ({SHORT.get(y_metric, 'Δ')})"))
    if any(link.kind == "continue" for link in links):
        entries.append(("continue", "control"))
    if any(p.hollow for p in points):
        entries.append(("halted", "halted at a rung"))
    return entries


def _same(a: PointSpec, b: PointSpec) -> bool:
    return a.x == b.x and a.y == b.y


def crowds(points: Sequence[PointSpec], area: PlotArea, min_px: float) -> list[Crowd]:
    """Groups of two or more points whose marker centres lie closer than ``min_px`` pixels, joined
    transitively; each group's ids sorted, the groups ordered by their leftmost point, then their ids."""
    at = {p.stage_id: area.px(p.x, p.y) for p in points}
    by_id = {p.stage_id: p for p in points}
    root = {sid: sid for sid in at}

    def top(sid: str) -> str:
        while root[sid] != sid:
            sid = root[sid]
        return sid

    for a, b in combinations(sorted(at), 2):
        if ((at[a][0] - at[b][0]) ** 2 + (at[a][1] - at[b][1]) ** 2) ** 0.5 < min_px:
            root[top(b)] = top(a)
    groups: dict[str, list[str]] = {}
    for sid in sorted(at):
        groups.setdefault(top(sid), []).append(sid)
    found = [tuple(ids) for ids in groups.values() if len(ids) > 1]
    found.sort(key=lambda ids: (min(at[s][0] for s in ids), ids))
    return [Crowd(ids, all(_same(by_id[ids[0]], by_id[s]) for s in ids)) for ids in found]


def zoom_crowd(found: Sequence[Crowd]) -> tuple[str, ...]:
    """The crowd a zoom panel spreads out: the largest that is not an exact tie (the first of equal size)."""
    spread = [c for c in found if not c.tie]
    return max(spread, key=lambda c: len(c.stage_ids)).stage_ids if spread else ()


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


def _zoom_box(area: PlotArea, points: Sequence[PointSpec], pad_px: float) -> Box:
    """The pixel box around ``points`` with ``pad_px`` to spare on every side."""
    px = [area.px(p.x, p.y) for p in points]
    return Box(min(x for x, _ in px) - pad_px, min(y for _, y in px) - pad_px,
               max(x for x, _ in px) + pad_px, max(y for _, y in px) + pad_px)


def _lines(area: PlotArea, points: list[PointSpec], links: list[LinkSpec], front: Sequence[str],
           zoom: Box | None) -> list[Box]:
    """The small boxes of every line drawn: chain arrows, the front's steps, the budget line, the zoom box."""
    by_id = {p.stage_id: p for p in points}
    segments = [((by_id[link.from_id].x, by_id[link.from_id].y), (by_id[link.to_id].x, by_id[link.to_id].y))
                for link in links]
    steps = [(by_id[sid].x, by_id[sid].y) for sid in front if sid in by_id]
    for (x0, y0), (x1, y1) in zip(steps, steps[1:]):  # drawn as "hv": across, then up
        segments += [((x0, y0), (x1, y0)), ((x1, y0), (x1, y1))]
    if area.x.budget_mode == "line" and area.x.budget is not None:
        segments.append(((area.x.budget, area.y.lo), (area.x.budget, area.y.hi)))
    boxes = [b for a, z in segments for b in area.segment_boxes(a, z)]
    if zoom is not None:
        corners = [(zoom.x0, zoom.y0), (zoom.x1, zoom.y0), (zoom.x1, zoom.y1), (zoom.x0, zoom.y1)]
        boxes += [b for a, z in zip(corners, corners[1:] + corners[:1]) for b in line_boxes(a, z)]
    return boxes


def _near(key: str, text: str, anchor: tuple[float, float], gap: float, font_px: float,
          leader_after: float) -> LabelRequest:
    size = text_size(text, font_px)
    return LabelRequest(key, text, tuple(c for g in GAPS for c in beside(anchor, size, gap + g)), anchor,
                        leader_after)


def _requests(area: PlotArea, points: list[PointSpec], links: list[LinkSpec], x_metric: str, style: Style,
              families: bool, answer: str | None, found: Sequence[Crowd], zoom: tuple[str, ...],
              zoom_px: Box | None) -> list[LabelRequest]:
    """The labels wanted, most important first: the budget, ``answer``, each halted stage's rung, a count of
    each crowd not zoomed, the zoom box's label, each UpKern step's gain beside its arrow and (with
    ``families``) each family's name beside its chain's last stage."""
    by_id = {p.stage_id: p for p in points}
    f, radius = style.font_px, style.marker_px / 2 + 2
    lead = radius + 0.6 * f
    requests = [r for r in [_budget_request(area.x, x_metric, area, f)] if r is not None]
    if answer in by_id:
        requests.append(_near(f"answer:{answer}", "answer", area.px(by_id[answer].x, by_id[answer].y),
                              style.marker_px + 1, f, style.marker_px + lead))
    requests += [_near(f"rung:{p.stage_id}", f"@{p.rung} ep", area.px(p.x, p.y), radius, f, radius + lead)
                 for p in points if p.hollow and p.rung]
    for crowd in found:
        if crowd.stage_ids == zoom:
            continue
        px = [area.px(by_id[s].x, by_id[s].y) for s in crowd.stage_ids]
        centre = (sum(x for x, _ in px) / len(px), sum(y for _, y in px) / len(px))
        text = f"{len(px)} {'tied' if crowd.tie else 'close'}"
        requests.append(_near(f"crowd:{crowd.stage_ids[0]}", text, centre, style.marker_px, f,
                              style.marker_px + lead))
    if zoom_px is not None:
        requests.append(_near("zoom", f"zoom ({len(zoom)})", (zoom_px.x1, zoom_px.y1), 2.0, f, lead))
    for link in links:
        if link.kind == "upkern" and link.delta is not None:
            a, b = by_id[link.from_id], by_id[link.to_id]
            mid = area.px((a.x + b.x) / 2, (a.y + b.y) / 2)
            requests.append(_near(f"delta:{link.to_id}", f"{link.delta:+.3f}", mid, 0.0, f, lead))
    for fid in sorted({p.family_id for p in points}) if families else ():
        end = max((p for p in points if p.family_id == fid), key=lambda p: (p.kernel, not p.hollow, p.x, p.stage_id))
        requests.append(_near(f"family:{fid}", end.family, area.px(end.x, end.y), radius, f, radius + lead))
    return requests


def _labels(area: PlotArea, points: list[PointSpec], links: list[LinkSpec], front: Sequence[str], x_metric: str,
            colours: dict[str, str], style: Style, families: bool, answer: str | None, found: Sequence[Crowd],
            zoom: tuple[str, ...], zoom_px: Box | None) -> tuple[list[DrawnLabel], list[str]]:
    """Place the labels of :func:`_requests` in that order of priority, each as near its anchor as it can be
    without covering a marker (the answer's ring included) or another label, and off the drawn lines where
    it can be, with a leader line when it had to move away."""
    by_id = {p.stage_id: p for p in points}
    radius = style.marker_px / 2 + 2
    markers = [Box.around(*area.px(p.x, p.y), radius, radius) for p in points]
    if answer in by_id:
        markers.append(Box.around(*area.px(by_id[answer].x, by_id[answer].y), style.marker_px, style.marker_px))
    requests = _requests(area, points, links, x_metric, style, families, answer, found, zoom, zoom_px)
    placed, left_off = place_labels(requests, area.box, markers, style.font_px,
                                    soft=_lines(area, points, links, front, zoom_px))
    labels = []
    for label in placed:
        kind, _, ref = label.key.partition(":")
        colour = {"family": lambda: colours[ref], "delta": lambda: colours[by_id[ref].family_id],
                  "rung": lambda: colours[by_id[ref].family_id], "budget": lambda: BUDGET_COLOUR,
                  "answer": lambda: ANSWER_COLOUR}.get(kind, lambda: KEY_COLOUR)()
        leader = None if label.leader is None else (area.data(*label.leader[0]), area.data(*label.leader[1]))
        labels.append(DrawnLabel(label.key, kind, label.text, area.data(*label.box.centre), label.box, colour,
                                 leader))
    return labels, left_off


def panel_layout(name: str, title: str, x_metric: str, y_metric: str, points: Sequence[PointSpec],
                 links: Sequence[LinkSpec], budget: float | None, colours: dict[str, str],
                 style: Style, front: Sequence[str] = (), *, answer: str | None = None, legend: bool = True,
                 zoomable: bool = True) -> PanelLayout:
    """Fit the axes to ``points`` (and the budget, see :func:`scalekit.plotlayout.fit_axis`), find the crowds
    (the largest one not a tie is zoomed where ``zoomable``) and place the labels, none overlapping another, a
    marker or the plot's edge, and each kept off the drawn lines (arrows, the steps through ``front``, the
    budget, the zoom box) where it can be.

    With ``legend``, a family whose name finds no place is named in the legend instead; the legend's room is
    taken from the top margin, so the plot area is recomputed (at most three times) until the families in the
    legend are those that found no place; failing that, every family is named in the legend. Without it
    (the page, whose shared key names every family) the top margin holds no legend."""
    points = sorted(points, key=lambda p: p.stage_id)
    by_id = {p.stage_id: p for p in points}
    links = sorted((link for link in links if link.from_id in by_id and link.to_id in by_id),
                   key=lambda link: (link.to_id, link.from_id))
    x_axis = fit_axis([p.x for p in points], budget)
    y_axis = fit_axis([p.y for p in points], None, 0.0, 1.0 if y_metric in BOUNDED else None)
    entries = legend_entries(points, links, y_metric) if legend else []
    names = {p.family_id: p.family for p in points}
    in_legend: list[str] = []
    for attempt in range(4):
        named_on_plot = attempt < 3
        if not named_on_plot:
            in_legend = sorted(names)
        margins = legend_margins(style, [t for _, t in entries] + [names[fid] for fid in in_legend])
        left, right, top, bottom = margins
        area = PlotArea(x_axis, y_axis, style.width_px - left - right, style.height_px - top - bottom)
        found = crowds(points, area, style.marker_px)
        zoom = zoom_crowd(found) if zoomable else ()
        zoom_px = _zoom_box(area, [by_id[s] for s in zoom], style.marker_px / 2 + 4) if zoom else None
        labels, left_off = _labels(area, points, links, front, x_metric, colours, style, named_on_plot,
                                   answer, found, zoom, zoom_px)
        on_plot = {label.key.partition(":")[2] for label in labels if label.kind == "family"}
        missing = sorted(fid for fid in names if fid not in on_plot)
        if not legend or set(missing) <= set(in_legend):
            break
        in_legend = sorted(set(in_legend) | set(missing))
    symbols = {k: KERNEL_SYMBOLS[i % len(KERNEL_SYMBOLS)] for i, k in enumerate(sorted({p.kernel for p in points}))}
    key = entries + [(f"family:{fid}", names[fid]) for fid in missing] if legend else []
    box = None
    if zoom_px is not None:
        (x0, y0), (x1, y1) = area.data(zoom_px.x0, zoom_px.y0), area.data(zoom_px.x1, zoom_px.y1)
        box = (x0, y0, x1, y1)
    return PanelLayout(
        name, style, title, x_metric, y_metric,
        memory_title({p.memory_method for p in points}) if x_metric == "peak_memory_gb" else LABELS[x_metric],
        LABELS[y_metric], area, margins, points, colours, symbols, links, [s for s in front if s in by_id],
        labels, key, left_off, answer if answer in by_id else None, found, zoom, box,
    )


def zoom_layout(layout: PanelLayout) -> PanelLayout | None:
    """The zoom panel of ``layout``'s zoomed crowd: its stages alone, on axes fitted to them, with the links,
    front steps and answer among them; no legend, no budget, no zoom of its own. None without a zoom."""
    if not layout.zoom:
        return None
    ids = set(layout.zoom)
    return panel_layout(
        f"{layout.name}_zoom", f"{layout.title}: zoom on {len(ids)} stages", layout.x_metric, layout.y_metric,
        [p for p in layout.points if p.stage_id in ids],
        [link for link in layout.links if link.from_id in ids and link.to_id in ids], None, layout.colours,
        layout.style, [s for s in layout.front if s in ids], answer=layout.answer_id, legend=False, zoomable=False,
    )
