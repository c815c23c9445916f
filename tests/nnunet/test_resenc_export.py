"""A ResEnc stage exported to nnU-Net natively: nnU-Net's own ResEnc plans entry, the stock ``nnUNetTrainer`` in
``train.sh`` (no scalekit trainer module), and nnU-Net's trained-model folder of the stage, which nnU-Net's
predictor loads with the stock trainer class (found by its name) and predicts with, to the Dice the stage's
validation recorded; ``scalekit predict --export`` segments the same. The fast tests export random weights onto
a hand-written prepared dataset; the slow one trains a real stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from scalekit import networks
from scalekit.cli import app
from scalekit.errors import ScalekitError
from scalekit.networks import ResEncConfig
from scalekit.networks.resenc import CLASS_NAME, PLANS_IMPORTS
from scalekit.nnunet import PreparedDataset, StageRequest, make_demo_dataset, prepare_dataset, train_stage
from scalekit.nnunet.export import build_nnunet_export, export_to_nnunet, run_exported_training
from scalekit.nnunet.plans import SETTINGS_KEY, TrainerSettings
from scalekit.nnunet.predict import export_model, load_network
from scalekit.records import StageRecord, write_results
from scalekit.results.export import export_stage

from tests.helpers.study_fixture import add_prepared_dataset

STAGE = "f0000e5c0-k3"


def tiny(num_classes: int, **changes) -> ResEncConfig:
    fields = dict(in_channels=1, num_classes=num_classes, features_per_stage=(4, 8, 8),
                  kernel_sizes=((3, 3, 3),) * 3, strides=((1, 1, 1), (2, 2, 2), (2, 2, 2)),
                  n_blocks_per_stage=(1, 2, 2), n_conv_per_stage_decoder=(1, 1), deep_supervision=True)
    fields.update(changes)
    return ResEncConfig(**fields)


def _native_entry(plans_file: Path, configuration: str, arch: ResEncConfig) -> dict:
    """The configuration the export added, checked to be nnU-Net's own ResEnc entry and nothing of scalekit's."""
    entry = json.loads(plans_file.read_text())["configurations"][configuration]
    assert entry["architecture"] == {"network_class_name": CLASS_NAME, "arch_kwargs": arch.arch_kwargs(),
                                     "_kw_requires_import": list(PLANS_IMPORTS)}
    assert CLASS_NAME == "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    assert list(PLANS_IMPORTS) == ["conv_op", "norm_op", "dropout_op", "nonlin"]  # the planners' order
    assert SETTINGS_KEY not in entry and entry["inherits_from"] == "3d_fullres"
    return entry


def _stock_script(script: Path, configuration: str) -> str:
    text = script.read_text()
    assert f"{configuration} 0 -tr nnUNetTrainer -p " in text
    assert "nnUNet_extTrainer" not in text and "Scalekit" not in text and "scalekit train" not in text
    return text


# ---- fast: random weights on a hand-written prepared dataset (no preprocessing) ----

@pytest.fixture
def handmade(tmp_path: Path) -> PreparedDataset:
    (tmp_path / "study").mkdir()
    return add_prepared_dataset(tmp_path / "study", tmp_path)


def test_a_resenc_exports_nnunets_own_plans_and_model_folder(handmade: PreparedDataset, tmp_path: Path) -> None:
    arch = tiny(handmade.num_classes)
    weights = networks.save_checkpoint(tmp_path / "final.pt", networks.build(arch))
    result = export_to_nnunet(handmade, arch, tmp_path / "export", weights=weights, name="resenc_x", batch_size=3)
    assert result.trainer_name == "nnUNetTrainer" and result.trainer_dir is None
    assert result.configurations == ("resenc_x",)
    assert _native_entry(result.plans_file, "resenc_x", arch)["batch_size"] == 3
    assert not (tmp_path / "export" / "nnunet_trainers").exists()
    model = (tmp_path / "export" / "nnUNet_trained_model" / "Dataset990_Faults"
             / "nnUNetTrainer__scalekitPlans__resenc_x")
    assert result.model_folder == model and result.initial_weights == model / "fold_0" / "checkpoint_final.pth"
    script = _stock_script(result.script, "resenc_x")
    assert f"-pretrained_weights {result.initial_weights}" in script and f"-m {model} -f 0" in script
    checkpoint = torch.load(result.initial_weights, weights_only=True)
    assert set(checkpoint) == {"network_weights", "init_args", "trainer_name", "inference_allowed_mirroring_axes"}
    assert checkpoint["trainer_name"] == "nnUNetTrainer" and checkpoint["inference_allowed_mirroring_axes"] == (0, 1, 2)
    plans = json.loads(result.plans_file.read_text())
    assert checkpoint["init_args"] == {"plans": plans, "configuration": "resenc_x", "fold": 0,
                                       "dataset_json": handmade.load_dataset_json()}
    assert json.loads((model / "plans.json").read_text()) == plans
    assert json.loads((model / "dataset.json").read_text()) == handmade.load_dataset_json()
    trained = torch.load(weights, weights_only=True)["state_dict"]
    assert checkpoint["network_weights"].keys() == trained.keys()
    assert all(torch.equal(checkpoint["network_weights"][k], v) for k, v in trained.items())
    manifest = json.loads((tmp_path / "export" / "nnunet_export.json").read_text())
    assert manifest["weights"] == result.initial_weights.relative_to(tmp_path / "export").as_posix()
    network = load_network(export_model(tmp_path / "export"))  # what `scalekit predict --export` builds
    assert all(torch.equal(network.state_dict()[k], v) for k, v in trained.items())
    assert networks.config_of(network) == arch and not network.decoder.deep_supervision and not network.training
    (tmp_path / "export" / "outside").symlink_to(tmp_path)
    for name in ("nnUNet_trained_model/../../final.pt", "outside/final.pt", "a\\..\\..\\final.pt"):
        (tmp_path / "export" / "nnunet_export.json").write_text(json.dumps({**manifest, "weights": name}))
        with pytest.raises(ScalekitError, match=r"nnunet_export.json: field 'weights' is .*, not the name of a file "
                                                r"in the export folder"):
            export_model(tmp_path / "export")


def test_a_resenc_export_refuses_what_nnunets_own_trainer_would_not_train_as_exported(
        handmade: PreparedDataset, tmp_path: Path) -> None:
    arch = tiny(handmade.num_classes)
    weights = networks.save_checkpoint(tmp_path / "final.pt", networks.build(arch))
    other = networks.save_checkpoint(tmp_path / "other.pt", networks.build(tiny(handmade.num_classes,
                                                                                 features_per_stage=(4, 8, 16))))
    cases = [
        (lambda: build_nnunet_export(handmade, arch, tmp_path / "x", weights=other),
         r"other.pt holds another network .* an export to nnU-Net's own trainer carries trained weights as they are"),
        (lambda: build_nnunet_export(handmade, arch, tmp_path / "x", settings=TrainerSettings(num_epochs=5)),
         "nnU-Net's nnUNetTrainer trains a resenc with its own schedule"),
        (lambda: build_nnunet_export(handmade, arch, tmp_path / "x", weights=weights, fold="last"),
         "fold 'last' is not a fold"),
    ]
    export_to_nnunet(handmade, arch, tmp_path / "scratch", name="resenc_x")  # no weights: trains from scratch
    assert json.loads((tmp_path / "scratch" / "nnunet_export.json").read_text())["weights"] is None
    assert not (tmp_path / "scratch" / "nnUNet_trained_model").exists()
    assert "-pretrained_weights" not in _stock_script(tmp_path / "scratch" / "train.sh", "resenc_x")
    cases.append((lambda: run_exported_training(handmade.dataset_name, "resenc_x", 0, "scalekitPlans",
                                                handmade.preprocessed_root, tmp_path / "results", device="cpu"),
                  r"configurations.resenc_x has no scalekit_trainer: it is for nnU-Net's own trainer "
                  r"\(nnUNetv2_train .* -tr nnUNetTrainer"))
    for call, message in cases:
        with pytest.raises(ScalekitError, match=message) as err:
            call()
        assert "\n" not in str(err.value), message
    assert not (tmp_path / "x").exists()


# ---- slow: a trained stage, nnU-Net's predictor with the stock trainer, `scalekit predict` ----

@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    root = tmp_path_factory.mktemp("nnunet")
    raw = make_demo_dataset(root / "raw", cases=6, size=32, seed=0, dataset_id=995, name="ResEncExport")
    return prepare_dataset(raw, root / "preprocessed", num_processes=1)


def _study_with_stage(prepared: PreparedDataset, study: Path) -> StageRecord:
    """A study folder with one ResEnc stage trained by the stage runner (the records `study run` would keep)."""
    arch = tiny(prepared.num_classes)
    outcome = train_stage(StageRequest(prepared=prepared, fold=0, arch=arch, epochs=1, iterations_per_epoch=2,
                                       val_iterations=1, initial_lr=1e-2, output_dir=study / "stages" / STAGE,
                                       device="cpu", amp=None, batch_size=2))
    record = StageRecord(stage_id=STAGE, family_id=STAGE.split("-")[0], n_channels=4, block_counts=[1, 2, 2],
                         exp_r=[], kernel_size=3, arch="resenc", status="completed", mean_dice=outcome.mean_dice,
                         per_class_dice=outcome.per_class_dice, case_dice=outcome.case_dice, epochs=1,
                         checkpoint=f"stages/{STAGE}/final.pt", config=arch.to_dict())
    write_results(study, [record])
    (study / "study.yaml").write_text(yaml.safe_dump({"name": "resenc", "dataset": {"batch_size": 2}}))
    (study / "prepared.json").write_text(json.dumps(prepared.to_dict()))
    return record


def _case_dice(segmentation: Path, label: Path, num_classes: int) -> float:
    """Mean foreground Dice of a written segmentation, as the stage's validation computes it."""
    import SimpleITK as sitk

    from scalekit.metrics import case_metrics

    reference = sitk.ReadImage(str(label))
    result = case_metrics(sitk.GetArrayFromImage(sitk.ReadImage(str(segmentation))),
                          sitk.GetArrayFromImage(reference), range(1, num_classes), reference.GetSpacing()[::-1], 1.0)
    return float(np.nanmean(result.dice))


@pytest.mark.slow
def test_a_resenc_stage_export_predicts_in_nnunet_with_the_stock_trainer_at_its_recorded_dice(
        prepared: PreparedDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    study = tmp_path / "study"
    record = _study_with_stage(prepared, study)
    _, files = export_stage(study, STAGE, "nnunet", tmp_path / "export")
    configuration = f"resenc_{record.family_id}"
    plans_file = prepared.preprocessed_dir / f"scalekitPlans_{STAGE}.json"
    assert plans_file in files
    assert _native_entry(plans_file, configuration, tiny(prepared.num_classes))["batch_size"] == 2  # the study's
    _stock_script(tmp_path / "export" / "train.sh", configuration)
    model = (tmp_path / "export" / "nnUNet_trained_model" / prepared.dataset_name
             / f"nnUNetTrainer__scalekitPlans_{STAGE}__{configuration}")
    assert model / "fold_0" / "checkpoint_final.pth" in files

    # nnU-Net's predictor, from the folder alone: it finds the stock trainer by the name the checkpoint gives
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    assert predictor.trainer_name == "nnUNetTrainer"
    assert recursive_find_trainer_class_by_name(predictor.trainer_name) is nnUNetTrainer
    assert type(predictor.network).__name__ == "ResidualEncoderUNet"
    recorded = dict(zip(json.loads((study / "stages" / STAGE / "outcome.json").read_text())["validation_cases"],
                        record.case_dice))
    case = max(recorded, key=lambda c: recorded[c])
    assert recorded[case] > 0  # a Dice that wrong weights or settings would not repeat
    images = tmp_path / "images"
    images.mkdir()
    (images / f"{case}_0000.nii.gz").write_bytes((prepared.raw_dir / "imagesTr" / f"{case}_0000.nii.gz").read_bytes())
    (tmp_path / "nnunet").mkdir()
    predictor.predict_from_files_sequential([[str(images / f"{case}_0000.nii.gz")]], str(tmp_path / "nnunet"))
    label = prepared.raw_dir / "labelsTr" / f"{case}.nii.gz"
    dice = _case_dice(tmp_path / "nnunet" / f"{case}.nii.gz", label, prepared.num_classes)
    assert dice == pytest.approx(recorded[case], abs=1e-6), (case, dice, recorded)

    # `scalekit predict --export` segments the case the same, voxel for voxel
    cli = CliRunner().invoke(app, ["predict", "--export", str(tmp_path / "export"), "-i", str(images),
                                   "-o", str(tmp_path / "scalekit"), "--device", "cpu"])
    assert cli.exit_code == 0, cli.output
    import SimpleITK as sitk

    ours, theirs = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / f"{case}.nii.gz")))
                    for d in ("scalekit", "nnunet"))
    assert np.array_equal(ours, theirs) and len(np.unique(ours)) > 1

    # and nnU-Net's own command, in a process of its own given nothing but the folder (as train.sh says), with
    # the threads the prediction here had (nnU-Net's predictor uses min(nnUNet_def_n_proc, threads)): a sum split
    # over other threads may round a voxel near a tie the other way
    from nnunetv2.configuration import default_num_processes

    threads = str(min(default_num_processes, torch.get_num_threads()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")} | {"nnUNet_def_n_proc": threads}
    command = [str(Path(sys.executable).parent / "nnUNetv2_predict_from_modelfolder"), "-m", str(model), "-f", "0",
               "-i", str(images), "-o", str(tmp_path / "command"), "-device", "cpu", "--disable_tta", "-npp", "1",
               "-nps", "1"]
    assert f"nnUNetv2_predict_from_modelfolder -m {model} -f 0" in (tmp_path / "export" / "train.sh").read_text()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "command" / f"{case}.nii.gz"))), theirs)

    # the stock trainer builds the exported network from the plans, at the study's batch, with the mirroring
    # axes the checkpoint gives, and nnU-Net's -pretrained_weights loader takes the checkpoint
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    plans = json.loads(plans_file.read_text())
    trainer = nnUNetTrainer({**plans, "continue_training": False}, configuration, 0, prepared.load_dataset_json(),
                            torch.device("cpu"))
    trainer.initialize()
    assert trainer.batch_size == 2
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=True)
    assert trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[3] == \
        checkpoint["inference_allowed_mirroring_axes"]
    load_pretrained_weights(trainer.network, str(model / "fold_0" / "checkpoint_final.pth"))
    final = torch.load(study / "stages" / STAGE / "final.pt", weights_only=True)["state_dict"]
    assert trainer.network.state_dict().keys() == final.keys()
    assert all(torch.equal(trainer.network.state_dict()[k], v) for k, v in final.items() if ".seg_layers." not in k)
