"""The report's HTML page from its data and its figures' HTML: the answer, a summary, one shared key for every
figure, the figures in a grid that uses the page's width (two columns on a wide screen), the search
timeline, the per-class scores, the compound-scaling section and the tables (ids never wrap).

The page's figures carry no legend of their own: the key above them explains every colour, marker and line
once (the static images keep a small legend each, see :mod:`scalekit.report.drawing`). No plotting library here.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

from scalekit.results.fidelity import findings
from scalekit.report.key import ANSWER_COLOUR, KEY_COLOUR, LINE_STYLES, family_colours, kernel_symbol
from scalekit.report.perclass import class_table
from scalekit.records import describe_spent, training_spent
from scalekit.report.data import ReportData
from scalekit.results.scaling import scaling_tables
from scalekit.report.scalingplot import AXIS_COLOURS, GROUP_NAMES
from scalekit.results.tables import Table, fmt, stage_tables

GLYPHS = {"circle": "●", "diamond": "◆", "square": "■", "triangle-up": "▲", "pentagon": "⬟", "star": "★"}
ID_HEADERS = {"stage", "stages", "parent", "name", "family", "kernel", "change", "status", "scored at",
              "best single-axis move", "axis"}
"""Columns whose cells never wrap (ids, names and short codes)."""
SCATTER_CAPTIONS = {"dice_vs_memory": "Mean Dice against peak GPU memory", "dice_vs_gflops":
                    "Mean Dice against training GFLOPs per step", "dice_vs_params": "Mean Dice against parameters",
                    "nsd_vs_memory": "Mean surface Dice (NSD) against peak GPU memory"}


def table_html(headers: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    """A table; the cells of :data:`ID_HEADERS` columns get class ``id`` (``white-space: nowrap``)."""
    ids = [h in ID_HEADERS for h in headers]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=id" if is_id else ""}>{html.escape(cell)}</td>'
                         for cell, is_id in zip(row, ids)) + "</tr>" for row in rows
    )
    return f'<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _titled(table: Table, css: str = "", level: int = 2) -> str:
    return (f"<h{level}>{html.escape(table.title)}</h{level}>"
            + (table_html(table.headers, table.rows, css) if table.rows else "<p>None.</p>"))


def _line(kind: str, colour: str = "") -> str:
    style = LINE_STYLES[kind]
    dash = {"dot": ' stroke-dasharray="2 3"', "dash": ' stroke-dasharray="5 3"'}.get(style.dash, "")
    return (f'<svg width="30" height="12"><line x1="1" y1="6" x2="29" y2="6" stroke="{colour or style.colour}" '
            f'stroke-width="{min(style.width, 5)}"{dash}/></svg>')


def _item(glyph: str, text: str, colour: str = KEY_COLOUR) -> str:
    return f'<span class="item"><span style="color:{colour}">{glyph}</span> {html.escape(text)}</span>'


def key_html(data: ReportData) -> str:
    """The one key of every figure: families (colour), kernels (marker), lines, marks, timeline ends, axes."""
    colours = family_colours([r.family_id for r in data.records])
    names = {r.family_id: r.family_label or r.family_id for r in data.records}
    kernels = sorted({r.kernel_size for r in data.records})
    groups = [
        ("colour: family", [_item("●", names[fid], colour) for fid, colour in colours.items()]),
        ("marker: kernel", [_item(GLYPHS.get(kernel_symbol(k), "●"), f"k{k}") for k in kernels]),
        ("lines", [f'<span class="item">{_line("front")} Pareto front of the figure\'s two axes</span>',
                   f'<span class="item">{_line("upkern", "#1f77b4")}▸ UpKern step, labelled with its gain</span>',
                   f'<span class="item">{_line("continue")} continuation control</span>']),
        ("marks", [_item("○", "hollow, “@2 ep”: halted at a rung of 2 epochs (never on a front, never compared "
                              "with fully trained stages)"),
                   _item("◯", "answer: the stage the answer names", ANSWER_COLOUR),
                   _item("⬚", "zoom (n): n stages drawn again, spread out, in the zoom figure"),
                   _item("“2 tied”, “3 close”", "stages on top of each other (the hover lists them)")]),
        ("timeline", [_item("|", "scored at a rung", "#222"), _item("●", "completed", "#222"),
                      _item("○", "halted", "#222"), _item("✕", "failed", "#c0392b"),
                      _item("⊗", "infeasible", "#888")]),
        ("compound scaling: axis moved", [_item("✖" if g == "compound" else "●", GROUP_NAMES[g], c)
                                          for g, c in AXIS_COLOURS.items()]),
    ]
    return '<div class="key" id="key">' + "".join(
        f'<div class="group"><b>{html.escape(title)}</b> {" ".join(items)}</div>' for title, items in groups
    ) + "</div>"


def _figure(div: str, caption: str) -> str:
    return f'<figure class="fig">{div}<figcaption>{html.escape(caption)}</figcaption></figure>'


def _captions(data: ReportData, names: Sequence[str]) -> dict[str, str]:
    answer = f"; the ring marks the answer, {data.answer_id}" if data.answer_id else ""
    captions = {name: SCATTER_CAPTIONS[name] + answer for name in SCATTER_CAPTIONS}
    for name in names:
        if name.endswith("_zoom"):
            base = name.removesuffix("_zoom")
            captions[name] = f"Zoom of the stages boxed (dashed) in “{SCATTER_CAPTIONS[base]}”, spread out"
    return captions


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


def _scaling_section(data: ReportData, figure: str) -> str:
    """The compound-scaling heading, its figure, then its tables, with what to add where an axis has no move."""
    notes = "".join(f"<p>{html.escape(line)}</p>" for line in data.scaling.missing.values())
    tables = "".join(_titled(t, level=3) for t in scaling_tables(data.scaling))
    return ('<h2 id="compound-scaling">Compound scaling: what each axis bought</h2><p>Pairs of completed stages '
            "that differ in one scaling axis alone (B block counts, R expansion ratio, C channels, k kernel), and "
            "moves along several axes at once against the best single-axis move of equal memory cost; each point "
            "is labelled with its change.</p>" + _figure(figure, "ΔDice against Δ peak GPU memory of each move")
            + notes + tables)


def _tables(data: ReportData) -> str:
    steps = [[s.family, f"{s.parent_id} → {s.stage_id}", f"k{s.from_kernel} → k{s.to_kernel}",
              "—" if s.dice_delta is None else f"{s.dice_delta:+.4f}", fmt(s.memory_ratio, 2),
              fmt(s.flops_ratio, 2)] for s in data.steps]
    tables = [Table("UpKern steps: each UpKern-initialised stage against its parent",
                    ["family", "stages", "kernel", "ΔDice", "memory ratio", "GFLOPs ratio"], steps)]
    return "".join(_titled(t, t.title.split()[0].lower()) for t in tables + stage_tables(data.records, data.front_ids))


_CSS = """body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f2f2f2;white-space:nowrap}
td.id{white-space:nowrap}.scroll{overflow-x:auto;max-width:100%}
table.not td{background:#fff3f3}.note{background:#fff8d8;border:1px solid #e0c060;padding:.6em}
.key{background:#fafafa;border:1px solid #ddd;padding:.4em .7em;font-size:13px;
line-height:1.7}.key .group{display:inline-block;margin-right:1.4em}.key .item{white-space:nowrap;margin-left:.7em}
.key svg{vertical-align:middle}.grid{display:grid;gap:14px;align-items:start;margin-top:10px}
figure.fig{margin:0;overflow-x:auto}figcaption{font-size:13px;color:#444;margin:2px 0 8px}"""


def render_html(data: ReportData, figures: dict[str, str], note: str | None) -> str:
    """The whole page from ``figures`` (name -> the figure's HTML, plotly.js within the first): the scatter
    figures and their zooms in one grid, then the timeline and per-class heatmap, then the compound-scaling
    section (heading, figure, tables) and the tables. Columns are at least one figure wide."""
    names = [n for n in figures if n not in ("compound_scaling", "timeline", "class_dice")]
    captions = _captions(data, names)
    width = 520
    grid = (f'<div class="grid" style="grid-template-columns:repeat(auto-fill,minmax({width}px,1fr))">'
            + "".join(_figure(figures[n], captions[n]) for n in names) + "</div>")
    detail = (f'<div class="grid" style="grid-template-columns:repeat(auto-fill,minmax({width}px,1fr))">'
              '<section><h2 id="timeline">Search timeline</h2>'
              f'<p class="compute">{html.escape(data.timeline.compute.sentence())}</p>'
              + _figure(figures["timeline"], "Each stage over the epochs trained since scratch along its chain")
              + '</section><section><h2 id="per-class">Per-class Dice</h2>'
              + _figure(figures["class_dice"], "Each scored stage's Dice per class, best mean first")
              + "</section></div>")
    per_class = "".join(_titled(class_table(s), level=3) for s in (data.class_dice, data.class_nsd) if s.rows)
    answer = "".join(f"<li>{html.escape(line)}</li>" for line in data.answer_lines)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>scalekit study report</title>"
        f"<style>{_CSS}</style></head><body><h1>scalekit study report</h1>"
        f'<h2>Answer</h2><ul class="answer">{answer}</ul>{_summary(data, note)}'
        + key_html(data) + grid + detail + per_class + _scaling_section(data, figures["compound_scaling"])
        + _tables(data) + "</body></html>"
    )
