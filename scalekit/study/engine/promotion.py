"""Which stages of a rung go on: decided by what was measured, within the noise, per memory budget.

A rung of successive halving holds the stages of one chain position (every k3, every first UpKern step, ...)
scored after the same number of epochs. Each carries its mean Dice over the validation cases and, from the
per-case Dice, the noise of that mean. Two stages are compared by the difference of their means and the
standard error of that difference (paired over the validation cases when both were scored on the same ones):
a stage *beats* another when it is ahead by more than :data:`TIE_SE` standard errors; anything closer is a tie.

Memory is predicted before training, so it only says which budgets a stage can serve: the study's memory
constraint and the GPU sizes the answer names (:data:`~scalekit.results.answer.GPU_SIZES_GB`) split the stages into
budget classes (class 0 fits the smallest budget, class 1 the next, ...). Within a budget, Dice decides: a
stage is dominated when another of the same or a smaller class beats it. The rung keeps its quota (the top
1/eta) front by front; in the front that crosses the quota the best by Dice go first and every stage tied with
the last one kept goes too, so a tie is never broken by the order in which stages arrived or were listed.

A rung whose stages carry no signal (every Dice below :data:`~scalekit.results.fidelity.NO_SIGNAL_DICE`, or no stage
beating any other) decides nothing: every stage goes on, and the decision says why.

Pure logic on plain values: the planner, the replay benchmark and the tests drive the same function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from scalekit.results.answer import GPU_SIZES_GB
from scalekit.results.fidelity import Contender, beats, bootstrap_interval, difference, no_signal

def budgets(max_memory_gb: float | None) -> tuple[float, ...]:
    """The memory budgets (GB) a rung is decided per: the study's constraint and the GPU sizes below it."""
    sizes = {s for s in GPU_SIZES_GB if max_memory_gb is None or s < max_memory_gb}
    return tuple(sorted(sizes | ({max_memory_gb} if max_memory_gb is not None else set())))


def budget_class(memory_gb: float | None, limits: Sequence[float]) -> int:
    """How many of the budgets ``limits`` the stage does not fit (0: it fits them all)."""
    return 0 if memory_gb is None else sum(1 for limit in limits if memory_gb > limit)


@dataclass(frozen=True)
class Decision:
    """What one rung decided: the waiting stages to promote now, why each stage it ranked out lost (stage id ->
    text), and a note when the rung could not tell its stages apart."""

    promote: tuple[str, ...] = ()
    lost: dict[str, str] = field(default_factory=dict)
    no_signal: str = ""

    @property
    def decided(self) -> bool:
        return bool(self.promote or self.lost or self.no_signal)


def fronts(contenders: Sequence[Contender], limits: Sequence[float]) -> list[list[Contender]]:
    """Noise-aware non-dominated sorting: a stage is dominated while a remaining stage of the same or a
    smaller budget class beats it. Beating needs a strictly higher mean, so every round has a front."""
    left = list(contenders)
    out = []
    while left:
        front = [s for s in left if not any(
            budget_class(t.memory_gb, limits) <= budget_class(s.memory_gb, limits) and beats(t, s)
            for t in left if t is not s)]
        out.append(front)
        left = [s for s in left if s not in front]
    return out


def _loss(loser: Contender, kept: Sequence[Contender], limits: Sequence[float], rung: int) -> str:
    """Why ``loser`` was ranked out: the kept stage of the same or a smaller budget class furthest ahead."""
    mine = budget_class(loser.memory_gb, limits)
    rivals = [k for k in kept if budget_class(k.memory_gb, limits) <= mine] or list(kept)
    best = max(rivals, key=lambda k: (k.dice, k.stage_id))
    gap = difference(best, loser)
    tie = "" if gap.significant else ", within the noise; the quota was full"
    return (f"not promoted at rung {rung} epochs: {best.name} (Dice {_dice(best)}) went on; this stage "
            f"{_dice(loser)}, {gap.describe()} behind{tie}")


def _dice(contender: Contender) -> str:
    """``0.228 [0.190, 0.260]``: a rung's mean Dice with its 95% interval over the validation cases."""
    interval = bootstrap_interval(contender.cases)
    return f"{contender.dice:.3f}" + ("" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]")


def _cover(front: Sequence[Contender], places: int, limits: Sequence[float]) -> list[Contender]:
    """``places`` stages of a front that does not fit whole: the best of each budget class first, then each
    class's second best, ... (higher Dice first within a round; the stage id only orders equal values)."""
    classes = [budget_class(c.memory_gb, limits) for c in front]

    def place(i: int) -> int:
        return sum(1 for j, other in enumerate(front) if classes[j] == classes[i]
                   and (other.dice, other.stage_id) > (front[i].dice, front[i].stage_id))
    order = sorted(range(len(front)), key=lambda i: (place(i), -front[i].dice, front[i].stage_id))
    return [front[i] for i in order[:places]]


def decide(contenders: Sequence[Contender], reached: int, eta: int, rung: int, limits: Sequence[float],
           complete: bool) -> Decision:
    """The decision of one rung over the ``contenders`` (its feasible, scored stages) of the ``reached``
    stages that reached it: the top floor(reached/eta), or ceil when ``complete`` (no more can arrive)."""
    quota = (math.ceil if complete else math.floor)(reached / eta)
    if quota == 0 or not contenders:
        return Decision()
    why = no_signal(contenders)
    if why:
        return Decision(tuple(sorted(c.stage_id for c in contenders if c.waiting)), no_signal=why)
    kept: list[Contender] = []
    for front in fronts(contenders, limits):
        if len(kept) >= quota:
            break
        if len(kept) + len(front) <= quota:
            kept += front
            continue
        taken = _cover(front, quota - len(kept), limits)
        kept += taken + [c for c in front if c not in taken and any(
            budget_class(t.memory_gb, limits) == budget_class(c.memory_gb, limits) and t.dice >= c.dice
            and not beats(t, c) for t in taken)]
    lost = {c.stage_id: _loss(c, kept, limits, rung) for c in contenders if c not in kept}
    return Decision(tuple(sorted(c.stage_id for c in kept if c.waiting)), lost)
