"""nnU-Net's residual-encoder presets (M, L, XL) for a prepared dataset, as nnU-Net's own planners make them.

``nnUNetPlannerResEncM`` / ``L`` / ``XL`` (memory targets 8, 24 and 40 GB) run on the dataset's fingerprint and
write their plans (``nnUNetResEncUNet{M,L,XL}Plans.json``) beside the prepared dataset's, as
``nnUNetv2_plan_experiment -pl nnUNetPlannerResEncM`` would; the configuration's architecture becomes a
:class:`~scalekit.networks.ResEncConfig`, with the patch and batch the planner chose and its own memory
estimate (:meth:`ExperimentPlanner.static_estimate_VRAM_usage`: feature-map elements of one sample, which it
compares with a reference value scaled to the memory target).
"""

from __future__ import annotations

import json
from math import prod
from dataclasses import dataclass
from typing import Any

from scalekit.errors import ScalekitError
from scalekit.networks import ResEncConfig
from scalekit.networks.resenc import CLASS_NAME

from . import _env
from .dataset import PreparedDataset
from .networks import plans_architecture

PLANNERS = {"M": "nnUNetPlannerResEncM", "L": "nnUNetPlannerResEncL", "XL": "nnUNetPlannerResEncXL"}
MEMORY_TARGET_GB = {"M": 8, "L": 24, "XL": 40}
"""nnU-Net's GPU memory target of each preset (the planners' defaults)."""
REFERENCE_3D = {"M": 680e6, "L": 2100e6, "XL": 3600e6}
"""Each 3-D preset's budget for :func:`vram_estimate` at batch size 2 (the planners' ``UNet_reference_val_3d``
at their memory target; ``tests/nnunet/test_resenc.py`` checks them against the planners)."""


@dataclass(frozen=True)
class ResEncPreset:
    """One preset as nnU-Net plans it for a dataset.

    Attributes:
        name: ``M``, ``L`` or ``XL``.
        config: the network (deep supervision on, as nnU-Net trains it).
        patch_size, batch_size: what the planner chose for the memory target.
        plans_name: the plans identifier (``nnUNetResEncUNetMPlans`` ...).
        plans: the whole plans file, as nnU-Net wrote it.
        vram_estimate: the planner's estimate for its patch (:func:`vram_estimate`).
        vram_reference: what the planner lets that estimate reach at batch size 2 for the memory target.
    """

    name: str
    config: ResEncConfig
    patch_size: tuple[int, ...]
    batch_size: int
    plans_name: str
    plans: dict[str, Any]
    vram_estimate: int
    vram_reference: float

    @property
    def memory_target_gb(self) -> int:
        return MEMORY_TARGET_GB[self.name]


def _estimating_threads() -> Any:
    """nnU-Net's planner sets torch's threads to ``nnUNet_n_proc_DA`` while it estimates memory; that may be 0
    here (augmentation in-process), which torch refuses."""
    return _env.temporary(nnUNet_n_proc_DA=str(_env.default_workers()))


def plan_resenc(prepared: PreparedDataset, name: str) -> ResEncPreset:
    """Run nnU-Net's ResEnc planner ``name`` (``M``, ``L``, ``XL``) on ``prepared``'s fingerprint."""
    if name not in PLANNERS:
        raise ScalekitError(f"ResEnc preset {name!r} is unknown; use one of {', '.join(PLANNERS)}")
    _env.configure(raw=prepared.raw_dir.parent, preprocessed=prepared.preprocessed_root)
    from nnunetv2.experiment_planning.experiment_planners.residual_unets import residual_encoder_unet_planners

    planner = getattr(residual_encoder_unet_planners, PLANNERS[name])(prepared.dataset_name)
    with _estimating_threads(), _env.nnunet_output_to_log():
        planner.plan_experiment()
    plans = json.loads((prepared.preprocessed_dir / f"{planner.plans_identifier}.json").read_text())
    configuration = plans["configurations"].get(prepared.configuration)
    if configuration is None:
        raise ScalekitError(f"nnU-Net's ResEnc {name} planner made no {prepared.configuration!r} configuration "
                            f"for {prepared.dataset_name} (it made {', '.join(plans['configurations'])})")
    architecture = configuration["architecture"]
    if architecture["network_class_name"] != CLASS_NAME:
        raise ScalekitError(f"nnU-Net's ResEnc {name} planner named {architecture['network_class_name']!r}, "
                            f"not {CLASS_NAME}: another nnU-Net version?")
    patch = tuple(int(p) for p in configuration["patch_size"])
    config = ResEncConfig.from_arch_kwargs(architecture["arch_kwargs"], prepared.num_input_channels,
                                           prepared.num_classes, deep_supervision=True)
    estimate = vram_estimate(config, patch)
    reference = planner.UNet_reference_val_3d if config.dim == 3 else planner.UNet_reference_val_2d
    return ResEncPreset(
        name=name, config=config, patch_size=patch, batch_size=int(configuration["batch_size"]),
        plans_name=planner.plans_identifier, plans=plans, vram_estimate=estimate,
        vram_reference=reference * planner.UNet_vram_target_GB / planner.UNet_reference_val_corresp_GB,
    )


def resenc_for_patch(patch_size: tuple[int, ...], spacing: tuple[float, ...], in_channels: int, num_classes: int,
                     deep_supervision: bool = True) -> ResEncConfig:
    """The ResEnc that nnU-Net's ResEnc planners build for ``patch_size`` at ``spacing`` (their topology:
    stages down to a 4-voxel feature map, per-axis strides and kernels from ``get_pool_and_conv_props``, features
    32 * 2**s capped, blocks 1, 3, 4, 6, 6, ...); ``patch_size`` must already be one the topology divides."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    from scalekit.networks.resenc import ENCODER_BLOCKS, nnunet_features

    _, strides, kernels, padded, _ = get_pool_and_conv_props(list(spacing), list(patch_size), 4, 999999)
    if tuple(padded) != tuple(patch_size):
        raise ScalekitError(f"patch {list(patch_size)} is not one nnU-Net's topology divides at spacing "
                            f"{list(spacing)}; nnU-Net would use {[int(p) for p in padded]}")
    stages = len(strides)
    return ResEncConfig(in_channels=in_channels, num_classes=num_classes,
                        features_per_stage=nnunet_features(stages, len(patch_size)), kernel_sizes=kernels,
                        strides=strides, n_blocks_per_stage=ENCODER_BLOCKS[:stages],
                        n_conv_per_stage_decoder=(1,) * (stages - 1), deep_supervision=deep_supervision)


def vram_estimate(config: ResEncConfig, patch_size: tuple[int, ...]) -> int:
    """nnU-Net's planner estimate for ``config`` at ``patch_size`` (feature-map elements of one sample, the
    quantity its ``UNet_reference_val`` budgets are in)."""
    _env.configure()
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    arch = plans_architecture(config)
    with _estimating_threads():
        return int(ExperimentPlanner.static_estimate_VRAM_usage(
            tuple(patch_size), config.in_channels, config.num_classes, arch["network_class_name"],
            arch["arch_kwargs"], tuple(arch["_kw_requires_import"])))


REFERENCE_BATCH_3D = 2
"""The batch size the planners' 3-D reference values are for (``UNet_reference_val_corresp_bs_3d``)."""
MIN_BATCH = 2
MAX_DATASET_COVERED = 1.0
"""The ResEnc planners' caps: at least 2 samples per batch, at most the dataset's voxels in one batch (their
``max_dataset_covered`` is 1; nnU-Net's default planner's is 5%)."""


def planner_batch(preset: str, config: ResEncConfig, patch_size: tuple[int, ...],
                  dataset_voxels: float | None = None) -> int:
    """The batch nnU-Net's ResEnc planner ``preset`` gives ``config`` at ``patch_size``, as its planner computes
    it: ``round(reference / estimate * 2)`` for the preset's memory target, at most the dataset's voxels
    (``dataset_voxels``: median image size times training cases; no cap when None), at least 2."""
    if preset not in REFERENCE_3D or config.dim != 3:
        raise ScalekitError(f"a 3-D ResEnc preset (one of {', '.join(REFERENCE_3D)}) is needed, got {preset!r} "
                            f"for a {config.dim}-D network")
    batch = round(REFERENCE_3D[preset] / vram_estimate(config, patch_size) * REFERENCE_BATCH_3D)
    if dataset_voxels is not None:
        batch = min(batch, round(dataset_voxels * MAX_DATASET_COVERED / prod(patch_size)))
    return max(batch, MIN_BATCH)


def dataset_voxels(prepared: PreparedDataset) -> float:
    """What the planners' cap counts: the preprocessed configuration's median image size in voxels times
    the training cases (from the prepared plans and dataset.json)."""
    configuration = prepared.load_plans()["configurations"][prepared.configuration]
    cases = int(prepared.load_dataset_json()["numTraining"])
    return float(prod(int(v) for v in configuration["median_image_size_in_voxels"])) * cases

