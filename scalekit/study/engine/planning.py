"""Planning a study before anything trains: its search space, the hardware its trials get, and what each stage
costs (its profile and the constraints it breaks).

Shared by the study run (every stage is profiled before it is scheduled) and ``scalekit study profile``
(every family of a study's space at its patch, batch, AMP and checkpointing, against its budget, no GPU needed).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scalekit.errors import ScalekitError
from scalekit.networks import NetworkConfig, ResEncConfig
from scalekit.networks.mednext import MedNeXtConfig
from scalekit.records import StageRecord, StudyDir
from scalekit.space import Family, ResEncFamily, SearchSpace
from scalekit.studyfile import StudyConfig

from .chain import ChainRules
from .families import Constraints, ProfileFn, plan_family
from .schedule import Schedule, synchronous_for

if TYPE_CHECKING:
    from scalekit.nnunet import PreparedDataset


def resenc_baselines(config: StudyConfig) -> list[ResEncFamily]:
    """The study's ResEnc baselines: each preset, then each point of the scaling range (one that repeats a
    preset is that preset)."""
    spec = config.space.resenc
    if spec is None:
        return []
    baselines = [ResEncFamily(preset) for preset in spec.presets]
    if spec.scaling is not None:
        baselines += [ResEncFamily(spec.scaling.base, f, b) for f in spec.scaling.features for b in spec.scaling.blocks]
    return baselines


def build_space(config: StudyConfig) -> SearchSpace:
    """The study's search space (presets, explicit families, compound-scaling range) and its baselines."""
    s = config.space
    families = [Family.of(f.n_channels, f.block_counts, f.exp_r, f.label) for f in s.families]
    scaling = None
    if s.scaling is not None:
        scaling = (s.scaling.base, s.scaling.depth, s.scaling.expansion, s.scaling.n_channels)
    return SearchSpace.build(s.presets, families, scaling, s.kernels, s.preset_channels, resenc_baselines(config))


class HardwareError(ScalekitError):
    """The study asks for resources that the machine or the Ray cluster does not have."""


def _describe_node(resources: dict[str, float]) -> str:
    return f"{resources.get('CPU', 0.0):g} CPU + {resources.get('GPU', 0.0):g} GPU"


def resolve_hardware(
    config: StudyConfig, nodes: list[dict[str, float]] | None = None
) -> tuple[float, str, str | None]:
    """GPUs per trial, the trials' device and the AMP mode used to train and to profile.

    ``nodes`` holds the resources of each alive node of the Ray cluster once connected. ``gpus_per_trial:
    auto`` and ``device: auto`` follow them (one GPU per trial when some node has a GPU, else the CPU), or this
    machine's CUDA without a cluster. A trial's CPUs and GPUs must fit on one node: a request that no node can
    ever satisfy raises :class:`HardwareError` before any trial starts (Ray would wait forever); without a
    cluster (``study profile``) nothing is checked, so a GPU study can be profiled on a laptop.
    """
    if nodes is None:
        import torch

        most_gpus = float(torch.cuda.device_count())
    else:
        most_gpus = max((node.get("GPU", 0.0) for node in nodes), default=0.0)
    gpus = config.resources.gpus_per_trial
    if gpus == "auto":
        gpus = 1.0 if most_gpus > 0 and config.training.device != "cpu" else 0.0
    device = config.training.device
    if device == "auto":
        device = "cuda" if gpus > 0 else "cpu"
    if nodes is not None:
        check_fits(config.resources.cpus_per_trial, float(gpus), device, nodes)
    amp = config.training.amp
    if amp == "auto":
        amp = "fp16" if device == "cuda" else "none"
    return float(gpus), device, None if amp == "none" else amp


def check_fits(cpus: float, gpus: float, device: str, nodes: list[dict[str, float]]) -> None:
    """Raise :class:`HardwareError` unless some node holds one trial's ``cpus`` CPUs and ``gpus`` GPUs (and,
    when ``device`` is cuda, some node has a GPU)."""
    if device == "cuda" and not any(node.get("GPU", 0.0) > 0 for node in nodes):
        asked = "training.device: cuda"
    elif not any(fits_trial(node, cpus, gpus) for node in nodes):
        asked = f"resources.cpus_per_trial={cpus:g} and resources.gpus_per_trial={gpus:g} on one node"
    else:
        return
    has = "; ".join(f"node {i + 1}: {_describe_node(node)}" for i, node in enumerate(nodes)) or "no alive node"
    raise HardwareError(
        f"a trial asks for {asked}, but no node of the Ray cluster has that ({has}); lower the "
        "request, use device: auto and gpus_per_trial: auto (the CPU when no node has a GPU), or add a node"
    )


def fits_trial(node: dict[str, float], cpus: float, gpus: float) -> bool:
    """Whether a node's resources hold one trial's CPUs and GPUs."""
    return node.get("CPU", 0.0) >= cpus and node.get("GPU", 0.0) >= gpus


@dataclass(frozen=True)
class StagePlanning:
    """How a study turns a family and a kernel into a profiled, constraint-checked stage: each kind's template,
    the profiler, the constraints, the checkpointing override and the batch of each baseline."""

    templates: dict[str, NetworkConfig]
    profile: ProfileFn
    constraints: Constraints
    checkpointing: bool | None
    baseline_batches: dict[str, int] = dataclasses.field(default_factory=dict)
    """The batch each baseline trains with, by family id, where it is not the study's."""

    def resolve(self, space: SearchSpace) -> SearchSpace:
        """``space`` with each baseline's batch size set."""
        baselines = tuple(dataclasses.replace(b, batch_size=self.baseline_batches.get(b.family_id))
                          for b in space.baselines)
        return dataclasses.replace(space, baselines=baselines)


class BaselineError(ScalekitError):
    """The study's ResEnc baselines cannot be planned (no spacing, a patch nnU-Net's topology does not divide)."""


def resenc_template(config: StudyConfig, in_channels: int, num_classes: int,
                     prepared: PreparedDataset | None) -> ResEncConfig:
    """nnU-Net's ResEnc topology for the study's patch at the dataset's spacing (the prepared one, else
    ``dataset.spacing``)."""
    from scalekit.nnunet.resenc import resenc_for_patch

    spacing = prepared.spacing if prepared is not None else config.dataset.spacing
    if spacing is None:
        raise BaselineError("space.resenc: nnU-Net's ResEnc topology follows the dataset's spacing, which is not "
                            "known yet: prepare the dataset (`scalekit data prepare`) or set dataset.spacing")
    try:
        return resenc_for_patch(tuple(config.dataset.patch_size), tuple(spacing), in_channels, num_classes)
    except ScalekitError as err:
        raise BaselineError(f"space.resenc: {err}; set dataset.patch_size to it") from None


def _baseline_batches(config: StudyConfig, template: ResEncConfig, prepared: PreparedDataset | None) -> dict[str, int]:
    """The batch of each baseline with ``space.resenc.batch: planner``: what nnU-Net's planner for its preset
    gives its network at the study's patch (capped at the dataset's voxels once it is prepared)."""
    from scalekit.nnunet.resenc import dataset_voxels, planner_batch

    spec = config.space.resenc
    if spec is None or spec.batch != "planner":
        return {}
    voxels = dataset_voxels(prepared) if prepared is not None else None
    patch = tuple(config.dataset.patch_size)
    return {family.family_id: planner_batch(family.preset, family.config(family.kernels[0], template), patch, voxels)
            for family in resenc_baselines(config)}


def stage_planning(config: StudyConfig, in_channels: int, num_classes: int, amp: str | None,
                   prepared: PreparedDataset | None = None) -> StagePlanning:
    """The study's stage templates (channels, classes, deep supervision, dim; for ResEnc baselines nnU-Net's
    topology at the study's patch and the prepared dataset's spacing), profiler and constraints.

    Stages are profiled at the study's patch and at their batch size (the study's, or a baseline's own), with
    the AMP mode its trials train with (``amp``); the memory is predicted (``device="cpu"``) so the driver needs
    no GPU and never competes with the trials.
    """
    from scalekit.profiler import profile

    patch = config.dataset.patch_size
    templates: dict[str, NetworkConfig] = {MedNeXtConfig.arch: MedNeXtConfig(
        in_channels=in_channels, num_classes=num_classes, deep_supervision=True, dim=len(patch))}
    batches: dict[str, int] = {}
    if config.space.resenc is not None:
        resenc = resenc_template(config, in_channels, num_classes, prepared)
        templates[resenc.arch] = resenc
        batches = _baseline_batches(config, resenc, prepared)

    def profile_stage(arch: NetworkConfig, batch_size: int | None = None):
        return profile(arch, patch, batch_size or config.dataset.batch_size, amp=amp,
                       checkpointing=arch.checkpointing, device="cpu")

    return StagePlanning(
        templates=templates,
        profile=profile_stage,
        constraints=Constraints(config.constraints.max_memory_gb, config.constraints.max_gflops),
        checkpointing={"auto": None, "on": True, "off": False}[config.training.checkpointing],
        baseline_batches=batches,
    )


def chain_rules(config: StudyConfig, devices_per_trial: float) -> ChainRules:
    """How the study's chains go on: saturation, controls, the schedule and budget, what training costs."""
    s = config.search
    budget = {}
    if s.budget_gpu_hours is not None:
        budget["device_hours"] = s.budget_gpu_hours
    if s.budget_epochs is not None:
        budget["epochs"] = float(s.budget_epochs)
    return ChainRules(
        min_improvement=config.chain.min_improvement,
        controls="continue" in config.chain.controls,
        schedule=Schedule(s.scheduler, config.training.epochs, s.eta, s.min_epochs,
                          synchronous_for(s.families, s.eta, config.resources.max_concurrent)),
        iterations_per_epoch=config.training.iterations_per_epoch,
        devices_per_trial=devices_per_trial,
        budget=budget,
    )


def profile_study(config: StudyConfig, in_channels: int, num_classes: int) -> list[StageRecord]:
    """Every stage of every family in the study's space, profiled and checked against its constraints."""
    planning = stage_planning(config, in_channels, num_classes, resolve_hardware(config)[2], prepared_of(config))
    space = planning.resolve(build_space(config))
    records: list[StageRecord] = []
    for family in space.trained:
        records += plan_family(
            family, space.chain(family.family_id), planning.templates, planning.profile, planning.constraints,
            planning.checkpointing, "continue" in config.chain.controls,
        )
    return records


def prepared_of(config: StudyConfig) -> PreparedDataset | None:
    """The study's prepared dataset, once its run prepared it."""
    from scalekit.nnunet import PreparedDataset

    prepared = StudyDir(config.output_dir).prepared
    return PreparedDataset.from_dict(json.loads(prepared.read_text())) if prepared.is_file() else None


def dataset_channels(config: StudyConfig) -> tuple[int, int] | None:
    """(input channels, classes) of the study's dataset, from its preparation or its raw dataset.json."""
    from scalekit.nnunet.prepare import resolve_raw_dataset

    record = prepared_of(config)
    if record is not None:
        return record.num_input_channels, record.num_classes
    try:
        folder = resolve_raw_dataset(config.dataset.reference, config.nnunet_roots()[0])
    except ValueError:
        return None
    if not (folder / "dataset.json").is_file():
        return None
    data = json.loads((folder / "dataset.json").read_text())
    return len(data["channel_names"]), len(data["labels"])
