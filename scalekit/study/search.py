"""The search over UpKern chains: which family Optuna opens next, which stage runs next, what Optuna is told.

:class:`ChainSearch` is plain Python over a :class:`~scalekit.study.chain.ChainPlanner` and an Optuna study,
so a test drives it with an in-memory study and no Ray; :mod:`scalekit.study.tune` forwards Ray Tune's
searcher calls to it. The only module that imports Optuna.

Each family is one Optuna trial (its ``family`` parameter, the family id). The seed families (presets,
explicit families; for ``grid`` every family) are queued first. A family's chain ends when its stages ended;
then its best stage's objectives are told, with its constraint excess, so the sampler learns what was
infeasible. The storage survives crashes: a rerun adopts trials asked but not yet given their family.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from sqlalchemy.exc import SQLAlchemyError

from scalekit.errors import ScalekitError
from scalekit.space import SearchSpace

from .chain import ChainPlanner, objective_values
from .messages import StageReport

log = logging.getLogger(__name__)

FINISHED = "FINISHED"
"""What :meth:`ChainSearch.next_stage` returns once every chain has ended (Ray Tune's own sentinel value)."""
FAMILY_ATTR = "family_id"
CONSTRAINT_ATTR = "constraint_excess"
MAX_DUPLICATE_ASKS = 50


@dataclass(frozen=True)
class SearchSettings:
    """How families are chosen and told."""

    sampler: str
    families: int
    seed: int
    metrics: tuple[str, ...]
    directions: tuple[str, ...]
    storage: str
    study_name: str


def family_distributions(space: SearchSpace) -> dict[str, optuna.distributions.BaseDistribution]:
    """The search space as Optuna sees it: one categorical parameter ``family`` over the family ids."""
    return {"family": optuna.distributions.CategoricalDistribution(space.ids())}


def _constraints(trial: optuna.trial.FrozenTrial) -> tuple[float]:
    return (trial.user_attrs.get(CONSTRAINT_ATTR, -1.0),)


def make_sampler(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of a study (explicit: Optuna 5's default would be TPE even for several objectives).

    ``grid`` queues its families (see :func:`planned_families`) and samples at random past them: Optuna's own
    ``GridSampler`` cannot be told trials that were queued (``KeyError: 'grid_id'``), and queueing keeps the
    seed families first.
    """
    if settings.sampler == "nsga2":
        population = min(50, max(2, settings.families))
        return optuna.samplers.NSGAIISampler(
            population_size=population, seed=settings.seed, constraints_func=_constraints
        )
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(
            seed=settings.seed, constraints_func=_constraints, n_startup_trials=min(10, settings.families)
        )
    return optuna.samplers.RandomSampler(seed=settings.seed)


def planned_families(settings: SearchSettings, space: SearchSpace) -> list[str]:
    """Families queued before any is sampled: the seeds (presets, explicit families), and for ``grid`` every
    other family of the space in a seeded random order; at most the study's family budget."""
    queued = list(space.seeds)
    if settings.sampler == "grid":
        rest = [f for f in space.ids() if f not in queued]
        random.Random(settings.seed).shuffle(rest)
        queued += rest
    return queued[: settings.families]


class StorageError(ScalekitError):
    """The Optuna storage cannot be opened."""


def open_optuna_study(settings: SearchSettings, space: SearchSpace) -> optuna.Study:
    """Create or resume the Optuna study and queue the planned families that no trial has yet (idempotent,
    so a run killed while queueing completes the queue when rerun)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            study_name=settings.study_name,
            storage=settings.storage,
            directions=list(settings.directions),
            sampler=make_sampler(settings),
            load_if_exists=True,
        )
    except (ImportError, ValueError, RuntimeError, OSError, SQLAlchemyError) as err:
        raise StorageError(f"storage {settings.storage!r} cannot be opened: {type(err).__name__}: {err}") from None
    for family_id in planned_families(settings, space):
        study.enqueue_trial({"family": family_id}, skip_if_exists=True)
    return study


class ChainSearch:
    """Opens families asked from Optuna, hands out runnable stages, records how they ended, tells Optuna."""

    def __init__(
        self,
        planner: ChainPlanner,
        study: optuna.Study,
        settings: SearchSettings,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.planner = planner
        self.study = study
        self.settings = settings
        self.on_change = on_change
        self._family_trial = {
            t.user_attrs[FAMILY_ATTR]: t.number for t in study.trials if FAMILY_ATTR in t.user_attrs
        }
        self._exhausted = False
        self.finished = False
        self._recover_trials()
        self._tell_finished_families()

    def next_stage(self) -> str | None:
        """Start the next runnable stage and return its id: a stage whose parent completed, else the first
        feasible stage of a newly asked family; ``None`` while everything runnable is running, and
        :data:`FINISHED` when the family budget is spent and every chain has ended."""
        while True:
            runnable = self.planner.runnable()
            if runnable:
                stage_id = runnable[0].stage_id
                self.planner.start(stage_id)
                self.on_change()
                return stage_id
            budget_left = self._opened() < min(self.settings.families, len(self.planner.space))
            if budget_left and not self._exhausted:
                self._exhausted = not self._new_family()
                self.on_change()
                continue
            if any(not self.planner.family_done(f) for f in self.planner.family_ids()):
                return None
            self.finished = True
            return FINISHED

    def stage_ended(self, stage_id: str, result: dict[str, Any] | None, error: bool = False) -> None:
        """Record how a stage's trial ended: ``error`` (the process died), a ``result`` without
        ``stage_status`` (stopped before it ended, e.g. Ctrl-C: back to pending), or the stage's report; tell
        Optuna when that ended the family's chain."""
        report = None if error or not result else StageReport.from_dict(result)
        if error:
            self.planner.finish(stage_id, "failed", "the trial process died (see the Ray trial log)")
        elif report is None:  # stopped by Tune before it ended (Ctrl-C)
            self.planner.interrupt([stage_id])
            self.on_change()
            return
        else:
            measured = report.measured()
            if "checkpoint" in measured:  # reported relative to the stage folder
                measured["checkpoint"] = str(self.planner.stage_dir(stage_id) / measured["checkpoint"])
            self.planner.finish(stage_id, report.status, report.reason, **measured)
        family_id = self.planner.table[stage_id].family_id
        if self.planner.family_done(family_id):
            self._tell(family_id)
        self.on_change()

    def _opened(self) -> int:
        return len(self.planner.family_ids())

    def _recover_trials(self) -> None:
        """Repair what a crash between two writes left in the Optuna storage: a trial asked but killed before
        it was given its family, or before that family's stages were written, is adopted now (a trial without
        a family parameter is failed)."""
        for frozen in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if "family" not in frozen.params:
                self.study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
                continue
            log.info("adopting trial %d (family %s), asked before the crash", frozen.number, frozen.params["family"])
            self._adopt(optuna.trial.Trial(self.study, frozen._trial_id))  # a running trial by its storage id

    def _tell_finished_families(self) -> None:
        """Tell Optuna every family whose chain ended but whose trial is still open (e.g. after a crash)."""
        for family_id, number in self._family_trial.items():
            trial = self.study.trials[number]
            if trial.state == optuna.trial.TrialState.RUNNING and self.planner.family_done(family_id):
                self._tell(family_id)

    def _tell(self, family_id: str) -> None:
        """Tell Optuna a family's result, once: a family told before (a stage retrained after its weights
        were deleted) keeps the value it was told."""
        number = self._family_trial[family_id]
        if self.study.trials[number].state.is_finished():
            return
        best = self.planner.best_stage(family_id)
        if best.status in ("completed", "infeasible"):
            self.study.tell(number, objective_values(best, self.settings.metrics))
        else:
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)

    def _adopt(self, trial: optuna.trial.Trial) -> bool:
        """Give an asked trial its family and open the family's stages (idempotent); False for a repeat of a
        family already opened, which is told at once (the known result, or failed while that family runs)."""
        family_id = trial.params["family"]
        known = self._family_trial.get(family_id, trial.number)
        if known != trial.number:
            if self.study.trials[known].state == optuna.trial.TrialState.COMPLETE:
                self.study.tell(trial, self.study.trials[known].values)
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return False
        trial.set_user_attr(FAMILY_ATTR, family_id)
        self._family_trial[family_id] = trial.number
        stages = self.planner.open_family(self.planner.space.by_id(family_id))
        # The family trains only if its first stage is feasible, so that stage's excess is the family's.
        trial.set_user_attr(CONSTRAINT_ATTR, self.planner.constraints.excess(stages[0]))
        if self.planner.family_done(family_id):  # infeasible from its first stage: never trains
            self._tell(family_id)
        return True

    def _new_family(self) -> bool:
        """Ask Optuna for a family not seen yet and open it; False when the space is exhausted."""
        distributions = family_distributions(self.planner.space)
        return any(self._adopt(self.study.ask(distributions)) for _ in range(MAX_DUPLICATE_ASKS))
