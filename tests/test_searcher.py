"""The chain searcher without a Ray cluster: Optuna bookkeeping across crashes, the grid sampler with queued
families, Ctrl-C versus a dead trial, and relative checkpoints."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from scalekit.mednext import MedNeXtConfig
from scalekit.space import Family, SearchSpace
from scalekit.study import ChainPlanner, Constraints, ResultsTable, read_results
from scalekit.upkern_chain import FAMILY_ATTR, ChainSearcher, SearchSettings, open_optuna_study

from .test_chain import profile_by_width

SPACE = SearchSpace((Family(4, 1, 2, "small"), Family(8, 1, 2, "wide")), kernels=(3, 5),
                    seeds=(Family(4, 1, 2).family_id,))


def settings(tmp_path: Path, sampler: str = "grid", families: int = 2) -> SearchSettings:
    return SearchSettings(sampler=sampler, families=families, seed=0, metrics=("mean_dice", "peak_memory_gb"),
                          directions=("maximize", "minimize"), storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                          study_name="t")


def searcher(tmp_path: Path, sampler: str = "grid", families: int = 2) -> ChainSearcher:
    planner = ChainPlanner(SPACE, ResultsTable(tmp_path), MedNeXtConfig(num_classes=3, deep_supervision=True),
                           profile_by_width, Constraints(), tmp_path / "stages", None)
    s = settings(tmp_path, sampler, families)
    return ChainSearcher(planner, open_optuna_study(s, SPACE), s, lambda p, stage_id: {"stage_id": stage_id})


def completed(dice: float) -> dict:
    return {"stage_status": "completed", "mean_dice": dice, "checkpoint": "final.pt", "wall_time_s": 1.0}


def run_all(s: ChainSearcher) -> list[str]:
    """Drive the searcher as Tune would, one trial at a time, every stage completing."""
    order = []
    for number in range(20):
        config = s.suggest(f"t{number}")
        if config == ChainSearcher.FINISHED:
            return order
        assert config is not None
        order.append(config["stage_id"])
        s.on_trial_complete(f"t{number}", completed(0.1 * len(order)))
    raise AssertionError("the searcher never finished")


@pytest.mark.parametrize("sampler", ["grid", "nsga2", "tpe", "random"])
def test_every_sampler_runs_the_chains_to_the_end(tmp_path: Path, sampler: str) -> None:
    """Defect 11: the grid sampler with queued seed families raised KeyError('grid_id') when told."""
    s = searcher(tmp_path, sampler)
    order = run_all(s)
    assert sorted(order) == sorted(f"{f}-k{k}" for f in SPACE.ids() for k in (3, 5))
    assert order[0] == f"{SPACE.seeds[0]}-k3", "seed families come first"
    trials = s.study.trials
    assert sorted(t.user_attrs[FAMILY_ATTR] for t in trials if t.state.is_finished()) == sorted(SPACE.ids())
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_relative_checkpoints_and_upkern_source(tmp_path: Path) -> None:
    s = searcher(tmp_path, families=1)
    first = s.suggest("a")
    s.on_trial_complete("a", completed(0.5))
    row = s.planner.table[first["stage_id"]]
    assert row.checkpoint == f"stages/{first['stage_id']}/final.pt"
    child = s.planner.table[s.suggest("b")["stage_id"]]
    assert s.planner.parent_checkpoint(child) == tmp_path / "stages" / first["stage_id"] / "final.pt"


def test_family_asked_before_a_crash_gets_its_stages(tmp_path: Path) -> None:
    """Defect 2: killed after Optuna gave the trial its family but before results.csv had its stages."""
    s = settings(tmp_path)
    study = open_optuna_study(s, SPACE)
    trial = study.ask(SPACE.optuna_distributions())
    trial.set_user_attr(FAMILY_ATTR, trial.params["family"])
    orphan = study.ask(SPACE.optuna_distributions())  # asked, killed before it was given its family
    again = searcher(tmp_path)
    for asked in (trial, orphan):
        assert again.planner.stages(asked.params["family"]), "the family's stages were written"
        assert again.study.trials[asked.number].user_attrs[FAMILY_ATTR] == asked.params["family"]
    assert again.planner.runnable()[0].stage_id == f"{trial.params['family']}-k3"
    run_all(again)
    states = [t.state for t in again.study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2, states
    assert len({r.family_id for r in read_results(tmp_path)}) == 2


def test_stopped_trial_goes_back_to_pending_and_dead_trial_fails(tmp_path: Path) -> None:
    """Defect 10: a trial Tune stops on Ctrl-C (no stage status) is interrupted, not failed."""
    s = searcher(tmp_path, families=1)
    first = s.suggest("a")["stage_id"]
    s.on_trial_complete("a", {"epoch": 0})  # Tune's last result of a stopped trial
    assert s.planner.table[first].status == "pending" and "interrupted" in s.planner.table[first].reason
    assert s.suggest("b")["stage_id"] == first
    s.on_trial_complete("b", None, error=True)
    assert s.planner.table[first].status == "failed"


def test_completed_stage_without_weights_retrains(tmp_path: Path) -> None:
    """Defect 5: a completed stage whose final.pt was deleted goes back to pending, with its scores cleared."""
    s = searcher(tmp_path, families=1)
    first = s.suggest("a")["stage_id"]
    s.on_trial_complete("a", completed(0.5))
    weights = tmp_path / "stages" / first / "final.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"x")
    assert s.planner.recover() == {"interrupted": [], "missing": []}
    weights.unlink()
    assert s.planner.recover() == {"interrupted": [], "missing": [first]}
    row = s.planner.table[first]
    assert row.status == "pending" and row.mean_dice is None and not row.checkpoint and "missing" in row.reason


def test_family_told_once_when_a_stage_retrains(tmp_path: Path) -> None:
    s = searcher(tmp_path, families=1)
    run_all(s)
    trial = s.study.trials[0]
    k5 = next(r for r in s.planner.table.records() if r.kernel_size == 5)
    (tmp_path / "stages" / k5.stage_id).mkdir(parents=True)
    for r in s.planner.table.records():
        path = r.checkpoint_path(tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if r.stage_id != k5.stage_id:
            path.write_bytes(b"x")
    again = searcher(tmp_path, families=1)
    assert again.planner.recover()["missing"] == [k5.stage_id]
    assert again.suggest("x")["stage_id"] == k5.stage_id
    again.on_trial_complete("x", completed(0.9))
    assert again.error is None
    assert again.suggest("y") == ChainSearcher.FINISHED
    assert again.study.trials[0].values == trial.values
