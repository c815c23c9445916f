"""The demo dataset and raw-dataset validation (every bad case reported before any preprocessing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from scalekit.nnunet import DEMO_LABELS, DatasetValidationError, make_demo_dataset, prepare_dataset
from scalekit.nnunet.validate import validate_raw_dataset


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(0)


def test_demo_dataset_is_deterministic_and_has_a_left_right_pair(tmp_path: Path) -> None:
    first = make_demo_dataset(tmp_path / "a", cases=6, size=32, seed=3)
    again = make_demo_dataset(tmp_path / "b", cases=6, size=32, seed=3)
    other = make_demo_dataset(tmp_path / "c", cases=6, size=32, seed=4)
    content = json.loads((first / "dataset.json").read_text())
    assert content["labels"] == DEMO_LABELS and content["numTraining"] == 6 and len(DEMO_LABELS) >= 5
    image = first / "imagesTr" / "demo_001_0000.nii.gz"
    assert np.array_equal(read(image), read(again / "imagesTr" / "demo_001_0000.nii.gz"))
    assert not np.array_equal(read(image), read(other / "imagesTr" / "demo_001_0000.nii.gz"))
    mirrored, intensity = set(), {3: [], 4: []}
    for case in range(6):
        labels = read(first / "labelsTr" / f"demo_{case:03d}.nii.gz")
        img = read(first / "imagesTr" / f"demo_{case:03d}_0000.nii.gz")
        assert labels.shape == img.shape == (32, 32, 32)
        assert set(np.unique(labels)) == set(DEMO_LABELS.values())
        liver, same, other_kidney = (centroid(labels == v) for v in (2, 3, 4))
        # The pair differs by position relative to the liver, not by appearance.
        assert np.linalg.norm(same - liver) < np.linalg.norm(other_kidney - liver)
        for value in (3, 4):
            intensity[value].append(img[labels == value].mean())
        mirrored.add(bool(same[2] > other_kidney[2]))
    assert mirrored == {True, False}, "both left-right orientations should occur"
    assert np.mean(intensity[3]) == pytest.approx(np.mean(intensity[4]), rel=0.1)


def break_dataset(raw: Path) -> None:
    (raw / "labelsTr" / "demo_001.nii.gz").unlink()
    bad_value = raw / "labelsTr" / "demo_002.nii.gz"
    labels = read(bad_value)
    labels[0, 0, 0] = 9
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(bad_value))
    small = sitk.GetImageFromArray(np.zeros((16, 32, 32), np.uint8))
    sitk.WriteImage(small, str(raw / "labelsTr" / "demo_003.nii.gz"))


def test_prepare_lists_every_bad_case_before_preprocessing(tmp_path: Path) -> None:
    raw = make_demo_dataset(tmp_path / "raw", cases=5, size=32, seed=0, dataset_id=993, name="Broken")
    break_dataset(raw)
    with pytest.raises(DatasetValidationError) as caught:
        prepare_dataset(raw, tmp_path / "pre")
    message = str(caught.value)
    assert "demo_001: label file demo_001.nii.gz is missing" in message
    assert "demo_002: label values [9]" in message
    assert "demo_003: image shape (32, 32, 32) differs from label shape (16, 32, 32)" in message
    assert len(caught.value.problems) == 3
    assert not (tmp_path / "pre" / raw.name).exists(), "nothing may be preprocessed"
    cli = subprocess.run(
        [sys.executable, "-c", "from scalekit.cli import main; main()", "data", "prepare", str(raw),
         "--preprocessed", str(tmp_path / "pre")],
        capture_output=True, text=True, timeout=300,
    )
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert all(case in cli.stderr for case in ("demo_001", "demo_002", "demo_003"))


def test_validation_reports_spacing_mismatch_and_bad_folder_names(tmp_path: Path) -> None:
    raw = make_demo_dataset(tmp_path / "raw", cases=2, size=32, seed=0, dataset_id=994, name="Spacing")
    path = raw / "labelsTr" / "demo_000.nii.gz"
    label = sitk.ReadImage(str(path))
    label.SetSpacing((1.0, 1.0, 2.5))
    sitk.WriteImage(label, str(path))
    with pytest.raises(DatasetValidationError, match="demo_000: image spacing"):
        validate_raw_dataset(raw)
    renamed = raw.rename(tmp_path / "raw" / "MyData")
    with pytest.raises(ValueError, match="Dataset<3-digit id>_<Name>"):
        validate_raw_dataset(renamed)
