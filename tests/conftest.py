"""Fixtures shared by several test modules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.study_fixture import add_prepared_dataset, make_study, with_deep_supervision


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
