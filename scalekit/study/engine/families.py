"""A family's profiled stages: the constraints a stage must respect, and the rows a newly opened family writes
(each kernel of its chain, and the continuation controls beside its UpKern steps when the study asks for them).
Families of every kind (:class:`~scalekit.space.ChainFamily`) are planned alike: the kind's template gives
channels, classes and the rest, and a family may train at its own batch size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scalekit import networks
from scalekit.networks import NetworkConfig
from scalekit.records import GIB, StageRecord, Status, make_stage_id
from scalekit.space import ChainFamily


@dataclass(frozen=True)
class Constraints:
    """Limits a stage must respect, checked on its profile before it trains."""

    max_memory_gb: float | None = None
    max_gflops: float | None = None

    def violation(self, record: StageRecord) -> str:
        """Why a profiled stage breaks a constraint, or an empty string."""
        reasons = []
        if self.max_memory_gb is not None and record.peak_memory_bytes is not None:
            gb = record.peak_memory_bytes / GIB
            if gb > self.max_memory_gb:
                reasons.append(
                    f"{record.memory_method or 'profiled'} peak memory {gb:.2f} GB > budget {self.max_memory_gb:g} GB"
                )
        if self.max_gflops is not None and record.gflops_train is not None:
            if record.gflops_train > self.max_gflops:
                reasons.append(f"training step {record.gflops_train:.1f} GFLOPs > limit {self.max_gflops:g}")
        return "; ".join(reasons)

    def excess(self, record: StageRecord) -> float:
        """Largest relative excess over a limit (<= 0 when feasible), for samplers that learn constraints."""
        values = [-1.0]
        if self.max_memory_gb is not None and record.peak_memory_bytes is not None:
            values.append(record.peak_memory_bytes / GIB / self.max_memory_gb - 1.0)
        if self.max_gflops is not None and record.gflops_train is not None:
            values.append(record.gflops_train / self.max_gflops - 1.0)
        return max(values)


ProfileFn = Callable[[NetworkConfig, "int | None"], Any]
"""Profiles a stage's network at a batch size (None: the study's); returns an object with ``params``,
``gflops_fvcore``, ``gflops_train``, ``peak_memory_bytes``, ``memory_method``."""
Templates = Mapping[str, NetworkConfig]
"""The study's template of each network kind (by ``arch``): what its families' stages share."""


def templates_of(templates: NetworkConfig | Templates) -> dict[str, NetworkConfig]:
    """A mapping of templates by kind, from one template or a mapping of them."""
    if isinstance(templates, Mapping):
        return dict(templates)
    return {templates.arch: templates}


def stage_config(
    family: ChainFamily, kernel: int, template: NetworkConfig, checkpointing: bool | None = None
) -> NetworkConfig:
    """The architecture of one stage; checkpointing as the family says unless ``checkpointing`` overrides (a
    kind that cannot checkpoint never does)."""
    config = family.config(kernel, template)
    if not family.can_checkpoint:
        return config
    return config.replace(checkpointing=family.checkpointing if checkpointing is None else checkpointing)


def plan_family(
    family: ChainFamily,
    kernels: Sequence[int],
    templates: Templates,
    profile: ProfileFn,
    constraints: Constraints,
    checkpointing: bool | None = None,
    controls: bool = False,
) -> list[StageRecord]:
    """The profiled stages of a family's chain, each ``pending``, ``infeasible`` (with the constraint it
    breaks) or ``stopped`` (after an infeasible stage); nothing is written. With ``controls``, each UpKern step
    has a continuation control beside it: the parent's network, trained on from the same weights for the same
    budget (stopped where its step is)."""
    records: list[StageRecord] = []
    blocked = ""
    for index, kernel in enumerate(kernels):
        config = stage_config(family, kernel, templates[family.arch], checkpointing)
        measured = profile(config, family.batch_size)
        parent = make_stage_id(family.family_id, kernels[index - 1]) if index else ""
        record = StageRecord(
            stage_id=make_stage_id(family.family_id, kernel),
            family_id=family.family_id,
            family_label=family.name,
            **networks.columns(config),
            kernel_size=kernel,
            arch=config.arch,
            batch_size=family.batch_size,
            parent_stage=parent,
            init="upkern" if parent else "scratch",
            params=measured.params,
            gflops_fvcore=round(measured.gflops_fvcore, 3),
            gflops_train=round(measured.gflops_train, 3),
            peak_memory_bytes=int(measured.peak_memory_bytes),
            memory_method=measured.memory_method,
            config=config.to_dict(),
        )
        violation = constraints.violation(record)
        if violation:
            record.status, record.reason = "infeasible", violation
            blocked = blocked or f"chain ended at {record.stage_id} (infeasible)"
        elif blocked:
            record.status, record.reason = "stopped", blocked
        if controls and parent:
            records.append(control_of(records[-1], record))
        records.append(record)
    return records


def control_of(parent: StageRecord, step: StageRecord) -> StageRecord:
    """The continuation control beside the UpKern step ``step``: ``parent``'s network trained on (same kernel,
    weights and profile) for the step's budget; it never trains where the step does not."""
    status: Status
    status, reason = ("pending", "") if step.status == "pending" else (
        "stopped", f"its UpKern step {step.stage_id} is {step.status}")
    if parent.status != "pending":
        status, reason = "stopped", f"its parent {parent.stage_id} is {parent.status}"
    return dataclasses.replace(
        parent, stage_id=make_stage_id(parent.family_id, parent.kernel_size, control=True),
        parent_stage=parent.stage_id, init="continue", status=status, reason=reason,
    )


def position(record: StageRecord, kernels: Sequence[int]) -> int:
    """A stage's place in its chain (0: the first kernel); a control takes the place of its UpKern step."""
    return kernels.index(record.kernel_size) + (1 if record.is_control else 0)
