"""Rung decisions inside the chain search, without Ray: synchronous rungs for small studies, a continuation that
beats its UpKern step taking the family's next rung, halted stages saying what beat them, and what Optuna is
told (states, rung values) across a kill and a resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna

from scalekit.mednext import MedNeXtConfig
from scalekit.records import StageRecord
from scalekit.space import Family, SearchSpace
from scalekit.study import ChainPlanner, ChainRules, Constraints, ResultsTable
from scalekit.study.engine.schedule import Schedule, synchronous_for
from scalekit.study.engine.search import FINISHED, ChainSearch, SearchSettings, open_optuna_study

from tests.helpers.profiles import profile_by_width

FAMILIES = (Family(4, 1, 2, "small"), Family(4, 1, 3, "mid"), Family(8, 1, 2, "wide"), Family(8, 1, 3, "widest"))
ORDER = {"small": 0.1, "mid": 0.2, "wide": 0.3, "widest": 0.4}
"""A made-up Dice per family; the seed order lists the worst first, so arrival order favours the worst."""

Quality = Callable[[StageRecord, int], float]


def by_family(record: StageRecord, epochs: int) -> float:
    return ORDER[record.family_label] * (1 + epochs / 9) + 0.01 * (record.kernel_size - 3)


def search_over(tmp_path: Path, families=FAMILIES, kernels=(3, 5), synchronous: bool = True, eta: int = 3,
                controls: bool = False, metrics=("mean_dice", "peak_memory_gb")) -> ChainSearch:
    space = SearchSpace(families, kernels=kernels, seeds=tuple(f.family_id for f in families))
    rules = ChainRules(min_improvement=None, controls=controls,
                       schedule=Schedule("halving", 9, eta, 1, synchronous), iterations_per_epoch=10)
    planner = ChainPlanner(space, ResultsTable(tmp_path), MedNeXtConfig(num_classes=3, deep_supervision=True),
                           profile_by_width, Constraints(), tmp_path / "stages", rules)
    directions = {"mean_dice": "maximize", "peak_memory_gb": "minimize"}
    settings = SearchSettings("grid", len(families), 0, metrics, tuple(directions[m] for m in metrics),
                              f"sqlite:///{tmp_path / 'optuna.db'}", "decisions")
    return ChainSearch(planner, open_optuna_study(settings, space), settings)


def report(search: ChainSearch, stage_id: str, quality: Quality = by_family) -> None:
    """The stage reached its target: three validation cases around the quality (spread 0.01)."""
    record = search.planner.table[stage_id]
    reached = record.target_epochs
    mean = round(quality(record, reached), 4)
    cases = [mean - 0.01, mean + 0.01, mean] if record.family_label in ("small", "wide") else \
        [mean + 0.01, mean, mean - 0.01]
    weights = search.planner.stage_dir(stage_id) / "final.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"weights")
    search.stage_ended(stage_id, {
        "stage_status": "completed", "mean_dice": mean, "epochs": reached, "checkpoint": "final.pt",
        "wall_time_s": 1.0, "dice_curve": {**record.dice_curve, str(reached): mean},
        "case_dice": cases, "case_curve": {**record.case_curve, str(reached): cases},
    })


def drive(search: ChainSearch, quality: Quality = by_family, limit: int = 200) -> list[tuple[str, int]]:
    handed = []
    for _ in range(limit):
        stage_id = search.next_stage()
        if stage_id == FINISHED:
            return handed
        handed.append((stage_id, search.planner.table[stage_id].target_epochs))
        report(search, stage_id, quality)
    raise AssertionError("the search never finished")


def states(search: ChainSearch) -> dict[str, str]:
    return {t.user_attrs["family_label"]: t.state.name for t in search.study.trials}


def test_small_studies_promote_synchronously() -> None:
    assert synchronous_for(families=3, eta=2, workers=4) and synchronous_for(families=8, eta=3, workers=4)
    assert not synchronous_for(families=4, eta=2, workers=4)
    assert not synchronous_for(families=20, eta=3, workers=4) and synchronous_for(families=20, eta=3, workers=1)


def test_a_synchronous_rung_waits_for_every_family_so_arriving_first_wins_nothing(tmp_path: Path) -> None:
    search = search_over(tmp_path)
    handed = []
    for _ in range(4):
        stage_id = search.next_stage()
        handed.append(stage_id)
        assert search.planner.table[stage_id].target_epochs == 1, "no promotion before the rung is full"
        report(search, stage_id)
    assert [search.planner.table[s].family_label for s in handed] == ["small", "mid", "wide", "widest"]
    promoted = [search.next_stage(), search.next_stage()]
    table = search.planner.table
    assert {table[s].family_label for s in promoted} == {"wide", "widest"}
    assert all(table[s].target_epochs == 3 for s in promoted)
    for stage_id in promoted:
        report(search, stage_id)
    halted = {r.family_label: r.reason for r in table.records() if r.status == "stopped" and r.epochs}
    assert set(halted) == {"small", "mid"}, "the two worst stop at once; the best two go on"
    assert "not promoted at rung 1 epochs: widest k3 (Dice 0.444" in halted["small"] and ") went on" in halted["small"]
    assert states(search) == {"small": "PRUNED", "mid": "PRUNED", "wide": "RUNNING", "widest": "RUNNING"}
    drive(search)
    final = {r.stage_id: r for r in table.records()}
    winner = FAMILIES[3].family_id
    assert final[f"{winner}-k5"].status == "completed" and final[f"{winner}-k5"].epochs == 9
    assert states(search) == {"small": "PRUNED", "mid": "PRUNED", "wide": "PRUNED", "widest": "COMPLETE"}
    assert not any("the search ended" in r.reason for r in table.records())


def test_asynchronous_rungs_promote_on_arrival(tmp_path: Path) -> None:
    search = search_over(tmp_path, synchronous=False, eta=2)
    first = search.next_stage()
    report(search, first)
    second = search.next_stage()
    report(search, second)
    promoted = search.next_stage()  # two of four at rung 1: the better of those two goes on at once
    assert promoted == second and search.planner.table[promoted].target_epochs == 2


def test_a_winning_continuation_takes_the_familys_next_rung(tmp_path: Path) -> None:
    """k3 trained on beats its k5 UpKern step by far more than the noise: from rung 1 on the continuation
    represents the family and trains each next rung first, k5 following it. The chain still grows (k7 and the
    continuation of k5 train once the lane ended), and the answer's line says which of the two won."""
    def continuation_pays(record: StageRecord, epochs: int) -> float:
        return 0.5 + 0.01 * epochs + 0.02 * record.kernel_size if record.is_control else 0.3 + 0.01 * epochs

    search = search_over(tmp_path, families=FAMILIES[:1], kernels=(3, 5, 7), controls=True)
    handed = drive(search, continuation_pays)
    family = FAMILIES[0].family_id
    table = search.planner.table
    control, step = table[f"{family}-k3c"], table[f"{family}-k5"]
    lane = [(s[-3:], t) for s, t in handed if s in (control.stage_id, step.stage_id)]
    assert lane == [("-k5", 1), ("k3c", 1), ("k3c", 3), ("-k5", 3), ("k3c", 9), ("-k5", 9)]
    assert control.status == step.status == "completed"
    first_k7 = next(i for i, (s, _) in enumerate(handed) if s.endswith("-k7"))
    assert first_k7 > max(i for i, (s, _) in enumerate(handed) if s in (control.stage_id, step.stage_id))
    assert table[f"{family}-k7"].status == table[f"{family}-k5c"].status == "completed"
    assert search.planner.best_stage(family).stage_id == f"{family}-k5c"
    assert states(search) == {"small": "COMPLETE"}


def test_a_losing_continuation_follows_its_step(tmp_path: Path) -> None:
    def upkern_pays(record: StageRecord, epochs: int) -> float:
        return 0.3 + 0.01 * epochs if record.is_control else 0.6 + 0.01 * epochs

    search = search_over(tmp_path, families=FAMILIES[:1], controls=True)
    handed = drive(search, upkern_pays)
    family = FAMILIES[0].family_id
    steps = [t for s, t in handed if s == f"{family}-k5"]
    assert steps == [1, 3, 9] and [t for s, t in handed if s == f"{family}-k3c"] == steps


def test_optuna_states_and_rung_values_survive_a_kill(tmp_path: Path) -> None:
    """The driver dies right after a rung halted two families, before Optuna heard of it: the rerun tells them
    (once), leaves no finished family RUNNING, and ends with the same states as an uninterrupted search."""
    search = search_over(tmp_path)
    for _ in range(4):
        report(search, search.next_stage())
    search.planner.promotions()  # the rung decides (two families stop) ... and the driver dies here
    assert states(search) == dict.fromkeys(("small", "mid", "wide", "widest"), "RUNNING")
    again = search_over(tmp_path)
    again.planner.recover()
    assert states(again) == {"small": "PRUNED", "mid": "PRUNED", "wide": "RUNNING", "widest": "RUNNING"}
    pruned = [t for t in again.study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(t.user_attrs["told_epochs"] == 1 for t in pruned)
    assert all(t.user_attrs["stage.k3"]["rung_dice"] == {"1": t.user_attrs["stage.k3"]["mean_dice"]} for t in pruned)
    drive(again)
    (tmp_path / "uninterrupted").mkdir()
    reference = search_over(tmp_path / "uninterrupted")
    drive(reference)
    assert states(again) == states(reference)
    assert len(again.study.trials) == len(FAMILIES), "no family was asked or told twice"


def test_one_objective_reports_every_rung_as_an_intermediate_value(tmp_path: Path) -> None:
    search = search_over(tmp_path, metrics=("mean_dice",))
    drive(search)
    by_label = {t.user_attrs["family_label"]: t for t in search.study.trials}
    winner = by_label["widest"]
    assert winner.state == optuna.trial.TrialState.COMPLETE
    assert sorted(winner.intermediate_values) == [1, 3, 9, 10, 12, 18], "k3's rungs, then k5's after 9 epochs"
    assert by_label["small"].state == optuna.trial.TrialState.PRUNED
    assert list(by_label["small"].intermediate_values) == [1]
