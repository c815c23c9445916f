"""What optuna-dashboard reads from a study, read through Optuna's own API: each family's architecture as named
parameters with one distribution per name (so parameter importance and the parallel-coordinate plot speak of
C, the block count and the expansion ratio, not of an index), every sampler proposing only families of the
space, each stage's results as flat scalar attributes, halted families as PRUNED with the rung and the
reason, and a study created before these parameters resuming with its own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from scalekit.mednext import MedNeXtConfig
from scalekit.records import StageRecord
from scalekit.space import Family, SearchSpace, scale_family
from scalekit.study import ChainPlanner, ChainRules, Constraints, ResultsTable
from scalekit.study.engine.optuna_params import LAYOUT_ATTR, suggest_family
from scalekit.study.engine.schedule import Schedule
from scalekit.study.engine.search import FAMILY_ATTR, FINISHED, LABEL_ATTR, ChainSearch, SearchSettings, open_optuna_study

from tests.helpers.profiles import profile_by_width

COMPLETE, PRUNED, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL
MIXED = SearchSpace.build(presets=["T", "T8"], scaling=("T", [1.0, 2.0], [1.0, 2.0], [4, 16]), kernels=(3,))
"""Two presets and a scaling range; T8's width (8) is not a width of the range, T is its point d1-e1-C4."""


def search_over(tmp_path: Path, space: SearchSpace, sampler: str, families: int,
                schedule: Schedule | None = None) -> ChainSearch:
    rules = ChainRules(min_improvement=None, **({"schedule": schedule, "iterations_per_epoch": 10} if schedule else {}))
    planner = ChainPlanner(space, ResultsTable(tmp_path), MedNeXtConfig(num_classes=3, deep_supervision=True),
                           profile_by_width, Constraints(), tmp_path / "stages", rules)
    settings = SearchSettings(sampler, families, 0, ("mean_dice", "peak_memory_gb"), ("maximize", "minimize"),
                              f"sqlite:///{tmp_path / 'optuna.db'}", "dash")
    return ChainSearch(planner, open_optuna_study(settings, space), settings)


def drive(search: ChainSearch, dice: Callable[[StageRecord], float]) -> None:
    """Every stage completes the epochs it was handed, its Dice ``dice(record)`` times the share of the budget."""
    for _ in range(500):
        stage_id = search.next_stage()
        if stage_id == FINISHED:
            return
        assert stage_id is not None
        record = search.planner.table[stage_id]
        reached = record.target_epochs
        weights = search.planner.stage_dir(stage_id) / "final.pt"
        weights.parent.mkdir(parents=True, exist_ok=True)
        weights.write_bytes(b"weights")
        mean = round(dice(record) * (1 + reached / 9), 4)
        cases = [mean - 0.002, mean, mean + 0.002]
        search.stage_ended(stage_id, {
            "stage_status": "completed", "mean_dice": mean, "epochs": reached, "checkpoint": "final.pt",
            "dice_curve": {**record.dice_curve, str(reached): mean}, "case_dice": cases,
            "case_curve": {**record.case_curve, str(reached): cases}, "wall_time_s": 1.0})
    raise AssertionError("the search never finished")


def architecture(family: Family) -> dict:
    """The descriptors a family's trial must carry, worked out here from C, B and R."""
    return {"n_channels": family.n_channels, "blocks": sum(family.block_counts),
            "exp_r": round(sum(family.exp_r) / 9, 2)}


def one_distribution_per_name(study: optuna.Study) -> None:
    seen: dict[str, set] = {}
    for trial in study.trials:
        for name, distribution in trial.distributions.items():
            seen.setdefault(name, set()).add(distribution)
    assert all(len(distributions) == 1 for distributions in seen.values()), seen


def importances(study: optuna.Study) -> dict[str, float]:
    """Parameter importance for the Dice, as optuna-dashboard computes it (PED-ANOVA, lower is better)."""
    return optuna.importance.get_param_importances(study, target=lambda t: -t.values[0])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_presets_space_names_the_architecture(tmp_path: Path) -> None:
    space = SearchSpace.build(presets=["L", "S", "M", "B"], kernels=(3,), preset_channels=4)
    search = search_over(tmp_path, space, "tpe", 4)
    drive(search, lambda r: 0.01 * sum(r.block_counts) / 9)
    study = search.study
    assert [t.state for t in study.trials] == [COMPLETE] * 4
    for trial in study.trials:
        family = space.by_id(trial.user_attrs[FAMILY_ATTR])
        assert trial.params == {"label": family.name, **architecture(family)}
    assert [t.params["label"] for t in study.trials] == ["L-C4", "S-C4", "M-C4", "B-C4"], "seeds first, as listed"
    assert study.trials[0].distributions["label"].choices == ("S-C4", "B-C4", "M-C4", "L-C4"), "smallest first"
    assert study.trials[0].params == {"label": "L-C4", "n_channels": 4, "blocks": 54, "exp_r": 6.0}
    one_distribution_per_name(study)
    found = importances(study)
    assert set(found) == {"label", "n_channels", "blocks", "exp_r"}
    assert found["blocks"] + found["exp_r"] > 0.5, found


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_scaling_space_has_its_axes_and_descriptors(tmp_path: Path) -> None:
    space = SearchSpace.build(scaling=("T", [1.0, 2.0], [1.0, 2.0], [4, 8]), kernels=(3,))
    search = search_over(tmp_path, space, "grid", 8)
    drive(search, lambda r: 0.05 * r.n_channels)
    study = search.study
    assert len(study.trials) == 8 and all(t.state == COMPLETE for t in study.trials)
    for trial in study.trials:
        family = space.by_id(trial.user_attrs[FAMILY_ATTR])
        assert trial.params == {**dict(family.axes), **architecture(family)}
    one_distribution_per_name(study)
    found = importances(study)
    assert set(found) == {"depth", "expansion", "n_channels", "blocks", "exp_r"}
    assert max(found, key=found.get) == "n_channels", found


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random"])
def test_samplers_propose_only_families_of_the_space_with_their_own_descriptors(tmp_path: Path, sampler: str) -> None:
    """NSGA-II crosses parents over its relative search space past its first generation: the descriptors are
    kept out of it, as out of every independent draw, so each trial's descriptors are its family's."""
    search = search_over(tmp_path, MIXED, sampler, len(MIXED))
    drive(search, lambda r: 0.01 * r.n_channels + 0.001 * sum(r.block_counts))
    study = search.study
    assert {t.user_attrs[FAMILY_ATTR] for t in study.trials if FAMILY_ATTR in t.user_attrs} == set(MIXED.ids())
    assert len(study.trials) > len(MIXED), "repeated asks: NSGA-II reached a second generation"
    labels = {f.name: f for f in MIXED.listed}
    for trial in study.trials:
        params = dict(trial.params)
        if params.pop("source") == "listed":
            family = labels[params.pop("label")]
        else:
            point = {axis: params.pop(axis) for axis in ("depth", "expansion", "n_channels")}
            family = MIXED.by_id(scale_family("T", **point).family_id)  # at d1-e1-C4: the preset T
            params["n_channels"] = point["n_channels"]
        expected = architecture(family)
        if family.n_channels == 8:  # T8's width is not among the range's widths: not recorded
            del expected["n_channels"]
        assert params == expected, (trial.number, trial.params)
        if FAMILY_ATTR in trial.user_attrs:
            assert trial.user_attrs[FAMILY_ATTR] == family.family_id
    one_distribution_per_name(study)


def test_stages_are_flat_attributes_and_a_halted_family_is_pruned_with_its_rung(tmp_path: Path) -> None:
    space = SearchSpace((Family(4, 1, 2, "narrow"), Family(8, 1, 2, "wide")), kernels=(3, 5),
                        seeds=(Family(4, 1, 2).family_id, Family(8, 1, 2).family_id))
    search = search_over(tmp_path, space, "grid", 2, Schedule("halving", 9, 3, 1))
    drive(search, lambda r: 0.05 * r.n_channels + 0.01 * (r.kernel_size - 3))
    trials = {t.user_attrs[LABEL_ATTR]: t for t in search.study.trials}
    narrow, wide = trials["narrow"], trials["wide"]
    assert narrow.state == PRUNED and wide.state == COMPLETE
    assert narrow.user_attrs["halted_at_epochs"] == 1 == narrow.user_attrs["told_epochs"]
    reason = search.planner.table[f"{Family(4, 1, 2).family_id}-k3"].reason
    assert narrow.user_attrs["halted_reason"] == reason and reason.startswith("halted at 1 of 9 epochs: ")
    assert "wide" in reason, "the reason names what went on instead"
    assert {k: narrow.user_attrs[k] for k in ("k3.status", "k3.epochs", "k3.mean_dice", "k3.rung_dice")} == \
        {"k3.status": "stopped", "k3.epochs": 1, "k3.mean_dice": 0.2222, "k3.rung_dice": "1:0.222"}
    assert narrow.user_attrs["k5.status"] == "stopped", "never trained: no Dice, no epochs, no rungs"
    assert not {"k5.mean_dice", "k5.epochs", "k5.rung_dice"} & set(narrow.user_attrs)
    assert "halted_at_epochs" not in wide.user_attrs and "halted_reason" not in wide.user_attrs
    assert wide.user_attrs["k3.rung_dice"] == "1:0.444 3:0.533 9:0.800"
    assert wide.user_attrs["k5.status"] == "completed" and wide.user_attrs["k5.epochs"] == 9
    for trial in (narrow, wide):
        flat = {k: v for k, v in trial.user_attrs.items() if not k.startswith("stage.")}
        assert all(isinstance(v, (str, int, float)) for v in flat.values()), flat
        numbers = [v for k, v in flat.items() if k.endswith(("mean_dice", "epochs"))]
        assert numbers and all(isinstance(v, (int, float)) for v in numbers), "the dashboard sorts numbers only"
        assert trial.user_attrs["stage.k3"]["status"] == trial.user_attrs["k3.status"], "the whole stage beside"


def old_study(tmp_path: Path, space: SearchSpace) -> None:
    """A study as scalekit wrote it before descriptors: seeds queued by ``family_index``, the first asked and
    given its family, then the run killed."""
    study = optuna.create_study(study_name="dash", storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                                directions=["maximize", "minimize"])
    for index in range(len(space.listed)):
        study.enqueue_trial({"family_index": index})
    trial = study.ask()
    index = trial.suggest_categorical("family_index", list(range(len(space.listed))))
    trial.set_user_attr(FAMILY_ATTR, space.listed[index].family_id)


def test_a_study_from_before_resumes_with_its_own_parameters(tmp_path: Path) -> None:
    space = SearchSpace.build(presets=["T", "T8"], kernels=(3,))
    old_study(tmp_path, space)
    search = search_over(tmp_path, space, "tpe", 2)
    drive(search, lambda r: 0.01 * r.n_channels)
    study = search.study
    assert LAYOUT_ATTR not in study.user_attrs
    assert [(t.state, t.params, t.user_attrs[FAMILY_ATTR]) for t in study.trials] == \
        [(COMPLETE, {"family_index": i}, f.family_id) for i, f in enumerate(space.listed)], "nothing queued again"
    assert all(t.user_attrs["k3.status"] == "completed" for t in study.trials)
    (tmp_path / "fresh").mkdir()
    fresh = search_over(tmp_path / "fresh", space, "tpe", 2).study
    asked = fresh.ask()
    assert LAYOUT_ATTR in fresh.user_attrs and suggest_family(asked, space) == space.listed[0]
    assert asked.params == {"label": "T", "n_channels": 4, "blocks": 9, "exp_r": 2.0}
