"""Fixtures shared by several test modules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.study_fixture import add_prepared_dataset, make_study, with_deep_supervision

TESTS = Path(__file__).resolve().parent
SERIAL_GROUPS = {
    "ray": ("study/backend/", "study/test_study_run.py", "study/test_demo_e2e.py"),
    "postgres": ("study/test_postgres.py",),
}
"""Tests that run in one test process, one after another, when the suite runs in several (pytest-xdist,
``--dist loadgroup``): those that start Ray clusters (a study's default backend; ``ray start`` leaves a cluster
that others could see) and those that share the PostgreSQL server. A test elsewhere that starts Ray says so
with ``@pytest.mark.xdist_group("ray")``."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        where = item.path.resolve().relative_to(TESTS).as_posix()
        for group, prefixes in SERIAL_GROUPS.items():
            if where.startswith(prefixes):
                item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def nnunet_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """nnU-Net raw and preprocessed folders shared by the study runs of a session: the first study of each demo
    dataset (test_study_run's, faultkit's) prepares it, the rest reuse it."""
    root = tmp_path_factory.mktemp("nnunet")
    return {"raw_dir": str(root / "raw"), "preprocessed_dir": str(root / "preprocessed")}


@pytest.fixture(scope="session")
def deep_supervised_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture study with checkpoints of deep-supervised networks, as nnU-Net trains them (built once)."""
    path = tmp_path_factory.mktemp("fixture") / "study"
    make_study(path)
    with_deep_supervision(path)
    return path


@pytest.fixture
def exportable_study(deep_supervised_study: Path, tmp_path: Path) -> Path:
    """A copy of the fixture study with a prepared nnU-Net dataset (its record, plans and dataset.json only)."""
    path = tmp_path / "study"
    shutil.copytree(deep_supervised_study, path)
    add_prepared_dataset(path, tmp_path)
    return path
