"""The plug-in registries (schedulers, samplers): each names exactly what the study file allows, and an
unknown name is refused with the known ones, by the registry and by `study validate`."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from scalekit.errors import ScalekitError
from scalekit.study.engine.schedule import SCHEDULERS, Schedule
from scalekit.study.engine.search import SAMPLERS, SearchSettings, make_sampler
from scalekit.studyfile import StudyConfigError, load_study_config
from scalekit.studyfile.models import SearchSection

from tests.helpers.study_files import VALID, write


def allowed(field: str) -> set[str]:
    return set(typing.get_args(SearchSection.model_fields[field].annotation))


def test_the_scheduler_registry_is_what_the_study_file_allows() -> None:
    assert allowed("scheduler") == set(SCHEDULERS)
    assert Schedule("full", 9).rungs == (9,) and Schedule("halving", 9, 3, 1).rungs == (1, 3, 9)
    with pytest.raises(ScalekitError, match="scheduler 'hyperband' is unknown; use one of full, halving"):
        Schedule("hyperband", 9)


def test_the_sampler_registry_is_what_the_study_file_allows_and_never_falls_back(tmp_path: Path) -> None:
    assert allowed("sampler") == set(SAMPLERS)
    settings = SearchSettings("cmaes", 4, 0, ("mean_dice",), ("maximize",), "sqlite://", "s")
    with pytest.raises(ScalekitError, match="sampler 'cmaes' is unknown; use one of nsga2, tpe, grid, random"):
        make_sampler(settings)
    kinds = {name: type(make_sampler(SearchSettings(name, 4, 0, ("mean_dice",), ("maximize",), "sqlite://", "s")))
             .__name__ for name in SAMPLERS}
    assert kinds == {"nsga2": "NSGAIISampler", "tpe": "TPESampler", "grid": "RandomSampler",
                     "random": "RandomSampler"}


@pytest.mark.parametrize("field, value", [("scheduler", "hyperband"), ("sampler", "cmaes")])
def test_study_files_naming_an_unknown_plug_in_are_refused(tmp_path: Path, field: str, value: str) -> None:
    data = {**VALID, "search": {**VALID["search"], field: value}}
    with pytest.raises(StudyConfigError, match=rf"search\.{field}: Input should be "):
        load_study_config(write(tmp_path, data), base=tmp_path)
