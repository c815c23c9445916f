"""`scalekit study validate` reports every problem a run would meet before any work, one line each, exit 2.

Every test calls ``scalekit.cli.main`` in-process (fast: no interpreter start-up per case) and checks the exit
status, the field named on stdout and a single ``error:`` line without a traceback on stderr. Nothing here
generates data, preprocesses or trains.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from scalekit.cli import main
from tests.helpers.cli import STUDIES, demo_study, refused, validate


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No nnU-Net folders from the environment, and relative study paths under a fresh folder."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, data: dict[str, Any] | str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def test_demo_study_validates_cleanly(monkeypatch, capsys) -> None:
    code, out, err = validate(monkeypatch, capsys, STUDIES / "demo.yaml")
    lines = [line.removeprefix(f"{STUDIES / 'demo.yaml'}: ") for line in out.strip().splitlines()]
    assert (code, err) == (0, "") and lines[-1] == "valid"
    assert not any(line.startswith("warning:") for line in lines), "demo data needs no split, 1 mm voxels"
    assert not Path("runs").exists()  # validate writes nothing


def test_amos_study_only_misses_its_dataset(monkeypatch, capsys, tmp_path) -> None:
    """The AMOS22 data is not on this machine: its reachability is amos.yaml's one and only problem."""
    problems = refused(monkeypatch, capsys, STUDIES / "amos.yaml")
    assert len(problems) == 1, problems
    assert problems[0].startswith("dataset.name: Dataset218_AMOS2022_postChallenge_task1 not found: looked in "
                                  f"{tmp_path / 'runs' / 'amos22' / 'nnunet' / 'raw'} (the default <output_dir>")
    assert "which does not exist" in problems[0]


def test_fold_beyond_the_demo_folds(monkeypatch, capsys, tmp_path) -> None:
    problems = refused(monkeypatch, capsys, write(tmp_path, demo_study(tmp_path, **{"dataset.fold": 7})))
    assert problems == ["dataset.fold: 7 but the dataset has 5 folds (0..4, min(5, cases) of 12 cases); "
                        "use one of them"]
    few = demo_study(tmp_path, **{"dataset.fold": 4, "dataset.demo": {"cases": 4}})
    assert refused(monkeypatch, capsys, write(tmp_path, few))[0].startswith("dataset.fold: 4 but the dataset has 4")
    code, _, err = validate(monkeypatch, capsys, write(tmp_path, demo_study(tmp_path, **{"dataset.fold": 4 - 1})))
    assert code == 0, err
    assert refused(monkeypatch, capsys, write(tmp_path, demo_study(tmp_path, **{"dataset.fold": "all"})))[0] == (
        "dataset.fold: 'all' trains on every case and leaves none to score a stage with; give a fold number "
        "(0..4 for nnU-Net's five folds)")


def test_fold_counted_in_existing_splits(monkeypatch, capsys, tmp_path) -> None:
    splits = tmp_path / "out" / "nnunet" / "preprocessed" / "Dataset990_ScalekitDemo" / "splits_final.json"
    splits.parent.mkdir(parents=True)
    splits.write_text(json.dumps([{"train": ["demo_000"], "val": ["demo_001"]}] * 3))
    problems = refused(monkeypatch, capsys, write(tmp_path, demo_study(tmp_path, **{"dataset.fold": 3})))
    assert problems == [f"dataset.fold: 3 but the dataset has 3 folds (0..2, in {splits}); use one of them"]


def test_two_entry_patch_with_3d_demo_data(monkeypatch, capsys, tmp_path) -> None:
    problems = refused(monkeypatch, capsys, write(tmp_path, demo_study(tmp_path, **{"dataset.patch_size": [32, 32]})))
    assert problems == ["dataset.patch_size: [32, 32] has 2 size(s) but configuration '3d_fullres' needs 3, e.g. "
                        "[32, 32, 32]; or set configuration: 2d"]
    assert not (tmp_path / "out").exists()  # found before any data was generated


def test_storage_that_is_not_a_url(monkeypatch, capsys, tmp_path) -> None:
    problems = refused(monkeypatch, capsys, write(tmp_path, demo_study(tmp_path, storage="notaurl")))
    assert len(problems) == 1 and problems[0].startswith("storage: 'notaurl' is not a database URL; write e.g.")


def test_storage_that_does_not_answer(monkeypatch, capsys, tmp_path) -> None:
    """Nothing listens on port 1: a connection refused (or, without psycopg2, a missing driver), found quickly,
    the URL named with its password masked."""
    start = time.monotonic()
    study = demo_study(tmp_path, storage="postgresql://nobody:secret@127.0.0.1:1/x")
    problems = refused(monkeypatch, capsys, write(tmp_path, study))
    assert time.monotonic() - start < 30
    assert len(problems) == 1 and problems[0].startswith("storage: ")
    assert "postgresql://nobody:***@127.0.0.1:1/x" in problems[0] and "secret" not in problems[0]
    assert "cannot connect" in problems[0] or "driver that is not installed" in problems[0]


def test_sqlite_storage_checked_without_creating_it(monkeypatch, capsys, tmp_path) -> None:
    inside = tmp_path / "out" / "custom.db"
    code, _, err = validate(monkeypatch, capsys, write(tmp_path, demo_study(tmp_path, storage=f"sqlite:///{inside}")))
    assert code == 0, err
    assert not inside.exists() and not inside.parent.exists()
    elsewhere = tmp_path / "missing" / "x.db"
    problems = refused(monkeypatch, capsys, write(tmp_path, demo_study(tmp_path, storage=f"sqlite:///{elsewhere}")))
    assert problems == [f"storage: folder {elsewhere.parent} of the SQLite database does not exist (SQLite does not "
                        "create folders); create it or put the database in the output directory"]


@pytest.mark.parametrize("rule", ["nonsense-rule", "max-dice-under=lots", "f00000000-k3"])
def test_export_rule_refused(monkeypatch, capsys, tmp_path, rule) -> None:
    study = demo_study(tmp_path, **{"finish.export": {"select": rule, "to": "nnunet"}})
    problems = refused(monkeypatch, capsys, write(tmp_path, study))
    assert len(problems) == 1 and problems[0].startswith("finish.export.select: "), problems


@pytest.mark.parametrize("rule", ["best", "max-dice-under=8", "max-dice-under=800MB"])
def test_export_rule_accepted(monkeypatch, capsys, tmp_path, rule) -> None:
    study = demo_study(tmp_path, **{"finish.export": {"select": rule, "to": "config"}})
    code, _, err = validate(monkeypatch, capsys, write(tmp_path, study))
    assert code == 0, err


@pytest.mark.parametrize("kernels", [[3, 3], [5, 3]])
def test_kernels_must_increase(monkeypatch, capsys, tmp_path, kernels) -> None:
    problems = refused(monkeypatch, capsys, write(tmp_path, demo_study(tmp_path, **{"space.kernels": kernels})))
    assert problems == [f"space.kernels: {kernels}: must increase, e.g. [3, 5, 7] (each UpKern stage starts from "
                        "the previous kernel)"]


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("training.initial_lr", float("inf"), "training.initial_lr: Input should be a finite number, got inf"),
    ("constraints.max_memory_gb", float("nan"), "constraints.max_memory_gb: Input should be a finite number"),
    ("dataset.spacing", [1.0, float("inf"), 1.0], "dataset.spacing.1: Input should be a finite number"),
    ("training.epochs", True, "training.epochs: Input should be a valid integer, got True"),
    ("dataset.batch_size", "2", "dataset.batch_size: Input should be a valid integer, got '2'"),
    ("dataset.fold", True, "dataset.fold: Input should be a valid integer, got True"),
    ("finish.report", "yes", "finish.report: Input should be a valid boolean, got 'yes'"),
])
def test_non_finite_and_loosely_typed_values(monkeypatch, capsys, tmp_path, field, value, expected) -> None:
    problems = refused(monkeypatch, capsys, write(tmp_path, demo_study(tmp_path, **{field: value})))
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_numbers_that_stay_allowed(monkeypatch, capsys, tmp_path) -> None:
    """A whole number is a fine float, and 1e-3 is a number (YAML 1.2), not the string PyYAML reads."""
    text = yaml.safe_dump(demo_study(tmp_path, **{"training.initial_lr": 1, "dataset.patch_size": [32, 32, 32]}))
    code, _, err = validate(monkeypatch, capsys, write(tmp_path, text))
    assert code == 0, err
    code, _, err = validate(monkeypatch, capsys, write(tmp_path, text.replace("initial_lr: 1\n", "initial_lr: 1e-3\n")))
    assert code == 0, err
    problems = refused(monkeypatch, capsys, write(tmp_path, text.replace("initial_lr: 1\n", "initial_lr: '1e-3'\n")))
    assert problems[0].startswith("training.initial_lr: Input should be a valid number, got '1e-3'")


def test_dataset_not_found_says_where_it_looked(monkeypatch, capsys, tmp_path) -> None:
    raw = tmp_path / "raw"
    (raw / "Dataset001_Other").mkdir(parents=True)
    study = demo_study(tmp_path, **{"dataset.raw_dir": str(raw)})
    del study["dataset"]["demo"]
    problems = refused(monkeypatch, capsys, write(tmp_path, study))
    assert problems == [f"dataset.name: Dataset990_ScalekitDemo not found: looked in {raw} (dataset.raw_dir), which "
                        "holds Dataset001_Other; put the dataset there, or set dataset.raw_dir or $nnUNet_raw to "
                        "the folder that holds it"]
    del study["dataset"]["raw_dir"], study["dataset"]["name"]
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "nowhere"))
    problems = refused(monkeypatch, capsys, write(tmp_path, study))
    assert problems[0].startswith(f"dataset.id: Dataset990_* not found: looked in {tmp_path / 'nowhere'} "
                                  "($nnUNet_raw), which does not exist")


def raw_dataset(root: Path, cases: int, shape: tuple[int, ...], dataset_json: dict[str, Any] | None = None) -> Path:
    """A tiny nnU-Net raw dataset of ``cases`` constant images of ``shape``."""
    import numpy as np
    import SimpleITK as sitk

    folder = root / "Dataset123_Tiny"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    for i in range(cases):
        image, label = np.zeros(shape, np.float32), np.zeros(shape, np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(image), str(folder / "imagesTr" / f"c{i}_0000.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(label), str(folder / "labelsTr" / f"c{i}.nii.gz"))
    content = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "numTraining": cases,
               "file_ending": ".nii.gz"} if dataset_json is None else dataset_json
    (folder / "dataset.json").write_text(json.dumps(content))
    return folder


def real_study(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    study = demo_study(tmp_path, **{"dataset.raw_dir": str(tmp_path / "raw"), "dataset.name": "Dataset123_Tiny",
                                    "dataset.id": 123, **changes})
    del study["dataset"]["demo"]
    return study


def test_real_dataset_dimensions_and_folds(monkeypatch, capsys, tmp_path) -> None:
    raw_dataset(tmp_path / "raw", cases=3, shape=(1, 32, 32))  # 2-D images stored as one-slice volumes
    problems = refused(monkeypatch, capsys, write(tmp_path, real_study(tmp_path, **{"dataset.fold": 3})))
    assert problems == [
        "dataset.fold: 3 but the dataset has 3 folds (0..2, min(5, cases) of 3 cases); use one of them",
        "dataset.patch_size: [32, 32, 32] is 3-D but the images of Dataset123_Tiny are 2-D; set configuration: 2d "
        "with a 2-entry patch_size, e.g. [256, 256]",
    ]
    flat = real_study(tmp_path, **{"dataset.configuration": "2d", "dataset.patch_size": [32, 32]})
    code, _, err = validate(monkeypatch, capsys, write(tmp_path, flat))
    assert code == 0, err


def test_real_dataset_json_without_labels(monkeypatch, capsys, tmp_path) -> None:
    folder = raw_dataset(tmp_path / "raw", cases=2, shape=(16, 16, 16),
                         dataset_json={"channel_names": {"0": "CT"}, "file_ending": ".nii.gz"})
    problems = refused(monkeypatch, capsys, write(tmp_path, real_study(tmp_path)))
    assert problems == [f"dataset.name: {folder / 'dataset.json'} has no labels mapping; nnU-Net v2 needs both"]


def test_unwritable_output_dir(monkeypatch, capsys, tmp_path) -> None:
    (tmp_path / "a_file").write_text("")
    study = demo_study(tmp_path, output_dir=str(tmp_path / "a_file" / "out"))
    problems = refused(monkeypatch, capsys, write(tmp_path, study))
    assert problems[0].startswith(f"output_dir: {tmp_path / 'a_file' / 'out'} cannot be created or written: "
                                  f"{tmp_path / 'a_file'} is not a folder")


def test_duplicate_key_names_file_line_and_key(monkeypatch, capsys, tmp_path) -> None:
    text = (STUDIES / "demo.yaml").read_text().replace("  fold: 0\n", "  fold: 0\n  fold: 1\n")
    path = write(tmp_path, text)
    code, out, err = validate(monkeypatch, capsys, path)
    line = text.splitlines().index("  fold: 1") + 1
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip() == (f"error: {path}, line {line}: key 'fold' appears twice in one mapping (first on line "
                           f"{line - 1}); keep one, a repeated key would silently replace the first")


def test_non_utf8_file_and_directory(monkeypatch, capsys, tmp_path) -> None:
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("# the demo\nname: d\xe9mo\n".encode("latin-1"))
    code, _, err = validate(monkeypatch, capsys, latin)
    assert code == 2
    assert err.strip() == (f"error: {latin}, line 2: not UTF-8 text (invalid continuation byte b'\\xe9'); "
                           "save the file as UTF-8")
    code, _, err = validate(monkeypatch, capsys, tmp_path)
    assert code == 2 and err.strip() == f"error: study file {tmp_path} is a directory; give the YAML file itself"


def test_every_problem_at_once(monkeypatch, capsys, tmp_path) -> None:
    """Problems of the file come first; preflight adds its own only when the file is valid."""
    study = demo_study(tmp_path, **{"space.kernels": [5, 3], "training.epochs": True})
    assert [p.split(":")[0] for p in refused(monkeypatch, capsys, write(tmp_path, study))] == [
        "training.epochs", "space.kernels"]
    study = demo_study(tmp_path, storage="notaurl", **{"dataset.fold": 7})
    assert [p.split(":")[0] for p in refused(monkeypatch, capsys, write(tmp_path, study))] == [
        "dataset.fold", "storage"]


def test_dataset_id_shared_by_two_folders(monkeypatch, capsys, tmp_path) -> None:
    raw = tmp_path / "raw"
    for name in ("Dataset123_A", "Dataset123_B"):
        (raw / name).mkdir(parents=True)
    study = real_study(tmp_path)
    del study["dataset"]["name"]
    problems = refused(monkeypatch, capsys, write(tmp_path, study))
    assert problems == [f"dataset.id: Dataset123_* is ambiguous in {raw} (dataset.raw_dir): it matches "
                        "Dataset123_A, Dataset123_B; give dataset.name"]


@pytest.mark.parametrize(
    "changes",
    [{"storage": "notaurl"}, {"dataset.fold": 7}, {"dataset.patch_size": [32, 32]},
     {"finish.export.select": "nonsense-rule"}],
)
def test_study_run_checks_before_writing(monkeypatch, capsys, tmp_path: Path, changes: dict) -> None:
    """`study run` runs the same checks first: exit 2, one line, and nothing written (no study directory)."""
    path = write(tmp_path, demo_study(tmp_path, **changes))
    monkeypatch.setattr(sys, "argv", ["scalekit", "study", "run", str(path), "--quiet"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert err.startswith("error: ") and next(iter(changes)).split(".")[-1] in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("resenc", "expected"), [
    ({"presets": ["M", "Q"]}, "space.resenc.presets: unknown ResEnc preset(s) ['Q']; choose from M, L, XL"),
    ({"presets": ["M", "L"], "batch": "study"}, "space.resenc: presets ['M', 'L'] with batch: study are one network "
                                               "at one batch"),
    ({"presets": [], "scaling": {"base": "M", "features": []}}, "space.resenc.scaling.features: give at least one"),
    ({"initial_lr": 0}, "space.resenc.initial_lr: Input should be greater than 0"),
    ({"batch": "largest"}, "space.resenc.batch: Input should be 'planner' or 'study'"),
])
def test_resenc_baselines_are_checked(monkeypatch, capsys, tmp_path, resenc, expected) -> None:
    problems = refused(monkeypatch, capsys, write(tmp_path, demo_study(tmp_path, **{"space.resenc": resenc})))
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_resenc_baselines_need_a_patch_nnunets_topology_divides(monkeypatch, capsys, tmp_path) -> None:
    """With the spacing known before any work, a patch MedNeXt takes (multiples of 16) but nnU-Net's ResEnc
    topology pads is refused, with the patch nnU-Net would use."""
    study = demo_study(tmp_path, **{"space.resenc": {"presets": ["M"]}, "dataset.spacing": [1.0, 1.0, 1.0],
                                    "dataset.patch_size": [144, 144, 144]})
    problems = refused(monkeypatch, capsys, write(tmp_path, study))
    assert problems == ["space.resenc: patch [144, 144, 144] is not one nnU-Net's topology divides at spacing "
                        "[1.0, 1.0, 1.0]; nnU-Net would use [160, 160, 160]; set dataset.patch_size to it"]
    fine = demo_study(tmp_path, **{"space.resenc": {"presets": ["M", "L"]}, "dataset.spacing": [1.0, 1.0, 1.0]})
    code, _, err = validate(monkeypatch, capsys, write(tmp_path, fine))
    assert code == 0, err
