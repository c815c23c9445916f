"""Planning a study before anything trains: its search space, the hardware its trials get, and what each stage
costs (its profile and the constraints it breaks).

Shared by the study run (every stage is profiled before it is scheduled) and ``scalekit study profile``
(every family of a study's space at its patch, batch, AMP and checkpointing, against its budget, no GPU needed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from scalekit.errors import ScalekitError
from scalekit.networks.mednext import MedNeXtConfig
from scalekit.records import StageRecord, StudyDir
from scalekit.space import Family, SearchSpace
from scalekit.studyfile import StudyConfig

from .chain import ChainRules
from .families import Constraints, ProfileFn, plan_family
from .schedule import Schedule, synchronous_for


def build_space(config: StudyConfig) -> SearchSpace:
    """The study's search space (presets, explicit families, compound-scaling range)."""
    s = config.space
    families = [Family.of(f.n_channels, f.block_counts, f.exp_r, f.label) for f in s.families]
    scaling = None
    if s.scaling is not None:
        scaling = (s.scaling.base, s.scaling.depth, s.scaling.expansion, s.scaling.n_channels)
    return SearchSpace.build(s.presets, families, scaling, s.kernels, s.preset_channels)


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
    """How a study turns a family and a kernel into a profiled, constraint-checked stage."""

    template: MedNeXtConfig
    profile: ProfileFn
    constraints: Constraints
    checkpointing: bool | None


def stage_planning(config: StudyConfig, in_channels: int, num_classes: int, amp: str | None) -> StagePlanning:
    """The study's stage template (channels, classes, deep supervision, dim), profiler and constraints.

    Stages are profiled at the study's patch and batch size, with the AMP mode its trials train with (``amp``); the
    memory is predicted (``device="cpu"``) so the driver needs no GPU and never competes with the trials.
    """
    from scalekit.profiler import profile

    patch, batch = config.dataset.patch_size, config.dataset.batch_size
    template = MedNeXtConfig(
        in_channels=in_channels, num_classes=num_classes, deep_supervision=True, dim=len(patch)
    )

    def profile_stage(arch: MedNeXtConfig):
        return profile(arch, patch, batch, amp=amp, checkpointing=arch.checkpointing, device="cpu")

    return StagePlanning(
        template=template,
        profile=profile_stage,
        constraints=Constraints(config.constraints.max_memory_gb, config.constraints.max_gflops),
        checkpointing={"auto": None, "on": True, "off": False}[config.training.checkpointing],
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
    planning = stage_planning(config, in_channels, num_classes, resolve_hardware(config)[2])
    space = build_space(config)
    records: list[StageRecord] = []
    for family in space.families:
        records += plan_family(
            family, space.kernels, planning.template, planning.profile, planning.constraints,
            planning.checkpointing, "continue" in config.chain.controls,
        )
    return records


def dataset_channels(config: StudyConfig) -> tuple[int, int] | None:
    """(input channels, classes) of the study's dataset, from its preparation or its raw dataset.json."""
    from scalekit.nnunet import PreparedDataset
    from scalekit.nnunet.prepare import resolve_raw_dataset

    prepared = StudyDir(config.output_dir).prepared
    if prepared.is_file():
        record = PreparedDataset.from_dict(json.loads(prepared.read_text()))
        return record.num_input_channels, record.num_classes
    try:
        folder = resolve_raw_dataset(config.dataset.reference, config.nnunet_roots()[0])
    except ValueError:
        return None
    if not (folder / "dataset.json").is_file():
        return None
    data = json.loads((folder / "dataset.json").read_text())
    return len(data["channel_names"]), len(data["labels"])
