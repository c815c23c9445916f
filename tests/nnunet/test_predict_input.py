"""Images to segment are checked as training images are, before any case is predicted: truncated files, NaN
voxels, a 2-D image for a 3-D network, a 4-D image, channels that disagree, a missing spacing; every bad case
is named at once, `scalekit predict` exits 2 with one line per problem and writes nothing."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from scalekit.cli import main
from scalekit.nnunet.predict import TrainedModel, check_images, export_model, input_cases, predict
from scalekit.nnunet.validate import ImagesValidationError, validate_images
from scalekit.results.export import export_stage


def write(array: np.ndarray, path: Path, spacing: tuple[float, ...] = (1.0, 1.0, 1.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: array.ndim])
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(32, 32, 32)).astype(np.float32)


def damage(folder: Path, case: str, how: str) -> str:
    """Write ``case`` into ``folder`` damaged ``how``; returns the problem line predict must report."""
    path = folder / f"{case}_0000.nii.gz"
    if how == "cut gzip stream":
        stored = write(volume(), path).read_bytes()
        path.write_bytes(stored[: len(stored) // 2])
        return f"{case}: {case}_0000.nii.gz is truncated or corrupt ("
    if how == "short NIfTI data":
        stored = write(volume(), path).read_bytes()
        path.write_bytes(gzip.compress(gzip.decompress(stored)[:-1000]))
        return f"{case}: {case}_0000.nii.gz is truncated or corrupt ({len(gzip.decompress(stored)) - 1000} bytes, " \
               "its NIfTI header needs"
    if how == "NaN voxels":
        image = volume()
        image[0, 0, :3] = np.nan
        write(image, path)
        return f"{case}: image {case}_0000.nii.gz contains 3 NaN/infinite voxels"
    if how == "a 2-D image":
        write(volume()[16], path)
        return f"{case}: image {case}_0000.nii.gz is 2-D but the network segments 3-D images"
    if how == "a 4-D image":
        nibabel.save(nibabel.Nifti1Image(np.stack([volume(), volume(1)], axis=-1), np.eye(4)), path)
        return f"{case}: image {case}_0000.nii.gz is 4-D (2 3-D volumes); nnU-Net takes one 2-D or 3-D file per channel"
    raise AssertionError(how)


DAMAGES = ["cut gzip stream", "short NIfTI data", "NaN voxels", "a 2-D image", "a 4-D image"]


@pytest.fixture
def export(exportable_study: Path, tmp_path: Path) -> Path:
    export_stage(exportable_study, "A-k3", "nnunet", tmp_path / "export")
    return tmp_path / "export"


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["scalekit", *args])
    with pytest.raises(SystemExit) as exit_status:
        main()
    captured = capsys.readouterr()
    return exit_status.value.code, captured.out, captured.err


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_image_is_refused_in_one_line(monkeypatch, capsys, export: Path, tmp_path: Path, how: str) -> None:
    images = tmp_path / "images"
    images.mkdir()
    write(volume(), images / "good_0000.nii.gz")
    problem = damage(images, "bad", how)
    code, out, err = run_cli(monkeypatch, capsys, "predict", "--export", str(export), "-i", str(images),
                             "-o", str(tmp_path / "out"))
    assert code == 2 and out == "", out
    assert err.startswith(f"error: images to segment in {images}: {problem}") and err.count("\n") == 1, err
    assert err.rstrip().endswith("; nothing was predicted") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_every_bad_case_is_named_at_once(export: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    write(volume(), images / "good_0000.nii.gz")
    expected = [damage(images, f"case{index}", how) for index, how in enumerate(DAMAGES)]
    with pytest.raises(ImagesValidationError) as refused:
        predict(export_model(export), images, tmp_path / "out", device="cpu")
    assert len(refused.value.problems) == len(DAMAGES)
    for line, start in zip(refused.value.problems, expected):
        assert line.startswith(start), (line, start)
    assert f"images to segment in {images} has {len(DAMAGES)} problem(s); nothing was predicted" in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_channels_must_agree_in_shape_and_spacing(export: Path, tmp_path: Path) -> None:
    one = export_model(export)
    two = TrainedModel(plans=one.plans, configuration=one.configuration, weights=one.weights, source=one.source,
                       plans_file=one.plans_file,
                       dataset_json={**one.dataset_json, "channel_names": {"0": "T1", "1": "T2"}})
    images = tmp_path / "images"
    images.mkdir()
    for case, second in (("shape", volume()[:, :, :16]), ("ok", volume(1))):
        write(volume(), images / f"{case}_0000.nii.gz")
        write(second, images / f"{case}_0001.nii.gz")
    write(volume(), images / "spacing_0000.nii.gz")
    write(volume(1), images / "spacing_0001.nii.gz", spacing=(1.0, 1.0, 2.5))
    with pytest.raises(ImagesValidationError) as refused:
        check_images(two, input_cases(images, ".nii.gz", 2), images)
    assert refused.value.problems == [
        "shape: image shape (32, 32, 16) differs from shape_0000.nii.gz's shape (32, 32, 32) (shape_0001.nii.gz)",
        "spacing: image spacing (2.5, 1.0, 1.0) differs from spacing_0000.nii.gz's spacing (1.0, 1.0, 1.0) "
        "(spacing_0001.nii.gz)",
    ]


class _NoSpacing:
    """An image reader that reads the pixels but no voxel spacing (some 2-D formats)."""

    def read_images(self, paths: list[str]) -> tuple[np.ndarray, dict]:
        return sitk.GetArrayFromImage(sitk.ReadImage(paths[0]))[None], {"spacing": (0.0, 1.0, 1.0)}


def test_an_image_without_a_spacing_is_refused(tmp_path: Path) -> None:
    path = write(volume(), tmp_path / "a_0000.nii.gz")
    with pytest.raises(ImagesValidationError, match=r"a: image a_0000.nii.gz has no valid voxel spacing "
                                                    r"\(\(0.0, 1.0, 1.0\)\); write the image with its spacing"):
        validate_images({"a": [path]}, _NoSpacing, 3, tmp_path)


def test_a_2d_network_takes_3d_images_slice_by_slice(tmp_path: Path) -> None:
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    paths = {"flat": [write(volume()[16], tmp_path / "flat_0000.nii.gz")],
             "deep": [write(volume(), tmp_path / "deep_0000.nii.gz")]}
    validate_images(paths, SimpleITKIO, 2, tmp_path)
    with pytest.raises(ImagesValidationError, match="flat: image flat_0000.nii.gz is 2-D but the network segments 3-D"):
        validate_images(paths, SimpleITKIO, 3, tmp_path)
