"""Damaged raw data is refused before any preprocessing; changed preprocessed files are refused before they are
reused or trained on; a moved study folder is still recognised as prepared."""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from scalekit.nnunet import (
    DatasetValidationError,
    PreparedDataChangedError,
    PreparedDataset,
    make_demo_dataset,
    prepare_dataset,
)


@pytest.fixture(scope="module", autouse=True)
def one_process() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("nnUNet_def_n_proc", "1")
        patch.setenv("nnUNet_n_proc_DA", "1")
        yield


@pytest.fixture(scope="module")
def clean_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("clean"), cases=3, size=32, seed=0, dataset_id=981,
                             name="Faults")


@pytest.fixture
def raw(clean_raw: Path, tmp_path: Path) -> Path:
    """A copy of the clean raw dataset that a test may damage."""
    return Path(shutil.copytree(clean_raw, tmp_path / "raw" / clean_raw.name))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    """A tiny dataset prepared once, in a study-like layout ``study/nnunet/{raw,preprocessed}``."""
    nnunet = tmp_path_factory.mktemp("study") / "nnunet"
    raw = make_demo_dataset(nnunet / "raw", cases=4, size=32, seed=0, dataset_id=982, name="Prepared")
    return prepare_dataset(raw, nnunet / "preprocessed", num_processes=1)


def write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, str(path), useCompression=True)


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def refused(raw: Path, tmp_path: Path) -> DatasetValidationError:
    """The one-problem error of preparing ``raw``, after checking that nothing was preprocessed."""
    with pytest.raises(DatasetValidationError) as caught:
        prepare_dataset(raw, tmp_path / "pre", num_processes=1)
    assert not (tmp_path / "pre" / raw.name).exists(), "nothing may be preprocessed"
    assert len(caught.value.problems) == 1, caught.value.problems
    return caught.value


@pytest.mark.parametrize("damage", ["cut gzip stream", "short NIfTI data"])
def test_truncated_image_is_refused(raw: Path, tmp_path: Path, damage: str) -> None:
    path = raw / "imagesTr" / "demo_001_0000.nii.gz"
    stored = path.read_bytes()
    if damage == "cut gzip stream":  # an interrupted download or copy
        path.write_bytes(stored[: len(stored) // 2])
    else:  # a complete gzip stream of a NIfTI file that lost its end before compression
        path.write_bytes(gzip.compress(gzip.decompress(stored)[:-1000]))
    problem = refused(raw, tmp_path).problems[0]
    assert problem.startswith("demo_001: demo_001_0000.nii.gz is truncated or corrupt (")
    assert problem.endswith("; re-export or re-download it")
    if damage == "short NIfTI data":
        assert "its NIfTI header needs" in problem


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_intensities_are_refused(raw: Path, tmp_path: Path, value: float) -> None:
    path = raw / "imagesTr" / "demo_002_0000.nii.gz"
    image = read(path)
    image[0, 0, :3] = value  # SimpleITK writes these, but reads them back from NIfTI as 0
    write(image, path)
    assert refused(raw, tmp_path).problems == ["demo_002: image demo_002_0000.nii.gz contains 3 NaN/infinite voxels"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.5, "demo_000: label values must be whole numbers, found 1.5"),
     (np.nan, "demo_000: label demo_000.nii.gz contains 1 NaN/infinite voxels")],
)
def test_labels_must_be_whole_finite_numbers(raw: Path, tmp_path: Path, value: float, expected: str) -> None:
    path = raw / "labelsTr" / "demo_000.nii.gz"
    labels = read(path).astype(np.float32)
    labels[16, 16, 16] = value
    write(labels, path)
    assert refused(raw, tmp_path).problems == [expected]


def test_4d_image_in_a_3d_dataset_is_refused(raw: Path, tmp_path: Path) -> None:
    path = raw / "imagesTr" / "demo_001_0000.nii.gz"
    volume = nibabel.load(path).get_fdata(dtype=np.float32)
    nibabel.save(nibabel.Nifti1Image(np.stack([volume, volume], axis=-1), np.eye(4)), path)
    problem = refused(raw, tmp_path).problems[0]
    assert problem.startswith("demo_001: image demo_001_0000.nii.gz is 4-D (2 3-D volumes), the other cases are 3-D")


def test_2d_case_in_a_3d_dataset_is_refused(raw: Path, tmp_path: Path) -> None:
    for path in (raw / "imagesTr" / "demo_001_0000.nii.gz", raw / "labelsTr" / "demo_001.nii.gz"):
        write(read(path)[16], path)
    with pytest.raises(DatasetValidationError) as caught:
        prepare_dataset(raw, tmp_path / "pre", num_processes=1)
    assert caught.value.problems == [
        "demo_001: image demo_001_0000.nii.gz is 2-D, the other cases are 3-D",
        "demo_001: label demo_001.nii.gz is 2-D, the other cases are 3-D",
    ]


def copy_preparation(prepared: PreparedDataset, tmp_path: Path) -> PreparedDataset:
    root = Path(shutil.copytree(prepared.preprocessed_root, tmp_path / "preprocessed"))
    return replace(prepared, preprocessed_root=root)


@pytest.mark.slow  # preprocesses a dataset with nnU-Net (module fixture)
@pytest.mark.parametrize("change", ["changed", "missing", "added"])
def test_changed_preprocessed_files_are_refused(prepared: PreparedDataset, tmp_path: Path, change: str) -> None:
    copy = copy_preparation(prepared, tmp_path)
    copy.verify_files()
    data = copy.load_plans()["configurations"][copy.configuration]["data_identifier"]
    target = copy.preprocessed_dir / data / ("evil.pkl" if change == "added" else "demo_001.pkl")
    if change == "changed":
        target.write_bytes(target.read_bytes() + b"tampered")
    elif change == "missing":
        target.unlink()
    else:
        target.write_bytes(pickle.dumps(["planted"]))
    expected = (f"{copy.preprocessed_dir}: 1 preprocessed file(s) changed since scalekit prepared them: "
                f"{data}/{target.name} ({change}); delete the folder and rerun to prepare again")
    with pytest.raises(PreparedDataChangedError) as caught:
        copy.verify_files()
    assert str(caught.value) == expected and caught.value.changes == [f"{data}/{target.name} ({change})"]
    record = (copy.preprocessed_dir / "scalekit_prepared.json").read_bytes()
    with pytest.raises(PreparedDataChangedError) as again:
        prepare_dataset(prepared.raw_dir, copy.preprocessed_root, num_processes=1)
    assert str(again.value) == expected
    assert (copy.preprocessed_dir / "scalekit_prepared.json").read_bytes() == record, "not silently re-hashed"


@pytest.mark.slow  # preprocesses a dataset with nnU-Net (module fixture)
def test_preparation_without_digests_is_refused(prepared: PreparedDataset, tmp_path: Path) -> None:
    assert PreparedDataset.from_dict(json.loads(json.dumps(prepared.to_dict()))) == prepared
    assert prepared.file_digests and all(len(d) == 64 for d in prepared.file_digests.values())
    assert {"nnUNetPlans.json", "dataset.json"} <= prepared.file_digests.keys()
    assert "splits_final.json" not in prepared.file_digests  # a study may put its own split in place
    assert any(name.endswith(".pkl") for name in prepared.file_digests)
    assert "scalekit_prepared.json" not in prepared.file_digests
    copy = copy_preparation(prepared, tmp_path)
    record_path = copy.preprocessed_dir / "scalekit_prepared.json"
    record = json.loads(record_path.read_text())
    del record["prepared"]["file_digests"]  # as an older scalekit wrote it
    record_path.write_text(json.dumps(record))
    old = PreparedDataset.from_dict(record["prepared"])
    assert old.file_digests == {}
    with pytest.raises(PreparedDataChangedError, match="older scalekit.*delete the folder and rerun"):
        old.verify_files()
    with pytest.raises(PreparedDataChangedError, match="older scalekit"):
        prepare_dataset(prepared.raw_dir, copy.preprocessed_root, num_processes=1)


@pytest.mark.slow  # preprocesses a dataset with nnU-Net (module fixture)
def test_moved_study_folder_is_reused_with_new_paths(prepared: PreparedDataset, tmp_path: Path) -> None:
    study = prepared.preprocessed_root.parent.parent
    copied = Path(shutil.copytree(study, tmp_path / "copy"))  # copytree keeps time stamps, as mv does
    moved = Path(shutil.move(copied, tmp_path / "elsewhere" / "study"))
    raw, root = moved / "nnunet" / "raw" / prepared.dataset_name, moved / "nnunet" / "preprocessed"
    stamps = {p: p.stat().st_mtime_ns for p in (root / prepared.dataset_name).rglob("*")}
    again = prepare_dataset(raw, root, num_processes=1)
    assert again.raw_dir == raw.resolve() and again.preprocessed_root == root.resolve()
    assert again == replace(prepared, raw_dir=raw.resolve(), preprocessed_root=root.resolve())
    assert {p: p.stat().st_mtime_ns for p in (root / prepared.dataset_name).rglob("*")} == stamps, \
        "the moved preparation must be reused, not preprocessed again"
    again.verify_files()


@pytest.mark.slow  # preprocesses a dataset with nnU-Net (module fixture)
def test_other_patch_reuses_and_study_splits_are_copied_in(prepared: PreparedDataset, tmp_path: Path) -> None:
    """The training patch does not key preprocessing (a second study of the dataset reuses it); a study's splits
    file replaces the random split without making the preparation look tampered with."""
    copy = copy_preparation(prepared, tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in copy.preprocessed_dir.rglob("*") if p.name != "splits_final.json"}
    cases = sorted(json.loads((copy.preprocessed_dir / "splits_final.json").read_text())[0]["train"]
                   + json.loads((copy.preprocessed_dir / "splits_final.json").read_text())[0]["val"])
    own = tmp_path / "subjects.json"
    own.write_text(json.dumps([{"train": cases[:2], "val": cases[2:]}, {"train": cases[2:], "val": cases[:2]}]))
    again = prepare_dataset(prepared.raw_dir, copy.preprocessed_root, patch_size=(48, 48, 48), num_processes=1,
                            splits=own)
    assert again.patch_size == (48, 48, 48) and again.spacing == prepared.spacing
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "reused, not preprocessed again"
    assert json.loads((copy.preprocessed_dir / "splits_final.json").read_text()) == json.loads(own.read_text())
    again.verify_files()
    assert "splits_final.json" not in again.file_digests
