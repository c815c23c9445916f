"""The study's answer: the stage per memory budget and GPU size, the knee, UpKern's gain and the warnings, each
stage chosen by the selection rules."""

from __future__ import annotations

import dataclasses

import pytest

from scalekit.results.answer import PREDICTED_ONLY, study_answer
from scalekit.results.pareto import StudyGoals, read_goals
from scalekit.records import StageRecord
from scalekit.results.selection import select_stage

from tests.helpers.study_fixture import make_study

GIB = 2**30


def _stage(stage_id: str, dice: float, memory_gb: float, parent: str = "", init: str = "scratch",
           method: str = "measured") -> StageRecord:
    return StageRecord(stage_id=stage_id, family_id=stage_id.split("-")[0], n_channels=4, block_counts=[1] * 9,
                       exp_r=[2] * 9, kernel_size=int(stage_id.split("-k")[1].rstrip("c")), parent_stage=parent,
                       init=init, status="completed", mean_dice=dice, peak_memory_bytes=int(memory_gb * GIB),
                       memory_method=method)


def test_the_fixture_answer_follows_the_selection_rules(tmp_path) -> None:
    records = make_study(tmp_path)
    answer = study_answer(records, read_goals(tmp_path))
    under_budget = select_stage(records, "max-dice-under=24GB").stage
    assert answer.budget_gb == 24 and answer.budget.stage == under_budget
    assert answer.choices["knee"].stage == select_stage(records, "knee").stage
    # Every completed stage (at most 10 GiB) fits 16 GiB: one line covers it and every larger GPU.
    assert [(f.sizes_gb, f.stage.stage_id, f.and_larger) for f in answer.gpus] == [((16.0,), "B-k5", True)]
    assert answer.beyond_budget == ()
    lines = answer.lines()
    assert lines[0] == ("train for the study's 24 GiB budget: B-k5 (C8 B1 R2 k5, Dice 0.8000, 9.00 GiB measured); "
                        "ahead of the runner-up G-k3 by +0.0000 Dice")  # the fixture has no per-case Dice
    assert lines[1].startswith("on a 16 GiB or larger GPU: B-k5 (")
    assert lines[2].startswith("knee: A-k5 (C4 B1 R2 k5, Dice 0.7400, 3.00 GiB measured)")
    assert lines[3].startswith("UpKern: +0.0400 Dice over the parent (median of 3 steps; best +0.0400, A-k5)")
    assert not answer.warnings


def test_the_lead_over_the_runner_up_and_the_knee_against_the_best_say_within_noise_when_they_are() -> None:
    lead = dataclasses.replace(_stage("a-k3", 0.80, 10.0), case_dice=[0.70, 0.90, 0.80, 0.75, 0.85])
    close = dataclasses.replace(_stage("b-k3", 0.79, 8.0), case_dice=[0.72, 0.86, 0.78, 0.76, 0.83])
    far = dataclasses.replace(_stage("c-k3", 0.60, 1.0), case_dice=[0.50, 0.70, 0.60, 0.55, 0.65])
    for records, noisy in (([lead, close, far], True), ([lead, far], False)):
        answer = study_answer(records, StudyGoals(max_memory_gb=24))
        first = answer.lines()[0]
        runner_up = "b-k3" if noisy else "c-k3"
        assert f"; ahead of the runner-up {runner_up} by +" in first
        assert first.endswith(", within noise") == noisy, first
    knee = study_answer([lead, far, dataclasses.replace(_stage("d-k3", 0.78, 1.5),
                                                        case_dice=[0.69, 0.88, 0.79, 0.72, 0.82])],
                        StudyGoals(max_memory_gb=24))
    line = next(line for line in knee.lines() if line.startswith("knee:"))
    assert knee.choices["knee"].stage.stage_id == "d-k3"
    assert line.endswith("against the best, a-k3)") and " Dice [" in line and ", within noise" not in line  # behind on every case


def test_gpu_sizes_up_to_the_budget_each_get_the_best_stage_that_fits() -> None:
    records = [_stage("a-k3", 0.60, 20.0), _stage("b-k3", 0.70, 23.0), _stage("c-k3", 0.80, 30.0),
               _stage("d-k3", 0.85, 45.0)]
    answer = study_answer(records, StudyGoals(max_memory_gb=48))
    assert answer.budget.stage.stage_id == "d-k3" == select_stage(records, "max-dice-under=48GB").stage.stage_id
    fits = [(f.sizes_gb, f.stage and f.stage.stage_id, f.and_larger) for f in answer.gpus]
    assert fits == [((16.0,), None, False), ((24.0,), "b-k3", False), ((40.0,), "c-k3", False)]
    for fit in answer.gpus[1:]:
        assert fit.stage == select_stage(records, f"max-dice-under={fit.sizes_gb[0]:g}GB").stage
    assert answer.beyond_budget == (80.0,)
    assert study_answer(records, StudyGoals(max_memory_gb=32)).beyond_budget == (40.0, 80.0)
    lines = answer.lines()
    assert "on a 16 GiB GPU: no completed stage fits (the smallest needs 20.00 GiB)" in lines
    assert any(line.startswith("on a 80 GiB GPU: the study trained nothing above its 48 GiB budget")
               for line in lines)
    assert any(line.startswith("on a 40 or 80 GiB GPU: the study trained nothing above its 32 GiB budget")
               for line in study_answer(records, StudyGoals(max_memory_gb=32)).lines())
    # Sizes with the same stage share a line; with no budget every size up to the one all stages fit is listed.
    same = study_answer([_stage("a-k3", 0.6, 12.0), _stage("b-k3", 0.7, 50.0)], StudyGoals())
    assert [(f.sizes_gb, f.stage.stage_id, f.and_larger) for f in same.gpus] == [
        ((16.0, 24.0, 40.0), "a-k3", False), ((80.0,), "b-k3", True)]
    assert same.lines()[0].startswith("train (the study sets no memory budget): b-k3")
    assert same.lines()[1].startswith("on a 16, 24 or 40 GiB GPU: a-k3")


def test_knee_fallback_upkern_controls_and_warnings() -> None:
    # A concave front: no knee, and the answer says the knee fell back to best.
    records = [_stage("a-k3", 0.50, 1.0, method="predicted"), _stage("a-k5", 0.55, 2.0, "a-k3", "upkern", "predicted"),
               _stage("a-k3c", 0.53, 1.0, "a-k3", "continue", "predicted"),
               _stage("b-k3", 0.60, 3.0, method="predicted"), _stage("b-k5", 0.96, 3.5, "b-k3", "upkern", "predicted")]
    answer = study_answer(records, StudyGoals(max_memory_gb=4))
    knee = next(line for line in answer.lines() if line.startswith("knee:"))
    assert knee.startswith("knee: none (no front point lies above the line joining its extremes")
    assert "fell back to best: b-k5" in knee and answer.choices["knee"].stage.stage_id == "b-k5"
    gain = answer.upkern
    assert (gain.steps, gain.best.stage_id, gain.controls) == (2, "b-k5", 1)
    assert gain.median_over_parent == pytest.approx(0.205) and gain.median_over_control == pytest.approx(0.02)
    assert "+0.0200 over continuing the parent as long (median of 1 controls)" in answer.lines()[-2]
    assert answer.warnings == [PREDICTED_ONLY] and answer.lines()[-1] == f"warning: {PREDICTED_ONLY}"
    # A continuation control that wins is named as one: the parent's kernel trained on.
    small = study_answer(records, StudyGoals(max_memory_gb=1.5)).lines()[0]
    assert small.startswith("train for the study's 1.5 GiB budget: a-k3c (") and "a k3c trained on from a-k3," in small
    # One measured stage is enough to drop the warning; Dice all near zero adds the no-signal warning.
    measured = [dataclasses.replace(records[0], memory_method="measured"), *records[1:]]
    assert PREDICTED_ONLY not in study_answer(measured, StudyGoals()).warnings
    flat = [dataclasses.replace(r, mean_dice=0.001) for r in measured]
    assert any("no signal" in w for w in study_answer(flat, StudyGoals()).warnings)


def test_no_completed_stage_is_no_answer() -> None:
    pending = dataclasses.replace(_stage("a-k3", 0.5, 1.0), status="pending", mean_dice=None)
    answer = study_answer([pending], StudyGoals(max_memory_gb=24))
    assert answer.budget is None and answer.lines() == ["no completed stage yet: no answer"]


def test_the_answer_says_whether_upkern_or_training_longer_won_its_lane_with_the_noise() -> None:
    step = dataclasses.replace(_stage("a-k5", 0.55, 2.0, "a-k3", "upkern"), case_dice=[0.50, 0.55, 0.60])
    control = dataclasses.replace(_stage("a-k3c", 0.53, 1.0, "a-k3", "continue"), case_dice=[0.49, 0.52, 0.58])
    parent = _stage("a-k3", 0.50, 1.0)
    lines = study_answer([parent, step, control], StudyGoals(max_memory_gb=2.5)).lines()
    (duel,) = [line for line in lines if line.startswith(("UpKern: a-k5 beat", "training longer"))]
    assert duel == "UpKern: a-k5 beat continuing its parent (a-k3c) by +0.0200 [+0.010, +0.030]"
    assert "within noise" not in duel  # the paired gaps 0.01, 0.03, 0.02: every resample is positive
    close = dataclasses.replace(control, mean_dice=0.545, case_dice=[0.56, 0.50, 0.575])
    lines = study_answer([parent, step, close], StudyGoals(max_memory_gb=1.5)).lines()
    (duel,) = [line for line in lines if line.startswith(("UpKern: a-k5", "training longer"))]
    assert duel.startswith("UpKern: a-k5 led continuing its parent (a-k3c) by +0.0050 [-0.") and "within noise" in duel


def test_a_single_completed_stage_is_the_answer_without_a_runner_up() -> None:
    for goals in (StudyGoals(max_memory_gb=24), StudyGoals()):
        answer = study_answer([_stage("a-k3", 0.7, 4.0)], goals)
        assert answer.budget.stage.stage_id == "a-k3" and answer.runner_up is None
        assert "runner-up" not in answer.lines()[0]
