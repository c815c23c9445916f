"""Replaying search policies on recorded Dice curves, through scalekit's own chain search.

A replay builds the real :class:`~scalekit.study.engine.search.ChainSearch` (planner, schedule, Optuna queue) over a
throw-away results table, and plays simulated workers: a handed-out stage "trains" for a time proportional to
the FLOPs of the epochs it still has to go (with a seeded jitter, so that stages arrive in other orders), then
reports the Dice its recorded curve has at the epochs reached, plus seeded measurement noise of the size of the
stage's standard error over its validation cases (what another training seed or another case sample would
move), with each validation case's Dice at that rung (recorded per rung in newer recordings; in the first one
the last epoch's case-to-case pattern around the rung's mean). Decisions see the noisy values; a policy's front
and its answer are valued with the recorded ones. Only the training is replayed; every decision is the
product's.

A policy is judged against the **full chain** (every family's UpKern chain and continuation controls, each
stage to the full budget): the share of the full chain's hypervolume it keeps, and its **answer regret**, the
full-budget Dice of the best stage the full chain trained within the study's budget minus the recorded
full-budget Dice of the stage the policy's answer names (picked by its measured Dice, as ``study show`` picks).
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
from scalekit.records import GIB, ResultsTable
from scalekit.results.selection import max_dice_under
from scalekit.space import Family, SearchSpace
from scalekit.study.engine.chain import ChainPlanner, ChainRules
from scalekit.study.engine.families import Constraints
from scalekit.study.engine.schedule import Schedule
from scalekit.study.engine.search import FINISHED, ChainSearch, SearchSettings, open_optuna_study


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

    @property
    def training_minutes(self) -> float:
        """The stages' own training time (a recording resumed after a stop counts each stage once)."""
        return sum(float(s["wall_s"]) for s in self.data["stages"].values()) / 60

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

    def cases(self, family_id: str, kernel: int, variant: str, epochs: int) -> list[float]:
        """Each validation case's Dice at ``epochs``: recorded, or (first recording) the last epoch's
        case-to-case deviations around that epoch's mean."""
        stage = self.stage(family_id, kernel, variant)
        if str(epochs) in stage.get("case_curve", {}):
            return list(stage["case_curve"][str(epochs)])
        last = np.asarray(stage["case_dice"], dtype=float)
        return list(self.dice(family_id, kernel, variant, epochs) + last - last.mean())

    def memory(self, family_id: str, kernel: int) -> float:
        return float(self.stage(family_id, kernel, "scratch")["peak_memory_gb"])

    def profile(self, config: MedNeXtConfig, batch_size: int | None = None) -> SimpleNamespace:
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
    """What a policy left: its full-budget stages' (Dice, memory) points, the training TFLOPs it spent, and the
    stage its answer names (recording key ``family-kK-variant``) with that stage's recorded full-budget Dice."""

    points: list[tuple[float, float]]
    tflops: float
    stages: int
    halted: int = 0
    answer: str = ""
    answer_dice: float = 0.0

    @property
    def answer_family(self) -> str:
        return self.answer.split("-", 1)[0]


def full_chain(rec: Recording, budget_gb: float | None = None) -> Outcome:
    """Every family's chain (k3 from scratch, each UpKern step) and each step's continuation control, all to
    the full budget: the reference a search is judged by. Its answer is the best recorded Dice within the
    study's memory budget."""
    points, tflops, best = [], 0.0, ("", -1.0)
    kernels = rec.data["kernels"]
    for family in rec.space().families:
        f = family.family_id
        stages = [(kernels[0], "scratch")] + [(k, "upkern") for k in kernels[1:]] + [(k, "continue")
                                                                                   for k in kernels[:-1]]
        for kernel, variant in stages:
            dice = rec.dice(f, kernel, variant, rec.epochs)
            points.append((dice, rec.memory(f, kernel)))
            tflops += rec.tflops(f, kernel, rec.epochs)
            if budget_gb is None or rec.memory(f, kernel) <= budget_gb:
                best = max(best, (f"{f}-k{kernel}-{variant}", dice), key=lambda b: b[1])
    return Outcome(points, tflops, len(points), answer=best[0], answer_dice=best[1])


def grid_from_scratch(rec: Recording, budget_gb: float | None = None) -> Outcome:
    """Every family at every kernel, from scratch, to the full budget; its answer is the best of those."""
    points, tflops, best = [], 0.0, ("", -1.0)
    for family in rec.space().families:
        for kernel in rec.data["kernels"]:
            dice = rec.dice(family.family_id, kernel, "scratch", rec.epochs)
            points.append((dice, rec.memory(family.family_id, kernel)))
            tflops += rec.tflops(family.family_id, kernel, rec.epochs)
            if budget_gb is None or rec.memory(family.family_id, kernel) <= budget_gb:
                best = max(best, (f"{family.family_id}-k{kernel}-scratch", dice), key=lambda b: b[1])
    return Outcome(points, tflops, len(points), answer=best[0], answer_dice=best[1])


def replay_search(rec: Recording, schedule: Schedule, seed: int, workers: int = 1,
                  min_improvement: float | None = None, controls: bool = False, jitter: float = 0.2,
                  noise: float = 1.0, max_memory_gb: float | None = None) -> Outcome:
    """One run of scalekit's chain search on the recorded curves (grid sampler: every family, seeded order)."""
    space = rec.space()
    with tempfile.TemporaryDirectory() as tmp:
        table = ResultsTable(Path(tmp))
        rules = ChainRules(min_improvement=min_improvement, controls=controls, schedule=schedule,
                           iterations_per_epoch=rec.iterations)
        planner = ChainPlanner(space, table, MedNeXtConfig(num_classes=5, deep_supervision=True), rec.profile,
                               Constraints(max_memory_gb=max_memory_gb), Path(tmp) / "stages", rules)
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
            shift = rng.gauss(0.0, noise * rec.standard_error(*key))
            cases = [min(1.0, max(0.0, c + shift)) for c in rec.cases(*key, reached)]
            curve = {**record.dice_curve, str(reached): float(np.mean(cases))}
            result = {"stage_status": "completed", "mean_dice": curve[str(reached)], "epochs": reached,
                      "dice_curve": curve, "checkpoint": "final.pt", "wall_time_s": 0.0, "case_dice": cases,
                      "case_curve": {**record.case_curve, str(reached): cases}}
            search.stage_ended(stage_id, result)
        records = table.records()
        spent = planner.spent()["train_tflops"]
    full = [(rec.dice(r.family_id, r.kernel_size, r.init, rec.epochs), r.peak_memory_gb)
            for r in records if r.is_valid]
    chosen = max_dice_under(records, float("inf") if max_memory_gb is None else max_memory_gb * GIB)
    key = f"{chosen.family_id}-k{chosen.kernel_size}-{chosen.init}" if chosen is not None else ""
    return Outcome(full, spent, sum(1 for r in records if r.epochs), sum(1 for r in records if "halted" in r.reason),
                   key, rec.dice(chosen.family_id, chosen.kernel_size, chosen.init, rec.epochs) if chosen else 0.0)


def reference_point(rec: Recording) -> tuple[float, float]:
    """Dice 0 and 1.1 x the largest memory of any stage: every trained stage counts."""
    memory = max(s["peak_memory_gb"] for s in rec.data["stages"].values())
    return 0.0, 1.1 * memory


def summarise(outcomes: list[Outcome], reference: tuple[float, float], grid: Outcome, chain: Outcome) -> dict:
    """Median and spread of hypervolume (relative to the full chain's), compute (relative to the grid's), and
    answer regret against the full chain, with how often the answer is the full chain's family."""
    hv_chain = hypervolume(chain.points, reference)
    hv = np.array([hypervolume(o.points, reference) / hv_chain for o in outcomes])
    cost = np.array([o.tflops / grid.tflops for o in outcomes])
    regret = np.array([chain.answer_dice - o.answer_dice for o in outcomes])
    return {"hv": float(np.median(hv)), "hv_lo": float(hv.min()), "hv_hi": float(hv.max()),
            "compute": float(np.median(cost)), "compute_lo": float(cost.min()), "compute_hi": float(cost.max()),
            "regret": float(np.median(regret)), "regret_lo": float(regret.min()), "regret_hi": float(regret.max()),
            "same_family": float(np.mean([o.answer_family == chain.answer_family for o in outcomes])),
            "stages": float(np.median([o.stages for o in outcomes])), "runs": len(outcomes),
            "hv_all": hv.tolist(), "compute_all": cost.tolist(), "regret_all": regret.tolist()}
