"""nnU-Net's residual-encoder U-Net as a registered kind: the presets nnU-Net's own planners make for a generated
dataset build, through scalekit, the network nnU-Net builds from the same plans (parameter for parameter); the
profiler's FLOPs of a ResEnc are fvcore's; configs round-trip and bad ones are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scalekit import networks
from scalekit.errors import ScalekitError
from scalekit.networks import ResEncConfig
from scalekit.nnunet import PreparedDataset, make_demo_dataset, prepare_dataset
from scalekit.profiler import profile
from scalekit.profiler.counting import count


def small(**changes) -> ResEncConfig:
    fields = dict(features_per_stage=(4, 8, 16, 32), kernel_sizes=((3, 3, 3),) * 4,
                  strides=((1, 1, 1),) + ((2, 2, 2),) * 3, n_blocks_per_stage=(1, 3, 4, 6),
                  n_conv_per_stage_decoder=(1, 1, 1), num_classes=3)
    fields.update(changes)
    return ResEncConfig(**fields)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    root = tmp_path_factory.mktemp("nnunet")
    raw = make_demo_dataset(root / "raw", cases=4, size=48, seed=0, dataset_id=993, name="ResEncDemo")
    return prepare_dataset(raw, root / "preprocessed", num_processes=1)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["M", "L"])
def test_a_planned_preset_builds_the_network_nnunet_builds(prepared: PreparedDataset, preset: str) -> None:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from scalekit.nnunet.networks import check_plans
    from scalekit.nnunet.resenc import REFERENCE_3D, plan_resenc, resenc_for_patch, vram_estimate

    planned = plan_resenc(prepared, preset)
    plans_file = prepared.preprocessed_dir / f"{planned.plans_name}.json"
    assert json.loads(plans_file.read_text())["plans_name"] == f"nnUNetResEncUNet{preset}Plans"
    architecture = planned.plans["configurations"]["3d_fullres"]["architecture"]
    theirs = get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                    architecture["_kw_requires_import"], prepared.num_input_channels,
                                    prepared.num_classes, allow_init=True, deep_supervision=True)
    ours = networks.build(planned.config)
    assert type(ours) is type(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    params = networks.count_parameters(theirs)
    assert networks.count_parameters(ours) == params > 0
    assert profile(planned.config, planned.patch_size, planned.batch_size, amp=None, device="cpu",
                   cache=False).params == params
    assert planned.config.deep_supervision and planned.batch_size >= 2 and planned.vram_estimate > 0
    assert planned.plans == json.loads(plans_file.read_text())
    assert planned.config.arch_kwargs() == architecture["arch_kwargs"]
    assert check_plans(planned.plans, "3d_fullres", plans_file).arch == "resenc"  # nnU-Net's own plans pass
    assert planned.vram_reference == pytest.approx(REFERENCE_3D[preset])
    at_patch = resenc_for_patch(planned.patch_size, prepared.spacing, prepared.num_input_channels,
                                prepared.num_classes)
    assert at_patch == planned.config and vram_estimate(at_patch, planned.patch_size) == planned.vram_estimate


def test_profiler_flops_of_a_resenc_equal_fvcore() -> None:
    import fvcore.nn as fvcore

    config = small()
    model = networks.build(config).train()
    analysis = fvcore.FlopCountAnalysis(model, torch.randn(1, 1, 32, 32, 32))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    assert set(analysis.by_operator()) == {"conv", "instance_norm"}
    assert count(config, (32, 32, 32), 1, False).gflops_fvcore == pytest.approx(analysis.total() / 1e9, rel=1e-2)


def test_a_resenc_trains_with_nnunets_outputs_weights_and_optimizer() -> None:
    config = small(deep_supervision=True)
    model = networks.build(config)
    outputs = model(torch.randn(1, 1, 32, 32, 32))
    assert [tuple(o.shape[2:]) for o in outputs] == [(32 // f[0],) * 3 for f in networks.output_strides(config)]
    assert networks.output_strides(config) == [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    assert networks.loss_weights(config) == pytest.approx((2 / 3, 1 / 3, 0.0))  # nnU-Net zeroes the lowest
    optimizer = networks.make_optimizer(config, model.parameters())
    assert isinstance(optimizer, torch.optim.SGD)
    expected = {"lr": 1e-2, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5}
    assert {k: optimizer.defaults[k] for k in expected} == expected
    networks.set_deep_supervision(model, False)
    assert isinstance(model(torch.randn(1, 1, 32, 32, 32)), torch.Tensor)
    result = profile(config, 32, 2, amp=None, device="cpu", cache=False)
    assert result.params == networks.count_parameters(model) and result.peak_memory_bytes > 0


def test_resenc_plans_pass_the_allow_list_and_tampered_ones_are_refused() -> None:
    from scalekit.nnunet.networks import PlansRefusedError, check_architecture, plans_architecture

    config = small(deep_supervision=True)
    entry = plans_architecture(config)
    kind = check_architecture(entry, "plans")
    assert kind.arch == "resenc"
    built = kind.build(1, 3, True, **entry["arch_kwargs"])
    assert networks.config_of(built) == config
    for key, value in (("nonlin", "os.system"), ("dropout_op", "builtins.eval"),
                       ("norm_op", "torch.nn.modules.batchnorm.BatchNorm3d")):
        tampered = {**entry, "arch_kwargs": {**entry["arch_kwargs"], key: value}}
        with pytest.raises(PlansRefusedError, match=key):
            check_architecture(tampered, "plans")


def test_resenc_configs_round_trip_and_bad_ones_are_refused(tmp_path: Path) -> None:
    config = small(deep_supervision=True)
    stored = json.loads(json.dumps(config.to_dict()))
    assert stored["arch"] == "resenc" and networks.config_from_dict(stored) == config
    model = networks.build(config)
    networks.save_checkpoint(tmp_path / "final.pt", model)
    assert networks.load_state(tmp_path / "final.pt")[1:] == (config, "scalekit")
    assert ResEncConfig.from_arch_kwargs(config.arch_kwargs(), 1, 3, True) == config
    with pytest.raises(ScalekitError, match="norm_op"):
        ResEncConfig.from_arch_kwargs({**config.arch_kwargs(), "norm_op": "torch.nn.BatchNorm3d"}, 1, 3)
    with pytest.raises(ScalekitError, match="needs 4 kernel_sizes"):
        small(kernel_sizes=((3, 3, 3),) * 3)
    with pytest.raises(ScalekitError, match="multiple of"):
        config.check_input_shape((32, 32, 20))
    with pytest.raises(ScalekitError, match="no gradient checkpointing"):
        small(checkpointing=True)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["M", "L", "XL"])
def test_the_baseline_batch_is_the_one_nnunets_planner_computes(prepared: PreparedDataset, preset: str) -> None:
    """nnU-Net's planner for a preset, given a large median image (so its patch grows to the memory target and
    its cap does not bind), picks the batch that ``planner_batch`` computes for its network at its patch; on
    the small generated dataset the cap (the whole dataset per batch) binds, as the planner's own plans show."""
    from nnunetv2.experiment_planning.experiment_planners.residual_unets import residual_encoder_unet_planners

    from scalekit.nnunet import _env
    from scalekit.nnunet.resenc import PLANNERS, _estimating_threads, dataset_voxels, plan_resenc, planner_batch

    _env.configure(raw=prepared.raw_dir.parent, preprocessed=prepared.preprocessed_root)
    planner = getattr(residual_encoder_unet_planners, PLANNERS[preset])(prepared.dataset_name)
    with _estimating_threads():
        plan = planner.get_plans_for_configuration((1.0, 1.0, 1.0), (320, 320, 320), "big", 1e15, {})
    architecture = plan["architecture"]
    config = ResEncConfig.from_arch_kwargs(architecture["arch_kwargs"], prepared.num_input_channels,
                                           prepared.num_classes, deep_supervision=True)
    patch = tuple(int(p) for p in plan["patch_size"])
    assert planner_batch(preset, config, patch) == plan["batch_size"] >= 2
    planned = plan_resenc(prepared, preset)
    assert planner_batch(preset, planned.config, planned.patch_size, dataset_voxels(prepared)) == planned.batch_size
