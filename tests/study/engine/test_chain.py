"""Chain planning: profiling gate, parent-before-child order, saturation, failure propagation, resume."""

from __future__ import annotations

from pathlib import Path

from scalekit.mednext import MedNeXtConfig
from scalekit.space import Family, SearchSpace
from scalekit.study import ChainPlanner, ChainRules, Constraints, ResultsTable, read_results
from tests.helpers.profiles import profile_by_width


def planner(tmp_path: Path, max_gb: float | None = None, margin: float | None = 0.0) -> ChainPlanner:
    space = SearchSpace((Family(4, 1, 2, "small"), Family(8, 1, 2, "wide")), kernels=(3, 5, 7))
    return ChainPlanner(space, ResultsTable(tmp_path), MedNeXtConfig(num_classes=3, deep_supervision=True),
                        profile_by_width, Constraints(max_memory_gb=max_gb), tmp_path / "stages",
                        ChainRules(min_improvement=margin))


def test_open_family_profiles_every_stage_and_orders_chain(tmp_path: Path) -> None:
    p = planner(tmp_path)
    small = p.space.families[0]
    records = p.open_family(small)
    assert [r.kernel_size for r in records] == [3, 5, 7]
    assert [r.parent_stage for r in records] == ["", records[0].stage_id, records[1].stage_id]
    assert [r.init for r in records] == ["scratch", "upkern", "upkern"]
    assert [r.peak_memory_bytes // 2**30 for r in records] == [1, 2, 3]
    assert p.next_work() == (records[0].stage_id, 1)
    p.start(records[0].stage_id)
    assert p.next_work() is None  # k5 waits for k3
    p.finish(records[0].stage_id, "completed", mean_dice=0.5, checkpoint="k3.pt")
    assert p.next_work() == (records[1].stage_id, 1)
    assert p.parent_checkpoint(records[1]) == tmp_path / "k3.pt"
    # Every change reached the CSV.
    assert {r.stage_id: r.status for r in read_results(tmp_path)}[records[0].stage_id] == "completed"


def test_memory_budget_makes_stages_infeasible(tmp_path: Path) -> None:
    p = planner(tmp_path, max_gb=3.5)
    wide = p.open_family(p.space.families[1])  # 2, 4, 6 GiB
    assert [r.status for r in wide] == ["pending", "infeasible", "infeasible"]
    assert "peak memory 4.00 GB > budget 3.5 GB" in wide[1].reason
    small = p.open_family(p.space.families[0])  # 1, 2, 3 GiB: all fit
    assert [r.status for r in small] == ["pending"] * 3
    p.start(wide[0].stage_id)
    p.finish(wide[0].stage_id, "completed", mean_dice=0.4)
    assert p.family_done(wide[0].family_id)
    assert p.constraints.excess(wide[1]) > 0 >= p.constraints.excess(wide[0])


def test_saturation_and_failure_stop_the_chain(tmp_path: Path) -> None:
    p = planner(tmp_path, margin=0.01)
    small = p.open_family(p.space.families[0])
    p.start(small[0].stage_id)
    p.finish(small[0].stage_id, "completed", mean_dice=0.50)
    p.start(small[1].stage_id)
    p.finish(small[1].stage_id, "completed", mean_dice=0.505)
    k7 = p.table[small[2].stage_id]
    assert k7.status == "stopped" and "saturated" in k7.reason and "+0.0050" in k7.reason
    assert p.best_stage(small[0].family_id).stage_id == small[1].stage_id
    wide = p.open_family(p.space.families[1])
    p.start(wide[0].stage_id)
    p.finish(wide[0].stage_id, "failed", "non-finite loss nan at epoch 0")
    assert [p.table[r.stage_id].status for r in wide] == ["failed", "stopped", "stopped"]
    assert p.table[wide[2].stage_id].reason == f"chain ended at {wide[0].stage_id} (failed)"


def test_interrupted_stages_resume_after_restart(tmp_path: Path) -> None:
    p = planner(tmp_path)
    small = p.open_family(p.space.families[0])
    p.start(small[0].stage_id)
    again = planner(tmp_path)  # a new process reads the table
    assert again.table[small[0].stage_id].status == "running"
    assert again.recover() == {"interrupted": [small[0].stage_id], "missing": []}
    assert again.next_work() == (small[0].stage_id, 1)
    assert len(again.open_family(again.space.families[0])) == 3  # reopening changes nothing
    assert len(read_results(tmp_path)) == 3
