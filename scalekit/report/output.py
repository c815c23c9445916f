"""The study report: a self-contained HTML page of plotly figures and tables, plus PNG/SVG of each figure.

Calculate, then draw: :func:`scalekit.report.data.build_report_data` turns a study directory (complete or still
running) into plain records and :func:`scalekit.report.data.panel_layouts` lays the scatter figures out;
:func:`build_figures` draws them, the compound-scaling figure, the search timeline and the per-class heatmap
with plotly; :func:`write_report` writes the page (:mod:`scalekit.report.page`) and, where a Chrome or Chromium
is installed, the static images (kaleido, one browser start for all of them).

Legends: a static image must read on its own in a paper, so each keeps a small legend (kernels, front, line
kinds, and any family its label could not name on the plot); the page shows the figures without legends, under
one shared key, and without plotly's toolbar (nothing then covers a figure's top). With
:mod:`scalekit.report.drawing`, the only module that imports plotly.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go

from scalekit._atomic import atomic_path, write_atomic
from scalekit.report.drawing import heatmap_figure, panel_figure, scaling_figure, timeline_figure
from scalekit.faults import fault_point
from scalekit.report.key import family_colours
from scalekit.report.perclass import heatmap_geometry
from scalekit.report.geometry import Style, style_named
from scalekit.report.data import ReportData, build_report_data, panel_layouts
from scalekit.report.page import render_html
from scalekit.report.scalingplot import scaling_layout
from scalekit.report.timeline import timeline_geometry
from scalekit.records import StudyDir

log = logging.getLogger(__name__)

IMAGE_FORMATS = ("png", "svg")
PAGE_CONFIG = {"displayModeBar": False, "responsive": False}
"""Plotly's options on the page: no toolbar (it covered the legend's first row)."""


def build_figures(data: ReportData, style: str | Style = "paper", legend: bool = True) -> dict[str, go.Figure]:
    """Every figure, keyed by name (also the image file stem): each scatter panel followed by its zoom where it
    has one, ``compound_scaling``, ``timeline`` and ``class_dice``. ``legend``: a small legend on each (for the
    static images); without, none (for the page and its shared key)."""
    style = style_named(style) if isinstance(style, str) else style
    figures = {name: panel_figure(layout, data.hover, legend)
               for name, layout in panel_layouts(data, style, legend).items()}
    figures["compound_scaling"] = scaling_figure(scaling_layout(data.scaling, style, legend), legend)
    colours = family_colours([r.family_id for r in data.records])
    figures["timeline"] = timeline_figure(data.timeline, timeline_geometry(data.timeline, style), colours, style)
    figures["class_dice"] = heatmap_figure(data.class_dice, heatmap_geometry(data.class_dice, style), style)
    return figures


def page_figures(data: ReportData, style: str | Style = "paper") -> dict[str, str]:
    """The figures of the page as HTML (no legends, no toolbar); plotly.js is embedded once, with the first."""
    return {name: fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"fig-{name}", config=PAGE_CONFIG)
            for i, (name, fig) in enumerate(build_figures(data, style, legend=False).items())}


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
    """PNG and SVG of every figure in one browser start, each at its own size (the style's where it sets
    none; PNGs at the style's scale); returns the files and a note if none were written.

    Each image is written to a temporary file beside it that replaces it only once every image is complete;
    when the browser fails, the images of an earlier report are left as they were.
    """
    style = style_named(style) if isinstance(style, str) else style
    folder.mkdir(parents=True, exist_ok=True)
    targets = [(fig, folder / f"{name}.{fmt}", fmt) for name, fig in figures.items() for fmt in IMAGE_FORMATS]
    with _browser_messages_to_debug_log():
        note = _render_images(targets, style)
    if note is not None:
        _remove_if_empty(folder)
        return [], note
    return [path for _, path, _ in targets], None


def _render_images(targets: list[tuple[go.Figure, Path, str]], style: Style) -> str | None:
    """Render every target in one browser start, each atomically; a note saying why when none were written."""
    import kaleido
    from choreographer.errors import ChromeNotFoundError

    try:
        with contextlib.ExitStack() as stack:
            jobs = [{"fig": fig, "path": stack.enter_context(atomic_path(path)),
                     "opts": {"format": fmt, "width": fig.layout.width or style.width_px,
                              "height": fig.layout.height or style.height_px, "scale": style.scale}}
                    for fig, path, fmt in targets]
            kaleido.write_fig_from_object_sync(jobs, kopts={"mathjax": False}, cancel_on_error=True)
    except ChromeNotFoundError:
        return ("PNG/SVG images were not written: no Chrome or Chromium was found. Install one "
                "(e.g. `apt-get install chromium`, or `plotly_get_chrome`) and run `scalekit study report` again.")
    except Exception as err:  # noqa: BLE001 - a browser failure must not lose the HTML report
        log.debug("static image export failed", exc_info=True)
        return f"PNG/SVG images were not written: the browser failed ({type(err).__name__}: {err})."
    return None


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
    titles) or ``screen`` (larger, titled); see :data:`scalekit.report.geometry.STYLES`.
    Images go to ``<out stem>_figures/`` beside the page: ``dice_vs_memory.png``, ``.svg`` and so on (see
    :func:`build_figures` for the names).
    Safe to call while the study runs: it reads the current ``results.csv``. Every file is written atomically
    (a temporary file beside it, then renamed), so a kill or a failure leaves the earlier report, never a
    partial one.
    """
    figure_style = style_named(style)
    data = build_report_data(study_dir)
    out = Path(out) if out is not None else StudyDir(Path(study_dir)).report
    written: list[Path] = []
    note = "Static images were not requested." if not images else None
    if images:
        written, note = write_images(build_figures(data, figure_style), out.parent / f"{out.stem}_figures",
                                     figure_style)
    html = render_html(data, page_figures(data, figure_style), note)
    fault_point("report")
    write_atomic(out, html)
    log.info("report written to %s (%d images)", out, len(written))
    return ReportResult(out, written, note)
