"""``scalekit predict``'s checks and the nnU-Net export's plans files (one per stage, never another's), on the
hand-made fixture study. The prediction itself (Dice equal to the stage's validation) runs on the demo study
in ``tests/study/test_demo_e2e.py``, the only place a trained stage exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from scalekit.cli import app
from scalekit.errors import ScalekitError
from scalekit.nnunet.predict import export_model, input_cases, load_network, predict, stage_model
from scalekit.results.export import export_stage



@pytest.fixture
def study(exportable_study: Path) -> Path:
    return exportable_study


def _plans(study: Path, stage: str) -> Path:
    return next((study.parent / "preprocessed").glob(f"*/scalekitPlans_{stage}.json"))


def test_each_stage_exports_its_own_plans_and_another_stages_file_is_refused(study: Path, tmp_path: Path) -> None:
    _, k3_files = export_stage(study, "A-k3", "nnunet", tmp_path / "k3")
    _, k5_files = export_stage(study, "A-k5", "nnunet", tmp_path / "k5")
    k3, k5 = _plans(study, "A-k3"), _plans(study, "A-k5")
    assert k3 in k3_files and k5 in k5_files
    assert json.loads(k5.read_text())["scalekit_export"] == {"study": "fixture", "stage_id": "A-k5"}
    assert "mednext_A_k3" in json.loads(k3.read_text())["configurations"]  # the k5 export left it alone
    assert "-p scalekitPlans_A-k5" in (tmp_path / "k5" / "train.sh").read_text()
    export_stage(study, "A-k5", "nnunet", tmp_path / "k5")  # the same stage again: its own file is replaced
    theirs = json.loads(k5.read_text())
    theirs["scalekit_export"] = {"study": "other", "stage_id": "A-k5"}
    k5.write_text(json.dumps(theirs))
    with pytest.raises(ScalekitError, match=r"scalekitPlans_A-k5.json holds the plans of stage A-k5 of study "
                                            r"other; exporting stage A-k5 of study fixture would overwrite them: "
                                            r"choose another plans name \(--plans NAME\)"):
        export_stage(study, "A-k5", "nnunet", tmp_path / "again")
    assert json.loads(k5.read_text()) == theirs and not (tmp_path / "again").exists()
    _, files = export_stage(study, "A-k5", "nnunet", tmp_path / "again", plans_name="mine")
    assert _plans(study, "A-k3").parent / "mine.json" in files


def test_cli_export_names_the_file_it_writes_outside_out(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["study", "export", str(study), "--select", "B-k3", "--to", "nnunet",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    plans = _plans(study, "B-k3")
    assert f"wrote {plans} (outside --out: nnU-Net reads plans from the preprocessed folder)" in result.output
    assert f"wrote {out.resolve() / 'train.sh'}\n" in result.output


def test_an_export_rebuilds_the_stage_network_with_its_weights(study: Path, tmp_path: Path) -> None:
    export_stage(study, "B-k5", "nnunet", tmp_path / "export")
    model = export_model(tmp_path / "export")
    assert model.configuration == "mednext_B_k5" and model.file_ending == ".nii.gz"
    network = load_network(model)
    trained = torch.load(study / "checkpoints" / "B-k5.pt", weights_only=True)["state_dict"]
    assert not network.deep_supervision and not network.training
    assert network.state_dict().keys() == trained.keys()
    assert all(torch.equal(network.state_dict()[k], v) for k, v in trained.items())
    other = tmp_path / "other.pt"
    torch.save(torch.load(study / "checkpoints" / "B-k3.pt", weights_only=True), other)
    with pytest.raises(ScalekitError, match="these weights do not fit the network of export .*tensor"):
        load_network(export_model(tmp_path / "export", weights=other))


def test_stages_and_exports_without_weights_are_refused_in_one_line(study: Path, tmp_path: Path) -> None:
    cases = [
        (lambda: stage_model(study, "Z-k3"), r"--stage 'Z-k3' is not a stage of .* \(stages: A-k3, A-k5"),
        (lambda: stage_model(study, "D-k5"), "stage D-k5 is pending: it has no trained weights"),
        (lambda: stage_model(study, "A-k3"), "stage A-k3: no nnU-Net model folder with plans.json"),
        (lambda: stage_model(tmp_path, "A-k3"), "is not a study directory"),
        (lambda: export_model(tmp_path), "nnunet_export.json does not exist: not an nnU-Net export"),
    ]
    (study / "checkpoints" / "A-k5.pt").unlink()
    cases.append((lambda: stage_model(study, "A-k5"), "stage A-k5: weights .*A-k5.pt do not exist; rerun"))
    export_stage(study, "A-k3", "nnunet", tmp_path / "export")
    manifest = tmp_path / "export" / "nnunet_export.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "weights": None}))
    cases.append((lambda: export_model(tmp_path / "export"), "carries no trained weights .* pass --weights"))
    for call, message in cases:
        with pytest.raises(ScalekitError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


def test_input_images_are_checked_against_the_dataset(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("b_0000.nii.gz", "b_0001.nii.gz", "a_0001.nii.gz", "a_0000.nii.gz", ".hidden", "notes.txt"):
        (images / name).write_bytes(b"")
    assert input_cases(images, ".nii.gz", 2) == {"a": [images / "a_0000.nii.gz", images / "a_0001.nii.gz"],
                                                 "b": [images / "b_0000.nii.gz", images / "b_0001.nii.gz"]}
    with pytest.raises(ScalekitError, match=r"case a .* has channel\(s\) \[0, 1\] but the network takes 1 "
                                            r"\(a_0000.nii.gz\)"):
        input_cases(images, ".nii.gz", 1)
    with pytest.raises(ScalekitError, match=r"holds no images ending in .mha, the dataset's file ending "
                                            r"\(found: .nii.gz, .txt\)"):
        input_cases(images, ".mha", 1)
    (images / "scan.nii.gz").write_bytes(b"")
    with pytest.raises(ScalekitError, match=r"scan.nii.gz: name images CASE_0000.nii.gz"):
        input_cases(images, ".nii.gz", 2)
    with pytest.raises(ScalekitError, match="input folder .*missing does not exist"):
        input_cases(tmp_path / "missing", ".nii.gz", 1)


def test_predict_refuses_a_folder_of_other_files_before_any_work(study: Path, tmp_path: Path) -> None:
    export_stage(study, "A-k3", "nnunet", tmp_path / "export")
    images = tmp_path / "images"
    images.mkdir()
    (images / "a_0000.nii.gz").write_bytes(b"")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(ScalekitError, match="mine is not empty and not an earlier prediction"):
        predict(export_model(tmp_path / "export"), images, mine, device="cpu")
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]


def test_cli_predict_needs_exactly_one_source(study: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    for args, message in (
        ([], "give a study directory with --stage ID, or --export DIR"),
        ([str(study), "--export", str(tmp_path)], "give a study directory with --stage ID, or --export DIR"),
        ([str(study)], "--stage is missing"),
        ([str(study), "--stage", "Z-k3"], "is not a stage of"),
    ):
        result = runner.invoke(app, ["predict", *args, "-i", str(tmp_path), "-o", str(tmp_path / "out")])
        assert result.exit_code != 0 and message in str(result.exception), (args, result.output)
