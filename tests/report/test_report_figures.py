"""The report's figures and views as plain records (no browser): the answer's highlight, the line kinds, crowded
points (zoom panels and counts), halted stages at their rung, the search timeline, the per-class scores and the
compound-scaling figure. tests/report/test_report.py checks the page in a real browser."""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil

import pytest
import yaml

from scalekit.report.key import LINE_STYLES
from scalekit.report.layout import PointSpec, panel_layout, zoom_layout
from scalekit.report.perclass import class_scores, class_table
from scalekit.report.geometry import style_named
from scalekit.records import read_results, write_results
from scalekit.report.output import build_figures, build_report_data, panel_layouts, write_report
from scalekit.results.scaling import ScalingMove, ScalingView
from scalekit.report.scalingplot import scaling_layout
from scalekit.report.timeline import build_timeline

from tests.helpers.study_fixture import CLASS_OFFSETS, EPOCHS, ITERATIONS, STAGES, make_study

ALL_IDS = [s[0] for s in STAGES]
SCATTERS = ["dice_vs_memory", "dice_vs_gflops", "dice_vs_params", "nsd_vs_memory"]
PAPER = style_named("paper")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    path = tmp_path_factory.mktemp("study")
    make_study(path)
    return path


def _study_with(study, path, records, **yaml_changes):
    """A copy of the fixture study holding ``records`` (its study file changed by ``yaml_changes``)."""
    path.mkdir()
    config = yaml.safe_load((study / "study.yaml").read_text())
    config.update(yaml_changes)
    (path / "study.yaml").write_text(yaml.safe_dump(config))
    write_results(path, records)
    return path


def test_the_answer_is_ringed_and_labelled_in_every_scatter_figure(study, tmp_path) -> None:
    data = build_report_data(study)
    layouts, figures = panel_layouts(data, PAPER), build_figures(data)
    for name in SCATTERS:
        layout, fig = layouts[name], figures[name]
        answer = next(p for p in layout.points if p.stage_id == "B-k5")
        assert layout.answer_id == "B-k5" and [label.text for label in layout.labels if label.kind == "answer"] == ["answer"]
        ring = next(t for t in fig.data if t.name == "answer")
        assert (ring.x[0], ring.y[0]) == (answer.x, answer.y) and ring.marker.size > layout.style.marker_px
    # A budget below every stage: the answer names no stage, so nothing is ringed.
    low = _study_with(study, tmp_path / "low", read_results(study),
                      constraints={"max_memory_gb": 1, "max_gflops": None})
    none = build_report_data(low)
    assert none.answer_id is None
    for name, fig in build_figures(none).items():
        assert not [t for t in fig.data if t.name == "answer"], name
        assert "answer" not in [a.text for a in fig.layout.annotations], name


def test_front_upkern_and_control_lines_are_drawn_distinctly(study, tmp_path) -> None:
    styles = list(LINE_STYLES.values())
    assert len({(s.colour, s.width, s.dash) for s in styles}) == 3
    assert LINE_STYLES["front"].width > 2 * max(LINE_STYLES[k].width for k in ("upkern", "continue"))
    records = read_results(study)
    control = dataclasses.replace(records[0], stage_id="A-k3c", init="continue", parent_stage="A-k3", mean_dice=0.72)
    fig = build_figures(build_report_data(_study_with(study, tmp_path / "c", records + [control])))["dice_vs_memory"]
    dotted = next(t for t in fig.data if t.name == "control")
    assert dotted.line.dash == "dot" and list(dotted.x[:2]) == [2.0, 2.0]
    arrows = {a.arrowcolor for a in fig.layout.annotations if a.showarrow}
    assert arrows and LINE_STYLES["continue"].colour not in arrows and fig.data[0].line.color not in arrows


def _crowd_points() -> list[PointSpec]:
    """Five stages within 0.001 GiB and 0.004 Dice (as the demo's chains), a tie, a far pair, a lone stage."""
    crowd = [PointSpec(f"a{i}", 0.0300 + 0.0002 * i, 0.500 + 0.001 * i, "A", "tiny", 3 + 2 * (i % 3)) for i in range(5)]
    tie = [PointSpec(f"t{i}", 0.06, 0.7, "B", "wide", 3 + 2 * i) for i in range(2)]
    pair = [PointSpec("b0", 0.095, 0.3, "C", "deep", 3), PointSpec("b1", 0.09501, 0.3005, "C", "deep", 5)]
    return crowd + tie + pair + [PointSpec("c", 0.045, 0.9, "C", "deep", 7)]


def _crowd_layout(points: list[PointSpec]):
    return panel_layout("m", "Dice vs memory", "peak_memory_gb", "mean_dice", points, [], None,
                        {"A": "#1f77b4", "B": "#d62728", "C": "#2ca02c"}, PAPER, answer="a2")


def test_crowded_points_are_zoomed_or_counted_and_memory_below_a_tenth_of_a_gib_is_in_mib() -> None:
    layout = _crowd_layout(_crowd_points())
    assert layout.x_unit == "MiB" and layout.x_title.endswith("(MiB)")
    assert layout.x.lo < 0.0300 * 1024 < 0.095 * 1024 < layout.x.hi
    assert [(c.stage_ids, c.tie) for c in layout.crowds] == [
        (("a0", "a1", "a2", "a3", "a4"), False), (("t0", "t1"), True), (("b0", "b1"), False)]
    # The five are boxed and drawn again in a zoom panel, where every marker stands clear of the others.
    assert layout.zoom == ("a0", "a1", "a2", "a3", "a4") and [c.stage_ids for c in layout.zoomed] == [layout.zoom]
    x0, y0, x1, y1 = layout.zoom_box
    assert all(x0 < p.x < x1 and y0 < p.y < y1 for p in layout.points if p.stage_id in layout.zoom)
    zoom = zoom_layout(layout)
    assert zoom.name == "m_zoom" and zoom.x_unit == "MiB" and zoom.answer_id == "a2" and not zoom.legend
    assert {p.stage_id for p in zoom.points} == set(layout.zoom) and not zoom.crowds
    assert all(zoom.x.contains(p.x) and zoom.y.contains(p.y) for p in zoom.points)
    pixels = [zoom.area.px(p.x, p.y) for p in zoom.points]
    assert min(((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5 for a, b in itertools.combinations(pixels, 2)) \
        >= PAPER.marker_px
    # The others say how many stages they hide; the zoom box is named on the main figure.
    texts = sorted(label.text for label in layout.labels if label.kind in ("crowd", "zoom"))
    assert texts == ["2 close", "2 tied", "zoom (5)"]
    # The order the stages come in decides nothing.
    again = _crowd_layout(list(reversed(_crowd_points())))
    assert (again.crowds, again.zoom, [(label.key, label.box) for label in again.labels]) == (
        layout.crowds, layout.zoom, [(label.key, label.box) for label in layout.labels])
    assert _crowd_layout([p for p in _crowd_points() if p.stage_id in ("c", "b0")]).zoom == ()  # none crowded


def _halted_study(study, path):
    """A-k3 and B-k3 completed; A-k5 halted at a rung of 1 epoch (scored there); A-k7 paused at its first rung."""
    records = {r.stage_id: r for r in read_results(study)}
    halted = dataclasses.replace(records["A-k5"], status="stopped", reason="halted at rung 1", epochs=1,
                                 cum_epochs=3, dice_curve={"1": 0.74}, per_class_dice=[0.8, float("nan"), 0.68])
    paused = dataclasses.replace(records["A-k7"], status="paused", epochs=1, cum_epochs=4, dice_curve={"1": 0.75})
    return _study_with(study, path, [records["A-k3"], records["B-k3"], halted, paused])


def test_a_halted_stage_is_drawn_at_its_rung_and_never_compared_as_fully_trained(study, tmp_path) -> None:
    data = build_report_data(_halted_study(study, tmp_path / "halted"))
    layout = panel_layouts(data, PAPER)["dice_vs_memory"]
    assert {p.stage_id: (p.hollow, p.rung) for p in layout.points} == {
        "A-k3": (False, None), "B-k3": (False, None), "A-k5": (True, 1), "A-k7": (True, 1)}
    assert sorted(label.text for label in layout.labels if label.kind == "rung") == ["@1 ep", "@1 ep"]
    assert layout.front == ["A-k3", "B-k3"] and all(link.delta is None for link in layout.links)
    assert not [label for label in layout.labels if label.kind == "delta"]
    bars = {b.stage_id: b for b in data.timeline.bars}
    assert (bars["A-k5"].start, bars["A-k5"].end, bars["A-k5"].rungs, bars["A-k5"].end_kind) == (2, 3, (3,), "halted")
    assert bars["A-k5"].note == "@1 ep" and bars["A-k7"].end_kind == "halted" and bars["A-k3"].note == ""
    rows = {r.stage_id: r for r in data.class_dice.rows}
    assert rows["A-k5"].rung == 1 and rows["A-k5"].label == "C4 B1 R2 k5 @1 ep" and rows["A-k3"].rung is None
    assert rows["A-k5"].values[1] is None  # a class never scored (NaN) stays a gap


def test_timeline_bars_rungs_ends_and_compute_against_the_full_chain(study) -> None:
    records = read_results(study)
    timeline = build_timeline(records, EPOCHS, ITERATIONS)
    bars = {b.stage_id: b for b in timeline.bars}
    assert set(bars) == set(ALL_IDS)
    assert [(bars[s].start, bars[s].end, bars[s].rungs) for s in ("A-k3", "A-k5", "A-k7")] == [
        (0, 2, (2,)), (2, 4, (4,)), (4, 6, (6,))]  # each stage starts where its parent ended
    assert {s: bars[s].end_kind for s in ("B-k7", "C-k5", "D-k3", "D-k5", "H-k3", "G-k3")} == {
        "B-k7": "not trained", "C-k5": "infeasible", "D-k3": "failed", "D-k5": "not trained", "H-k3": "running",
        "G-k3": "completed"}
    assert (bars["C-k5"].start, bars["C-k5"].end) == (2, 2)  # never trained: a mark where it would have started
    compute = timeline.compute
    trained = [s for s in STAGES if s[4] is not None]
    assert compute.spent_epochs == EPOCHS * len(trained) == 18
    assert compute.spent_tflops == pytest.approx(sum(EPOCHS * ITERATIONS * s[7] / 1000 for s in trained))
    planned = [s for s in STAGES if s[3] != "infeasible"]  # every stage but the infeasible one would train
    assert (compute.planned, compute.full_epochs) == (len(planned), len(planned) * EPOCHS)
    assert compute.unknown == 3  # D-k3, D-k5 and H-k3 have no FLOPs count
    assert compute.full_tflops == pytest.approx(sum(EPOCHS * ITERATIONS * s[7] / 1000 for s in planned if s[7]))
    assert compute.lines()[:2] == ["spent: 18 epochs, 110 TFLOPs (69%)", "full chain: 26 epochs, 145 TFLOPs"]
    # Without cum_epochs (an older results.csv) a bar starts at its parent's end; rungs come from dice_curve.
    bare = [dataclasses.replace(r, cum_epochs=None, dice_curve={"1": 0.5, "2": 0.6} if r.stage_id == "A-k5"
                                else r.dice_curve) for r in records]
    again = {b.stage_id: b for b in build_timeline(list(reversed(bare)), EPOCHS, ITERATIONS).bars}
    assert (again["A-k7"].start, again["A-k7"].end, again["A-k5"].rungs) == (4, 6, (3, 4))
    assert [b.stage_id for b in build_timeline(list(reversed(records)), EPOCHS).bars] == \
        [b.stage_id for b in timeline.bars]  # the rows do not depend on the order of the results


def test_per_class_table_and_heatmap_name_the_dataset_classes(study, tmp_path) -> None:
    data = build_report_data(study)
    scores = data.class_dice
    assert scores.classes == ["class 1", "class 2", "class 3"] and not scores.named  # no prepared.json
    assert [r.stage_id for r in scores.rows] == ["B-k5", "G-k3", "B-k3", "A-k7", "A-k5", "E-k3", "F-k3", "C-k3",
                                                 "A-k3"]  # best mean first, ties by id
    assert scores.rows[0].answer and scores.rows[0].label == "C8 B1 R2 k5 (answer)"
    assert scores.rows[-1].values == pytest.approx([0.70 + o for o in CLASS_OFFSETS])
    table = class_table(scores)
    assert table.headers == ["stage", "name", "scored at", "mean Dice", "class 1", "class 2", "class 3"]
    assert table.rows[-1] == ["A-k3", "C4 B1 R2 k3", "full budget", "0.7000", "0.800", "0.750", "0.550 ▼"]
    heat = build_figures(data)["class_dice"].data[0]
    assert list(heat.x) == scores.classes and list(heat.y)[-1] == scores.rows[0].label  # best on top
    assert list(heat.z[-1]) == scores.rows[0].values
    named = tmp_path / "named"
    shutil.copytree(study, named)
    (named / "prepared.json").write_text(json.dumps({"label_names": ["background", "liver", "kidney", "spleen"]}))
    assert build_report_data(named).class_dice.classes == ["liver", "kidney", "spleen"]
    assert class_scores(read_results(study), ["background", "organ"]).classes[0] == "class 1"  # 1 name, 3 scores
    page = write_report(named, tmp_path / "r.html", images=False).html.read_text()
    assert "<th>liver</th><th>kidney</th><th>spleen</th>" in page and "Per-class NSD" in page


def _move(i: int, d_gib: float) -> ScalingMove:
    return ScalingMove(("k",) if i % 2 else ("B", "C"), f"s{i}", f"t{i}", "k 3→5" if i % 2 else "B 1→2, C 4→8",
                       0.01 * i, d_gib, None)


def test_compound_scaling_points_are_labelled_in_mib_when_the_moves_are_small(study) -> None:
    view = build_report_data(study).scaling
    layout = scaling_layout(view, PAPER)
    assert layout.unit == "GiB" and layout.x_title == "Δ peak GPU memory (GiB)"  # the fixture moves 1-8 GiB
    assert len(layout.points) == 14 and len(layout.labels) + len(layout.left_off) == 14 and len(layout.labels) >= 12
    assert {"C 4→8", "k 3→5", "C 4→8, k 3→5"} <= {label.text for label in layout.labels}
    assert not [(a, b) for a, b in itertools.combinations(layout.labels, 2) if a.box.overlaps(b.box)]
    page = scaling_layout(view, PAPER, legend=False)  # without a legend the plot is taller: every move is named
    assert not page.left_off and sorted(label.key for label in page.labels) == sorted(p.key for p in page.points)
    small = scaling_layout(ScalingView([_move(i, 0.0004 * i) for i in (1, 3)], [], {}), PAPER)
    assert small.unit == "MiB" and small.x_title == "Δ peak GPU memory (MiB)"
    assert [p.x for p in small.points] == pytest.approx([0.4096, 1.2288])
    assert sorted(label.text for label in small.labels) == ["k 3→5", "k 3→5"] and small.legend == ["k (kernel)"]
    fig = build_figures(build_report_data(study), legend=False)["compound_scaling"]
    assert fig.layout.showlegend is False and fig.layout.xaxis.title.text.endswith("(GiB)")


def test_a_network_of_another_kind_is_marked_by_its_kind_after_the_kernels() -> None:
    from scalekit.report.layout import shape_symbols

    points = [PointSpec("r", 0.1, 0.5, "R", "ResEnc M", 3, kind="ResEnc"), PointSpec("a5", 0.2, 0.6, "A", "a", 5),
              PointSpec("a3", 0.1, 0.4, "A", "a", 3)]
    symbols = shape_symbols(points)
    assert list(symbols.items()) == [("k3", "circle"), ("k5", "diamond"), ("ResEnc", "hexagram")]
    assert shape_symbols(points[::-1]) == symbols
