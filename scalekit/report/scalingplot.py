"""The layout of the compound-scaling figure as plain records: ΔDice against Δ peak memory of every scaling
move (:mod:`scalekit.results.scaling`), coloured by the axis it moves, each point labelled with its change
(``C 4→8``), the memory axis in MiB when every move is below :data:`scalekit.report.key.MIB_BELOW` GiB.

Labels are placed like those of the scatter figures (:func:`scalekit.report.geometry.place_labels`): compound
moves first, then single-axis moves by their ΔDice, largest first; a label that finds no free place is left
off (the hover still names the move).
"""

from __future__ import annotations

from dataclasses import dataclass

from scalekit.report.key import KEY_COLOUR, legend_margins, memory_unit
from scalekit.report.layout import DrawnLabel
from scalekit.report.geometry import GAPS, Box, LabelRequest, PlotArea, Style, beside, fit_axis, place_labels, text_size
from scalekit.results.scaling import ScalingMove, ScalingView

AXIS_COLOURS = {"B": "#1f77b4", "R": "#2ca02c", "C": "#ff7f0e", "k": "#9467bd", "compound": "#222222"}
GROUP_NAMES = {"B": "B (depth)", "R": "R (expansion)", "C": "C (width)", "k": "k (kernel)", "compound": "several axes"}
"""Short, so that the legend of a one-column figure takes few rows (:data:`scalekit.results.scaling.AXES` in full)."""


@dataclass(frozen=True)
class ScalingPoint:
    """One move: its axis group (an axis letter, or ``compound``), its place in the axis unit, its label."""

    move: ScalingMove
    group: str
    x: float
    y: float

    @property
    def key(self) -> str:
        return f"{self.move.from_id}>{self.move.to_id}"


@dataclass(frozen=True)
class ScalingLayout:
    """Everything the compound-scaling figure shows."""

    style: Style
    title: str
    unit: str
    """``MiB`` or ``GiB``: the unit of every x value."""
    x_title: str
    y_title: str
    area: PlotArea
    margins: tuple[float, float, float, float]
    points: list[ScalingPoint]
    labels: list[DrawnLabel]
    """Kind ``move``: the change of the point whose key is the label's key."""
    legend: list[str]
    """The groups present, named (empty for a figure without a legend)."""
    left_off: list[str]


def _group(move: ScalingMove) -> str:
    return "compound" if move.compound else move.axes[0]


def scaling_layout(view: ScalingView, style: Style, legend: bool = True) -> ScalingLayout:
    """Fit the axes to the moves that have a memory change (ΔDice 0 always in range) and place their labels."""
    moves = sorted((m for m in view.single + [c.move for c in view.compound] if m.d_gib is not None),
                   key=lambda m: (m.from_id, m.to_id))
    unit, factor = memory_unit([m.d_gib for m in moves])  # type: ignore[misc]
    points = [ScalingPoint(m, _group(m), m.d_gib * factor, m.d_dice) for m in moves]  # type: ignore[operator]
    groups = [g for g in AXIS_COLOURS if any(p.group == g for p in points)]
    names = [GROUP_NAMES[g] for g in groups] if legend else []
    margins = legend_margins(style, names)
    left, right, top, bottom = margins
    x = fit_axis([p.x for p in points], floor=None)
    y = fit_axis([p.y for p in points] + [0.0], floor=None)
    area = PlotArea(x, y, style.width_px - left - right, style.height_px - top - bottom)
    f, radius = style.font_px, style.marker_px / 2 + 2
    markers = [Box.around(*area.px(p.x, p.y), radius, radius) for p in points]
    order = sorted(points, key=lambda p: (p.group != "compound", -p.y, p.key))
    requests = []
    for p in order:
        anchor, size = area.px(p.x, p.y), text_size(p.move.change, f)
        requests.append(LabelRequest(p.key, p.move.change, tuple(c for g in GAPS for c in beside(anchor, size, radius + g)),
                                     anchor, 2 * radius + 0.6 * f))
    placed, left_off = place_labels(requests, area.box, markers, f)
    colour = {p.key: AXIS_COLOURS[p.group] for p in points}
    labels = [DrawnLabel(label.key, "move", label.text, area.data(*label.box.centre), label.box,
                         KEY_COLOUR if colour[label.key] == AXIS_COLOURS["compound"] else colour[label.key],
                         None if label.leader is None else (area.data(*label.leader[0]), area.data(*label.leader[1])))
              for label in placed]
    return ScalingLayout(style, "Compound scaling: what each move bought", unit,
                         f"Δ peak GPU memory ({unit})", "ΔDice", area, margins, points, labels, names, left_off)
