"""Replaying search policies on recorded Dice curves, through scalekit's own chain search.

A replay builds the real :class:`~scalekit.study.search.ChainSearch` (planner, schedule, Optuna queue) over a
throw-away results table, and plays simulated workers: a handed-out stage "trains" for a time proportional to
the FLOPs of the epochs it still has to go (with a seeded jitter, so that stages arrive in other orders), then
reports the Dice its recorded curve has at the epochs reached, plus seeded measurement noise of the size of the
stage's standard error over its validation cases (what another training seed or another case sample would
move). Decisions see the noisy values; a policy's front is valued with the recorded ones. Only the training is
replayed; every decision is the product's.
"""

from __future__ import annotations

import heapq
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from scalekit.mednext import MedNeXtConfig
from scalekit.records import Objective, ResultsTable
from scalekit.space import Family, SearchSpace
from scalekit.study.chain import ChainPlanner, ChainRules
from scalekit.study.families import Constraints
from scalekit.study.schedule import Schedule
from scalekit.study.search import FINISHED, ChainSearch, SearchSettings, open_optuna_study

OBJECTIVES = (Objective("mean_dice"), Objective("peak_memory_gb"))


@dataclass(frozen=True)
class Recording:
    """The recorded curves (``benchmarks/data/search_curves.json``) and the space they were recorded on."""

    data: dict

    @property
    def epochs(self) -> int:
        return int(self.data["epochs"])

    @property
    def iterations(self) -> int:
        return int(self.data["iterations_per_epoch"])

    def space(self) -> SearchSpace:
        families = tuple(Family(f["n_channels"], tuple(f["block_counts"]), tuple(f["exp_r"]), f["label"])
                         for f in self.data["families"])
        return SearchSpace(families, tuple(self.data["kernels"]), tuple(f.family_id for f in families))

    def stage(self, family_id: str, kernel: int, variant: str) -> dict:
        return self.data["stages"][f"{family_id}-k{kernel}-{variant}"]

    def dice(self, family_id: str, kernel: int, variant: str, epochs: int) -> float:
        return float(self.stage(family_id, kernel, variant)["curve"][str(epochs)])

    def standard_error(self, family_id: str, kernel: int, variant: str) -> float:
        cases = self.stage(family_id, kernel, variant)["case_dice"]
        return float(np.std(cases, ddof=1) / np.sqrt(len(cases))) if len(cases) > 1 else 0.0

    def profile(self, config: MedNeXtConfig) -> SimpleNamespace:
        family = Family(config.n_channels, config.block_counts, config.exp_r)
        s = self.stage(family.family_id, config.enc_kernel_size, "scratch")
        return SimpleNamespace(params=s["params"], gflops_fvcore=0.0, gflops_train=s["gflops_train"],
                               peak_memory_bytes=int(s["peak_memory_gb"] * 2**30), memory_method="predicted")

    def tflops(self, family_id: str, kernel: int, epochs: int) -> float:
        return epochs * self.iterations * self.stage(family_id, kernel, "scratch")["gflops_train"] / 1000.0


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by (Dice maximised, memory minimised) points, up to ``reference`` (Dice 0, memory max)."""
    ref_dice, ref_memory = reference
    inside = sorted((m, d) for d, m in points if d > ref_dice and m < ref_memory)
    area, best = 0.0, ref_dice
    for index, (memory, dice) in enumerate(inside):
        best = max(best, dice)
        upper = inside[index + 1][0] if index + 1 < len(inside) else ref_memory
        area += (upper - memory) * (best - ref_dice)
    return area


@dataclass(frozen=True)
class Outcome:
    """What a policy left: its full-budget stages' (Dice, memory) points and the training TFLOPs it spent."""

    points: list[tuple[float, float]]
    tflops: float
    stages: int
    halted: int = 0


def grid_from_scratch(rec: Recording) -> Outcome:
    """Every family at every kernel, from scratch, to the full budget."""
    points, tflops = [], 0.0
    for family in rec.space().families:
        for kernel in rec.data["kernels"]:
            s = rec.stage(family.family_id, kernel, "scratch")
            points.append((rec.dice(family.family_id, kernel, "scratch", rec.epochs), s["peak_memory_gb"]))
            tflops += rec.tflops(family.family_id, kernel, rec.epochs)
    return Outcome(points, tflops, len(points))


def replay_search(rec: Recording, schedule: Schedule, seed: int, workers: int = 1,
                  min_improvement: float | None = None, controls: bool = False, jitter: float = 0.2,
                  noise: float = 1.0) -> Outcome:
    """One run of scalekit's chain search on the recorded curves (grid sampler: every family, seeded order)."""
    space = rec.space()
    with tempfile.TemporaryDirectory() as tmp:
        table = ResultsTable(Path(tmp))
        rules = ChainRules(min_improvement=min_improvement, controls=controls, schedule=schedule,
                           objectives=OBJECTIVES, iterations_per_epoch=rec.iterations)
        planner = ChainPlanner(space, table, MedNeXtConfig(num_classes=5, deep_supervision=True), rec.profile,
                               Constraints(), Path(tmp) / "stages", rules)
        settings = SearchSettings("grid", len(space), seed, ("mean_dice", "peak_memory_gb"),
                                  ("maximize", "minimize"), None, f"replay-{seed}")
        search = ChainSearch(planner, open_optuna_study(settings, space), settings)
        rng = random.Random(seed)
        clock, running = 0.0, []  # heap of (end time, tiebreak, stage id)
        while True:
            while len(running) < workers:
                stage_id = search.next_stage()
                if stage_id is None or stage_id == FINISHED:
                    break
                record = table[stage_id]
                left = record.target_epochs - (record.epochs or 0)
                cost = rec.tflops(record.family_id, record.kernel_size, left) * (1 + jitter * rng.uniform(-1, 1))
                heapq.heappush(running, (clock + cost, rng.random(), stage_id))
            if not running:
                break
            clock, _, stage_id = heapq.heappop(running)
            record = table[stage_id]
            reached = record.target_epochs
            key = (record.family_id, record.kernel_size, record.init)  # the recording's keys are the inits
            error = noise * rec.standard_error(*key)
            curve = {**record.dice_curve, str(reached): min(1.0, max(0.0, rec.dice(*key, reached)
                                                                       + rng.gauss(0.0, error)))}
            result = {"stage_status": "completed", "mean_dice": curve[str(reached)], "epochs": reached,
                      "dice_curve": curve, "checkpoint": "final.pt", "wall_time_s": 0.0,
                      "case_dice": rec.stage(*key)["case_dice"]}
            search.stage_ended(stage_id, result)
        records = table.records()
        spent = planner.spent()["train_tflops"]
    full = [(rec.dice(r.family_id, r.kernel_size, r.init, rec.epochs), r.peak_memory_gb)
            for r in records if r.is_valid]
    return Outcome(full, spent, sum(1 for r in records if r.epochs), sum(1 for r in records if "halted" in r.reason))


def reference_point(rec: Recording) -> tuple[float, float]:
    """Dice 0 and 1.1 x the largest memory of any stage: every trained stage counts."""
    memory = max(s["peak_memory_gb"] for s in rec.data["stages"].values())
    return 0.0, 1.1 * memory


def summarise(outcomes: list[Outcome], reference: tuple[float, float], grid: Outcome) -> dict:
    """Median and spread of hypervolume and compute, relative to the exhaustive grid."""
    hv_grid = hypervolume(grid.points, reference)
    hv = np.array([hypervolume(o.points, reference) / hv_grid for o in outcomes])
    cost = np.array([o.tflops / grid.tflops for o in outcomes])
    return {"hv": float(np.median(hv)), "hv_lo": float(hv.min()), "hv_hi": float(hv.max()),
            "compute": float(np.median(cost)), "compute_lo": float(cost.min()), "compute_hi": float(cost.max()),
            "stages": float(np.median([o.stages for o in outcomes])), "runs": len(outcomes),
            "hv_all": hv.tolist(), "compute_all": cost.tolist()}
