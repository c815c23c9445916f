"""Retraining the finalists with other seeds once the search has ended (``finish.confirm``).

:class:`SeedRuns` hands out, through the same Ray searcher as the search (the backend),
each finalist's chain from scratch once per other seed: a :class:`~scalekit.study.engine.chain.ChainPlanner` per seed
over its own results table (``confirm/seed-<s>/results.csv``) records each run the way the search records its
stages, so a run killed midway resumes from its last checkpoint and a completed one is never trained again.
Chains are trained whole (no saturation stop, no rungs). New work starts only while the study's compute budget
(``search.budget_*``, the search's spending included) allows; what did not start is ``stopped`` with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from scalekit.faults import fault_point
from scalekit.records import ResultsTable, StageRecord, training_spent
from scalekit.results.seeds import ConfirmPlan, chain_to, finalists, read_plan, seed_dir, write_plan

from .chain import ChainPlanner
from .messages import FINISHED, StageReport

log = logging.getLogger(__name__)

SEPARATOR = "@s"
"""A run's key, as Ray Tune sees it: ``<stage id>@s<seed>``."""
UNTRAINED: dict[str, Any] = {"status": "pending", "reason": "", "mean_dice": None, "per_class_dice": [], "mean_nsd": None,
             "per_class_nsd": [], "wall_time_s": None, "epochs": None, "checkpoint": "", "dice_curve": {},
             "case_dice": [], "dice_interval": [], "case_curve": {}, "train_tflops": None, "cum_epochs": None,
             "cum_iterations": None, "cum_train_tflops": None, "device_hours": None, "node": ""}
"""What a retrained stage starts without: everything training measured (its profile is kept)."""


def run_key(stage_id: str, seed: int) -> str:
    return f"{stage_id}{SEPARATOR}{seed}"


def plan_confirmation(search: ChainPlanner, budget_gb: float | None, seeds: int, max_finalists: int,
                      base_seed: int) -> ConfirmPlan | None:
    """The finalists of the ended search and the other seeds (``base_seed + 1`` ...); None when no stage
    completed. Written to ``confirm/plan.json`` (and read back unchanged on a rerun with the same seeds)."""
    chosen, left_out = finalists(search.table.records(), budget_gb, max_finalists)
    if not chosen:
        return None
    plan = ConfirmPlan(chosen[0].stage_id, tuple(r.stage_id for r in chosen), base_seed,
                       tuple(base_seed + i for i in range(1, seeds + 1)), tuple(r.stage_id for r in left_out))
    if read_plan(search.study_dir) != plan:
        write_plan(search.study_dir, plan)
    return plan


class SeedRuns:
    """The retraining of a plan's finalists, one chain planner per seed, driven like a search."""

    def __init__(self, search: ChainPlanner, plan: ConfirmPlan, on_change: Callable[[], None] = lambda: None) -> None:
        self.search = search
        self.plan = plan
        self.on_change = on_change
        self.finished = False
        rules = dataclasses.replace(search.rules, min_improvement=None)
        self.planners = {
            seed: ChainPlanner(search.space, ResultsTable(seed_dir(search.study_dir, seed)), search.templates,
                               search.profile, search.constraints, seed_dir(search.study_dir, seed) / "stages",
                               rules, search.checkpointing)
            for seed in plan.seeds
        }
        records = search.table.records()
        chains = [chain_to(records, stage_id) for stage_id in plan.finalists]
        self.order = list(dict.fromkeys(r.stage_id for chain in chains for r in chain))
        """Every stage retrained per seed, each after its parent."""
        by_id = {r.stage_id: r for r in records}
        for planner in self.planners.values():
            for stage_id in self.order:
                if stage_id not in planner.table:
                    planner.table.upsert(dataclasses.replace(by_id[stage_id], **UNTRAINED))
            for kind, stage_ids in planner.recover().items():
                if stage_ids:
                    log.warning("confirmation, %s runs: %s", kind, ", ".join(stage_ids))

    @property
    def planner(self) -> ChainPlanner:
        """The search's planner (where the study's state lives)."""
        return self.search

    def locate(self, key: str) -> tuple[ChainPlanner, str, int]:
        """The planner, stage id and seed of a run's key."""
        stage_id, _, seed = key.rpartition(SEPARATOR)
        return self.planners[int(seed)], stage_id, int(seed)

    def spent(self) -> dict[str, float]:
        """The confirmation's training so far."""
        return training_spent(r for p in self.planners.values() for r in p.table.records())

    def _budget_left(self) -> bool:
        spent = training_spent([*self.search.table.records(),
                                *(r for p in self.planners.values() for r in p.table.records())])
        return all(spent[key] < limit for key, limit in self.search.rules.budget.items())

    def _ready(self, planner: ChainPlanner, record: StageRecord) -> bool:
        parent = planner.table.get(record.parent_stage) if record.parent_stage else None
        return record.status == "pending" and (parent is None or parent.status == "completed")

    def _blocked(self, planner: ChainPlanner, record: StageRecord) -> str:
        """Why a waiting run can never start (its parent ended without completing), or empty."""
        parent = planner.table.get(record.parent_stage) if record.parent_stage else None
        if record.status == "pending" and parent is not None and parent.status in ("failed", "infeasible", "stopped"):
            return f"its parent {parent.stage_id} ended {parent.status}"
        return ""

    def next_stage(self) -> str | None:
        """Start the next run and return its key; None while the rest waits on running runs; FINISHED at the end."""
        budget = self._budget_left()
        for seed, planner in self.planners.items():
            for stage_id in self.order:
                record = planner.table[stage_id]
                why = "the study's compute budget is spent" if not budget else self._blocked(planner, record)
                if why and record.status == "pending":
                    planner.table.update(stage_id, status="stopped", reason=f"not retrained: {why}")
                elif budget and self._ready(planner, record):
                    planner.start(stage_id)
                    log.info("confirming %s with seed %d", stage_id, seed)
                    self.on_change()
                    return run_key(stage_id, seed)
        if any(p.any_running() for p in self.planners.values()):
            return None
        self.finished = True
        return FINISHED

    def stage_ended(self, key: str, result: dict[str, Any] | None, error: bool = False, lost_node: str = "") -> None:
        """Record how a run's trial ended, as the search records a stage."""
        planner, stage_id, seed = self.locate(key)
        report = None if error or not result else StageReport.from_dict(result)
        if error and lost_node and planner.retry(stage_id, f"its Ray node {lost_node} was lost"):
            return
        if error:
            planner.finish(stage_id, "failed", "the trial process died (see its stage.log)")
        elif report is None:
            planner.interrupt([stage_id])
            return
        else:
            measured = report.measured()
            if "checkpoint" in measured:
                measured["checkpoint"] = str(planner.stage_dir(stage_id) / measured["checkpoint"])
            record = planner.finish(stage_id, report.status, report.reason, **measured)
            log.info("confirmation of %s with seed %d %s%s", stage_id, seed, record.status,
                     f": Dice {record.mean_dice:.4f}" if record.mean_dice is not None else f" ({record.reason})")
            if any(p.table[s].status == "pending" for p in self.planners.values() for s in self.order):
                fault_point("confirm", key)
        self.on_change()

    def interrupt(self) -> list[str]:
        return [run_key(s, seed) for seed, p in self.planners.items() for s in p.interrupt()]

    def state_location(self) -> dict[str, str]:
        return {"confirmation": str(seed_dir(self.search.study_dir, self.plan.seeds[0]).parent)}
