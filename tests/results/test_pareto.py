"""Pareto fronts: hand-made tables with ties, duplicates and invalid rows, 2 and 3 objectives, mixed directions."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from scalekit.results.pareto import StudyGoals, pareto_front, pareto_mask, read_goals, study_front
from scalekit.records import Objective, StageRecord

from tests.helpers.study_fixture import STUDY_FRONT, STUDY_YAML, make_study


def _stage(stage_id: str, status: str = "completed", **values) -> StageRecord:
    return StageRecord(stage_id=stage_id, family_id="f", n_channels=4, block_counts=[1] * 9, exp_r=[2] * 9,
                       kernel_size=3, status=status, **values)


def _naive_front(values: np.ndarray, maximize: list[bool]) -> np.ndarray:
    cost = np.where(maximize, -values, values)
    return np.array([
        not any(all(cost[j] <= cost[i]) and any(cost[j] < cost[i]) for j in range(len(cost)))
        for i in range(len(cost))
    ])


def test_two_objectives_with_ties_and_duplicates() -> None:
    # columns: Dice (maximise), memory (minimise)
    values = np.array([
        [0.70, 2.0],  # lowest memory: front
        [0.74, 3.0],  # exact duplicate of the next: both on the front
        [0.74, 3.0],
        [0.73, 3.0],  # same memory, lower Dice: dominated
        [0.75, 4.5],  # front
        [0.72, 5.0],  # dominated
        [0.75, 6.0],  # same Dice, more memory: dominated
    ])
    mask = pareto_mask(values, [True, False])
    assert mask.tolist() == [True, True, True, False, True, False, False]


def test_equal_in_one_objective_and_better_in_the_other_dominates() -> None:
    assert pareto_mask(np.array([[1.0, 1.0], [1.0, 2.0]]), [False, False]).tolist() == [True, False]
    assert pareto_mask(np.array([[1.0, 1.0], [1.0, 2.0]]), [False, True]).tolist() == [False, True]


def test_directions_change_the_front() -> None:
    values = np.array([[1.0, 1.0], [2.0, 2.0], [1.0, 2.0], [2.0, 1.0]])
    assert pareto_mask(values, [False, False]).tolist() == [True, False, False, False]
    assert pareto_mask(values, [True, True]).tolist() == [False, True, False, False]
    assert pareto_mask(values, [True, False]).tolist() == [False, False, False, True]


def test_three_objectives() -> None:
    # Dice (max), memory (min), GFLOPs (min)
    values = np.array([
        [0.70, 2.0, 10.0],  # front: least memory and FLOPs
        [0.74, 3.0, 14.0],  # dominated by the next row (equal Dice and memory, fewer FLOPs)
        [0.74, 3.0, 12.0],  # front
        [0.73, 3.0, 11.0],  # front: fewest FLOPs at its memory, dominated in 2-D only
        [0.72, 5.0, 18.0],  # dominated
        [0.80, 9.0, 45.0],  # front
        [0.80, 9.0, 45.0],  # duplicate: front too
        [0.80, 10.0, 40.0],  # front: fewer FLOPs than the 9 GB points
    ])
    assert pareto_mask(values, [True, False, False]).tolist() == [
        True, False, True, True, False, True, True, True,
    ]
    # The same table with only Dice and memory: row 3 falls off, row 1 comes back.
    assert pareto_mask(values[:, :2], [True, False]).tolist() == [
        True, True, True, False, False, True, True, False,
    ]


def test_nan_rows_never_on_the_front_and_dominate_nothing() -> None:
    values = np.array([[np.nan, 0.0], [1.0, 1.0], [2.0, 2.0]])
    assert pareto_mask(values, [False, False]).tolist() == [False, True, False]


def test_matches_brute_force_on_random_tables_with_many_ties() -> None:
    rng = np.random.default_rng(0)
    for m in (2, 3, 4):
        values = rng.integers(0, 4, size=(40, m)).astype(float)
        maximize = list(rng.integers(0, 2, size=m).astype(bool))
        assert (pareto_mask(values, maximize) == _naive_front(values, maximize)).all()


def test_bad_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"shape \(points, 2 objectives\)"):
        pareto_mask(np.zeros((3, 3)), [True, False])
    assert pareto_mask(np.zeros((0, 2)), [True, False]).tolist() == []


def test_invalid_stages_are_never_on_the_front() -> None:
    objectives = [Objective("mean_dice", "maximize"), Objective("peak_memory_gb", "minimize")]
    gib = 2**30
    records = [
        _stage("ok", mean_dice=0.7, peak_memory_bytes=4 * gib),
        # Values that would dominate everything, on stages that do not count:
        _stage("failed", "failed", mean_dice=0.99, peak_memory_bytes=gib, reason="NaN loss"),
        _stage("infeasible", "infeasible", mean_dice=0.99, peak_memory_bytes=gib),
        _stage("running", "running", mean_dice=0.99, peak_memory_bytes=gib),
        _stage("pending", "pending", mean_dice=0.99, peak_memory_bytes=gib),
        _stage("stopped", "stopped", mean_dice=0.99, peak_memory_bytes=gib),
        _stage("no-memory", mean_dice=0.99),  # valid but not comparable
        _stage("worse", mean_dice=0.6, peak_memory_bytes=5 * gib),
    ]
    assert [r.stage_id for r in pareto_front(records, objectives)] == ["ok"]
    assert pareto_front([r for r in records if r.status != "completed"], objectives) == []


def test_unknown_metric_or_direction() -> None:
    with pytest.raises(ValueError, match="objective metric 'dice' is unknown"):
        Objective("dice", "maximize")
    with pytest.raises(ValueError, match="direction 'up' is unknown"):
        Objective("mean_dice", "up")
    assert Objective("gflops_train").direction == "minimize"
    assert Objective("mean_nsd").direction == "maximize"


def test_goals_and_front_of_the_fixture_study(tmp_path) -> None:
    make_study(tmp_path)
    goals = read_goals(tmp_path)
    assert [(o.metric, o.direction) for o in goals.objectives] == [
        ("mean_dice", "maximize"), ("peak_memory_gb", "minimize"), ("gflops_train", "minimize"),
    ]
    assert (goals.max_memory_gb, goals.max_gflops) == (24.0, None)
    assert study_front(tmp_path).front_ids == STUDY_FRONT


def test_goals_defaults_and_errors(tmp_path) -> None:
    """The saved study.yaml is read through the study file's models: the same checks, the same messages."""
    assert read_goals(tmp_path) == StudyGoals()
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({**STUDY_YAML, "objectives": [{"metric": "dice"}]}))
    with pytest.raises(ValueError, match=r"(?s)study.yaml: 1 problem.*objectives.0.metric: unknown metric 'dice'"):
        read_goals(tmp_path)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({**STUDY_YAML, "constraints": {"max_memory_gb": -1}}))
    with pytest.raises(ValueError, match="constraints.max_memory_gb: Input should be greater than 0"):
        read_goals(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        study_front(tmp_path / "missing")
