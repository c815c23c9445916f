"""Confirming the finalists with other seeds (finish.confirm): who the finalists are, how their chains are
retrained per seed (parent first, resumable, within the budget), and what the answer says of it."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from scalekit.results.answer import read_answer
from scalekit.mednext import MedNeXtConfig
from scalekit.records import GIB, StageRecord
from scalekit.results.seeds import chain_to, finalists, read_confirmation, seed_dir
from scalekit.space import Family, SearchSpace
from scalekit.study import ChainPlanner, ChainRules, Constraints, ResultsTable
from scalekit.study.engine.confirm import FINISHED, SeedRuns, plan_confirmation, run_key
from scalekit.study.engine.messages import StageReport
from scalekit.results.summary import study_summary


def stage(stage_id: str, dice: float, cases: list[float], gb: float, parent: str = "") -> StageRecord:
    return StageRecord(stage_id, stage_id.split("-")[0], 4, [1] * 9, [2] * 9, int(stage_id.split("-k")[1][0]),
                       parent_stage=parent, init="upkern" if parent else "scratch", status="completed",
                       mean_dice=dice, case_dice=cases, peak_memory_bytes=int(gb * GIB), epochs=2)


LEAD = stage("f00000001-k5", 0.80, [0.70, 0.90, 0.80, 0.75, 0.85], 4.0, "f00000001-k3")
CLOSE = stage("f00000002-k3", 0.79, [0.72, 0.86, 0.78, 0.76, 0.83], 2.0)  # the paired interval holds zero
BEHIND = stage("f00000003-k3", 0.60, [0.50, 0.70, 0.60, 0.55, 0.65], 2.0)  # behind on every case
TOO_BIG = stage("f00000004-k3", 0.95, [0.95] * 5, 30.0)
PARENT = stage("f00000001-k3", 0.70, [0.60, 0.80, 0.70, 0.65, 0.75], 3.0)
RECORDS = [LEAD, CLOSE, BEHIND, TOO_BIG, PARENT]


def test_finalists_are_the_answer_and_every_stage_within_noise_under_the_budget() -> None:
    for order in itertools.permutations(RECORDS):
        chosen, left_out = finalists(list(order), 24.0, 3)
        assert [r.stage_id for r in chosen] == [LEAD.stage_id, CLOSE.stage_id] and left_out == []
    chosen, left_out = finalists(RECORDS, 24.0, 1)
    assert [r.stage_id for r in chosen] == [LEAD.stage_id] and [r.stage_id for r in left_out] == [CLOSE.stage_id]
    chosen, _ = finalists(RECORDS, None, 3)  # no budget: the best stage of all leads
    assert chosen[0].stage_id == TOO_BIG.stage_id
    assert finalists(RECORDS, 1.0, 3) == ([], [])
    assert [r.stage_id for r in chain_to(RECORDS, LEAD.stage_id)] == [PARENT.stage_id, LEAD.stage_id]


@dataclass
class Profile:
    params: int
    gflops_fvcore: float
    gflops_train: float
    peak_memory_bytes: int
    memory_method: str = "predicted"


def planner(folder: Path, budget: dict[str, float] | None = None) -> ChainPlanner:
    space = SearchSpace((Family(4, 1, 2, "small"), Family(8, 1, 2, "wide")), kernels=(3, 5))
    return ChainPlanner(space, ResultsTable(folder), MedNeXtConfig(num_classes=3, deep_supervision=True),
                        lambda c, batch=None: Profile(1000 * c.n_channels, 1.0, 3.0, c.n_channels // 4 * GIB),
                        Constraints(max_memory_gb=24.0), folder / "stages",
                        ChainRules(min_improvement=0.0, budget=budget or {}))


def complete(p: ChainPlanner, stage_id: str, cases: list[float], seed: int | None = None) -> None:
    folder = p.stage_dir(stage_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "final.pt").write_bytes(b"weights")
    p.start(stage_id)
    p.finish(stage_id, "completed", mean_dice=sum(cases) / len(cases), case_dice=cases, epochs=1,
             checkpoint=str(folder / "final.pt"))


def searched(folder: Path, budget: dict[str, float] | None = None) -> ChainPlanner:
    """A finished search: small k3 -> k5 (the lead), wide k3 within noise of it, wide k5 far behind."""
    p = planner(folder, budget)
    small, wide = (p.open_family(f) for f in p.space.families)
    complete(p, small[0].stage_id, [0.60, 0.70, 0.65, 0.62])
    complete(p, small[1].stage_id, [0.80, 0.90, 0.82, 0.84])
    complete(p, wide[0].stage_id, [0.82, 0.86, 0.80, 0.83])
    complete(p, wide[1].stage_id, [0.30, 0.35, 0.32, 0.31])
    return p


def report(dice: float) -> dict:
    return StageReport("completed", mean_dice=dice, case_dice=[dice] * 4, epochs=1, checkpoint="final.pt",
                       wall_time_s=1.0).to_dict()


def drive(runs: SeedRuns, dice: dict[str, float], stop_after: int | None = None) -> list[str]:
    """Hand out and end runs one at a time (as Ray would with one worker); the keys in the order handed out."""
    handed = []
    while (key := runs.next_stage()) != FINISHED:
        assert key is not None, "nothing runs, yet nothing was handed out"
        planner_, stage_id, seed = runs.locate(key)
        folder = planner_.stage_dir(stage_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "final.pt").write_bytes(b"weights")
        handed.append(key)
        if stop_after is not None and len(handed) > stop_after:
            return handed  # killed while this run trains
        runs.stage_ended(key, report(dice[stage_id] - 0.01 * seed))
    return handed


def test_each_finalist_chain_is_retrained_per_seed_parent_first_and_the_answer_reports_mean_and_sd(
        tmp_path: Path) -> None:
    p = searched(tmp_path)
    plan = plan_confirmation(p, 24.0, seeds=2, max_finalists=3, base_seed=0)
    small, wide = (p.stages(fid) for fid in p.family_ids())
    assert plan.answer == small[1].stage_id and plan.finalists == (small[1].stage_id, wide[0].stage_id)
    assert plan.seeds == (1, 2)
    runs = SeedRuns(p, plan)
    spec_planner, stage_id, seed = runs.locate(run_key(small[0].stage_id, 2))
    assert (stage_id, seed) == (small[0].stage_id, 2) and spec_planner.study_dir == seed_dir(tmp_path, 2)
    dice = {small[0].stage_id: 0.66, small[1].stage_id: 0.84, wide[0].stage_id: 0.80}
    handed = drive(runs, dice)
    assert sorted(handed) == sorted(run_key(s, seed) for s in dice for seed in (1, 2))
    for seed in (1, 2):  # the UpKern child starts from its own seed's parent
        child = handed.index(run_key(small[1].stage_id, seed))
        assert handed.index(run_key(small[0].stage_id, seed)) < child
        table = ResultsTable(seed_dir(tmp_path, seed))
        assert table[small[1].stage_id].parent_stage == small[0].stage_id
        assert runs.planners[seed].parent_checkpoint(table[small[1].stage_id]) == (
            seed_dir(tmp_path, seed) / "stages" / small[0].stage_id / "final.pt")
    assert wide[1].stage_id not in ResultsTable(seed_dir(tmp_path, 1))  # far behind: not a finalist
    confirmation = read_confirmation(tmp_path)
    lead, other = confirmation.results
    assert lead.dice == pytest.approx({0: 0.84, 1: 0.83, 2: 0.82}) and lead.sd == pytest.approx(0.01)
    assert confirmation.held and confirmation.complete and confirmation.spent["epochs"] == 6
    lines = read_answer(tmp_path).lines()
    assert any("confirmed over 3 seeds (0, 1, 2)" in line and "Dice 0.830 ± 0.010" in line for line in lines)
    assert any("the ranking held" in line for line in lines)
    document = study_summary(tmp_path)["confirmation"]
    assert document["held"] is True and document["finalists"][0]["sd_dice"] == pytest.approx(0.01)
    assert json.loads(json.dumps(document)) == document


def test_a_lead_that_does_not_survive_the_seeds_is_said(tmp_path: Path) -> None:
    p = searched(tmp_path)
    runs = SeedRuns(p, plan_confirmation(p, 24.0, seeds=1, max_finalists=3, base_seed=0))
    small, wide = (p.stages(fid) for fid in p.family_ids())
    drive(runs, {small[0].stage_id: 0.6, small[1].stage_id: 0.70, wide[0].stage_id: 0.90})
    confirmation = read_confirmation(tmp_path)
    assert confirmation.held is False
    assert any(f"the ranking did not hold: {wide[0].stage_id} has the higher mean Dice" in line
               for line in confirmation.lines())


def test_a_killed_confirmation_resumes_without_retraining_what_completed(tmp_path: Path) -> None:
    p = searched(tmp_path)
    plan = plan_confirmation(p, 24.0, seeds=1, max_finalists=3, base_seed=0)
    small, wide = (p.stages(fid) for fid in p.family_ids())
    dice = {small[0].stage_id: 0.66, small[1].stage_id: 0.84, wide[0].stage_id: 0.80}
    first = drive(SeedRuns(p, plan), dice, stop_after=1)  # killed while the second run trains
    again = planner(tmp_path)  # a new process: the search's table and the seed tables are read back
    plan_again = plan_confirmation(again, 24.0, seeds=1, max_finalists=3, base_seed=0)
    assert plan_again == plan
    runs = SeedRuns(again, plan_again)
    assert runs.planners[1].table[first[1].split("@")[0]].status == "pending"  # was running: waits again
    rest = drive(runs, dice)
    assert first[0] not in rest and first[1] in rest and len(set(first) | set(rest)) == 3
    assert read_confirmation(tmp_path).complete


def test_the_confirmation_stops_where_the_study_budget_is_spent(tmp_path: Path) -> None:
    p = searched(tmp_path, budget={"epochs": 5.0})  # the search spent 4 epochs: one more run fits
    runs = SeedRuns(p, plan_confirmation(p, 24.0, seeds=1, max_finalists=3, base_seed=0))
    small, wide = (p.stages(fid) for fid in p.family_ids())
    handed = drive(runs, {small[0].stage_id: 0.6, small[1].stage_id: 0.8, wide[0].stage_id: 0.8})
    assert len(handed) == 1
    confirmation = read_confirmation(tmp_path)
    assert not confirmation.complete
    assert any("the study's compute budget is spent" in line for line in confirmation.pending)
