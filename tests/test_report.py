"""The study report: its data records (points, fronts, UpKern steps), the HTML page and, with Chromium, images."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess

import pytest

from scalekit.records import read_results, write_results
from scalekit.report import build_figures, build_report_data, write_report
from scalekit.selection import select_stage

from .fixtures.study_fixture import DICE_MEMORY_FRONT, STAGES, STUDY_FRONT, make_study

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
ALL_IDS = [s[0] for s in STAGES]
VALID_IDS = {s[0] for s in STAGES if s[3] == "completed"}


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
    assert list(figures) == ["dice_vs_memory", "dice_vs_gflops", "dice_vs_params", "nsd_vs_memory"]
    fig = figures["dice_vs_memory"]
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert front.line.shape == "hv"
    assert list(front.y) == pytest.approx([0.70, 0.74, 0.74, 0.75, 0.76, 0.80])
    points = [t for t in fig.data if t.name and t.name.startswith("k")]
    assert sorted(t.name for t in points) == ["k3", "k5", "k7"]
    assert sum(len(t.x) for t in points) == len(VALID_IDS)
    arrows = [a for a in fig.layout.annotations if a.showarrow and a.axref == "x"]
    assert len(arrows) == 3  # A-k3->A-k5, A-k5->A-k7, B-k3->B-k5
    deltas = next(t for t in fig.data if t.name == "UpKern ΔDice")
    assert sorted(deltas.text) == ["+0.010", "+0.040", "+0.040"]
    assert [s.x0 for s in fig.layout.shapes] == [24.0]
    hover = " ".join(points[0].hovertext)
    assert "up_alignment: reference" in hover and "block_counts:" in hover


def test_html_report_lists_every_stage_and_reason(study, tmp_path) -> None:
    result = write_report(study, tmp_path / "r.html", images=False)
    page = result.html.read_text()
    for stage_id in ALL_IDS:
        assert f"<td>{stage_id}</td>" in page
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
    assert len(re.findall(r'id="fig-', page)) == 4
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


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (CI installs it in .ci/run; locally: "
                                             "apt-get install -y chromium)")
def test_report_opens_in_headless_chromium_and_images_are_written(study, tmp_path) -> None:
    result = write_report(study, tmp_path / "report.html")
    assert result.note is None
    png = tmp_path / "report_figures" / "dice_vs_memory.png"
    assert png in result.images and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "report_figures" / "dice_vs_memory.svg").read_text().lstrip().startswith("<svg")
    assert len(result.images) == 8
    # Record uncaught errors and console.error calls on the page itself, then read them from the final DOM.
    probe = tmp_path / "probe.html"
    probe.write_text(result.html.read_text().replace("<head>", "<head>" + _ERROR_HOOK, 1))
    run = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    body = re.search(r"<body[^>]*>", run.stdout)
    assert body, f"chromium printed no page (exit {run.returncode}): {run.stderr[-2000:]}"
    errors = re.search(r'data-errors="([^"]*)"', body.group(0))
    assert errors, f"the page's scripts did not run: {body.group(0)}"
    assert json.loads(errors.group(1).replace("&quot;", '"')) == []
    assert 'data-plots="4"' in body.group(0)
    assert not [line for line in run.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
