"""Backends: the registry, the study file's `resources:` and `backend:` (and the old `ray:` section), and the
contract every backend keeps: the same tiny study gives the same results table on Ray and on local workers."""

from __future__ import annotations

import logging
import typing
from pathlib import Path

import pytest

from scalekit.errors import ScalekitError
from scalekit.study import read_results
from scalekit.study.backend import BACKENDS, BackendSettings, make_backend
from scalekit.studyfile import StudyConfigError, load_study_config
from scalekit.studyfile.models import RAY_SECTION_NOTE, BackendSection

from tests.helpers.faultkit import run, study_file, wait_for_no_processes
from tests.helpers.study_files import VALID, write


def test_the_registry_names_every_backend_the_study_file_allows_and_refuses_others(tmp_path: Path) -> None:
    assert set(typing.get_args(BackendSection.model_fields["kind"].annotation)) == set(BACKENDS)
    with pytest.raises(ScalekitError, match="backend 'slurm' is unknown; use one of ray, local"):
        make_backend("slurm", BackendSettings(tmp_path))
    for name in BACKENDS:
        backend = make_backend(name, BackendSettings(tmp_path))
        assert all(callable(getattr(backend, method)) for method in ("session", "check_nodes", "run"))


def test_the_old_ray_section_still_loads_with_a_note(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = {**VALID, "ray": {"address": "auto", "cpus_per_trial": 3, "max_concurrent": 2}}
    with caplog.at_level(logging.WARNING):
        config = load_study_config(write(tmp_path, old), base=tmp_path)
    assert (config.resources.cpus_per_trial, config.resources.max_concurrent) == (3, 2)
    assert (config.backend.kind, config.backend.address) == ("ray", "auto")
    assert [r.getMessage() for r in caplog.records] == [f"{tmp_path / 'study.yaml'}: {RAY_SECTION_NOTE}"]
    with pytest.raises(StudyConfigError, match="either the old `ray:` section or `resources:` and `backend:`"):
        load_study_config(write(tmp_path, {**old, "resources": {"cpus_per_trial": 1}}), base=tmp_path)
    with pytest.raises(StudyConfigError, match="the local backend runs on this machine: remove backend.address"):
        load_study_config(write(tmp_path, {**VALID, "backend": {"kind": "local", "address": "auto"}}), base=tmp_path)


@pytest.mark.slow
def test_ray_and_local_workers_give_the_same_results_table(tmp_path: Path, nnunet_dirs: dict[str, str]) -> None:
    """The contract of a backend: the same stages, statuses, parents and Dice (to 1e-6: CPU training without
    augmentation workers is deterministic), and no worker left once the study ended."""
    tables = {}
    for kind in BACKENDS:
        folder = tmp_path / kind
        path = study_file(folder, nnunet_dirs, [3, 5], epochs=1, backend={"kind": kind})
        run(path)
        wait_for_no_processes(folder / "study")
        tables[kind] = {r.stage_id: r for r in read_results(folder / "study")}
    ray, local = tables["ray"], tables["local"]
    assert set(ray) == set(local) and len(ray) == 2
    for stage_id, record in ray.items():
        other = local[stage_id]
        assert (record.status, record.parent_stage, record.init, record.epochs) == (
            other.status, other.parent_stage, other.init, other.epochs)
        assert record.status == "completed"
        assert record.mean_dice == pytest.approx(other.mean_dice, abs=1e-6)
        assert record.case_dice == pytest.approx(other.case_dice, abs=1e-6)
    assert not (tmp_path / "local" / "study" / "ray").exists(), "the local backend starts no Ray"
