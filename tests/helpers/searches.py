"""A two-family search over an in-memory results table and a SQLite Optuna study, without Ray."""

from __future__ import annotations

from pathlib import Path

from scalekit.mednext import MedNeXtConfig
from scalekit.space import Family, SearchSpace
from scalekit.study import ChainPlanner, ChainRules, Constraints, ResultsTable
from scalekit.study.engine.search import ChainSearch, SearchSettings, open_optuna_study

from tests.helpers.profiles import profile_by_width

SPACE = SearchSpace((Family(4, 1, 2, "small"), Family(8, 1, 2, "wide")), kernels=(3, 5),
                    seeds=(Family(4, 1, 2).family_id,))


def settings(tmp_path: Path, sampler: str = "grid", families: int = 2) -> SearchSettings:
    return SearchSettings(sampler=sampler, families=families, seed=0, metrics=("mean_dice", "peak_memory_gb"),
                          directions=("maximize", "minimize"), storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                          study_name="t")


def searcher(tmp_path: Path, sampler: str = "grid", families: int = 2) -> ChainSearch:
    planner = ChainPlanner(SPACE, ResultsTable(tmp_path), MedNeXtConfig(num_classes=3, deep_supervision=True),
                           profile_by_width, Constraints(), tmp_path / "stages",
                           ChainRules(min_improvement=None))
    s = settings(tmp_path, sampler, families)
    return ChainSearch(planner, open_optuna_study(s, SPACE), s)
