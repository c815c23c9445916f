"""The confirmation of a study's finalists over other training seeds (``finish.confirm``).

A stage's Dice comes from one training run. Before a researcher commits GPU-weeks to the answer's network, the
study can retrain the answer's stage and every stage within noise of it (the *finalists*), each along its own
chain from scratch, with other seeds, once the search has ended. This module decides the finalists
(:func:`finalists`), keeps where their runs live (``<study>/confirm/seed-<s>/``: a results table and stage folders
per seed, the same contract as the search's own), and says what the seeds showed (:func:`read_confirmation`):
each finalist's Dice as mean ± sd over every seed (the search's included), and whether the answer's lead held.

Plain data over the results contract; the study engine (:mod:`scalekit.study.engine.confirm`) trains the runs.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scalekit._atomic import write_atomic
from scalekit.results.fidelity import paired_interval
from scalekit.records import GIB, StageRecord, StudyDir, read_results, training_spent
from scalekit.results.selection import max_dice_under, select_stage

PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class ConfirmPlan:
    """What a confirmation trains: the finalists (the answer's stage first) and the other seeds, and why."""

    answer: str
    finalists: tuple[str, ...]
    base_seed: int
    """The seed the search trained with."""
    seeds: tuple[int, ...]
    """The other seeds each finalist's chain is retrained with."""
    left_out: tuple[str, ...] = ()
    """Stages within noise of the answer that did not fit ``max_finalists``."""

    def to_json(self) -> str:
        return json.dumps({"answer": self.answer, "finalists": list(self.finalists), "base_seed": self.base_seed,
                           "seeds": list(self.seeds), "left_out": list(self.left_out)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ConfirmPlan:
        data = json.loads(text)
        return cls(str(data["answer"]), tuple(map(str, data["finalists"])), int(data["base_seed"]),
                   tuple(int(s) for s in data["seeds"]), tuple(map(str, data.get("left_out", ()))))


def _within_noise(lead: StageRecord, other: StageRecord) -> bool:
    """Whether the 95% interval of ``lead``'s paired Dice lead over ``other`` holds zero (unknown counts as
    within noise: the cases cannot tell them apart)."""
    interval = paired_interval(lead.case_dice, other.case_dice)
    return interval is None or interval[0] <= 0.0


def finalists(records: Sequence[StageRecord], budget_gb: float | None, limit: int) -> tuple[list[StageRecord],
                                                                                           list[StageRecord]]:
    """The answer's stage (the best completed stage within the memory budget, as the answer chooses it) and every
    other completed stage within that budget within noise of it (the 95% interval of the paired difference over
    the validation cases holds zero), closest first (higher Dice first; the stage id orders equal values), at most ``limit``
    in all; and those left out by ``limit``. Empty while no stage fits."""
    records = list(records)
    if not any(r.is_valid for r in records):
        return [], []
    answer = (select_stage(records, "best", force=True).stage if budget_gb is None
              else max_dice_under(records, budget_gb * GIB))
    if answer is None:
        return [], []
    fitting = [r for r in records if r.is_valid and (budget_gb is None or (
        r.peak_memory_bytes is not None and r.peak_memory_bytes <= budget_gb * GIB))]
    close = sorted((r for r in fitting if r.stage_id != answer.stage_id and _within_noise(answer, r)),
                   key=lambda r: (-(r.mean_dice or 0.0), r.stage_id))
    kept = close[:max(0, limit - 1)]
    return [answer, *kept], close[len(kept):]


def chain_to(records: Sequence[StageRecord], stage_id: str) -> list[StageRecord]:
    """A stage and its ancestors (UpKern and continuation sources), from scratch to it."""
    by_id = {r.stage_id: r for r in records}
    chain = [by_id[stage_id]]
    while chain[0].parent_stage:
        chain.insert(0, by_id[chain[0].parent_stage])
    return chain


def confirm_dir(study_dir: str | Path) -> Path:
    return StudyDir(Path(study_dir)).confirm


def seed_dir(study_dir: str | Path, seed: int) -> Path:
    """Where one seed's retraining lives: a results table and ``stages/`` like the study's own."""
    return confirm_dir(study_dir) / f"seed-{seed}"


def write_plan(study_dir: str | Path, plan: ConfirmPlan) -> None:
    folder = confirm_dir(study_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / PLAN_FILE, plan.to_json())


def read_plan(study_dir: str | Path) -> ConfirmPlan | None:
    path = confirm_dir(study_dir) / PLAN_FILE
    return ConfirmPlan.from_json(path.read_text()) if path.is_file() else None


@dataclass(frozen=True)
class SeedResult:
    """One finalist over the seeds: its Dice from each seed that completed it (the search's seed included)."""

    stage: StageRecord
    dice: dict[int, float]
    runs: dict[int, StageRecord]
    """The confirmation's record of the finalist per other seed (whatever its status)."""

    @property
    def mean(self) -> float:
        return statistics.fmean(self.dice.values())

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.dice.values()) if len(self.dice) >= 2 else None

    def describe(self) -> str:
        sd = "" if self.sd is None else f" ± {self.sd:.3f}"
        seeds = ", ".join(f"{seed}: {dice:.3f}" for seed, dice in sorted(self.dice.items()))
        return f"{self.stage.stage_id} ({self.stage.name}) Dice {self.mean:.3f}{sd} over {len(self.dice)} seed(s) ({seeds})"


@dataclass(frozen=True)
class Confirmation:
    """What the seeds said: every finalist over its seeds (the answer's stage first) and what it cost."""

    plan: ConfirmPlan
    results: list[SeedResult]
    spent: dict[str, float]
    pending: list[str]
    """Runs that did not complete (``<stage id> seed <s>: <status>``)."""

    @property
    def complete(self) -> bool:
        return not self.pending

    @property
    def held(self) -> bool | None:
        """Whether the answer's stage keeps the highest mean Dice over seeds among the finalists (None while
        it has fewer than two seeds' Dice)."""
        answer, *others = self.results
        if len(answer.dice) < 2:
            return None
        return all(answer.mean >= other.mean for other in others)

    def lines(self) -> list[str]:
        """The confirmation in words, for the answer."""
        answer, *others = self.results
        n = len(self.plan.seeds) + 1
        head = (f"confirmed over {n} seeds ({', '.join(map(str, (self.plan.base_seed, *self.plan.seeds)))}): "
                f"{answer.describe()}")
        lines = [head] + [f"  finalist {other.describe()}" for other in others]
        if self.held is None:
            lines.append("  the ranking is not confirmed yet: the answer's stage has one seed's Dice")
        elif self.held:
            rivals = f" over {', '.join(o.stage.stage_id for o in others)}" if others else ""
            lines.append(f"  the ranking held: the answer's stage keeps the highest mean Dice{rivals}")
        else:
            best = max(others, key=lambda o: (o.mean, o.stage.stage_id))
            lines.append(f"  the ranking did not hold: {best.stage.stage_id} has the higher mean Dice over seeds "
                         f"({best.mean:.3f} vs {answer.mean:.3f}); the single-seed answer is within noise of it")
        if self.plan.left_out:
            lines.append(f"  also within noise but not retrained (finish.confirm.max_finalists): "
                         f"{', '.join(self.plan.left_out)}")
        if self.pending:
            lines.append(f"  not completed: {'; '.join(self.pending)}")
        lines.append(f"  confirmation compute: {self.spent['epochs']:.0f} training epochs, "
                     f"{self.spent['device_hours']:.3f} device-hours, {self.spent['train_tflops']:,.1f} training "
                     "TFLOPs (counted in the study's budget)")
        return lines


def seed_records(study_dir: str | Path, seeds: Sequence[int]) -> dict[int, list[StageRecord]]:
    """Each seed's retrained stages (empty lists where nothing is written yet)."""
    return {seed: read_results(seed_dir(study_dir, seed)) for seed in seeds}


def read_confirmation(study_dir: str | Path, records: Sequence[StageRecord] | None = None) -> Confirmation | None:
    """The confirmation of the study in ``study_dir`` (None when the study has none)."""
    plan = read_plan(study_dir)
    if plan is None:
        return None
    records = list(records) if records is not None else read_results(study_dir)
    by_id = {r.stage_id: r for r in records}
    runs = seed_records(study_dir, plan.seeds)
    results, pending = [], []
    for stage_id in plan.finalists:
        stage = by_id[stage_id]
        dice = {plan.base_seed: float(stage.mean_dice)} if stage.is_valid and stage.mean_dice is not None else {}
        mine: dict[int, StageRecord] = {}
        for seed in plan.seeds:
            run = next((r for r in runs[seed] if r.stage_id == stage_id), None)
            if run is not None:
                mine[seed] = run
            if run is not None and run.is_valid and run.mean_dice is not None:
                dice[seed] = float(run.mean_dice)
            else:
                pending.append(f"{stage_id} seed {seed}: {run.status if run is not None else 'not started'}"
                               + (f" ({run.reason})" if run is not None and run.reason else ""))
        results.append(SeedResult(stage, dice, mine))
    spent = training_spent(r for seed_runs in runs.values() for r in seed_runs)
    return Confirmation(plan, results, spent, pending)

