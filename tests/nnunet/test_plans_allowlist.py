"""Plans that name code are refused before nnU-Net resolves a name: `scalekit train`, `scalekit predict` (an
export or a study stage), the predictor a stage is validated with, an export and the trainer itself (so the
stock nnUNetv2_train and nnUNetv2_predict too). The tampered plans call ``logging.basicConfig`` with a file
name: the canary file appears exactly when nnU-Net builds the network they name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from scalekit.cli import main
from scalekit.errors import ScalekitError
from scalekit.mednext import preset_config
from scalekit.nnunet.adapter import architecture_entry
from scalekit.nnunet.networks import PlansRefusedError, check_plans
from scalekit.nnunet.plans import read_json_object
from scalekit.results.export import export_stage

from tests.helpers.study_fixture import PLANS


def evil(canary: Path) -> dict[str, Any]:
    """An architecture entry that makes nnU-Net's builder create ``canary`` (then fail)."""
    return {"network_class_name": "logging.basicConfig", "arch_kwargs": {"force": True, "filename": str(canary)},
            "_kw_requires_import": []}


def plans_with(configurations: dict[str, Any]) -> dict[str, Any]:
    return {**PLANS, "configurations": {**PLANS["configurations"], **configurations}}


def mednext() -> dict[str, Any]:
    return architecture_entry(preset_config("T", kernel_size=3))


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["scalekit", *args])
    with pytest.raises(SystemExit) as exit_status:
        main()
    captured = capsys.readouterr()
    return exit_status.value.code, captured.err


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary.log"


def test_nnunets_own_builder_runs_what_the_tampered_plans_name(tmp_path: Path, canary: Path) -> None:
    """The control: the plans these tests tamper with do run code in nnU-Net (in a process of its own, since
    they reconfigure its logging)."""
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps(plans_with({"mednext_k3": {"inherits_from": "3d_fullres", "architecture": evil(canary)}})))
    script = ("import sys; from nnunetv2.utilities.plans_handling.plans_handler import PlansManager\n"
              "from nnunetv2.utilities.get_network_from_plans import get_network_from_plans\n"
              "c = PlansManager(sys.argv[1]).get_configuration('mednext_k3')\n"
              "get_network_from_plans(c.network_arch_class_name, c.network_arch_init_kwargs,\n"
              "                       c.network_arch_init_kwargs_req_import, 1, 2)\n")
    result = subprocess.run([sys.executable, "-c", script, str(plans)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and canary.exists(), result.stderr[-2000:]


@pytest.mark.parametrize(("configurations", "message"), [
    ({"mednext_k3": {"architecture": "EVIL"}},
     r"plans.json: configurations.mednext_k3.architecture.network_class_name is 'logging.basicConfig', not a "
     r"network scalekit builds \(dynamic_network_architectures.architectures.unet.ResidualEncoderUNet, "
     r"scalekit.nnunet.adapter.MedNeXtNetwork\)"),
    ({"mednext_k3": {"inherits_from": "evil"}, "evil": {"architecture": "EVIL"}},
     r"plans.json: configurations.evil.architecture.network_class_name is 'logging.basicConfig'"),
    ({"mednext_k3": {"architecture": {**architecture_entry(preset_config("T")), "_kw_requires_import": ["n_channels"]}}},
     r"configurations.mednext_k3.architecture._kw_requires_import lists 'n_channels' \(= 4\), which "
     r"scalekit.nnunet.adapter.MedNeXtNetwork does not import"),
    ({"mednext_k3": {"architecture": {**architecture_entry(preset_config("T")), "arch_kwargs": {"evil": 1}}}},
     r"configurations.mednext_k3.architecture.arch_kwargs: unknown MedNeXt config field\(s\) \['evil'\]"),
    ({"mednext_k3": {"inherits_from": "a"}, "a": {"inherits_from": "mednext_k3"}},
     r"configurations.a.inherits_from loops \(mednext_k3 -> a -> mednext_k3\)"),
    ({"mednext_k3": {"inherits_from": "gone"}},
     r"configurations.mednext_k3.inherits_from names configuration 'gone' \(the plans have: 3d_fullres, mednext_k3\)"),
    ({}, r"plans.json: has no configuration 'mednext_k3' \(the plans have: 3d_fullres\)"),
    ({"mednext_k3": {"architecture": {"network_class_name": "scalekit.nnunet.adapter.MedNeXtNetwork",
                                      "arch_kwargs": {"strides": "x"}}}},
     r"architecture.arch_kwargs: strides x do not describe a MedNeXt"),
])
def test_the_check_names_the_file_and_the_field(configurations: dict, message: str, canary: Path) -> None:
    tampered = json.loads(json.dumps(configurations).replace('"EVIL"', json.dumps(evil(canary))))
    with pytest.raises(PlansRefusedError, match=message) as refused:
        check_plans(plans_with(tampered), "mednext_k3", Path("plans.json"))
    assert "\n" not in str(refused.value)
    assert check_plans(plans_with({"mednext_k3": {"architecture": mednext()}}), "mednext_k3", "p").class_name \
        == "scalekit.nnunet.adapter.MedNeXtNetwork"


def test_scalekit_train_refuses_tampered_plans(monkeypatch, capsys, exportable_study: Path, tmp_path: Path,
                                               canary: Path) -> None:
    folder = tmp_path / "preprocessed" / "Dataset990_Faults"
    (folder / "evil.json").write_text(json.dumps(plans_with({"mednext_k3": {"inherits_from": "3d_fullres",
                                                                             "architecture": evil(canary)}})))
    code, err = run_cli(monkeypatch, capsys, "train", "Dataset990_Faults", "mednext_k3", "0", "--plans", "evil",
                        "--preprocessed", str(tmp_path / "preprocessed"), "--results", str(tmp_path / "results"))
    assert code == 2 and not canary.exists()
    assert err == (f"error: {folder / 'evil.json'}: configurations.mednext_k3.architecture.network_class_name is "
                   "'logging.basicConfig', not a network scalekit builds (dynamic_network_architectures.architectures.unet.ResidualEncoderUNet, scalekit.nnunet.adapter.MedNeXtNetwork): "
                   "a plans file that names other code is refused; export the stage again with scalekit\n")


def test_the_trainer_builds_only_registered_networks(canary: Path) -> None:
    """The trainer's own builder, which nnU-Net calls in training and in its predictor (stock nnUNetv2_train
    and nnUNetv2_predict with -tr ScalekitMedNeXtTrainer included)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from scalekit.nnunet.trainer import ScalekitMedNeXtTrainer

    manager = PlansManager(plans_with({"evil": {"inherits_from": "3d_fullres", "architecture": evil(canary)},
                                       "mednext_k3": {"inherits_from": "3d_fullres", "architecture": mednext()}}))
    with pytest.raises(PlansRefusedError, match="network_class_name is 'logging.basicConfig'"):
        ScalekitMedNeXtTrainer.build_network_architecture(manager, manager.get_configuration("evil"), 1, 2, True)
    assert not canary.exists()
    network = ScalekitMedNeXtTrainer.build_network_architecture(manager, manager.get_configuration("mednext_k3"),
                                                                1, 2, True)
    assert network.config == preset_config("T", kernel_size=3, deep_supervision=True)


def test_predict_refuses_an_export_or_a_stage_with_tampered_plans(monkeypatch, capsys, exportable_study: Path,
                                                                  tmp_path: Path, canary: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    export_stage(exportable_study, "A-k3", "nnunet", tmp_path / "export")
    plans_file = tmp_path / "export" / "scalekitPlans_A-k3.json"
    plans = read_json_object(plans_file, "")
    plans["configurations"]["mednext_A_k3"]["architecture"] = evil(canary)
    plans_file.write_text(json.dumps(plans))
    code, err = run_cli(monkeypatch, capsys, "predict", "--export", str(tmp_path / "export"), "-i", str(images),
                        "-o", str(tmp_path / "out"))
    assert code == 2 and not canary.exists() and not (tmp_path / "out").exists()
    assert err.startswith(f"error: {plans_file}: configurations.mednext_A_k3.architecture.network_class_name is "
                          "'logging.basicConfig'") and err.count("\n") == 1

    stage = exportable_study / "checkpoints" / "nnunet" / "Dataset990_Faults" / "T__p__scalekit_stage"
    stage.mkdir(parents=True)
    (stage / "plans.json").write_text(json.dumps(plans_with({"scalekit_stage": {"architecture": evil(canary)}})))
    (stage / "dataset.json").write_text(json.dumps(read_json_object(tmp_path / "export" / "dataset.json", "")))
    code, err = run_cli(monkeypatch, capsys, "predict", str(exportable_study), "--stage", "A-k3", "-i", str(images),
                        "-o", str(tmp_path / "out"))
    assert code == 2 and not canary.exists()
    assert err.startswith(f"error: {stage / 'plans.json'}: configurations.scalekit_stage.architecture")


def test_an_export_manifest_names_files_inside_the_export_only(exportable_study: Path, tmp_path: Path) -> None:
    from scalekit.nnunet.predict import export_model

    export_stage(exportable_study, "A-k3", "nnunet", tmp_path / "export")
    manifest = tmp_path / "export" / "nnunet_export.json"
    good = read_json_object(manifest, "")
    for field, value in (("plans", "../elsewhere.json"), ("weights", "/etc/passwd"), ("dataset_json", 3)):
        manifest.write_text(json.dumps({**good, field: value}))
        with pytest.raises(ScalekitError, match=rf"nnunet_export.json: field '{field}' is "
                                                                rf"{value!r}, not the name of a file in the export"):
            export_model(tmp_path / "export")


def test_the_validation_predictor_refuses_tampered_plans(canary: Path) -> None:
    """What every stage's validation (and `scalekit predict`) hands to nnU-Net's predictor."""
    from scalekit.mednext import MedNeXt
    from scalekit.nnunet.inference import make_predictor

    network = MedNeXt(preset_config("T"))
    with pytest.raises(PlansRefusedError, match="the stage's plans: configurations.mednext_k3.architecture"):
        make_predictor(network, plans_with({"mednext_k3": {"architecture": evil(canary)}}), "mednext_k3",
                       {}, torch.device("cpu"), source="the stage's plans")
    assert not canary.exists()


def test_an_export_writes_only_registered_networks(exportable_study: Path, tmp_path: Path, canary: Path) -> None:
    """Tampered plans in the preprocessed folder (the base the export adds to, and an earlier export of the same
    stage): the configurations the export trains build the stage's MedNeXt, checked, and nothing ran."""
    base = tmp_path / "preprocessed" / "Dataset990_Faults" / "nnUNetPlans.json"
    plans = read_json_object(base, "")
    plans["configurations"]["3d_fullres"]["architecture"] = evil(canary)
    base.write_text(json.dumps(plans))
    _, files = export_stage(exportable_study, "A-k3", "nnunet", tmp_path / "export")
    shared = next(f for f in files if f.name == "scalekitPlans_A-k3.json")
    earlier = read_json_object(shared, "")
    earlier["configurations"]["mednext_A_k3"]["architecture"] = evil(canary)
    shared.write_text(json.dumps(earlier))
    export_stage(exportable_study, "A-k3", "nnunet", tmp_path / "export")
    exported = read_json_object(shared, "")
    assert check_plans(exported, "mednext_A_k3", shared).class_name == "scalekit.nnunet.adapter.MedNeXtNetwork"
    assert exported["configurations"]["mednext_A_k3"]["architecture"]["arch_kwargs"]["n_channels"] == 4
    assert not canary.exists()
