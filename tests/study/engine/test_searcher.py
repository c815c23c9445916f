"""The search logic with an Optuna study and no Ray: repeated asks, the family budget, telling finished chains,
crash recovery, the grid sampler with queued families, Ctrl-C versus a dead trial, relative checkpoints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from scalekit.study import read_results
from scalekit.study.engine.optuna_params import suggest_family
from scalekit.study.engine.search import (
    CONSTRAINT_ATTR,
    FAMILY_ATTR,
    FINISHED,
    ChainSearch,
    StorageError,
    open_optuna_study,
)

from tests.helpers.searches import SPACE, searcher, settings

def completed(dice: float) -> dict:
    return {"stage_status": "completed", "mean_dice": dice, "checkpoint": "final.pt", "wall_time_s": 1.0}


def run_all(s: ChainSearch) -> list[str]:
    """Drive the search as Tune would, one stage at a time, every stage completing."""
    order = []
    for _ in range(20):
        stage_id = s.next_stage()
        if stage_id == FINISHED:
            return order
        assert stage_id is not None
        order.append(stage_id)
        s.stage_ended(stage_id, completed(0.1 * len(order)))
    raise AssertionError("the search never finished")


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
    # each trial carries its constraint excess where Optuna's constrained samplers read it (Trial.set_constraint)
    assert all(t.constraints == {CONSTRAINT_ATTR: t.user_attrs[CONSTRAINT_ATTR]} for t in trials)


def test_relative_checkpoints_and_upkern_source(tmp_path: Path) -> None:
    s = searcher(tmp_path, families=1)
    first = s.next_stage()
    s.stage_ended(first, completed(0.5))
    row = s.planner.table[first]
    assert row.checkpoint == f"stages/{first}/final.pt"
    child = s.planner.table[s.next_stage()]
    assert s.planner.parent_checkpoint(child) == tmp_path / "stages" / first / "final.pt"


def test_family_asked_before_a_crash_gets_its_stages(tmp_path: Path) -> None:
    """Defect 2: killed after Optuna gave the trial its family but before results.csv had its stages."""
    s = settings(tmp_path)
    study = open_optuna_study(s, SPACE)
    trial = study.ask()
    trial.set_user_attr(FAMILY_ATTR, suggest_family(trial, SPACE).family_id)
    orphan = study.ask()  # its axes drawn, killed before it was given its family
    orphan_family = suggest_family(orphan, SPACE).family_id
    study.ask()  # killed before any axis was drawn: nothing to adopt
    again = searcher(tmp_path)
    for asked, family_id in ((trial, trial.user_attrs[FAMILY_ATTR]), (orphan, orphan_family)):
        assert again.planner.stages(family_id), "the family's stages were written"
        assert again.study.trials[asked.number].user_attrs[FAMILY_ATTR] == family_id
    assert again.planner.next_work()[0] == f"{trial.user_attrs[FAMILY_ATTR]}-k3"
    run_all(again)
    states = [t.state for t in again.study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.FAIL], states
    assert len({r.family_id for r in read_results(tmp_path)}) == 2


def test_stopped_trial_goes_back_to_pending_and_dead_trial_fails(tmp_path: Path) -> None:
    """Defect 10: a trial Tune stops on Ctrl-C (no stage status) is interrupted, not failed."""
    s = searcher(tmp_path, families=1)
    first = s.next_stage()
    s.stage_ended(first, {"epoch": 0})  # Tune's last result of a stopped trial
    assert s.planner.table[first].status == "pending" and "interrupted" in s.planner.table[first].reason
    assert s.next_stage() == first
    s.stage_ended(first, None, error=True)
    assert s.planner.table[first].status == "failed"


def test_completed_stage_without_weights_retrains(tmp_path: Path) -> None:
    """Defect 5: a completed stage whose final.pt was deleted goes back to pending, with its scores cleared."""
    s = searcher(tmp_path, families=1)
    first = s.next_stage()
    s.stage_ended(first, completed(0.5))
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
    assert again.next_stage() == k5.stage_id
    again.stage_ended(k5.stage_id, completed(0.9))
    assert again.next_stage() == FINISHED
    assert again.study.trials[0].values == trial.values


def test_family_budget_and_repeated_asks(tmp_path: Path) -> None:
    """The budget caps the families opened; an ask that repeats a known family is told its known result
    and never opens the family twice."""
    s = searcher(tmp_path, sampler="random", families=1)
    order = run_all(s)
    assert len({stage.rsplit("-", 1)[0] for stage in order}) == 1 and len(order) == 2
    known = s.study.trials[0]
    for _ in range(6):  # a random sampler over two families repeats the known one soon
        trial = s.study.ask()
        if suggest_family(trial, SPACE).family_id == known.user_attrs[FAMILY_ATTR]:
            break
    else:
        raise AssertionError("no repeat asked")
    assert s._adopt(trial) is False
    assert s.study.trials[trial.number].values == known.values
    assert len(read_results(tmp_path)) == 2


def test_tune_adapter_keeps_the_drivers_errors(tmp_path: Path) -> None:
    """The Ray searcher forwards to the search; an error of the driver's own work stops new stages and is
    kept for run_chains to raise (Tune would swallow it into a trial failure)."""
    from scalekit.study.backend.raytune import ChainSearcher

    search = searcher(tmp_path, families=1)
    adapter = ChainSearcher(search, lambda planner, stage_id, seed: SimpleNamespace(
        to_dict=lambda: {"stage_id": stage_id}), nodes=dict)  # no Ray cluster here: no nodes
    assert adapter.suggest("t0") == {"stage_id": f"{SPACE.seeds[0]}-k3"}
    full = OSError(28, "No space left on device")

    def broken(*args, **kwargs):
        raise full

    search.planner.finish = broken
    adapter.on_trial_complete("t0", completed(0.5))
    assert adapter.error is full and adapter.suggest("t1") == ChainSearcher.FINISHED


def test_a_storage_that_cannot_be_opened_is_one_line_without_its_password(tmp_path: Path) -> None:
    """Nothing listens on port 1 (or the driver is missing): the error names the URL, its password masked."""
    url = "postgresql+psycopg2://someone:secret@127.0.0.1:1/x"
    with pytest.raises(StorageError) as err:
        open_optuna_study(replace(settings(tmp_path), storage=url), SPACE)
    message = str(err.value)
    assert message.startswith("storage postgresql+psycopg2://someone:***@127.0.0.1:1/x cannot be opened: ")
    assert "secret" not in message and len(message.splitlines()) == 1
