"""How far each stage trains before the search looks at it again: the full budget, or asynchronous successive
halving (ASHA, Li et al. 2020) with promotion by non-dominated sorting (MO-ASHA, Schmucker et al. 2021).

With ``halving`` a stage trains to a rung (``min_epochs``, ``min_epochs * eta``, ... up to the full stage budget
``training.epochs``), is scored, and waits (``paused``). Among the stages of one chain position (every k3, every
first UpKern step, ...) that reached a rung, the top 1/eta by non-dominated sorting over the study's objectives
are promoted to the next rung as soon as they are in that top: nothing waits for a rung to fill. A stage that
reached the full budget is ``completed`` and its chain goes on by UpKern. When nothing is running and nothing
else can start, each rung promotes the top ceil(n/eta) instead, so the best chain always reaches its end.

Pure logic over stage records (no Ray, no Optuna), so the replay benchmark drives the very same code.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scalekit.errors import ScalekitError
from scalekit.fidelity import promotion_order, rung_values
from scalekit.records import Objective, StageRecord


@dataclass(frozen=True)
class Schedule:
    """The rungs of a study: ``full`` has one (the stage budget); ``halving`` has min, min*eta, ..., budget."""

    kind: str = "full"
    max_epochs: int = 1
    eta: int = 3
    min_epochs: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("full", "halving"):
            raise ScalekitError(f"scheduler {self.kind!r} is unknown; use full or halving")
        if self.eta < 2 or not 1 <= self.min_epochs <= self.max_epochs:
            raise ScalekitError(f"halving needs eta >= 2 and 1 <= min_epochs <= {self.max_epochs}")

    @property
    def rungs(self) -> tuple[int, ...]:
        if self.kind == "full":
            return (self.max_epochs,)
        levels, epochs = [], self.min_epochs
        while epochs < self.max_epochs:
            levels.append(epochs)
            epochs *= self.eta
        return (*levels, self.max_epochs)

    @property
    def first(self) -> int:
        return self.rungs[0]

    def after(self, epochs: int) -> int | None:
        """The rung after ``epochs``, or None at the full budget."""
        return next((r for r in self.rungs if r > epochs), None)


@dataclass(frozen=True)
class RungEntry:
    """A stage that was scored at a rung: its objective values there, whether it may be promoted at all
    (feasible), and whether it waits at this rung (else it went on already)."""

    stage_id: str
    values: tuple[float, ...]
    feasible: bool = True
    waiting: bool = True


def to_promote(entries: Sequence[RungEntry], maximize: Sequence[bool], eta: int, final: bool = False) -> list[str]:
    """The waiting stages of one rung to promote now: those among the top floor(n/eta) of the n stages that
    reached it (ceil(n/eta) when ``final``: no more can arrive), ranked by non-dominated sorting over the feasible
    stages, each front in order of hypervolume contribution (:func:`~scalekit.fidelity.promotion_order`);
    never an infeasible one."""
    feasible = [e for e in entries if e.feasible and not any(math.isnan(v) for v in e.values)]
    quota = (math.ceil if final else math.floor)(len(entries) / eta)
    if not feasible or quota == 0:
        return []
    order = promotion_order(np.array([e.values for e in feasible], dtype=float), maximize)
    return [feasible[i].stage_id for i in order[:quota] if feasible[i].waiting]


def rung_entries(
    records: Sequence[StageRecord], epochs: int, objectives: Sequence[Objective], feasible: dict[str, bool]
) -> list[RungEntry]:
    """The stages among ``records`` scored at the rung ``epochs``."""
    return [
        RungEntry(r.stage_id, tuple(rung_values(r, epochs, objectives)), feasible.get(r.stage_id, True),
                  r.status == "paused" and r.epochs == epochs)
        for r in records if str(epochs) in r.dice_curve
    ]


def promotions(
    schedule: Schedule, groups: dict[int, list[StageRecord]], objectives: Sequence[Objective],
    feasible: dict[str, bool], final: bool = False,
) -> list[tuple[str, int]]:
    """Every promotion due now, as (stage id, next rung), over the stages of each chain position (``groups``),
    lowest rungs first."""
    if schedule.kind == "full":
        return []
    maximize = [o.maximize for o in objectives]
    due: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for records in groups.values():
        for rung in schedule.rungs[:-1]:
            entries = rung_entries(records, rung, objectives, feasible)
            nxt = schedule.after(rung)
            due[rung] += [(stage_id, nxt) for stage_id in to_promote(entries, maximize, schedule.eta, final)]
    return [p for rung in sorted(due) for p in due[rung]]
