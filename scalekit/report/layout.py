"""The layout of each scatter figure of the report as plain records: fitted axes, colours, markers, chain
arrows, placed labels, the answer's highlight, crowded points and the legend. The report draws these with
plotly and nothing else; tests read them.

The visual channels are those of :mod:`scalekit.report.key`; a family is named by a label at its chain's last
stage (or in the legend where no label fits), an UpKern arrow by the gain of the y value. Hollow markers are stages scored at a rung only (halted there, or
waiting to be promoted): each is labelled with its rung (``@2 ep``), is never on a front and no gain is
measured to or from it. The answer's stage wears a gold ring and the label ``answer``.

Points whose markers would cover each other (:func:`scalekit.report.geometry.crowds`) are handled in one of two
ways: the largest such crowd that is not an exact tie, with the crowds near it
(:func:`scalekit.report.geometry.zoom_crowds`), is boxed and drawn again, spread out, with every point in the box, in
a zoom panel (:func:`zoom_layout`); every other crowd gets a label counting its stages (``2 tied``,
``3 close``). A memory axis whose values all lie below :data:`scalekit.report.key.MIB_BELOW` GiB is in MiB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from scalekit.report.key import (
    ANSWER_COLOUR, BOUNDED, BUDGET_COLOUR, KEY_COLOUR, KIND_SYMBOL, LABELS, SHORT, UNITS, kernel_symbol, legend_margins, memory_title,
    memory_unit,
)
from scalekit.report.geometry import (
    GAPS, Axis, Box, Crowd, LabelRequest, PlotArea, Style, beside, crowds, fit_axis, line_boxes, place_labels,
    text_size, zoom_crowds,
)


@dataclass(frozen=True)
class PointSpec:
    """A stage to draw: its values, family (id and name), kernel, and, for a stage scored at a rung only
    (``hollow``), the epochs of that rung."""

    stage_id: str
    x: float
    """In the metric's unit (GiB for memory); :func:`panel_layout` scales it to the axis unit."""
    y: float
    family_id: str
    family: str
    kernel: int
    memory_method: str = ""
    hollow: bool = False
    rung: int | None = None
    kind: str = ""
    """The label of its network kind where it is not a MedNeXt (``ResEnc``): its marker shape says so."""

    @property
    def shape(self) -> str:
        """What its marker shape stands for: the kernel (``k3``) of a MedNeXt, else its kind (``ResEnc``)."""
        return self.kind or f"k{self.kernel}"


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
class PanelLayout:
    """Everything one scatter figure shows, in data values and plot-area pixels."""

    name: str
    style: Style
    title: str
    """Shown above the plot only where the style shows titles."""
    x_metric: str
    y_metric: str
    x_unit: str
    """The unit of every x value here (``MiB`` or ``GiB`` for memory)."""
    x_title: str
    y_title: str
    area: PlotArea
    margins: tuple[float, float, float, float]
    """Left, right, top, bottom, in pixels."""
    points: list[PointSpec]
    colours: dict[str, str]
    """Family id -> colour."""
    symbols: dict[str, str]
    """Marker shape (a kernel ``k3``, or a kind ``ResEnc``) -> marker symbol."""
    links: list[LinkSpec]
    front: list[str]
    """Stage ids of the front, ordered by x: the step line is drawn through them."""
    labels: list[DrawnLabel]
    legend: list[tuple[str, str]]
    """(kind, text) of each legend entry: ``shape:<k3 or kind>``, ``front``, ``upkern``, ``continue``, ``halted``,
    ``family:<id>`` (a family whose name found no place on the plot). Empty for a figure without a legend."""
    left_off: list[str]
    """Keys of the labels that found no free place (their information stays in the hover)."""
    answer_id: str | None = None
    """The answer's stage, when it is among the points."""
    crowds: list[Crowd] = field(default_factory=list)
    zoomed: list[Crowd] = field(default_factory=list)
    """The crowds drawn again in the zoom panel (boxed here), if any."""
    zoom: tuple[str, ...] = ()
    """Every stage inside the zoom box: the zoom panel's points."""
    zoom_box: tuple[float, float, float, float] | None = None
    """The box around :attr:`zoom` in data values: x0, y0, x1, y1."""

    @property
    def x(self) -> Axis:
        return self.area.x

    @property
    def y(self) -> Axis:
        return self.area.y


def shape_symbols(points: Sequence[PointSpec]) -> dict[str, str]:
    """The marker shapes of ``points`` with their symbols: kernels in ascending order, then network kinds by
    name."""
    first = {p.shape: p for p in reversed(points)}
    order = sorted(first, key=lambda shape: (1, 0, shape) if first[shape].kind else (0, first[shape].kernel, shape))
    return {shape: KIND_SYMBOL if first[shape].kind else kernel_symbol(first[shape].kernel) for shape in order}


def legend_entries(points: Sequence[PointSpec], links: Sequence[LinkSpec], y_metric: str) -> list[tuple[str, str]]:
    """The key's entries (before family names that find no place on the plot): kernels, front, arrows."""
    entries = [(f"shape:{shape}", shape) for shape in shape_symbols(points)] + [("front", "front")]
    if any(link.kind == "upkern" for link in links):
        entries.append(("upkern", f"UpKern ({SHORT.get(y_metric, 'Δ')})"))
    if any(link.kind == "continue" for link in links):
        entries.append(("continue", "control"))
    if any(p.hollow for p in points):
        entries.append(("halted", "halted at a rung"))
    return entries


def _budget_request(axis: Axis, unit: str, area: PlotArea, font_px: float) -> LabelRequest | None:
    if axis.budget_mode == "none" or axis.budget is None:
        return None
    text = f"budget {axis.budget:g} {unit}".rstrip()
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


def _requests(area: PlotArea, points: list[PointSpec], links: list[LinkSpec], unit: str, style: Style,
              families: bool, answer: str | None, found: Sequence[Crowd], zoomed: Sequence[Crowd],
              zoom_px: Box | None) -> list[LabelRequest]:
    """The labels wanted, most important first: the budget, ``answer``, each halted stage's rung, a count of
    each crowd not zoomed, the zoom box's label, each UpKern step's gain beside its arrow and (with
    ``families``) each family's name beside its chain's last stage."""
    by_id = {p.stage_id: p for p in points}
    f, radius = style.font_px, style.marker_px / 2 + 2
    lead = radius + 0.6 * f
    requests = [r for r in [_budget_request(area.x, unit, area, f)] if r is not None]
    if answer in by_id:
        requests.append(_near(f"answer:{answer}", "answer", area.px(by_id[answer].x, by_id[answer].y),
                              style.marker_px + 1, f, style.marker_px + lead))
    requests += [_near(f"rung:{p.stage_id}", f"@{p.rung} ep", area.px(p.x, p.y), radius, f, radius + lead)
                 for p in points if p.hollow and p.rung]
    for crowd in found:
        if crowd in zoomed:
            continue
        px = [area.px(by_id[s].x, by_id[s].y) for s in crowd.stage_ids]
        centre = (sum(x for x, _ in px) / len(px), sum(y for _, y in px) / len(px))
        text = f"{len(px)} {'tied' if crowd.tie else 'close'}"
        requests.append(_near(f"crowd:{crowd.stage_ids[0]}", text, centre, style.marker_px, f,
                              style.marker_px + lead))
    if zoom_px is not None:
        inside = sum(zoom_px.distance(*area.px(p.x, p.y)) == 0 for p in points)
        requests.append(_near("zoom", f"zoom ({inside})", (zoom_px.x1, zoom_px.y1), 2.0, f, lead))
    for link in links:
        if link.kind == "upkern" and link.delta is not None:
            a, b = by_id[link.from_id], by_id[link.to_id]
            mid = area.px((a.x + b.x) / 2, (a.y + b.y) / 2)
            requests.append(_near(f"delta:{link.to_id}", f"{link.delta:+.3f}", mid, 0.0, f, lead))
    for fid in sorted({p.family_id for p in points}) if families else ():
        end = max((p for p in points if p.family_id == fid), key=lambda p: (p.kernel, not p.hollow, p.x, p.stage_id))
        requests.append(_near(f"family:{fid}", end.family, area.px(end.x, end.y), radius, f, radius + lead))
    return requests


def _labels(area: PlotArea, points: list[PointSpec], links: list[LinkSpec], front: Sequence[str], unit: str,
            colours: dict[str, str], style: Style, families: bool, answer: str | None, found: Sequence[Crowd],
            zoomed: Sequence[Crowd], zoom_px: Box | None) -> tuple[list[DrawnLabel], list[str]]:
    """Place the labels of :func:`_requests` in that order of priority, each as near its anchor as it can be
    without covering a marker (the answer's ring included) or another label, and off the drawn lines where
    it can be, with a leader line when it had to move away."""
    by_id = {p.stage_id: p for p in points}
    radius = style.marker_px / 2 + 2
    markers = [Box.around(*area.px(p.x, p.y), radius, radius) for p in points]
    if answer in by_id:
        markers.append(Box.around(*area.px(by_id[answer].x, by_id[answer].y), style.marker_px, style.marker_px))
    requests = _requests(area, points, links, unit, style, families, answer, found, zoomed, zoom_px)
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
                 zoomable: bool = True, unit: str | None = None) -> PanelLayout:
    """Fit the axes to ``points`` (and the budget, see :func:`scalekit.report.geometry.fit_axis`), find the crowds
    (zoomed where ``zoomable``, see the module) and place the labels, none overlapping another, a marker or
    the plot's edge, and each kept off the drawn lines (arrows, the steps through ``front``, the budget, the
    zoom box) where it can be. A memory axis is in :func:`memory_unit` of the points (in GiB); ``unit``: the
    points' x values are in that unit already.

    With ``legend``, a family whose name finds no place is named in the legend instead; the legend's room is
    taken from the top margin, so the plot area is recomputed (at most three times) until the families in the
    legend are those that found no place; failing that, every family is named in the legend. Without it
    (the page, whose shared key names every family) the top margin holds no legend."""
    factor = 1.0
    if unit is None:
        unit, factor = memory_unit([p.x for p in points]) if x_metric == "peak_memory_gb" else (UNITS.get(x_metric, ""), 1.0)
    points = sorted((replace(p, x=p.x * factor) for p in points), key=lambda p: p.stage_id)
    budget = None if budget is None else budget * factor
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
        at = {p.stage_id: area.px(p.x, p.y) for p in points}
        found = crowds([(p.stage_id, p.x, p.y) for p in points], area, style.marker_px)
        zoomed = zoom_crowds(found, at, area) if zoomable else []
        zoom_px = (_zoom_box(area, [by_id[s] for c in zoomed for s in c.stage_ids], style.marker_px / 2 + 4)
                   if zoomed else None)
        labels, left_off = _labels(area, points, links, front, unit, colours, style, named_on_plot,
                                   answer, found, zoomed, zoom_px)
        on_plot = {label.key.partition(":")[2] for label in labels if label.kind == "family"}
        missing = sorted(fid for fid in names if fid not in on_plot)
        if not legend or set(missing) <= set(in_legend):
            break
        in_legend = sorted(set(in_legend) | set(missing))
    symbols = shape_symbols(points)
    key = entries + [(f"family:{fid}", names[fid]) for fid in missing] if legend else []
    box: tuple[float, float, float, float] | None = None
    zoom: tuple[str, ...] = ()
    if zoom_px is not None:
        (x0, y0), (x1, y1) = area.data(zoom_px.x0, zoom_px.y0), area.data(zoom_px.x1, zoom_px.y1)
        box, zoom = (x0, y0, x1, y1), tuple(s for s in sorted(at) if zoom_px.distance(*at[s]) == 0)
    x_title = (memory_title({p.memory_method for p in points}, unit) if x_metric == "peak_memory_gb"
               else LABELS[x_metric])
    return PanelLayout(
        name, style, title, x_metric, y_metric, unit, x_title, LABELS[y_metric], area, margins, points, colours,
        symbols, links, [s for s in front if s in by_id], labels, key, left_off,
        answer if answer in by_id else None, found, zoomed, zoom, box,
    )


def zoom_layout(layout: PanelLayout) -> PanelLayout | None:
    """The zoom panel of ``layout``: every stage inside its zoom box, on axes fitted to them, with the links,
    front steps and answer among them; no legend, no budget, no zoom of its own. None without a zoom."""
    if not layout.zoom:
        return None
    ids = set(layout.zoom)
    return panel_layout(
        f"{layout.name}_zoom", f"{layout.title}: zoom on {len(ids)} stages", layout.x_metric, layout.y_metric,
        [p for p in layout.points if p.stage_id in ids],
        [link for link in layout.links if link.from_id in ids and link.to_id in ids], None, layout.colours,
        layout.style, [s for s in layout.front if s in ids], answer=layout.answer_id, legend=False, zoomable=False,
        unit=layout.x_unit,
    )
