"""Chain planning: which stage of which family runs next, and what a finished stage means for its successors.

Pure logic over the results table, free of Ray and Optuna, so it can be tested and reasoned about alone.
A family's chain is its stages in kernel order (3 -> 5 -> 7). When a family is opened every stage is profiled:
a stage that breaks a constraint is ``infeasible`` and never trains. A stage runs once its parent completed;
the chain ends (later stages ``stopped`` with the reason) when a stage is infeasible, fails, or does not beat
its parent's mean Dice by the saturation margin.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalekit.mednext.config import MedNeXtConfig
from scalekit.records import ResultsTable, StageRecord, make_stage_id
from scalekit.space import Family, SearchSpace

log = logging.getLogger(__name__)

GiB = 2**30


@dataclass(frozen=True)
class Constraints:
    """Limits a stage must respect, checked on its profile before it trains."""

    max_memory_gb: float | None = None
    max_gflops: float | None = None

    def violation(self, record: StageRecord) -> str:
        """Why a profiled stage breaks a constraint, or an empty string."""
        reasons = []
        if self.max_memory_gb is not None and record.peak_memory_bytes is not None:
            gb = record.peak_memory_bytes / GiB
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
            values.append(record.peak_memory_bytes / GiB / self.max_memory_gb - 1.0)
        if self.max_gflops is not None and record.gflops_train is not None:
            values.append(record.gflops_train / self.max_gflops - 1.0)
        return max(values)


ProfileFn = Callable[[MedNeXtConfig], Any]
"""Returns an object with ``params``, ``gflops_fvcore``, ``gflops_train``, ``peak_memory_bytes``, ``memory_method``."""


class ChainPlanner:
    """Opens families, hands out runnable stages and records their outcomes in the results table."""

    def __init__(
        self,
        space: SearchSpace,
        table: ResultsTable,
        template: MedNeXtConfig,
        profile: ProfileFn,
        constraints: Constraints,
        stages_dir: Path,
        min_improvement: float | None = 0.0,
        checkpointing: bool | None = None,
    ) -> None:
        self.space = space
        self.table = table
        self.template = template
        self.profile = profile
        self.constraints = constraints
        self.stages_dir = stages_dir
        self.min_improvement = min_improvement
        self.checkpointing = checkpointing
        self._running: set[str] = set()

    # ---- families --------------------------------------------------------------------------------------------

    def family_ids(self) -> list[str]:
        """Families with rows in the table, in first-seen order."""
        return list(dict.fromkeys(r.family_id for r in self.table.records()))

    def stages(self, family_id: str) -> list[StageRecord]:
        """A family's stages in chain order."""
        return [self.table[self.stage_of(family_id, k)] for k in self.space.kernels if self.stage_of(family_id, k) in self.table]

    @staticmethod
    def stage_of(family_id: str, kernel: int) -> str:
        return make_stage_id(family_id, kernel)

    def open_family(self, family: Family) -> list[StageRecord]:
        """Profile every stage of a new family and write its rows (pending, or infeasible with the reason)."""
        if self.stage_of(family.family_id, self.space.kernels[0]) in self.table:
            return self.stages(family.family_id)
        records = plan_family(
            family, self.space.kernels, self.template, self.profile, self.constraints, self.checkpointing
        )
        for record in records:
            self.table.upsert(record)
        log.info("opened family %s (%s): %s", family.family_id, family.name, [r.status for r in records])
        return records

    def family_done(self, family_id: str) -> bool:
        return all(r.status not in ("pending", "running") for r in self.stages(family_id))

    def interrupt(self, stage_ids: Sequence[str] | None = None) -> list[str]:
        """Stages handed out but not finished (the run was stopped) go back to ``pending``; default: all."""
        stopped = sorted(self._running if stage_ids is None else set(stage_ids) & self._running)
        for stage_id in stopped:
            self._resume_later(stage_id)
        return stopped

    def _resume_later(self, stage_id: str) -> None:
        """An interrupted stage goes back to ``pending``: it resumes from its last checkpoint."""
        self._running.discard(stage_id)
        self.table.update(stage_id, status="pending", reason="interrupted; resumes from its last checkpoint")

    def best_stage(self, family_id: str) -> StageRecord:
        """The family's completed stage with the highest mean Dice, else its first stage (for its profile)."""
        stages = self.stages(family_id)
        if not stages:
            raise KeyError(f"family {family_id} has no stages in {self.table.path}")
        valid = [r for r in stages if r.is_valid]
        return max(valid, key=lambda r: r.mean_dice) if valid else stages[0]

    # ---- stages ----------------------------------------------------------------------------------------------

    @property
    def study_dir(self) -> Path:
        return self.table.path.parent

    def recover(self) -> dict[str, list[str]]:
        """Bring the table back in line with the disk after a crash, before anything is handed out.

        Stages left ``running`` go back to ``pending`` (they resume from their last checkpoint); ``completed``
        stages whose final weights are gone (a deleted stage folder) go back to ``pending`` and retrain.
        Returns the stage ids of each kind (``interrupted``, ``missing``).
        """
        found: dict[str, list[str]] = {"interrupted": [], "missing": []}
        for record in self.table.records():
            if record.status == "running":
                found["interrupted"].append(record.stage_id)
                self._resume_later(record.stage_id)
            elif record.status == "completed":
                path = record.checkpoint_path(self.study_dir)
                if path is None or not path.is_file():
                    found["missing"].append(record.stage_id)
                    self.table.update(record.stage_id, status="pending", mean_dice=None, mean_nsd=None,
                                      per_class_dice=[], per_class_nsd=[], checkpoint="",
                                      reason=f"retrains: its final weights {path} are missing")
        return found

    def runnable(self) -> list[StageRecord]:
        """Pending stages whose parent completed (or that have none), not handed out yet."""
        out = []
        for record in self.table.records():
            if record.status != "pending" or record.stage_id in self._running:
                continue
            parent = self.table.get(record.parent_stage) if record.parent_stage else None
            if parent is None or parent.status == "completed":
                out.append(record)
        return out

    def stage_dir(self, stage_id: str) -> Path:
        return self.stages_dir / stage_id

    def start(self, stage_id: str) -> StageRecord:
        self._running.add(stage_id)
        return self.table.update(stage_id, status="running", reason="")

    def parent_checkpoint(self, record: StageRecord) -> Path | None:
        """The final weights of a stage's parent (its UpKern source), as a path that exists now."""
        if not record.parent_stage:
            return None
        return self.table[record.parent_stage].checkpoint_path(self.study_dir)

    def finish(self, stage_id: str, status: str, reason: str = "", **measured: Any) -> StageRecord:
        """Record a stage's end (completed / failed / infeasible) and end its chain where that is due."""
        self._running.discard(stage_id)
        if measured.get("checkpoint") and Path(measured["checkpoint"]).is_absolute():
            # Stored relative to the study directory, so that the directory can move.
            measured["checkpoint"] = os.path.relpath(measured["checkpoint"], self.study_dir)
        record = self.table.update(stage_id, status=status, reason=reason, **measured)
        end = ""
        if status != "completed":
            end = f"chain ended at {stage_id} ({status})"
        elif self.min_improvement is not None and record.parent_stage:
            parent = self.table[record.parent_stage]
            gain = (record.mean_dice or 0.0) - (parent.mean_dice or 0.0)
            if gain < self.min_improvement:
                end = (
                    f"chain saturated at {stage_id}: mean Dice {gain:+.4f} over its parent, "
                    f"below the margin {self.min_improvement:g}"
                )
        if end:
            for later in self.stages(record.family_id):
                if later.kernel_size > record.kernel_size and later.status == "pending":
                    self.table.update(later.stage_id, status="stopped", reason=end)
        return record


def stage_config(
    family: Family, kernel: int, template: MedNeXtConfig, checkpointing: bool | None = None
) -> MedNeXtConfig:
    """The architecture of one stage; checkpointing as the family says unless ``checkpointing`` overrides."""
    enabled = family.checkpointing if checkpointing is None else checkpointing
    return family.config(kernel, template).replace(checkpointing=enabled)


def plan_family(
    family: Family,
    kernels: Sequence[int],
    template: MedNeXtConfig,
    profile: ProfileFn,
    constraints: Constraints,
    checkpointing: bool | None = None,
) -> list[StageRecord]:
    """The profiled stages of a family's chain, each ``pending``, ``infeasible`` (with the constraint it
    breaks) or ``stopped`` (after an infeasible stage); nothing is written."""
    records: list[StageRecord] = []
    blocked = ""
    for index, kernel in enumerate(kernels):
        config = stage_config(family, kernel, template, checkpointing)
        measured = profile(config)
        parent = ChainPlanner.stage_of(family.family_id, kernels[index - 1]) if index else ""
        record = StageRecord(
            stage_id=ChainPlanner.stage_of(family.family_id, kernel),
            family_id=family.family_id,
            family_label=family.name,
            n_channels=family.n_channels,
            block_counts=list(family.block_counts),
            exp_r=list(family.exp_r),
            kernel_size=kernel,
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
        records.append(record)
    return records


def objective_values(record: StageRecord, metrics: Sequence[str]) -> list[float]:
    """The objective metrics of a stage (missing scores of an untrained stage count as 0)."""
    values = []
    for metric in metrics:
        value = getattr(record, metric)
        values.append(float(value) if value is not None else 0.0)
    return values
