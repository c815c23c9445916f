"""How far each stage trains before the search looks at it again: the full budget, or successive halving
(Jamieson & Talwalkar 2016; asynchronous: ASHA, Li et al. 2020) decided by :mod:`~scalekit.study.engine.promotion`.

With ``halving`` a stage trains to a rung (``min_epochs``, ``min_epochs * eta``, ... up to the full stage
budget ``training.epochs``), is scored, and waits (``paused``). The stages of one chain position (every k3,
every first UpKern step, ...) that reached a rung are compared there; each family takes part with one stage:
its UpKern step, or the step's continuation control where the control beats it by more than the noise (then
the family's next rung goes to the continuation first and the larger kernel waits for it). A stage that
reached the full budget is ``completed`` and its chain goes on by UpKern.

Asynchronous (ASHA): the top floor(n/eta) of the n that reached a rung go on as soon as they are in that top.
Synchronous: a rung decides once every stage that can reach it has (the top ceil(n/eta) go on, the rest stop
with the reason), so the first arrival cannot win by arriving; :func:`synchronous_for` chooses it for small
studies. When nothing runs and nothing else can start, every rung decides as a complete one.

Pure logic over stage records (no Ray, no Optuna), so the replay benchmark drives the very same code.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scalekit.errors import ScalekitError
from scalekit.results.fidelity import Contender, beats, contender_at
from scalekit.records import StageRecord

from .promotion import Decision, decide

OPEN = ("pending", "running", "paused")
"""Statuses of a stage that may still train."""

RungPolicy = Callable[[int, int, int], tuple[int, ...]]
"""A scheduler: the rungs (epoch counts, ascending, the last the full budget) for (max_epochs, eta, min_epochs)."""


def full_budget(max_epochs: int, eta: int, min_epochs: int) -> tuple[int, ...]:
    """One rung, the stage budget: every stage trains to the end, and no rung decides."""
    return (max_epochs,)


def successive_halving(max_epochs: int, eta: int, min_epochs: int) -> tuple[int, ...]:
    """``min_epochs``, ``min_epochs * eta``, ... below ``max_epochs``, then ``max_epochs``."""
    levels, epochs = [], min_epochs
    while epochs < max_epochs:
        levels.append(epochs)
        epochs *= eta
    return (*levels, max_epochs)


SCHEDULERS: dict[str, RungPolicy] = {"full": full_budget, "halving": successive_halving}
"""The schedulers a study file may name (``search.scheduler``): a new one is a function and its line here."""


@dataclass(frozen=True)
class Schedule:
    """The rungs of a study, from its scheduler (:data:`SCHEDULERS`); ``synchronous`` decides a rung only once
    every stage that can reach it has."""

    kind: str = "full"
    max_epochs: int = 1
    eta: int = 3
    min_epochs: int = 1
    synchronous: bool = False

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULERS:
            raise ScalekitError(f"scheduler {self.kind!r} is unknown; use one of {', '.join(SCHEDULERS)}")
        if self.eta < 2 or not 1 <= self.min_epochs <= self.max_epochs:
            raise ScalekitError(f"halving needs eta >= 2 and 1 <= min_epochs <= {self.max_epochs}")

    @property
    def rungs(self) -> tuple[int, ...]:
        return SCHEDULERS[self.kind](self.max_epochs, self.eta, self.min_epochs)

    @property
    def first(self) -> int:
        return self.rungs[0]

    def next_rung(self, rung: int) -> int:
        """The rung after ``rung``, which lies below the full budget."""
        after = next((r for r in self.rungs if r > rung), None)
        if after is None:
            raise ValueError(f"rung {rung} is the full budget: nothing comes after it")
        return after


def synchronous_for(families: int, eta: int, workers: int) -> bool:
    """Whether halving should wait for full rungs: with fewer than eta² families a chain position is too small
    for asynchronous promotion to mean anything, and one worker trains the rung in turn anyway."""
    return families < eta * eta or workers <= 1


@dataclass(frozen=True)
class Lane:
    """One family at one chain position: its UpKern step (or first stage) and the continuation control beside
    it, if the study trains controls."""

    step: StageRecord | None = None
    control: StageRecord | None = None

    def stages(self) -> list[StageRecord]:
        return [r for r in (self.step, self.control) if r is not None]

    def can_reach(self, rung: int) -> bool:
        """Whether a stage of the lane may still be scored at ``rung``: it is open and short of it (a control
        only while its step has not failed: it trains to the step's rungs or, once it beat the step, its own)."""
        stages = self.stages()
        if self.step is not None and self.step.status in ("infeasible", "failed"):
            stages = [self.step]
        return any(r.status in OPEN and (r.epochs or 0) < rung for r in stages)

    def contender(self, rung: int) -> Contender | None:
        """The lane's stage at ``rung``: the step, or its control where the control beats it there by more than
        the noise (an infeasible step takes no part)."""
        step = contender_at(self.step, rung) if self.step is not None and self.step.status != "infeasible" else None
        control = contender_at(self.control, rung) if self.control is not None else None
        if step is not None and control is not None and beats(control, step):
            return control
        return step or control


@dataclass(frozen=True)
class RungDecision:
    """What one rung of one chain position decided, the rung its promoted stages train to, and whether the rung
    was complete (then everything it ranked out stops)."""

    position: int
    rung: int
    after: int
    decision: Decision
    complete: bool


def decide_rungs(schedule: Schedule, lanes: dict[int, list[Lane]], limits: Sequence[float], all_open: bool,
                 final: bool = False) -> list[RungDecision]:
    """The decision of every rung below the full budget of every chain position (``lanes``: each position's
    families), lowest rungs first. ``all_open``: no family is left to open; ``final``: nothing else can
    arrive at any rung."""
    out: dict[int, list[RungDecision]] = defaultdict(list)
    for position, families in sorted(lanes.items()):
        for rung in schedule.rungs[:-1]:
            contenders = [c for c in (lane.contender(rung) for lane in families) if c is not None]
            reached = sum(1 for lane in families if any(str(rung) in r.dice_curve for r in lane.stages()))
            waiting = any(lane.can_reach(rung) for lane in families)
            complete = final or (schedule.synchronous and all_open and not waiting)
            if schedule.synchronous and not complete:
                continue
            decision = decide(contenders, reached, schedule.eta, rung, limits, complete)
            out[rung].append(RungDecision(position, rung, schedule.next_rung(rung), decision, complete))
    return [d for rung in sorted(out) for d in out[rung]]
