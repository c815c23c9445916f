"""The study report: a self-contained HTML page of plotly figures and tables, plus PNG/SVG of each figure.

Calculate, then draw: :func:`build_report_data` turns a study directory (complete or still running) into plain
records (panels with their points and 2-D Pareto fronts, UpKern steps, hover texts), :func:`build_figures`
draws them with plotly and :func:`write_report` writes the page and, where a Chrome or Chromium is installed,
the static images (kaleido, one browser start for all of them). This is the only module that imports plotly.
"""

from __future__ import annotations

import contextlib
import gc
import html
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go

from scalekit._atomic import atomic_path, write_atomic
from scalekit.answer import study_answer
from scalekit.faults import fault_point
from scalekit.fidelity import findings
from scalekit.drawing import panel_figure, scaling_figure
from scalekit.figures import LABELS, LinkSpec, PanelLayout, PointSpec, family_colours, panel_layout
from scalekit.pareto import StudyGoals, pareto_front, study_front
from scalekit.plotlayout import Style, style_named
from scalekit.records import Objective, StageRecord, describe_spent, training_spent
from scalekit.scaling import ScalingView, scaling_tables, scaling_view
from scalekit.selection import rule_choices
from scalekit.tables import Table, fmt, stage_tables

log = logging.getLogger(__name__)

IMAGE_FORMATS = ("png", "svg")
PANELS = (
    ("dice_vs_memory", "peak_memory_gb", "mean_dice", "max_memory_gb"),
    ("dice_vs_gflops", "gflops_train", "mean_dice", "max_gflops"),
    ("dice_vs_params", "params", "mean_dice", None),
    ("nsd_vs_memory", "peak_memory_gb", "mean_nsd", "max_memory_gb"),
)
"""(name, x metric, y metric, budget attribute of StudyGoals): one figure each; x minimised, y maximised."""


@dataclass(frozen=True)
class Panel:
    """One scatter figure: the valid stages with both values and their own 2-D Pareto front."""

    name: str
    x_metric: str
    y_metric: str
    points: list[tuple[str, float, float]]
    """(stage id, x, y) of every valid stage that has both values."""
    front_ids: list[str]
    """Stage ids on the (min x, max y) front, ordered by x: the step line is drawn through them."""
    budget: float | None = None
    partial: list[tuple[str, float, float]] = field(default_factory=list)
    """(stage id, x, y) of stages scored at a rung only (halted there, or waiting to be promoted): drawn hollow."""


@dataclass(frozen=True)
class UpKernStep:
    """An UpKern-initialised stage against its parent: the gain of one k -> k' step of a chain."""

    stage_id: str
    parent_id: str
    family: str
    from_kernel: int
    to_kernel: int
    dice_delta: float | None
    memory_ratio: float | None
    flops_ratio: float | None


@dataclass
class ReportData:
    """Everything the report shows, as plain values (tests check these, not pixels)."""

    study_dir: Path
    records: list[StageRecord]
    goals: StudyGoals
    front_ids: frozenset[str]
    """Stages on the Pareto front of the study's own objectives (any number of them)."""
    panels: list[Panel]
    steps: list[UpKernStep]
    hover: dict[str, str]
    choices: dict[str, str] = field(default_factory=dict)
    """Rule -> stage id for ``best`` and ``knee`` (absent while no stage is valid)."""
    scaling: ScalingView = field(default_factory=lambda: ScalingView([], [], {}))
    """What each scaling axis bought (:mod:`scalekit.scaling`)."""


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def hover_text(record: StageRecord) -> str:
    """Plotly hover (``<br>`` lines): the stage, its measurements and its whole MedNeXt configuration."""
    lines = [
        f"<b>{html.escape(record.stage_id)}</b> {html.escape(record.family_label or record.family_id)}",
        f"status: {record.status}" + (f" ({html.escape(record.reason)})" if record.reason else ""),
        f"init: {record.init}" + (f" from {html.escape(record.parent_stage)}" if record.parent_stage else ""),
        f"mean Dice {fmt(record.mean_dice)}, NSD {fmt(record.mean_nsd)}",
        f"peak memory {fmt(record.peak_memory_gb, 3)} GiB ({record.memory_method or 'n/a'})",
        f"GFLOPs train {fmt(record.gflops_train, 1)}, params {fmt(record.params)}",
    ]
    lines += [f"{key}: {html.escape(str(value))}" for key, value in record.config.items()]
    return "<br>".join(lines)


def _panel(name: str, x_metric: str, y_metric: str, budget: float | None, records: list[StageRecord]) -> Panel:
    objectives = (Objective(x_metric, "minimize"), Objective(y_metric, "maximize"))
    measured = [r for r in records if all(o.value(r) is not None for o in objectives)]
    usable = [r for r in measured if r.is_valid]
    points = [(r.stage_id, objectives[0].value(r), objectives[1].value(r)) for r in usable]
    partial = [(r.stage_id, objectives[0].value(r), objectives[1].value(r)) for r in measured
               if r.status in ("stopped", "paused") and r.epochs]
    front = sorted(pareto_front(usable, objectives), key=lambda r: (objectives[0].value(r), r.stage_id))
    return Panel(name, x_metric, y_metric, points, [r.stage_id for r in front], budget,  # type: ignore[arg-type]
                 partial)  # type: ignore[arg-type]


def _steps(records: list[StageRecord]) -> list[UpKernStep]:
    by_id = {r.stage_id: r for r in records}
    steps = []
    for r in records:
        parent = by_id.get(r.parent_stage)
        if r.init != "upkern" or parent is None:
            continue
        both = r.is_valid and parent.is_valid
        steps.append(UpKernStep(
            r.stage_id, parent.stage_id, r.family_label or r.family_id, parent.kernel_size, r.kernel_size,
            (r.mean_dice - parent.mean_dice) if both else None,  # type: ignore[operator]
            _ratio(r.peak_memory_gb, parent.peak_memory_gb),
            _ratio(r.gflops_train, parent.gflops_train),
        ))
    return steps


def build_report_data(study_dir: str | Path) -> ReportData:
    """Read a study directory (possibly partial) into the records the report draws."""
    study = study_front(study_dir)
    records, goals = study.records, study.goals
    panels = [
        _panel(name, x, y, getattr(goals, budget) if budget else None, records) for name, x, y, budget in PANELS
    ]
    choices = {rule: choice.stage.stage_id for rule, choice in rule_choices(records).items()}
    return ReportData(
        Path(study_dir), records, goals, study.front_ids, panels, _steps(records),
        {r.stage_id: hover_text(r) for r in records}, choices, scaling_view(records),
    )


def panel_layouts(data: ReportData, style: Style) -> dict[str, PanelLayout]:
    """The layout of every panel (fitted axes, placed labels, legend), keyed by panel name."""
    by_id = {r.stage_id: r for r in data.records}
    colours = family_colours([r.family_id for r in data.records])
    layouts = {}
    for panel in data.panels:
        points = [
            PointSpec(sid, x, y, by_id[sid].family_id, by_id[sid].family_label or by_id[sid].family_id,
                      by_id[sid].kernel_size, by_id[sid].memory_method, hollow)
            for hollow, group in ((False, panel.points), (True, panel.partial)) for sid, x, y in group
        ]
        y_of = {p.stage_id: (p.y, p.hollow) for p in points}
        links = []
        for p in points:
            record = by_id[p.stage_id]
            if record.init == "scratch" or record.parent_stage not in y_of:
                continue
            (y0, hollow0), hollow = y_of[record.parent_stage], p.hollow
            delta = None if hollow or hollow0 else p.y - y0
            links.append(LinkSpec(record.parent_stage, p.stage_id, record.init, delta))
        title = f"{LABELS[panel.y_metric]} vs {LABELS[panel.x_metric]}"
        layouts[panel.name] = panel_layout(panel.name, title, panel.x_metric, panel.y_metric, points, links,
                                           panel.budget, colours, style, panel.front_ids)
    return layouts


def build_figures(data: ReportData, style: str | Style = "paper") -> dict[str, go.Figure]:
    """One plotly figure per panel, keyed by panel name (also the image file stem), then ``compound_scaling``."""
    style = style_named(style) if isinstance(style, str) else style
    layouts = panel_layouts(data, style)
    figures = {panel.name: panel_figure(layouts[panel.name], panel.front_ids, data.hover) for panel in data.panels}
    figures["compound_scaling"] = scaling_figure(data.scaling, style)
    return figures


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


class _ToDebugLog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        log.debug("image export: %s", record.getMessage())


@contextlib.contextmanager
def _browser_messages_to_debug_log() -> Iterator[None]:
    """For the block, kaleido's event-loop messages go to scalekit's debug log: when the browser fails (a full
    disk, a crash) its unfinished tasks report their tracebacks to the ``asyncio`` logger once collected,
    which would print them on stderr after scalekit's own one-line error. They are collected before the block
    ends."""
    logger = logging.getLogger("asyncio")
    saved = logger.handlers, logger.propagate
    logger.handlers, logger.propagate = [_ToDebugLog()], False
    try:
        yield
    finally:
        gc.collect()
        logger.handlers, logger.propagate = saved


def write_images(figures: dict[str, go.Figure], folder: Path, style: str | Style = "paper",
                 ) -> tuple[list[Path], str | None]:
    """PNG and SVG of every figure in one browser start, at the style's size (PNGs at its scale); returns the
    files and a note if none were written.

    Each image is written to a temporary file beside it that replaces it only once every image is complete;
    when the browser fails, the images of an earlier report are left as they were.
    """
    style = style_named(style) if isinstance(style, str) else style
    folder.mkdir(parents=True, exist_ok=True)
    targets = [(fig, folder / f"{name}.{fmt}", fmt) for name, fig in figures.items() for fmt in IMAGE_FORMATS]
    with _browser_messages_to_debug_log():
        note = _render_images(targets, {"width": style.width_px, "height": style.height_px, "scale": style.scale})
    if note is not None:
        _remove_if_empty(folder)
        return [], note
    return [path for _, path, _ in targets], None


def _render_images(targets: list[tuple[go.Figure, Path, str]], size: dict[str, float]) -> str | None:
    """Render every target in one browser start, each atomically; a note saying why when none were written."""
    import kaleido
    from choreographer.errors import ChromeNotFoundError

    try:
        with contextlib.ExitStack() as stack:
            jobs = [{"fig": fig, "path": stack.enter_context(atomic_path(path)), "opts": {"format": fmt, **size}}
                    for fig, path, fmt in targets]
            kaleido.write_fig_from_object_sync(jobs, kopts={"mathjax": False}, cancel_on_error=True)
    except ChromeNotFoundError:
        return ("PNG/SVG images were not written: no Chrome or Chromium was found. Install one "
                "(e.g. `apt-get install chromium`, or `plotly_get_chrome`) and run `scalekit study report` again.")
    except Exception as err:  # noqa: BLE001 - a browser failure must not lose the HTML report
        log.debug("static image export failed", exc_info=True)
        return f"PNG/SVG images were not written: the browser failed ({type(err).__name__}: {err})."
    return None


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _tables(data: ReportData) -> str:
    steps = [[s.family, f"{s.parent_id} → {s.stage_id}", f"k{s.from_kernel} → k{s.to_kernel}",
              "—" if s.dice_delta is None else f"{s.dice_delta:+.4f}", fmt(s.memory_ratio, 2),
              fmt(s.flops_ratio, 2)] for s in data.steps]
    tables = [Table("UpKern steps: each UpKern-initialised stage against its parent",
                    ["family", "stages", "kernel", "ΔDice", "memory ratio", "GFLOPs ratio"], steps)]
    return "".join(
        f"<h2>{html.escape(t.title)}</h2>" + (_table(t.headers, t.rows, t.title.split()[0].lower())
                                              if t.rows else "<p>None.</p>")
        for t in tables + stage_tables(data.records, data.front_ids)
    )


def _scaling_section(data: ReportData) -> str:
    """The compound-scaling tables under its figure, with what to add where an axis has no move."""
    notes = "".join(f"<p>{html.escape(line)}</p>" for line in data.scaling.missing.values())
    tables = "".join(
        f"<h3>{html.escape(t.title)}</h3>" + (_table(t.headers, t.rows) if t.rows else "<p>None.</p>")
        for t in scaling_tables(data.scaling)
    )
    return ("<h2>Compound scaling: what each axis bought</h2><p>Pairs of completed stages that differ in one "
            "scaling axis alone (B block counts, R expansion ratio, C channels, k kernel), and moves along "
            "several axes at once against the best single-axis move of equal memory cost.</p>"
            + notes + tables)


def _summary(data: ReportData, note: str | None) -> str:
    counts = {s: sum(r.status == s for r in data.records) for s in sorted({r.status for r in data.records})}
    goals = data.goals
    objectives = ", ".join(f"{o.direction} {o.metric}" for o in goals.objectives)
    items = [
        f"study: {data.study_dir.resolve()}", f"generated: {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "stages: " + (", ".join(f"{n} {s}" for s, n in counts.items()) or "none yet"),
        f"objectives: {objectives}; budgets: memory {goals.max_memory_gb or 'none'} GiB, "
        f"GFLOPs {goals.max_gflops or 'none'}",
        "Pareto front (study objectives): " + (", ".join(sorted(data.front_ids)) or "empty")
        + "; each figure outlines the front of its own two axes",
        "selection rules: " + (", ".join(f"{k} = {v}" for k, v in data.choices.items()) or "no valid stage yet"),
    ]
    items += [f"compute: {describe_spent(training_spent(data.records))}", *findings(data.records)]
    lines = "".join(f"<li>{html.escape(i)}</li>" for i in items)
    warning = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"<ul>{lines}</ul>{warning}"


_CSS = """body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f2f2f2}
table.not td{background:#fff3f3}.note{background:#fff8d8;border:1px solid #e0c060;padding:.6em}"""


def render_html(data: ReportData, figures: dict[str, go.Figure], note: str | None) -> str:
    """The whole page; plotly.js is embedded once (with the first figure), so it opens offline."""
    divs = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"fig-{name}")
        for i, (name, fig) in enumerate(figures.items())
    ]
    answer = "".join(f"<li>{html.escape(line)}</li>" for line in study_answer(data.records, data.goals).lines())
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>scalekit study report</title>"
        f"<style>{_CSS}</style></head><body><h1>scalekit study report</h1>"
        f'<h2>Answer</h2><ul class="answer">{answer}</ul>{_summary(data, note)}'
        + "".join(divs) + _scaling_section(data) + _tables(data) + "</body></html>"
    )


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote, and why images are missing if they are."""

    html: Path
    images: list[Path]
    note: str | None


def write_report(study_dir: str | Path, out: str | Path | None = None, images: bool = True,
                 style: str = "paper") -> ReportResult:
    """Write the report of ``study_dir`` to ``out`` (default ``STUDY_DIR/report.html``).

    ``style``: ``paper`` (3.5 in wide figures with 10 pt type, for one column of a two-column paper; no
    titles) or ``screen`` (larger, titled); see :data:`scalekit.plotlayout.STYLES`.
    Images go to ``<out stem>_figures/`` beside the page: ``dice_vs_memory.png``, ``.svg`` and so on.
    Safe to call while the study runs: it reads the current ``results.csv``. Every file is written atomically
    (a temporary file beside it, then renamed), so a kill or a failure leaves the earlier report, never a
    partial one.
    """
    figure_style = style_named(style)
    data = build_report_data(study_dir)
    out = Path(out) if out is not None else Path(study_dir) / "report.html"
    figures = build_figures(data, figure_style)
    written: list[Path] = []
    note = "Static images were not requested." if not images else None
    if images:
        written, note = write_images(figures, out.parent / f"{out.stem}_figures", figure_style)
    html = render_html(data, figures, note)
    fault_point("report")
    write_atomic(out, html)
    log.info("report written to %s (%d images)", out, len(written))
    return ReportResult(out, written, note)
