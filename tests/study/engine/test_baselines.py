"""ResEnc baselines beside the MedNeXt search, without Ray: opened before any family is asked and not counted
against ``search.families``, a one-stage chain at its own batch, ranked with the k3 stages at the same rungs,
decided the same whatever order the space lists its families in, and named in the answer beside the MedNeXt."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from scalekit import networks
from scalekit.networks import ResEncConfig
from scalekit.mednext import MedNeXtConfig
from scalekit.records import StageRecord
from scalekit.results.answer import study_answer
from scalekit.results.pareto import StudyGoals
from scalekit.space import Family, ResEncFamily, SearchSpace
from scalekit.study import ChainPlanner, ChainRules, Constraints, ResultsTable
from scalekit.study.engine.schedule import Schedule
from scalekit.study.engine.search import FINISHED, ChainSearch, SearchSettings, open_optuna_study

from tests.helpers.profiles import FakeProfile

MEDNEXT = (Family(4, 1, 2, "small"), Family(8, 1, 2, "wide"))
BASELINES = (ResEncFamily("M", batch_size=5), ResEncFamily("M", 0.5, 1.0, batch_size=5))
TEMPLATES = {
    "mednext": MedNeXtConfig(num_classes=3, deep_supervision=True),
    "resenc": ResEncConfig(num_classes=3, features_per_stage=(8, 16, 32, 64), kernel_sizes=((3, 3, 3),) * 4,
                           strides=((1, 1, 1),) + ((2, 2, 2),) * 3, n_blocks_per_stage=(1, 3, 4, 6),
                           n_conv_per_stage_decoder=(1, 1, 1), deep_supervision=True),
}
QUALITY = {"small": 0.50, "wide": 0.60, "ResEnc M": 0.62, "ResEnc M-f0.5-b1": 0.40}
"""A made-up Dice per family at its first stage (a k5 adds 0.05): ResEnc M leads every k3, wide k5 leads all."""


def profile_any(config: networks.NetworkConfig, batch_size: int | None = None) -> FakeProfile:
    width = networks.columns(config)["n_channels"]
    return FakeProfile(1000 * width, 1.0, 3.0, (batch_size or 2) * width * 2**20)


def dice(record: StageRecord, epochs: int) -> float:
    return QUALITY[record.family_label] + (0.05 if record.kernel_size == 5 else 0.0) + 0.01 * epochs


def search_over(tmp_path: Path, families: tuple[Family, ...], baselines: tuple[ResEncFamily, ...]) -> ChainSearch:
    space = SearchSpace(families, kernels=(3, 5), seeds=tuple(f.family_id for f in families), baselines=baselines)
    rules = ChainRules(min_improvement=None, schedule=Schedule("halving", 2, 2, 1, synchronous=True))
    planner = ChainPlanner(space, ResultsTable(tmp_path), TEMPLATES, profile_any, Constraints(),
                           tmp_path / "stages", rules)
    settings = SearchSettings("grid", len(families), 0, ("mean_dice", "peak_memory_gb"), ("maximize", "minimize"),
                              f"sqlite:///{tmp_path / 'optuna.db'}", "baselines")
    return ChainSearch(planner, open_optuna_study(settings, space), settings)


def drive(search: ChainSearch, reports: int = 100) -> list[str]:
    """Hand out and report stages until the search finishes, or more than ``reports`` were reported and one more is
    handed out (then left running, as a killed driver leaves it)."""
    handed: list[str] = []
    for _ in range(100):
        stage_id = search.next_stage()
        if stage_id == FINISHED or len(handed) > reports:
            return handed + ([stage_id] if stage_id != FINISHED else [])
        assert stage_id is not None
        handed.append(stage_id)
        record = search.planner.table[stage_id]
        reached = record.target_epochs
        weights = search.planner.stage_dir(stage_id) / "final.pt"
        weights.parent.mkdir(parents=True, exist_ok=True)
        weights.write_bytes(b"weights")
        mean = dice(record, reached)
        cases = [mean - 0.002, mean, mean + 0.002]
        search.stage_ended(stage_id, {
            "stage_status": "completed", "mean_dice": mean, "epochs": reached, "checkpoint": "final.pt",
            "dice_curve": {**record.dice_curve, str(reached): mean}, "wall_time_s": 10.0, "case_dice": cases,
            "case_curve": {**record.case_curve, str(reached): cases},
        })
    raise AssertionError("the search never finished")


def test_baselines_train_beside_the_search_through_the_same_rungs(tmp_path: Path) -> None:
    search = search_over(tmp_path, MEDNEXT, BASELINES)
    first = search.next_stage()
    table = search.planner.table
    baselines = [r for r in table.records() if r.arch == "resenc"]
    assert {r.family_label for r in baselines} == {"ResEnc M", "ResEnc M-f0.5-b1"}
    assert first in {r.stage_id for r in baselines}, "the baselines are opened before any family is asked"
    for record in baselines:  # a one-stage chain at its own batch, with the kind's readable columns
        assert record.stage_id.endswith("-k3") and record.parent_stage == "" and record.batch_size == 5
        assert record.peak_memory_bytes == 5 * record.n_channels * 2**20 and record.exp_r == []
    assert [networks.config_from_dict(r.config) for r in baselines] == [
        b.config(3, TEMPLATES["resenc"]) for b in BASELINES]
    assert [r.n_channels for r in baselines] == [8, 4]  # features times 0.5: 8 -> 4
    assert [r.block_counts for r in baselines] == [[1, 3, 4, 6]] * 2
    search.planner.interrupt()
    drive(search)
    rows = {r.name: r for r in table.records()}
    assert len(search._family_trial) == 2, "search.families counts the searched MedNeXt families only"
    # Rung 1 ranked the four first stages together: ResEnc M and wide k3 went on, the others stopped there.
    assert rows["ResEnc M"].status == rows["wide k3"].status == rows["wide k5"].status == "completed"
    for name in ("small k3", "ResEnc M-f0.5-b1"):
        assert rows[name].status == "stopped" and rows[name].reason.startswith("halted at 1 of 2 epochs")
    assert rows["ResEnc M"].epochs == 2 and rows["ResEnc M"].dice_curve.keys() == {"1", "2"}
    answer = study_answer(table.records(), StudyGoals())
    assert answer.budget is not None and answer.budget.stage is not None
    assert answer.budget.stage.name == "wide k5" and [r.name for r in answer.rivals] == ["ResEnc M"]
    line = next(line for line in answer.lines() if line.startswith("MedNeXt or ResEnc for the best Dice: "))
    assert "(MedNeXt wide k5, Dice" in line and "(ResEnc M, batch 5, Dice" in line  # its own batch, said
    assert line.endswith("MedNeXt wins by +0.0300 Dice [+0.0300, +0.0300]")


@pytest.mark.parametrize("order", list(itertools.permutations(range(2)))[1:])
def test_the_decisions_do_not_depend_on_the_order_of_the_space(tmp_path: Path, order: tuple[int, ...]) -> None:
    def outcome(folder: Path, families: tuple[Family, ...], baselines: tuple[ResEncFamily, ...]) -> dict:
        folder.mkdir()
        search = search_over(folder, families, baselines)
        drive(search)
        return {r.stage_id: (r.status, r.epochs, r.reason) for r in search.planner.table.records()}

    listed = outcome(tmp_path / "listed", MEDNEXT, BASELINES)
    permuted = outcome(tmp_path / "permuted", tuple(MEDNEXT[i] for i in order),
                       tuple(BASELINES[i] for i in reversed(order)))
    assert permuted == listed


def test_the_answer_says_when_the_kinds_are_within_noise_or_the_baseline_never_completed() -> None:
    def stage(stage_id: str, label: str, arch: str, cases: list[float], **changes) -> StageRecord:
        mean = sum(cases) / len(cases)
        return StageRecord(stage_id, stage_id[:9], 8, [1] * 9, [2] * 9 if arch == "mednext" else [], 5, arch=arch,
                           family_label=label, status="completed", mean_dice=mean, case_dice=cases,
                           peak_memory_bytes=2**30, memory_method="predicted", epochs=4, **changes)

    mednext = stage("f00000001-k5", "B", "mednext", [0.70, 0.60, 0.80, 0.75])
    resenc = stage("f00000002-k3", "ResEnc L", "resenc", [0.72, 0.58, 0.79, 0.74])
    lines = study_answer([mednext, resenc], StudyGoals(max_memory_gb=24)).lines()
    line = next(line for line in lines if line.startswith("MedNeXt or ResEnc for the 24 GiB budget: "))
    assert "f00000001-k5 (MedNeXt B k5, Dice" in line and "f00000002-k3 (ResEnc L, Dice" in line
    assert "within noise (+0.0050 Dice [" in line
    halted = dataclasses.replace(resenc, status="stopped", epochs=1, reason="halted at 1 of 4 epochs: behind")
    line = next(line for line in study_answer([mednext, halted], StudyGoals(max_memory_gb=24)).lines()
                if line.startswith("MedNeXt or ResEnc"))
    assert line.endswith("the best ResEnc, ResEnc L, never completed (stopped at 1 epochs, Dice 0.7075: halted at "
                         "1 of 4 epochs: behind)")


def test_a_study_stopped_midway_resumes_its_baselines_to_the_same_outcome(tmp_path: Path) -> None:
    """A driver killed after the baselines were opened and partly trained: a new driver over the same results
    table and Optuna storage opens nothing twice, keeps each baseline's batch, and ends where one run ends."""
    def outcome(search: ChainSearch) -> dict:
        return {r.stage_id: (r.status, r.epochs, r.reason, r.batch_size) for r in search.planner.table.records()}

    (tmp_path / "whole").mkdir()
    whole = search_over(tmp_path / "whole", MEDNEXT, BASELINES)
    drive(whole)
    (tmp_path / "killed").mkdir()
    first = search_over(tmp_path / "killed", MEDNEXT, BASELINES)
    running = drive(first, reports=3)[-1]  # four stages reported (rung 1 of the baselines and k3s), one running
    before = first.planner.table.records()
    assert first.planner.table[running].status == "running" and sum(r.arch == "resenc" for r in before) == 2
    resumed = search_over(tmp_path / "killed", MEDNEXT, BASELINES)  # the first driver is gone
    assert resumed.planner.recover()["interrupted"] == [running]
    drive(resumed)
    assert [r.stage_id for r in resumed.planner.table.records()] == [r.stage_id for r in before]
    assert outcome(resumed) == outcome(whole)


def test_a_baseline_that_leads_is_confirmed_over_seeds_as_a_one_stage_chain(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from scalekit.results.seeds import seed_dir
    from scalekit.study.engine.confirm import SeedRuns, plan_confirmation
    from scalekit.study.engine.confirm import FINISHED as DONE

    monkeypatch.setitem(QUALITY, "ResEnc M", 0.70)  # ResEnc M leads every stage: the answer
    search = search_over(tmp_path, MEDNEXT, BASELINES)
    drive(search)
    lead = next(r for r in search.planner.table.records() if r.name == "ResEnc M")
    plan = plan_confirmation(search.planner, None, seeds=1, max_finalists=1, base_seed=0)
    assert plan.finalists == (lead.stage_id,)
    runs = SeedRuns(search.planner, plan)
    handed = []
    while (key := runs.next_stage()) != DONE:
        assert key is not None
        planner, stage_id, seed = runs.locate(key)
        (planner.stage_dir(stage_id)).mkdir(parents=True, exist_ok=True)
        (planner.stage_dir(stage_id) / "final.pt").write_bytes(b"weights")
        handed.append(stage_id)
        runs.stage_ended(key, {"stage_status": "completed", "mean_dice": 0.71, "case_dice": [0.70, 0.71, 0.72],
                               "epochs": 2, "checkpoint": "final.pt", "wall_time_s": 1.0})
    assert handed == [lead.stage_id]  # one stage: no parent to retrain first
    again = ResultsTable(seed_dir(tmp_path, 1))[lead.stage_id]
    assert again.status == "completed" and again.batch_size == 5 and again.arch == "resenc"
