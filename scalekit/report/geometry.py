"""Figure geometry without a plotting library: figure styles, axis ranges fitted to the data (with a budget
that never squashes them), and text labels placed so that no two overlap.

Everything here is plain arithmetic on data values and estimated pixel extents, so tests can check the
layout (every point inside the range, label boxes pairwise disjoint) without rendering an image. Pixel
coordinates are those of the plot area: x to the right, y upwards, (0, 0) at its lower left corner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from scalekit.errors import ScalekitError

PAD = 0.06
"""Padding on each side of the data, as a fraction of the data's span."""
MIN_DATA_SHARE = 0.5
"""A budget is drawn inside the axis only while the data keep at least this share of the axis."""
CHAR_WIDTHS = {**dict.fromkeys(" .,:;'!|iljtf()[]", 0.34), **dict.fromkeys("mwMW%", 0.9),
               **dict.fromkeys("ABCDEFGHKNOPQRSUVXYZΔ", 0.72), **dict.fromkeys("→←", 1.0)}
CHAR_WIDTH = 0.6
"""Estimated advance of a character in font heights (Arial, rounded up by about 5%): :data:`CHAR_WIDTHS`
for narrow, wide and capital letters, :data:`CHAR_WIDTH` for the rest (digits, signs, lower case)."""
LINE_HEIGHT = 1.3
TEXT_PAD = 2.0
"""Pixels added on every side of a text box's estimate."""


@dataclass(frozen=True)
class Style:
    """The size and type of one family of figures. ``font_px`` is the smallest font used anywhere."""

    name: str
    width_px: int
    height_px: int
    scale: float
    """Image export scale: PNGs have ``scale`` times the pixels."""
    font_px: float
    show_title: bool
    width_in: float
    """Printed width the style is made for: at it, ``font_px`` is :meth:`font_pt` points."""

    def font_pt(self) -> float:
        """The smallest font in points when the figure is printed ``width_in`` inches wide."""
        return self.font_px * self.width_in * 72 / self.width_px

    @property
    def marker_px(self) -> float:
        return round(self.font_px * 0.6)


STYLES = {
    # One column of a two-column paper (3.5 x 3 in): 2 px per point, so 20 px is 10 pt; white, no title.
    "paper": Style("paper", 504, 432, 3.0, 20.0, False, 3.5),
    # A browser page or a slide (9.4 in at 96 px per inch): larger, with a title above each figure.
    "screen": Style("screen", 900, 600, 2.0, 14.0, True, 9.375),
}


def style_named(name: str) -> Style:
    try:
        return STYLES[name]
    except KeyError:
        raise ScalekitError(f"figure style {name!r} is unknown; use one of {', '.join(STYLES)}") from None


@dataclass(frozen=True)
class Axis:
    """A fitted axis range and how its budget (if any) is shown: ``line`` inside the range, ``edge`` as a
    marker at the edge it lies beyond (``low`` or ``high``), ``none`` without a budget."""

    lo: float
    hi: float
    budget: float | None = None
    budget_mode: str = "none"
    budget_side: str = ""

    @property
    def span(self) -> float:
        return self.hi - self.lo

    def contains(self, value: float) -> bool:
        return self.lo <= value <= self.hi


def _padded(lo: float, hi: float, floor: float | None, ceiling: float | None) -> tuple[float, float]:
    span = hi - lo
    pad = PAD * span if span > 0 else (0.1 * abs(hi) or 0.5)
    lo, hi = lo - pad, hi + pad
    if floor is not None and lo < floor:
        lo = floor
    if ceiling is not None and hi > ceiling:
        hi = ceiling
    return lo, hi


def fit_axis(values: Sequence[float], budget: float | None = None, floor: float | None = 0.0,
             ceiling: float | None = None) -> Axis:
    """The range of ``values`` padded by :data:`PAD` of their span (a single value or equal values get 10% of
    the value), never below ``floor`` (0 for positive quantities; None for signed ones) nor above ``ceiling``.

    A budget inside the padded range is drawn as a line; one outside is taken in only while the data still
    span at least :data:`MIN_DATA_SHARE` of the axis, otherwise it is shown at the axis edge.
    """
    if not values:
        return Axis(0.0, 1.0, budget, "edge" if budget is not None else "none", "high")
    data_lo, data_hi = min(values), max(values)
    lo, hi = _padded(data_lo, data_hi, floor if data_lo >= (floor or 0.0) else None, ceiling)
    if budget is None:
        return Axis(lo, hi)
    if lo <= budget <= hi:
        return Axis(lo, hi, budget, "line")
    wide_lo, wide_hi = _padded(min(data_lo, budget), max(data_hi, budget), floor, None)
    span = data_hi - data_lo
    if span > 0 and span / (wide_hi - wide_lo) >= MIN_DATA_SHARE:
        return Axis(wide_lo, wide_hi, budget, "line")
    return Axis(lo, hi, budget, "edge", "high" if budget > hi else "low")


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in plot-area pixels."""

    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Box) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1

    def inside(self, other: Box) -> bool:
        return other.x0 <= self.x0 and self.x1 <= other.x1 and other.y0 <= self.y0 and self.y1 <= other.y1

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def nearest(self, x: float, y: float) -> tuple[float, float]:
        """The point of the box nearest to (x, y): the point itself when it lies inside."""
        return min(max(x, self.x0), self.x1), min(max(y, self.y0), self.y1)

    def distance(self, x: float, y: float) -> float:
        """Pixels from (x, y) to the box (0 inside it)."""
        nx, ny = self.nearest(x, y)
        return ((nx - x) ** 2 + (ny - y) ** 2) ** 0.5

    @classmethod
    def around(cls, x: float, y: float, half_w: float, half_h: float) -> Box:
        return cls(x - half_w, y - half_h, x + half_w, y + half_h)


def text_size(text: str, font_px: float) -> tuple[float, float]:
    """Estimated (width, height) in pixels of one line of ``text``, with :data:`TEXT_PAD` on every side."""
    width = sum(CHAR_WIDTHS.get(c, CHAR_WIDTH) for c in text) * font_px
    return width + 2 * TEXT_PAD, LINE_HEIGHT * font_px + 2 * TEXT_PAD


@dataclass(frozen=True)
class PlotArea:
    """The plot area of a figure: maps data values to its pixels."""

    x: Axis
    y: Axis
    width_px: float
    height_px: float

    def px(self, x: float, y: float) -> tuple[float, float]:
        return ((x - self.x.lo) / self.x.span * self.width_px, (y - self.y.lo) / self.y.span * self.height_px)

    @property
    def box(self) -> Box:
        return Box(0.0, 0.0, self.width_px, self.height_px)

    def segment_boxes(self, a: tuple[float, float], b: tuple[float, float]) -> list[Box]:
        """Small boxes along the straight line from data point ``a`` to ``b`` (an arrow, as an obstacle)."""
        return line_boxes(self.px(*a), self.px(*b))

    def data(self, x: float, y: float) -> tuple[float, float]:
        """The data values at plot-area pixel (x, y)."""
        return self.x.lo + x / self.width_px * self.x.span, self.y.lo + y / self.height_px * self.y.span


def line_boxes(a: tuple[float, float], b: tuple[float, float], step: float = 6.0) -> list[Box]:
    """Small boxes every ``step`` pixels along the segment from pixel ``a`` to ``b``."""
    (x0, y0), (x1, y1) = a, b
    n = max(1, int(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 / step))
    return [Box.around(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n, 1.5, 1.5) for i in range(n + 1)]


SOFT_COST = 20.0
"""Pixels of distance from its anchor a label gives up to keep clear of one small box of a line (arrows, the
front, the budget line, other labels' leaders): a label moves about 80 px rather than lie across a line."""
ANCHOR_PX = 4.0
"""Half the side of the square around a label's anchor that no other label may cover."""
LEADER_COST = 15.0
"""Pixels of distance a label gives up to need no leader line."""
DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1),
              (1, 0.5), (-1, 0.5), (1, -0.5), (-1, -0.5), (0.5, 1), (-0.5, 1), (0.5, -1), (-0.5, -1))
GAPS = (3.0, 8.0, 14.0, 22.0, 32.0, 44.0, 58.0, 76.0, 98.0, 124.0)


def beside(anchor: tuple[float, float], size: tuple[float, float], gap: float) -> list[tuple[float, float]]:
    """Centres of a box of ``size`` put beside ``anchor`` (pixels), ``gap`` pixels off, in sixteen
    directions (right, left, up, down, the diagonals, then the directions between them)."""
    (x, y), (w, h) = anchor, size
    return [(x + dx * (gap + w / 2), y + dy * (gap + h / 2)) for dx, dy in DIRECTIONS]


@dataclass(frozen=True)
class LabelRequest:
    """A text to place: ``candidates`` are the centres to try (pixels); the one nearest to ``anchor`` (the
    point the label names) wins, in order of preference when no anchor is given. A label put further than
    ``leader_after`` pixels from its anchor gets a leader line to it."""

    key: str
    text: str
    candidates: tuple[tuple[float, float], ...]
    anchor: tuple[float, float] | None = None
    leader_after: float = float("inf")


@dataclass(frozen=True)
class PlacedLabel:
    key: str
    text: str
    box: Box
    leader: tuple[tuple[float, float], tuple[float, float]] | None = None
    """From the anchor to the nearest point of the box (pixels), for a label placed away from its anchor."""


def _leader(request: LabelRequest, box: Box) -> tuple[tuple[float, float], tuple[float, float]] | None:
    anchor = request.anchor
    if anchor is None or box.distance(*anchor) <= request.leader_after:
        return None
    return anchor, box.nearest(*anchor)


def _best_place(request: LabelRequest, size: tuple[float, float], area: Box, obstacles: Sequence[Box],
                taken: Sequence[Box], lines: Sequence[Box]) -> tuple[float, Box] | None:
    """The least costly free place of one label, with its cost (see :func:`place_labels`)."""
    anchor = request.anchor
    crossable = [*taken, *(o for o in obstacles if anchor is None or o.distance(*anchor) > 0)]
    best: tuple[float, Box] | None = None
    for order, (cx, cy) in enumerate(request.candidates):
        box = Box.around(cx, cy, size[0] / 2, size[1] / 2)
        if not box.inside(area) or any(box.overlaps(o) for o in (*obstacles, *taken)):
            continue
        cost = (box.distance(*anchor) if anchor is not None else float(order)) + SOFT_COST * sum(
            box.overlaps(line) for line in lines)
        leader = _leader(request, box)
        if leader is not None:
            cost += LEADER_COST + SOFT_COST * sum(b.overlaps(c) for b in line_boxes(*leader) for c in crossable)
        if best is None or cost < best[0]:
            best = (cost, box)
    return best


def place_labels(requests: Sequence[LabelRequest], area: Box, obstacles: Sequence[Box], font_px: float,
                 soft: Sequence[Box] = ()) -> tuple[list[PlacedLabel], list[str]]:
    """Each label takes, of its candidates that lie inside ``area`` and overlap no other label, no other
    label's anchor nor ``obstacles`` (markers), the one of least cost: its distance from the anchor, plus :data:`SOFT_COST` for
    each ``soft`` obstacle (the small boxes of drawn lines) or stretch of another label's leader line it
    covers, plus, where it needs a leader line, :data:`LEADER_COST` and :data:`SOFT_COST` for each stretch of
    that line that crosses another label or a marker. A greedy pass in the order given, then one pass that
    moves each label to its best place among the others. Returns the placed labels and the keys of those that
    found no place (left off the plot)."""
    sizes = [text_size(r.text, font_px) for r in requests]
    anchors = [Box.around(*r.anchor, ANCHOR_PX, ANCHOR_PX) if r.anchor is not None else None for r in requests]

    def blocked(i: int) -> list[Box]:  # the markers, and what the other labels name (no label hides those)
        return [*obstacles, *(a for j, a in enumerate(anchors) if a is not None and j != i)]

    boxes: list[Box | None] = []
    for i, (request, size) in enumerate(zip(requests, sizes)):
        taken = [b for b in boxes if b is not None]
        lines = [*soft, *_leader_boxes(requests, boxes)]
        best = _best_place(request, size, area, blocked(i), taken, lines)
        boxes.append(None if best is None else best[1])
    for i, (request, size) in enumerate(zip(requests, sizes)):
        if boxes[i] is None:
            continue
        others = [b if j != i else None for j, b in enumerate(boxes)]
        taken = [b for b in others if b is not None]
        lines = [*soft, *_leader_boxes(requests, others)]
        best = _best_place(request, size, area, blocked(i), taken, lines)
        if best is not None:
            boxes[i] = best[1]  # its old place is among the candidates: the best is never worse
    placed = [PlacedLabel(r.key, r.text, b, _leader(r, b)) for r, b in zip(requests, boxes) if b is not None]
    return placed, [r.key for r, b in zip(requests, boxes) if b is None]


def _leader_boxes(requests: Sequence[LabelRequest], boxes: Sequence[Box | None]) -> list[Box]:
    leaders = [_leader(r, b) for r, b in zip(requests, boxes) if b is not None]
    return [box for leader in leaders if leader is not None for box in line_boxes(*leader)]


@dataclass(frozen=True)
class Crowd:
    """Points whose markers would cover each other; ``tie``: all at exactly the same values."""

    stage_ids: tuple[str, ...]
    tie: bool


def crowds(points: Sequence[tuple[str, float, float]], area: PlotArea, min_px: float) -> list[Crowd]:
    """Groups of two or more of ``points`` ((id, x, y) in data values) whose centres lie closer than ``min_px``
    pixels of ``area``, joined transitively; each group's ids sorted, the groups ordered by their leftmost
    point, then their ids (the order of ``points`` never matters)."""
    values = {sid: (x, y) for sid, x, y in points}
    at = {sid: area.px(x, y) for sid, (x, y) in values.items()}
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
    found = sorted((tuple(ids) for ids in groups.values() if len(ids) > 1),
                   key=lambda ids: (min(at[s][0] for s in ids), ids))
    return [Crowd(ids, len({values[s] for s in ids}) == 1) for ids in found]


ZOOM_SHARE = 0.35
"""A zoom panel takes in further crowds while its box spans at most this share of each axis."""


def zoom_crowds(found: Sequence[Crowd], at: dict[str, tuple[float, float]], area: PlotArea) -> list[Crowd]:
    """The crowds one zoom panel spreads out: the largest that is not an exact tie (of equal ones, the first
    by ids), then every other such crowd, nearest first, that keeps the box around them all within
    :data:`ZOOM_SHARE` of each axis (``at``: pixel centres by id). Empty when every crowd is a tie."""
    spread = sorted((c for c in found if not c.tie), key=lambda c: (-len(c.stage_ids), c.stage_ids))
    if not spread:
        return []

    def centre(crowd: Crowd) -> tuple[float, float]:
        xs, ys = zip(*(at[s] for s in crowd.stage_ids))
        return sum(xs) / len(xs), sum(ys) / len(ys)

    cx, cy = centre(spread[0])
    chosen = [spread[0]]
    for crowd in sorted(spread[1:], key=lambda c: (((centre(c)[0] - cx) ** 2 + (centre(c)[1] - cy) ** 2), c.stage_ids)):
        xs, ys = zip(*(at[s] for c in (*chosen, crowd) for s in c.stage_ids))
        if max(xs) - min(xs) <= ZOOM_SHARE * area.width_px and max(ys) - min(ys) <= ZOOM_SHARE * area.height_px:
            chosen.append(crowd)
    return sorted(chosen, key=lambda c: c.stage_ids)
