"""A user's own nnU-Net dataset: one precedence for the raw and preprocessed roots in every command, splits
honoured, copied and warned about, the surface-Dice tolerance checked against the voxels, and `study new`.

Fast: tiny demo raw datasets, nothing preprocessed (nnU-Net's plans are written by hand where needed).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import SimpleITK as sitk
import yaml

from scalekit import nnunet
from scalekit.cli import main
from scalekit.nnunet import make_demo_dataset
from scalekit.nnunet.splits import SplitsError, install_splits, random_splits, read_splits
from scalekit.study.runner import prepare_data
from scalekit.studyfile import load_study_config


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """A tiny raw dataset Dataset321_Own (4 cases of 32^3, 1 mm voxels) under tmp_path/raw."""
    return make_demo_dataset(tmp_path / "raw", cases=4, size=32, seed=0, dataset_id=321, name="Own")


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    """Exit status, stdout lines (without a leading ``FILE: ``) and stderr of ``scalekit ARGS``."""
    monkeypatch.setattr(sys, "argv", ["scalekit", *args])
    code = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code or 0
    captured = capsys.readouterr()
    return code, [line.split(": ", 1)[-1] for line in captured.out.strip().splitlines()], captured.err


def study(tmp_path: Path, **dataset: Any) -> Path:
    """A valid study of Dataset321_Own; ``dataset`` fields added or replaced (None removes one)."""
    data = {
        "name": "own", "output_dir": str(tmp_path / "out"),
        "dataset": {"name": "Dataset321_Own", "id": 321, "patch_size": [32, 32, 32]},
        "space": {"presets": ["S"], "preset_channels": 4, "kernels": [3]},
    }
    data["dataset"].update(dataset)
    data["dataset"] = {k: v for k, v in data["dataset"].items() if v is not None}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def record_preparations(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace nnU-Net preparation by a recorder of its root and options (nothing is preprocessed)."""
    calls: list[dict[str, Any]] = []

    def prepare(dataset: Any, root: Path, **options: Any) -> SimpleNamespace:
        calls.append({"root": root, **options})
        return SimpleNamespace(to_dict=dict)

    monkeypatch.setattr(nnunet, "prepare_dataset", prepare)
    return calls


def test_roots_follow_one_precedence_in_every_command(monkeypatch, capsys, tmp_path, raw) -> None:
    """Field or option, then $nnUNet_raw / $nnUNet_preprocessed, then the study's own nnunet/ folder: in the
    study file's roots, `study validate`, the run's data preparation and `data prepare`."""
    own = study(tmp_path, raw_dir=str(raw.parent))
    config = load_study_config(own)
    assert config.nnunet_roots() == (raw.parent, tmp_path / "out" / "nnunet" / "preprocessed")
    shared = tmp_path / "shared_preprocessed"
    monkeypatch.setenv("nnUNet_preprocessed", str(shared))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "elsewhere"))
    raw_root, pre_root = load_study_config(own).data_roots()
    assert (raw_root.path, raw_root.origin) == (raw.parent, "dataset.raw_dir")  # the field beats the variable
    assert (pre_root.path, pre_root.origin) == (shared, "$nnUNet_preprocessed")

    code, lines, err = cli(monkeypatch, capsys, "study", "validate", str(own))
    assert code == 0, err
    assert f"raw dataset: {raw}; root from dataset.raw_dir" in lines
    assert f"preprocessed into: {shared / raw.name}; root from $nnUNet_preprocessed" in lines

    calls = record_preparations(monkeypatch)
    prepare_data(load_study_config(own))  # what `study run` prepares with
    assert calls[-1]["root"] == shared and calls[-1]["raw_root"] == raw.parent
    cli(monkeypatch, capsys, "data", "prepare", str(raw), "--json")
    assert calls[-1]["root"] == shared
    cli(monkeypatch, capsys, "data", "prepare", str(raw), "--json", "--preprocessed", str(tmp_path / "opt"))
    assert calls[-1]["root"] == tmp_path / "opt"  # the option beats the variable

    monkeypatch.setenv("nnUNet_raw", str(raw.parent))
    from_env = load_study_config(study(tmp_path, preprocessed_dir=str(tmp_path / "field")))
    raw_root, pre_root = from_env.data_roots()
    assert (raw_root.origin, pre_root.path) == ("$nnUNet_raw", tmp_path / "field")
    monkeypatch.delenv("nnUNet_raw")
    monkeypatch.delenv("nnUNet_preprocessed")
    raw_root, pre_root = load_study_config(study(tmp_path)).data_roots()
    assert raw_root.path == tmp_path / "out" / "nnunet" / "raw" and raw_root.origin.startswith("the default")
    assert pre_root.path == tmp_path / "out" / "nnunet" / "preprocessed"


def test_splits_file_checked_and_copied(tmp_path, raw) -> None:
    cases = [f"demo_{i:03d}" for i in range(4)]
    good = tmp_path / "subjects.json"
    good.write_text(json.dumps([{"train": cases[:2], "val": cases[2:]}, {"train": cases[2:], "val": cases[:2]}]))
    target = tmp_path / "pre"
    target.mkdir()
    assert install_splits(good, target, cases) and read_splits(target / "splits_final.json") == json.loads(
        good.read_text())
    assert not install_splits(good, target, cases), "an unchanged split is not written again"
    bad = tmp_path / "bad.json"
    for content, message in [
        ("{", "cannot be read as JSON"),
        ('{"train": []}', "holds no list of folds"),
        (json.dumps([{"train": cases[:2]}]), "fold 0 is not {train: [...], val: [...]}"),
        (json.dumps([{"train": cases[:3], "val": cases[2:]}]), "fold 0 trains and validates on ['demo_002']"),
        (json.dumps([{"train": cases[:2], "val": ["subject9"]}]), "fold 0 names case(s) ['subject9']"),
    ]:
        bad.write_text(content)
        with pytest.raises(SplitsError, match=re.escape(message)):
            read_splits(bad, cases)


def test_validate_checks_splits_and_warns_without_one(monkeypatch, capsys, tmp_path, raw) -> None:
    code, lines, err = cli(monkeypatch, capsys, "study", "validate", str(study(tmp_path, raw_dir=str(raw.parent))))
    warnings = [line for line in lines if line.startswith("warning: dataset.splits")]
    assert code == 0 and len(warnings) == 1, lines
    assert "random 4-fold split" in warnings[0] and "repeated scans of one subject" in warnings[0]
    assert "set dataset.splits" in warnings[0]

    in_place = tmp_path / "out" / "nnunet" / "preprocessed" / raw.name / "splits_final.json"
    in_place.parent.mkdir(parents=True)
    cases = [f"demo_{i:03d}" for i in range(4)]
    in_place.write_text(json.dumps(random_splits(cases)))  # the split preparation writes: still random
    _, lines, _ = cli(monkeypatch, capsys, "study", "validate", str(study(tmp_path, raw_dir=str(raw.parent))))
    assert any(line.startswith("warning: dataset.splits") for line in lines)
    in_place.write_text(json.dumps([{"train": cases[:2], "val": cases[2:]}]))  # the dataset's own: honoured
    _, lines, _ = cli(monkeypatch, capsys, "study", "validate", str(study(tmp_path, raw_dir=str(raw.parent))))
    assert not any(line.startswith("warning") for line in lines), lines

    own = tmp_path / "subjects.json"
    own.write_text(json.dumps([{"train": cases[:2], "val": ["nobody"]}]))
    code, lines, _ = cli(monkeypatch, capsys, "study", "validate",
                         str(study(tmp_path, raw_dir=str(raw.parent), splits=str(own))))
    assert code == 2 and lines == [f"dataset.splits: {own}: fold 0 names case(s) ['nobody'] that the dataset does "
                                   "not have (ids are the label file names without their ending)"]
    own.write_text(json.dumps([{"train": cases[:2], "val": cases[2:]}]))
    code, lines, _ = cli(monkeypatch, capsys, "study", "validate",
                         str(study(tmp_path, raw_dir=str(raw.parent), splits=str(own), fold=1)))
    assert code == 2 and lines == [f"dataset.fold: 1 but the dataset has 1 folds (0..0, in {own}); use one of "
                                   "them"]
    calls = record_preparations(monkeypatch)
    prepare_data(load_study_config(study(tmp_path, raw_dir=str(raw.parent), splits=str(own))))
    assert calls[-1]["splits"] == own  # the run copies it into place (see test_data_faults)


def test_nsd_tolerance_below_the_voxel_spacing_warns(monkeypatch, capsys, tmp_path, raw) -> None:
    first = raw / "imagesTr" / "demo_000_0000.nii.gz"
    image = sitk.ReadImage(str(first))
    image.SetSpacing((0.8, 0.8, 2.9))  # x, y, z: thick slices
    sitk.WriteImage(image, str(first))

    def nsd_warnings(**dataset: Any) -> list[str]:
        _, lines, _ = cli(monkeypatch, capsys, "study", "validate",
                          str(study(tmp_path, raw_dir=str(raw.parent), **dataset)))
        return [line for line in lines if line.startswith("warning: training.nsd_tolerance_mm")]

    assert nsd_warnings() == ["warning: training.nsd_tolerance_mm: 1 mm is below the voxel spacing [2.9, 0.8, 0.8] "
                              "mm (the first training image), so a border one voxel off counts as a miss; set it "
                              "to 2.9 (the largest spacing) or more"]
    assert nsd_warnings(spacing=[1.0, 1.0, 1.0]) == [], "the study's target spacing decides"
    plans = tmp_path / "out" / "nnunet" / "preprocessed" / raw.name / "nnUNetPlans.json"
    plans.parent.mkdir(parents=True)
    plans.write_text(json.dumps({"configurations": {"3d_fullres": {"spacing": [1.5, 1.0, 1.0]}}}))
    assert "[1.5, 1.0, 1.0] mm (nnU-Net's plans" in nsd_warnings()[0]
    data = yaml.safe_load((tmp_path / "study.yaml").read_text())
    data["training"] = {"nsd_tolerance_mm": 1.5}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(data))
    code, lines, _ = cli(monkeypatch, capsys, "study", "validate", str(tmp_path / "study.yaml"))
    assert code == 0 and not any("nsd_tolerance_mm" in line for line in lines)


def test_study_new_validates_as_written_and_keeps_files(monkeypatch, capsys, tmp_path, raw) -> None:
    out = tmp_path / "mine.yaml"
    code, _, err = cli(monkeypatch, capsys, "study", "new", str(raw), "--gpu-memory", "24", "--out", str(out))
    assert code == 0, err
    data = yaml.safe_load(out.read_text())
    assert data["dataset"]["name"] == raw.name and data["dataset"]["id"] == 321
    assert data["dataset"]["patch_size"] == [128, 128, 128] and data["constraints"]["max_memory_gb"] == 24
    assert data["space"]["presets"] == ["S", "B", "M", "L"] and data["search"]["scheduler"] == "halving"
    assert data["space"]["resenc"] == {"presets": ["M", "L"]}  # nnU-Net's presets a 24 GiB GPU holds
    assert data["finish"]["export"]["select"] == "knee"
    assert "1 channel(s), 5 classes with the background, 4 training cases" in out.read_text()
    code, lines, err = cli(monkeypatch, capsys, "study", "validate", str(out))
    assert code == 0 and lines[-1] == "valid", lines + [err]

    written = out.read_text()
    code, _, err = cli(monkeypatch, capsys, "study", "new", str(raw), "--gpu-memory", "80", "--out", str(out))
    assert code == 2 and err.strip() == f"error: {out} exists; pass --force to overwrite it, or give another file"
    assert out.read_text() == written

    plans = tmp_path / "shared" / raw.name / "nnUNetPlans.json"  # preprocessed before, in $nnUNet_preprocessed
    plans.parent.mkdir(parents=True)
    plans.write_text(json.dumps({"configurations": {"3d_fullres": {"patch_size": [40, 100, 90],
                                                                    "spacing": [2.9, 0.8, 0.8]}}}))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "shared"))
    monkeypatch.setenv("nnUNet_raw", str(raw.parent))
    code, _, err = cli(monkeypatch, capsys, "study", "new", "321", "--gpu-memory", "80", "--out", str(out), "--force")
    assert code == 0, err
    data = yaml.safe_load(out.read_text())
    assert data["dataset"]["patch_size"] == [48, 112, 96] and data["constraints"]["max_memory_gb"] == 80
    assert data["training"]["nsd_tolerance_mm"] == 2.9 and "raw_dir" not in data["dataset"]
    assert data["space"]["resenc"] == {"presets": ["M", "L", "XL"]}
    code, lines, err = cli(monkeypatch, capsys, "study", "validate", str(out))
    assert code == 0 and not any("nsd_tolerance" in line for line in lines), lines + [err]


def test_unwritable_preprocessed_root_from_the_environment(monkeypatch, capsys, tmp_path, raw) -> None:
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "a_file" / "pre"))
    code, lines, _ = cli(monkeypatch, capsys, "study", "validate", str(study(tmp_path, raw_dir=str(raw.parent))))
    assert code == 2 and lines[0].startswith(f"$nnUNet_preprocessed: {tmp_path / 'a_file' / 'pre'} cannot be "
                                             f"created or written: {tmp_path / 'a_file'} is not a folder")
