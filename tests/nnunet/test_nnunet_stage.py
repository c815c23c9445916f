"""End to end on a tiny demo dataset: prepare once, train C=4 MedNeXt stages, UpKern, resume, NaN, export."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

from scalekit.mednext import MedNeXt, count_parameters, load_mednext, preset_config, save_checkpoint
from scalekit.nnunet import (
    NonFiniteLossError,
    PreparedDataset,
    StageRequest,
    TrainerSettings,
    export_to_nnunet,
    make_demo_dataset,
    prepare_dataset,
    run_exported_training,
    train_stage,
)

from tests.helpers.faultkit import ENV, kill_command_at, scalekit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    root = tmp_path_factory.mktemp("nnunet")
    raw = make_demo_dataset(root / "raw", cases=6, size=32, seed=0, dataset_id=992, name="TinyDemo")
    return prepare_dataset(raw, root / "preprocessed", num_processes=1)


def tiny(kernel: int):
    return preset_config("T", in_channels=1, num_classes=5, kernel_size=kernel)


def request(prepared: PreparedDataset, out: Path, kernel: int = 3, **changes) -> StageRequest:
    fields = dict(prepared=prepared, fold=0, arch=tiny(kernel), epochs=1, iterations_per_epoch=2,
                  val_iterations=1, output_dir=out, device="cpu", amp=None)
    fields.update(changes)
    return StageRequest(**fields)


def test_prepare_records_the_dataset_and_is_reused(prepared: PreparedDataset) -> None:
    assert prepared.label_names == ("background", "spine", "liver", "kidney_same", "kidney_other")
    assert prepared.patch_size == (32, 32, 32) and prepared.spacing == (1.0, 1.0, 1.0)
    splits = json.loads((prepared.preprocessed_dir / "splits_final.json").read_text())
    assert len(splits) == 5 and sorted(splits[0]["train"] + splits[0]["val"]) == [f"demo_{i:03d}" for i in range(6)]
    stamp = prepared.plans_file.stat().st_mtime_ns
    again = prepare_dataset(prepared.raw_dir, prepared.preprocessed_root)
    assert again == prepared and prepared.plans_file.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="multiples of 16"):
        prepare_dataset(prepared.raw_dir, prepared.preprocessed_root, patch_size=(40, 32, 32))


def test_stage_trains_scores_and_next_stage_upkerns(prepared: PreparedDataset, tmp_path: Path) -> None:
    epochs: list[dict] = []
    k3 = train_stage(request(prepared, tmp_path / "k3"), on_epoch=epochs.append)
    assert [e["epoch"] for e in epochs] == [0]
    assert {"train_loss", "val_loss", "ema_fg_dice", "mean_fg_dice", "lr", "elapsed_seconds"} <= epochs[0].keys()
    assert k3.first_train_loss == k3.last_train_loss == pytest.approx(epochs[0]["train_loss"])
    assert k3.epochs_run == k3.epochs_total == 1 and k3.upkern is None
    assert k3.class_names == ["spine", "liver", "kidney_same", "kidney_other"]
    assert len(k3.per_class_dice) == len(k3.per_class_nsd) == 4 and k3.nsd_tolerance_mm == 1.0
    assert k3.validation_cases == sorted(json.loads((prepared.preprocessed_dir / "splits_final.json").read_text())[0]["val"])
    assert all(0.0 <= v <= 1.0 for v in k3.per_class_dice + k3.per_class_nsd if not math.isnan(v))
    assert k3.mean_dice == pytest.approx(sum(k3.per_class_dice) / 4)
    network = load_mednext(k3.checkpoint)
    assert network.config.enc_kernel_size == 3 and network.config.deep_supervision
    k5 = train_stage(request(prepared, tmp_path / "k5", kernel=5, init_from=k3.checkpoint))
    assert k5.upkern is not None and k5.upkern["source_config"]["arch"] == "mednext"
    assert [k5.upkern["source_config"][f"{side}_kernel_size"] for side in ("enc", "dec")] == [3, 3]
    assert len(k5.upkern["resampled"]) > 0 and not k5.upkern["left_at_init"]
    assert load_mednext(k5.checkpoint).config.enc_kernel_size == 5


class Interrupt(Exception):
    pass


def test_killed_stage_resumes_from_its_last_epoch(prepared: PreparedDataset, tmp_path: Path) -> None:
    seen: list[dict] = []

    def stop_after_first(metrics: dict) -> None:
        seen.append(metrics)
        raise Interrupt

    with pytest.raises(Interrupt):
        train_stage(request(prepared, tmp_path, epochs=2), on_epoch=stop_after_first)
    resumed = train_stage(request(prepared, tmp_path, epochs=2, resume=True))
    assert resumed.epochs_run == 1 and resumed.epochs_total == 2
    assert resumed.first_train_loss == pytest.approx(seen[0]["train_loss"])
    assert train_stage(request(prepared, tmp_path, epochs=2, resume=True)).epochs_run == 1  # recorded outcome
    with pytest.raises(ValueError, match="different"):
        train_stage(request(prepared, tmp_path, epochs=3, resume=True))


def test_diverging_loss_stops_in_the_first_epoch(prepared: PreparedDataset, tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match="epoch 0"):
        train_stage(request(prepared, tmp_path, epochs=3, iterations_per_epoch=4, initial_lr=1e30))


def test_wrong_architecture_is_refused_before_training(prepared: PreparedDataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes=3 but the dataset has 5 classes"):
        train_stage(request(prepared, tmp_path, arch=tiny(3).replace(num_classes=3)))
    assert not (tmp_path / "nnunet").exists()


def test_export_builds_same_network_trains_predicts_and_chains(prepared: PreparedDataset, tmp_path: Path) -> None:
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from scalekit.nnunet.checkpoints import upkern_nnunet_checkpoint

    arch = tiny(5)
    result = export_to_nnunet(prepared, arch, tmp_path / "export",
                              settings=TrainerSettings(num_epochs=1, iterations_per_epoch=2, val_iterations=1))
    assert result.configurations == ("mednext_k3", "mednext_k5")
    assert any("-pretrained_weights" in c and "nnUNetv2_train" in c for c in result.commands)
    assert any("upkern-weights" in c for c in result.commands)
    assert (result.trainer_dir / "scalekit_nnunet_trainers.py").is_file()
    plans = PlansManager(str(result.plans_file))
    built = {}
    for name in result.configurations:
        cm = plans.get_configuration(name)
        built[name] = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                             cm.network_arch_init_kwargs_req_import, 1, 5, deep_supervision=True)
    assert count_parameters(built["mednext_k5"]) == result.parameter_count
    assert result.parameter_count == count_parameters(MedNeXt(arch.replace(deep_supervision=True)))
    assert count_parameters(built["mednext_k3"]) < result.parameter_count

    fold_dir = run_exported_training(prepared.dataset_id, "mednext_k3", 0, result.plans_identifier,
                                     prepared.preprocessed_root, tmp_path / "results", device="cpu")
    assert (fold_dir / "checkpoint_final.pth").is_file()
    summary = json.loads((fold_dir / "validation" / "summary.json").read_text())
    assert len(summary["metric_per_case"]) >= 1  # nnU-Net's predictor predicted the validation cases
    assert sorted(p.name for p in (fold_dir / "validation").glob("*.nii.gz"))

    report = upkern_nnunet_checkpoint(fold_dir / "checkpoint_final.pth", 5, tmp_path / "k5_init.pth")
    assert report.resampled and not report.left_at_init
    load_pretrained_weights(built["mednext_k5"], str(tmp_path / "k5_init.pth"))  # nnU-Net's own loader accepts it
    source = torch.load(tmp_path / "k5_init.pth", weights_only=True)["network_weights"]
    assert all(torch.equal(v, built["mednext_k5"].state_dict()[k]) for k, v in source.items())


def test_stage_trained_in_rungs_follows_one_schedule(prepared: PreparedDataset, tmp_path: Path) -> None:
    """Successive halving trains a stage to a rung, scores it, and later continues it: the learning rate follows
    the schedule over the whole budget, and the Dice curve keeps every scored epoch across sessions."""
    lrs: list[float] = []
    rung = train_stage(request(prepared, tmp_path, epochs=3, train_until=1, resume=True),
                       on_epoch=lambda m: lrs.append(m["lr"]))
    assert rung.epochs_total == 1 and list(rung.dice_curve) == ["1"] and len(rung.case_dice) == len(rung.validation_cases)
    again = train_stage(request(prepared, tmp_path, epochs=3, train_until=1, resume=True))
    assert again.epochs_run == rung.epochs_run and again.dice_curve == rung.dice_curve  # recorded: nothing trains
    full = train_stage(request(prepared, tmp_path, epochs=3, evaluate_at=(2,), resume=True),
                       on_epoch=lambda m: lrs.append(m["lr"]))
    assert full.epochs_run == 2 and full.epochs_total == 3 and list(full.dice_curve) == ["1", "2", "3"]
    assert full.dice_curve["1"] == rung.dice_curve["1"] and full.wall_time_s > rung.wall_time_s
    assert lrs == pytest.approx([1e-3 * (1 - e / 3) ** 0.9 for e in range(3)])
    with pytest.raises(ValueError, match="train_until=4"):
        train_stage(request(prepared, tmp_path, epochs=3, train_until=4, resume=True))


def test_prediction_killed_midway_leaves_no_segmentation_under_a_final_name(prepared: PreparedDataset,
                                                                           tmp_path: Path) -> None:
    """SIGKILL after the first of two cases was segmented (a fault point): the output folder holds nothing
    (or the earlier prediction, unchanged), no CASE.nii.gz stands anywhere but in the hidden staging folder,
    and the rerun writes both."""
    weights = save_checkpoint(tmp_path / "random.pt", MedNeXt(tiny(3).replace(deep_supervision=True)))
    export_to_nnunet(prepared, tiny(3), tmp_path / "export", weights=weights, plans_name="predictKill")
    images = tmp_path / "images"
    images.mkdir()
    for case in ("demo_000", "demo_001"):
        (images / f"{case}_0000.nii.gz").write_bytes((prepared.raw_dir / "imagesTr" / f"{case}_0000.nii.gz").read_bytes())
    out = tmp_path / "predictions"
    args = scalekit("predict", "--export", str(tmp_path / "export"), "-i", str(images), "-o", str(out), "--device", "cpu")
    kill_command_at(args, "predict-case", tmp_path, timeout_s=300)
    assert not out.exists()
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("demo_00*.nii.gz") if p.parent != images)
    assert len(written) == 1 and written[0].parts[0].startswith("."), written  # case 1, hidden while staging
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "segmented demo_000 (1/2)" in done.stdout and "segmented demo_001 (2/2)" in done.stdout
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"demo_000.nii.gz", "demo_001.nii.gz", "predict_from_raw_data_args.json"} <= set(earlier)
    kill_command_at(args, "predict-case", tmp_path, timeout_s=300)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier
