"""Successive halving over UpKern chains, without Ray: asynchronous promotion, a halted search resuming at the right rung, continuation controls, compute accounting
and budgets, signal checks, and what Optuna's trials carry."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from scalekit.results.fidelity import dice_signal, kendall_tau, rank_agreement, upkern_steps
from scalekit.mednext import MedNeXtConfig
from scalekit.records import Objective, StageRecord
from scalekit.space import Family, SearchSpace
from scalekit.study import ChainPlanner, ChainRules, Constraints, ResultsTable
from scalekit.study.engine.schedule import Schedule
from scalekit.study.engine.search import FINISHED, ChainSearch, SearchSettings, open_optuna_study

from tests.helpers.profiles import profile_by_width

def test_rungs_of_a_schedule() -> None:
    assert Schedule("halving", 8, 3, 1).rungs == (1, 3, 8)
    assert Schedule("halving", 27, 3, 1).rungs == (1, 3, 9, 27)
    assert Schedule("halving", 16, 2, 2).rungs == (2, 4, 8, 16)
    assert Schedule("full", 8).rungs == (8,) and Schedule("halving", 8, 3, 1).next_rung(3) == 8


FAMILIES = tuple(Family(c, 1, r, f"c{c}r{r}") for c in (4, 8) for r in (2, 3, 4))
SPACE = SearchSpace(FAMILIES, kernels=(3, 5), seeds=tuple(f.family_id for f in FAMILIES))


def halving_search(tmp_path: Path, controls: bool = False, budget: dict | None = None,
                   families: int = 6) -> ChainSearch:
    rules = ChainRules(min_improvement=None, controls=controls, schedule=Schedule("halving", 9, 3, 1),
                       iterations_per_epoch=10, budget=budget or {})
    planner = ChainPlanner(SPACE, ResultsTable(tmp_path), MedNeXtConfig(num_classes=3, deep_supervision=True),
                           profile_by_width, Constraints(), tmp_path / "stages", rules)
    settings = SearchSettings("grid", families, 0, ("mean_dice", "peak_memory_gb"), ("maximize", "minimize"),
                              f"sqlite:///{tmp_path / 'optuna.db'}", "halving")
    return ChainSearch(planner, open_optuna_study(settings, SPACE), settings)


def quality(record: StageRecord) -> float:
    """A made-up Dice that grows with epochs and with width C and ratio R: the order is the same at every rung."""
    return round(0.05 * record.n_channels + 0.02 * record.exp_r[0] + 0.01 * (record.kernel_size - 3), 4)


def report(search: ChainSearch, stage_id: str, dice=quality) -> None:
    record = search.planner.table[stage_id]
    reached = record.target_epochs
    weights = search.planner.stage_dir(stage_id) / "final.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"weights")
    curve = {**record.dice_curve, str(reached): dice(record) * (1 + reached / 9)}
    mean = curve[str(reached)]
    cases = {**record.case_curve, str(reached): [mean - 0.002, mean, mean + 0.002]}
    search.stage_ended(stage_id, {"stage_status": "completed", "mean_dice": mean, "epochs": reached,
                                  "dice_curve": curve, "checkpoint": "final.pt", "wall_time_s": 36.0 * reached,
                                  "case_dice": cases[str(reached)], "case_curve": cases})


def drive(search: ChainSearch, limit: int = 200) -> list[tuple[str, int]]:
    handed = []
    for _ in range(limit):
        stage_id = search.next_stage()
        if stage_id == FINISHED:
            return handed
        assert stage_id is not None
        handed.append((stage_id, search.planner.table[stage_id].target_epochs))
        report(search, stage_id)
    raise AssertionError("the search never finished")


def test_asynchronous_promotion_never_waits_for_a_full_rung(tmp_path: Path) -> None:
    search = halving_search(tmp_path)
    first = [search.next_stage() for _ in range(3)]
    assert all(search.planner.table[s].target_epochs == 1 for s in first)
    for stage_id in first[:2]:
        report(search, stage_id)
    assert search.planner.table[first[0]].status == "paused"
    report(search, first[2])
    promoted = search.next_stage()  # three of six families at rung 1: the best third goes on at once
    assert promoted in first and search.planner.table[promoted].target_epochs == 3
    assert len(search.planner.family_ids()) == 3, "no new family was opened before the promotion"


def test_halving_runs_to_the_end_and_spends_less(tmp_path: Path) -> None:
    search = halving_search(tmp_path)
    handed = drive(search)
    records = search.planner.table.records()
    completed = [r for r in records if r.status == "completed"]
    assert {r.kernel_size for r in completed} == {3, 5}, "the best chain reached its last kernel"
    # the chain that went all the way is a Pareto-optimal family (the best ratio R of its width: memory grows
    # with the width C only here), never a dominated one
    front = {max((f for f in FAMILIES if f.n_channels == c), key=lambda f: f.exp_r[0]).family_id for c in (4, 8)}
    (best,) = {r.family_id for r in completed if r.kernel_size == 5}
    assert best in front
    best = SPACE.by_id(best)
    halted = [r for r in records if r.status == "stopped" and r.epochs]
    assert halted and all("halted" in r.reason and "went on" in r.reason for r in halted)
    ended = [r for r in records if r.status == "stopped" and not r.epochs]
    assert all("not promoted" in r.reason for r in ended), [r.reason for r in ended]
    assert all(r.mean_dice is not None for r in halted if r.epochs), "a halted stage keeps its rung's Dice"
    full_cost = len(FAMILIES) * 2 * 9
    assert search.planner.spent()["epochs"] < full_cost / 2
    assert len(handed) == len(set(handed)), "no stage is handed out twice for the same rung"
    # accounting: own and since-scratch compute; device-hours from the wall time (36 s per epoch)
    k5 = search.planner.table[f"{best.family_id}-k5"]
    k3 = search.planner.table[f"{best.family_id}-k3"]
    assert k5.cum_epochs == 18 and k5.cum_iterations == 180
    assert k5.train_tflops == pytest.approx(9 * 10 * k5.gflops_train / 1000)
    assert k5.cum_train_tflops == pytest.approx(k3.train_tflops + k5.train_tflops)
    assert k5.device_hours == pytest.approx(0.09)


def test_a_halted_search_resumes_at_the_right_rung(tmp_path: Path) -> None:
    """Killed while a promoted stage trained from rung 1 to rung 3: the rerun hands it out again to rung 3,
    from its rung-1 state, and nothing else is lost."""
    search = halving_search(tmp_path)
    for _ in range(3):
        report(search, search.next_stage())
    promoted = search.next_stage()
    assert search.planner.table[promoted].target_epochs == 3
    # the driver dies here: the table says running; a new driver recovers from the same files
    again = halving_search(tmp_path)
    assert again.planner.recover()["interrupted"] == [promoted]
    assert again.planner.table[promoted].status == "paused" and again.planner.table[promoted].epochs == 1
    assert again.next_stage() == promoted and again.planner.table[promoted].target_epochs == 3
    assert sum(r.status == "paused" for r in again.planner.table.records()) == 2


def test_continuation_control_trains_from_the_parent_with_the_steps_budget(tmp_path: Path) -> None:
    from scalekit.study.backend.worker import stage_launcher
    from scalekit.studyfile import load_study_config

    search = halving_search(tmp_path, controls=True, families=1)
    handed = drive(search)
    table = search.planner.table
    family = FAMILIES[0].family_id
    control, step, parent = table[f"{family}-k3c"], table[f"{family}-k5"], table[f"{family}-k3"]
    assert control.init == "continue" and control.parent_stage == parent.stage_id
    assert control.kernel_size == parent.kernel_size and control.config == parent.config
    assert control.epochs == step.epochs == 9 and control.target_epochs == step.target_epochs
    assert [t for s, t in handed if s == control.stage_id] == [t for s, t in handed if s == step.stage_id]
    assert control.cum_epochs == step.cum_epochs == 18
    config = load_study_config(Path(__file__).resolve().parents[3] / "studies" / "demo.yaml")
    launch = stage_launcher(config, _Prepared(), "cpu", None)
    spec_control, spec_step = launch(search.planner, control.stage_id), launch(search.planner, step.stage_id)
    assert spec_control.init_from == spec_step.init_from == str(tmp_path / "stages" / parent.stage_id / "final.pt")
    assert (spec_control.epochs, spec_control.train_until) == (spec_step.epochs, spec_step.train_until)
    assert spec_control.arch == parent.config and spec_step.arch == step.config
    (gain,) = upkern_steps(table.records())
    assert gain.control == control.stage_id
    assert gain.gain_over_control == pytest.approx(step.mean_dice - control.mean_dice)


class _Prepared:
    def to_dict(self) -> dict:
        return {}


def test_compute_budget_stops_new_work(tmp_path: Path) -> None:
    search = halving_search(tmp_path, budget={"epochs": 4})
    drive(search)
    assert search.ended_by == "budget"
    assert 4 <= search.planner.spent()["epochs"] <= 6
    assert all(r.status not in ("pending", "paused", "running") for r in search.planner.table.records())


def test_optuna_trials_carry_named_objectives_axes_and_stages(tmp_path: Path) -> None:
    search = halving_search(tmp_path, families=2)
    drive(search)
    study = search.study
    assert study.metric_names == ["mean_dice", "peak_memory_gb"]
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert len(complete) == len(pruned) == 1, "one family reached the full budget; a rung halted the other"
    assert complete[0].user_attrs["told_epochs"] == 9 and pruned[0].user_attrs["told_epochs"] == 1
    assert pruned[0].values is None and set(pruned[0].user_attrs["stage.k3"]["rung_dice"]) == {"1"}
    for trial in complete + pruned:
        assert set(trial.params) == {"label", "n_channels", "blocks", "exp_r"}
        family = SPACE.labels()[trial.params["label"]]
        assert trial.user_attrs["family_id"] == family.family_id
        assert trial.user_attrs["family_label"] == family.name
        stage = trial.user_attrs["stage.k3"]
        assert stage["stage_id"] == f"{family.family_id}-k3" and stage["mean_dice"] is not None
        assert trial.user_attrs["told_epochs"] >= 1


def test_scaling_axes_are_separate_parameters(tmp_path: Path) -> None:
    space = SearchSpace.build(presets=["T"], scaling=("T", [1.0, 2.0], [1.0, 2.0], [4, 8]), kernels=(3,))
    settings = SearchSettings("tpe", 3, 0, ("mean_dice",), ("maximize",), f"sqlite:///{tmp_path / 'o.db'}", "s")
    study = open_optuna_study(settings, space)
    planner = ChainPlanner(space, ResultsTable(tmp_path), MedNeXtConfig(num_classes=3, deep_supervision=True),
                           profile_by_width, Constraints(), tmp_path / "stages", ChainRules(min_improvement=None))
    search = ChainSearch(planner, study, settings)
    search._new_family()
    search._new_family()
    queued, sampled = study.trials[0], study.trials[1]
    assert queued.params == {"source": "listed", "label": "T", "n_channels": 4, "blocks": 9, "exp_r": 2.0}
    if sampled.params["source"] == "scaling":
        assert set(sampled.params) == {"source", "depth", "expansion", "n_channels", "blocks", "exp_r"}
        assert sampled.params["depth"] in (1.0, 2.0) and sampled.params["n_channels"] in (4, 8)


def record_with(dice: float, cases: list[float], status: str = "completed") -> StageRecord:
    return StageRecord("f00000000-k3", "f00000000", 4, [1] * 9, [2] * 9, 3, status=status, mean_dice=dice,
                       case_dice=cases, dice_curve={"1": dice})


def test_signal_checks() -> None:
    zero = [record_with(0.001, [0.0, 0.002, 0.001]), record_with(0.004, [0.0, 0.01, 0.002])]
    assert not dice_signal(zero).carries_signal and "below 0.01" in dice_signal(zero).reason
    close = [record_with(0.50, [0.2, 0.5, 0.8]), record_with(0.52, [0.25, 0.5, 0.8])]
    assert not dice_signal(close).carries_signal and "spread between validation cases" in dice_signal(close).reason
    apart = [record_with(0.20, [0.19, 0.2, 0.21]), record_with(0.60, [0.59, 0.6, 0.61])]
    assert dice_signal(apart).carries_signal


def test_kendall_tau_and_rank_agreement() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    records = [StageRecord(f"f0000000{i}-k3", f"f0000000{i}", 4, [1] * 9, [2] * 9, 3,
                           dice_curve={"1": low, "3": high}) for i, (low, high) in enumerate([(0.1, 0.3), (0.2, 0.2),
                                                                                             (0.3, 0.5)])]
    (agreement,) = rank_agreement(records)
    assert (agreement.low, agreement.high, agreement.stages) == (1, 3, 3)
    assert agreement.tau == pytest.approx(kendall_tau([0.1, 0.2, 0.3], [0.3, 0.2, 0.5]))
    assert Objective("mean_dice").maximize


def test_stage_report_carries_its_dice_curve_through_ray() -> None:
    """Ray flattens nested dicts of a trial's result ("dice_curve/1"): the curve travels as JSON text."""
    from scalekit.study.engine.messages import StageReport

    report = StageReport("completed", mean_dice=0.5, epochs=3, dice_curve={"1": 0.2, "3": 0.5}, case_dice=[0.4, 0.6],
                         case_curve={"1": [0.1, 0.3], "3": [0.4, 0.6]})
    carried = report.to_dict()
    assert isinstance(carried["dice_curve"], str) and isinstance(carried["case_curve"], str)
    assert not any(isinstance(v, dict) for v in carried.values())
    assert StageReport.from_dict(carried) == report
