"""The study report: its data records (points, fronts, UpKern steps), the HTML page and, with Chromium, images and
the page's layout measured in the browser (tests/report/test_report_figures.py: the figures' newer views as plain data)."""

from __future__ import annotations

import dataclasses
import html
import itertools
import json
import re
import shutil
import subprocess

import pytest

from scalekit.report.key import LINE_STYLES
from scalekit.report.geometry import (
    GAPS, Axis, Box, LabelRequest, beside, fit_axis, line_boxes, place_labels, style_named,
)
from scalekit.records import read_results, write_results
from scalekit.report.output import build_figures, build_report_data, panel_layouts, write_report
from scalekit.results.selection import select_stage

from tests.helpers.study_fixture import DICE_MEMORY_FRONT, STAGES, STUDY_FRONT, make_study

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
ALL_IDS = [s[0] for s in STAGES]
VALID_IDS = {s[0] for s in STAGES if s[3] == "completed"}
SCATTERS = ["dice_vs_memory", "dice_vs_gflops", "dice_vs_params", "nsd_vs_memory"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    path = tmp_path_factory.mktemp("study")
    make_study(path)
    return path


def test_records_contain_every_stage_and_exactly_the_front(study) -> None:
    data = build_report_data(study)
    assert [r.stage_id for r in data.records] == ALL_IDS
    assert data.front_ids == STUDY_FRONT
    panels = {p.name: p for p in data.panels}
    memory = panels["dice_vs_memory"]
    assert memory.front_ids == ["A-k3", "A-k5", "E-k3", "A-k7", "B-k3", "B-k5"]  # ordered by memory, then id
    assert set(memory.front_ids) == DICE_MEMORY_FRONT
    assert {sid for sid, _, _ in memory.points} == VALID_IDS  # no pending/running/failed/infeasible/stopped point
    assert memory.budget == 24.0 and panels["dice_vs_gflops"].budget is None
    assert panels["dice_vs_gflops"].front_ids == ["A-k3", "F-k3", "E-k3", "A-k7", "B-k3", "B-k5"]
    assert data.choices == {"best": "B-k5", "knee": "A-k5"}
    assert data.answer_id == "B-k5"  # the best stage under the 24 GiB budget, as the answer names it


def test_upkern_steps_compare_each_stage_with_its_parent(study) -> None:
    steps = {s.stage_id: s for s in build_report_data(study).steps}
    assert set(steps) == {"A-k5", "A-k7", "B-k5", "B-k7", "C-k5", "D-k5"}
    a5 = steps["A-k5"]
    assert (a5.parent_id, a5.from_kernel, a5.to_kernel) == ("A-k3", 3, 5)
    assert a5.dice_delta == pytest.approx(0.04)
    assert a5.memory_ratio == pytest.approx(1.5) and a5.flops_ratio == pytest.approx(1.4)
    assert steps["A-k7"].dice_delta == pytest.approx(0.01)
    assert steps["B-k7"].dice_delta is None  # never trained: no gain to show


def test_figures_draw_the_records(study) -> None:
    data = build_report_data(study)
    figures = build_figures(data)
    assert list(figures) == [*SCATTERS, "compound_scaling", "timeline", "class_dice"]  # no crowd to zoom
    fig = figures["dice_vs_memory"]
    front = fig.data[0]  # drawn first: beneath the markers, thick, not the thin line of an arrow
    assert front.name == "front" and front.line.shape == "hv" and front.line.width > 2 * LINE_STYLES["upkern"].width
    assert list(front.y) == pytest.approx([0.70, 0.74, 0.74, 0.75, 0.76, 0.80])
    families = [t for t in fig.data if t.mode == "markers" and t.x[0] is not None and t.name != "answer"]
    assert sum(len(t.x) for t in families) == len(VALID_IDS)
    assert len({t.marker.color for t in families}) == len(families) == 6  # a colour per family (D never trained)
    symbol_of: dict[int, set[str]] = {}
    for trace in families:
        for symbol, kernel in zip(trace.marker.symbol, _kernels(trace)):
            symbol_of.setdefault(kernel, set()).add(symbol)
    assert symbol_of == {3: {"circle"}, 5: {"diamond"}, 7: {"square"}}  # the marker is the kernel, nothing else
    key = [t.name for t in fig.data if t.x[0] is None]
    assert key[:3] == ["k3", "k5", "k7"] and "UpKern (ΔDice)" in key
    arrows = [a for a in fig.layout.annotations if a.showarrow and a.axref == "x"]
    assert len(arrows) == 3  # A-k3->A-k5, A-k5->A-k7, B-k3->B-k5, each in its family's colour
    assert {a.arrowcolor for a in arrows} == {t.marker.color for t in families if t.name in ("C4 B1 R2", "C8 B1 R2")}
    texts = [a.text for a in fig.layout.annotations if not a.showarrow]
    assert sorted(t for t in texts if t.startswith("+")) == ["+0.010", "+0.040", "+0.040"]
    assert "2 tied" in texts  # A-k5 and E-k3 share memory and Dice: one marker hides the other, so it says so
    # The 24 GiB budget lies far right of the data (2-10 GiB): an edge marker, not a line that squashes them.
    assert "budget 24 GiB →" in texts and not [s for s in fig.layout.shapes if s.line.dash == "dash"]
    leaders = [label.leader for label in panel_layouts(data, style_named("paper"))["dice_vs_memory"].labels
               if label.leader is not None]  # a label placed away from what it names points to it
    assert [((s.x0, s.y0), (s.x1, s.y1)) for s in fig.layout.shapes] == leaders
    assert fig.layout.xaxis.title.text == "measured peak GPU memory (GiB)"
    hover = " ".join(families[0].hovertext)
    assert "up_alignment: reference" in hover and "block_counts:" in hover


def _kernels(trace) -> list[int]:
    return [int(re.search(r"-k(\d+)", h).group(1)) for h in trace.hovertext]


@pytest.mark.parametrize("style", ["paper", "screen"])
def test_figures_fit_the_data_and_no_labels_overlap(study, style) -> None:
    data = build_report_data(study)
    layouts = panel_layouts(data, style_named(style))
    figures = build_figures(data, style)
    for name, layout in layouts.items():
        for axis, values in ((layout.x, [p.x for p in layout.points]), (layout.y, [p.y for p in layout.points])):
            assert all(axis.lo <= v <= axis.hi for v in values), name
            assert (max(values) - min(values)) / axis.span >= 0.5, name  # the data fill at least half the axis
            assert axis.lo >= 0  # positive quantities, positive axes
        assert list(figures[name].layout.xaxis.range) == [layout.x.lo, layout.x.hi]
        assert list(figures[name].layout.yaxis.range) == [layout.y.lo, layout.y.hi]
        boxes = [label.box for label in layout.labels]
        assert all(b.inside(layout.area.box) for b in boxes)
        assert not [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)], name
        radius = layout.style.marker_px / 2
        markers = [Box.around(*layout.area.px(p.x, p.y), radius, radius) for p in layout.points]
        assert not [b for b in boxes for m in markers if b.overlaps(m)], name
        # Each family is named once: by a label on the plot or, where none fits, in the legend.
        on_plot = [label.text for label in layout.labels if label.kind == "family"]
        legend = [t.name for t in figures[name].data if t.showlegend is not False and t.x[0] is not None
                  and t.mode == "markers"]
        names = {p.family for p in layout.points}
        assert sorted(on_plot + legend) == sorted(names), name
        assert not [k for k in layout.left_off if not k.startswith(("family:", "delta:"))]  # budget, answer placed
        assert layout.margins[2] <= 0.2 * layout.style.height_px, name  # the static legend stays small
    memory = layouts["dice_vs_memory"]
    assert sum(label.kind == "delta" for label in memory.labels) == 3  # every ΔDice found a place
    assert memory.x.budget_mode == "edge" and memory.x.hi < 24
    assert style_named(style).font_pt() >= 10


def test_axes_of_a_single_point_a_near_budget_and_mixed_memory(study, tmp_path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(study / "study.yaml", one)
    records = read_results(study)
    halted = dataclasses.replace(records[1], stage_id="A-k5", status="stopped", reason="halted at rung 1")
    write_results(one, [dataclasses.replace(records[0], memory_method="predicted"), halted])
    layout = panel_layouts(build_report_data(one), style_named("paper"))["dice_vs_memory"]
    assert [p.hollow for p in layout.points] == [False, True]  # the halted stage is drawn hollow
    assert [label.text for label in layout.labels if label.kind == "rung"] == ["@2 ep"]
    assert 0 <= layout.x.lo < 2.0 < 3.0 < layout.x.hi and 0 < layout.y.lo < 0.70 < 0.74 < layout.y.hi <= 1
    assert layout.x_title == "predicted/measured peak GPU memory (GiB)"
    assert fit_axis([2.0]) == Axis(pytest.approx(1.8), pytest.approx(2.2))  # one point: +-10%, never negative
    assert fit_axis([0.0, 10.0], 9.0).budget_mode == "line"  # inside the data
    near = fit_axis([2.0, 10.0], 12.0)  # outside, but the data keep more than half the axis: taken in
    assert near.budget_mode == "line" and near.hi > 12.0
    assert (fit_axis([2.0, 10.0], 40.0).budget_mode, fit_axis([20.0, 22.0], 1.0).budget_side) == ("edge", "low")


def test_greedy_placement_never_overlaps() -> None:
    crowd = [(50 + 7 * i, 60) for i in range(30)]  # thirty labels wanted around nearly the same spot
    requests = [LabelRequest(str(i), "+0.040", tuple(c for gap in GAPS for c in beside(at, (60, 26), gap)))
                for i, at in enumerate(crowd)]
    placed, left_off = place_labels(requests, Box(0, 0, 300, 200), [Box(45, 55, 60, 65)], 20.0)
    assert len(placed) + len(left_off) == 30 and len(placed) >= 6
    assert not [(a, b) for a, b in itertools.combinations(placed, 2) if a.box.overlaps(b.box)]


def test_labels_keep_off_lines_and_anchors_and_point_back_when_moved() -> None:
    area, size, at = Box(0, 0, 400, 300), (60, 26), (200.0, 150.0)
    wall = line_boxes((150.0, 0.0), (150.0, 300.0))  # a drawn line just left of the anchor
    near = LabelRequest("a", "+0.040", tuple(c for gap in GAPS for c in beside(at, size, gap)), at, 20.0)
    (label,), _ = place_labels([near], area, [], 20.0, soft=[Box.around(230, 150, 40, 40)] + wall)
    assert not [w for w in wall if label.box.overlaps(w)]  # off the line, not merely near the anchor
    moved = label.box.distance(*at) > 20.0
    assert (label.leader is not None) == moved and (not moved or label.leader[0] == at)
    # A second label wanted at the same spot may not hide the first one's anchor, nor the first one.
    other = LabelRequest("b", "C4 B1 R2", tuple(c for gap in GAPS for c in beside(at, (90, 26), gap)), None)
    placed, left_off = place_labels([other, near], area, [], 20.0)
    assert not left_off and not placed[0].box.overlaps(Box.around(*at, 4, 4))
    assert not placed[0].box.overlaps(placed[1].box)


def test_html_report_lists_every_stage_and_reason(study, tmp_path) -> None:
    result = write_report(study, tmp_path / "r.html", images=False)
    page = result.html.read_text()
    for stage_id in ALL_IDS:
        assert f"<td class=id>{stage_id}</td>" in page
    for reason in ("RuntimeError: CUDA out of memory", "predicted peak memory 30.0 GB &gt; budget 24 GB",
                   "chain stopped: B-k5 gained &lt; 0.005 Dice"):
        assert reason in page
    assert "Pareto front (study objectives): A-k3, A-k7, B-k3, B-k5, E-k3, F-k3" in page
    # The page opens with the answer, each stage chosen by the selection rules; the evidence follows.
    records = read_results(study)
    answer = page[page.index("<h2>Answer</h2>"):page.index("</ul>")]
    assert page.index("</h1>") < page.index("<h2>Answer</h2>") < page.index("<li>study: ") < page.index('id="fig-')
    under, knee = (select_stage(records, rule).stage.stage_id for rule in ("max-dice-under=24GB", "knee"))
    assert f"<li>train for the study&#x27;s 24 GiB budget: {under} (" in answer
    assert f"<li>knee: {knee} (" in answer and "<li>UpKern: " in answer
    assert "Static images were not requested." in page and result.images == []
    assert len(re.findall(r'id="fig-', page)) == 7
    assert "Compound scaling: what each axis bought" in page and "<td class=id>A-k3 → C-k3</td>" in page
    # The page: one shared key, figures without legends or toolbar, the scaling figure under its heading.
    assert page.count('id="key"') == 1 and '"displayModeBar": false' in page and '"showlegend":false' in page
    assert page.index('id="compound-scaling"') < page.index('id="fig-compound_scaling"')
    assert "td.id{white-space:nowrap}" in page and "grid-template-columns:repeat(auto-fill" in page
    assert "The search spent 18 epochs (110 training TFLOPs)" in page
    assert "<script src=" not in page and "Plotly.newPlot" in page  # plotly.js embedded: opens offline


def test_report_of_a_partial_and_of_an_empty_study(study, tmp_path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(study / "study.yaml", partial)
    write_results(partial, [r for r in read_results(study) if r.stage_id in ("A-k3", "D-k5", "H-k3")])
    data = build_report_data(partial)
    assert data.front_ids == {"A-k3"} and data.choices == {"best": "A-k3", "knee": "A-k3"}
    unmeasured = [dataclasses.replace(r, peak_memory_bytes=None) for r in read_results(partial)]
    write_results(partial, unmeasured)  # a Dice but no memory yet: no front, no knee, still a report
    data = build_report_data(partial)
    assert data.front_ids == frozenset() and data.choices == {"best": "A-k3"}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="is not a study folder"):
        write_report(empty, images=False)
    shutil.copy(study / "study.yaml", empty)  # a study that has just started: its file, no results yet
    page = write_report(empty, images=False).html.read_text()
    assert "stages: none yet" in page and "no valid stage yet" in page
    with pytest.raises(ValueError, match="does not exist"):
        write_report(tmp_path / "missing")


def test_missing_browser_gives_a_clear_note(study, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chrome"))
    result = write_report(study, tmp_path / "r.html")
    assert result.images == [] and "no Chrome or Chromium was found" in result.note
    assert "no Chrome or Chromium was found" in result.html.read_text()
    assert not (tmp_path / "r_figures").exists()


_ERROR_HOOK = """<script>window.__errors=[];
window.addEventListener('error',function(e){__errors.push(String(e.message))});
(function(){var o=console.error;console.error=function(){__errors.push(Array.prototype.join.call(arguments,' '));
o.apply(console,arguments)};})();
window.addEventListener('load',function(){setTimeout(function(){
document.body.setAttribute('data-errors',JSON.stringify(__errors));
document.body.setAttribute('data-plots',String(document.querySelectorAll('.js-plotly-plot').length))},0)});</script>"""


_LAYOUT_PROBE = """<script>window.addEventListener('load',function(){setTimeout(function(){
function box(e){if(!e)return null;var b=e.getBoundingClientRect();return [b.left,b.top,b.right,b.bottom]}
var plots=[].map.call(document.querySelectorAll('.js-plotly-plot'),function(p){var m=p.querySelector('.modebar');
return {id:p.id,box:box(p),legend:box(p.querySelector('.legend')),modebar:m&&m.getClientRects().length?box(m):null,
title:box(p.querySelector('.gtitle')),texts:[].map.call(p.querySelectorAll('.annotation-text'),function(a){
return a.textContent}),traces:(p.data||[]).map(function(t){return t.name||''})}});
var cells=[].map.call(document.querySelectorAll('td.id'),function(td){var r=document.createRange();
r.selectNodeContents(td);var tops={};[].forEach.call(r.getClientRects(),function(c){tops[Math.round(c.top)]=1});
return [td.textContent,Object.keys(tops).length]});
var lefts=[].map.call(document.querySelector('.grid').querySelectorAll('figure.fig'),function(f){
return Math.round(f.getBoundingClientRect().left)});
document.body.setAttribute('data-layout',JSON.stringify({plots:plots,cells:cells,lefts:lefts,
key:box(document.getElementById('key'))}))},300)});</script>"""


def _overlap(a, b) -> bool:
    return a is not None and b is not None and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _open(page, width: int) -> tuple[str, dict, str]:
    """Open ``page`` in headless Chromium ``width`` pixels wide: its final <body> tag, what the layout probe
    measured there, and the browser's stderr."""
    run = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         f"--window-size={width},1800", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    body = re.search(r"<body[^>]*>", run.stdout)
    assert body, f"chromium printed no page (exit {run.returncode}): {run.stderr[-2000:]}"
    measured = re.search(r'data-layout="([^"]*)"', body.group(0))
    assert measured, f"the layout probe did not run: {body.group(0)[:500]}"
    return body.group(0), json.loads(html.unescape(measured.group(1))), run.stderr


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (CI installs it in .ci/run; locally: "
                                             "apt-get install -y chromium)")
def test_report_opens_in_headless_chromium_and_images_are_written(study, tmp_path) -> None:
    result = write_report(study, tmp_path / "report.html")
    assert result.note is None
    png = tmp_path / "report_figures" / "dice_vs_memory.png"
    assert png in result.images and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "report_figures" / "dice_vs_memory.svg").read_text().lstrip().startswith("<svg")
    assert len(result.images) == 14 and (tmp_path / "report_figures" / "timeline.png") in result.images
    # Record uncaught errors and console.error calls on the page itself, then read them from the final DOM;
    # likewise where the browser laid out each plot's legend, toolbar and title, the figures and the id cells.
    probe = tmp_path / "probe.html"
    probe.write_text(result.html.read_text().replace("<head>", "<head>" + _ERROR_HOOK + _LAYOUT_PROBE, 1))
    body, layout, stderr = _open(probe, 1400)
    errors = re.search(r'data-errors="([^"]*)"', body)
    assert errors, f"the page's scripts did not run: {body}"
    assert json.loads(errors.group(1).replace("&quot;", '"')) == []
    assert 'data-plots="7"' in body
    assert not [line for line in stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    plots = {p["id"]: p for p in layout["plots"]}
    assert set(plots) == {f"fig-{name}" for name in [*SCATTERS, "compound_scaling", "timeline", "class_dice"]}
    for plot in plots.values():  # one shared key above the figures: no legend of their own, no toolbar on them
        assert plot["legend"] is None and plot["modebar"] is None, plot["id"]
        assert not _overlap(plot["title"], plot["legend"]) and not _overlap(plot["modebar"], plot["legend"])
        assert layout["key"][3] <= plot["box"][1], plot["id"]
    for name in SCATTERS:  # the answer is ringed and labelled in every scatter figure
        assert "answer" in plots[f"fig-{name}"]["texts"] and "answer" in plots[f"fig-{name}"]["traces"], name
    assert "2 tied" in plots["fig-dice_vs_memory"]["texts"]
    assert len(set(layout["lefts"])) >= 2  # the figures use the page's width: two columns at 1400 pixels
    # On a narrow window (one column) no id, name or change wraps: the tables scroll instead.
    _, narrow, _ = _open(probe, 800)
    assert len(set(narrow["lefts"])) == 1 and len(narrow["cells"]) == len(layout["cells"]) > 100
    assert not [(text, lines) for text, lines in narrow["cells"] + layout["cells"] if lines > 1]
    # A screenshot of the page as a reader sees it (paper-style figures, the compound-scaling section).
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1400,2400", "--virtual-time-budget=5000", f"--screenshot={shot}",
                    probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
