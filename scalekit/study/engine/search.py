"""The search over UpKern chains: which family Optuna opens next, which stage runs next, what Optuna is told.

:class:`ChainSearch` is plain Python over a :class:`~scalekit.study.engine.chain.ChainPlanner` and an Optuna study,
so a test drives it with an in-memory study and no Ray; :mod:`scalekit.study.backend.raytune` forwards Ray
Tune's searcher calls to it. With :mod:`scalekit.study.engine.optuna_params`, the only modules that import Optuna.

The space's baselines (nnU-Net ResEnc families) are opened before any family is asked and train through the
same rungs; no Optuna trial stands for them and they do not count against ``search.families``. Each searched
family is one Optuna trial (its parameters: :mod:`scalekit.study.engine.optuna_params`). A sampler draws the
family's point: ``source`` (``listed`` or ``scaling``) where a space has both, ``label`` of a listed family (a
preset or an explicit family), or ``depth``, ``expansion`` and ``n_channels`` of a compound-scaling point, so
that it can learn which direction pays. The family's descriptors follow, which no sampler draws: ``n_channels``
(C), ``blocks`` (the total block count) and ``exp_r`` (the mean expansion ratio), so that parameter importance
and the parallel-coordinate plot of optuna-dashboard speak of the architecture. A study created before
descriptors keeps ``family_index`` and resumes as it was. The seed families (presets, explicit families; for
``grid`` every family) are queued first, with all their parameters. User attributes: ``family_id``,
``family_label``, ``constraint_excess``; per stage, as its results arrive, ``k3.status``, ``k3.mean_dice``,
``k3.epochs`` and ``k3.rung_dice`` (its Dice at each rung it reached, ``1:0.412 3:0.530``) beside the whole stage
as one entry (``stage.k3``; also ``k5``, ``k3c`` ...). A study with one objective also gets each rung's Dice as
the trial's intermediate value (step: epochs since scratch), which Optuna's samplers and pruners read (Optuna
supports intermediate values only with one objective). A family is told as soon as its chain ended: a family
that completed a stage at the full budget is COMPLETE with its best stage's objectives under the study's
metric names and its constraint excess (so the sampler learns what was infeasible); a family halted by a rung
decision before any stage reached the full budget is PRUNED, with ``halted_at_epochs`` (the rung its best
stage reached, also ``told_epochs``) and ``halted_reason`` (that stage's reason), so TPE counts it among the
worse trials while NSGA-II, which selects from complete trials, does not take it as a parent. The storage
survives crashes: a rerun adopts trials asked but not yet given their family, and tells every family whose
chain ended while its trial was still open, once.
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, ProgrammingError, SQLAlchemyError

from scalekit.errors import ScalekitError
from scalekit.space import SearchSpace

from .chain import ChainPlanner, objective_values
from ..monitor.events import STAGE_LOG
from .messages import FINISHED, StageReport
from .optuna_params import LAYOUT, LAYOUT_ATTR, FamilyParams, FamilySampler, shown_stage

log = logging.getLogger(__name__)

FAMILY_ATTR = "family_id"
LABEL_ATTR = "family_label"
FIDELITY_ATTR = "told_epochs"
"""The epochs of the stage whose values were told (below the full budget: a family halted at a rung)."""
HALTED_ATTR = "halted_at_epochs"
HALTED_REASON_ATTR = "halted_reason"
"""A PRUNED family's: the epochs of the rung its best stage was halted at, and that stage's reason."""
CONSTRAINT_ATTR = "constraint_excess"
MAX_DUPLICATE_ASKS = 50
SCHEMA_ATTEMPTS = 5
"""How often a study is opened while other drivers create the tables of the same fresh database."""


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


def _nsga2(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    population = min(50, max(2, settings.families))
    return optuna.samplers.NSGAIISampler(population_size=population, seed=settings.seed)


def _tpe(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=min(10, settings.families))


def _random(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=settings.seed)


SAMPLERS: dict[str, Callable[[SearchSettings], optuna.samplers.BaseSampler]] = {
    "nsga2": _nsga2, "tpe": _tpe, "grid": _random, "random": _random,
}
"""The samplers a study file may name (``search.sampler``). ``grid`` queues its families (see
:func:`planned_families`) and samples at random past them: Optuna's own ``GridSampler`` cannot be told trials
that were queued (``KeyError: 'grid_id'``), and queueing keeps the seed families first."""


def make_sampler(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of a study (explicit: Optuna 5's default would be TPE even for several objectives);
    an unknown name is an error, never a silent random search."""
    try:
        factory = SAMPLERS[settings.sampler]
    except KeyError:
        raise ScalekitError(f"sampler {settings.sampler!r} is unknown; use one of {', '.join(SAMPLERS)}") from None
    return factory(settings)


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


def shown_storage(storage: str) -> str:
    """The storage URL as messages show it: its password, if any, as ``***``."""
    try:
        return make_url(storage).render_as_string(hide_password=True)
    except ArgumentError:
        return storage


def _create_study(settings: SearchSettings) -> optuna.Study:
    """Create or load the study. Optuna creates its tables on first use, and two drivers doing so at once on
    a fresh database server collide (a duplicate type or table); the one that lost opens it again once the
    winner's tables are committed. Every step is create-if-missing, so a repeat is harmless."""
    def create() -> optuna.Study:
        return optuna.create_study(study_name=settings.study_name, storage=settings.storage,
                                   directions=[optuna.study.StudyDirection.MAXIMIZE if d == "maximize"
                                               else optuna.study.StudyDirection.MINIMIZE for d in settings.directions],
                                   sampler=make_sampler(settings),
                                   load_if_exists=True)

    for attempt in range(1, SCHEMA_ATTEMPTS):
        try:
            return create()
        except (IntegrityError, ProgrammingError):
            time.sleep(0.2 * attempt + random.random() * 0.2)  # jittered, so the losers do not collide again
    return create()


def open_optuna_study(settings: SearchSettings, space: SearchSpace) -> optuna.Study:
    """Create or resume the Optuna study and queue the planned families that no trial has yet (idempotent,
    so a run killed while queueing completes the queue when rerun)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = _create_study(settings)
    except (ImportError, ValueError, RuntimeError, OSError, SQLAlchemyError) as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines() or [""]
        raise StorageError(f"storage {shown_storage(settings.storage)} cannot be opened: {type(err).__name__}: "
                           f"{reason[0]}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(settings.metrics))
    if not study.get_trials(deepcopy=False):
        study.set_user_attr(LAYOUT_ATTR, LAYOUT)
    params = FamilyParams.of(study, space)
    study.sampler = FamilySampler(study.sampler, params)
    for family_id in planned_families(settings, space):
        study.enqueue_trial(params.params(space.by_id(family_id)), skip_if_exists=True)
    return study


class ChainSearch:
    """Opens families asked from Optuna, hands out stages, records how they ended, tells Optuna."""

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
        self.params = FamilyParams.of(study, planner.space)
        self._family_trial = {
            t.user_attrs[FAMILY_ATTR]: t.number for t in study.trials if FAMILY_ATTR in t.user_attrs
        }
        self._exhausted = False
        self._baselines_open = False
        self.finished = False
        self.ended_by = ""
        """Why the search ended: ``budget`` (the compute budget was spent) or ``chains`` (every chain ended)."""
        self._recover_trials()
        self._tell_finished_families()

    def next_stage(self) -> str | None:
        """Start the next stage and return its id: a promotion due at a rung, a stage whose parent completed,
        else the first stage of a newly asked family; ``None`` while the rest waits on running stages, and
        :data:`FINISHED` when the family budget (or the compute budget) is spent and every chain has ended."""
        self._open_baselines()
        while True:
            families_left = self._opened() < min(self.settings.families, len(self.planner.space)) \
                and not self._exhausted and self.planner.budget_left()
            self.planner.all_open = not families_left
            work = self.planner.next_work()
            self._tell_halted()
            if work is not None:
                return self._start(*work)
            if families_left:
                self._exhausted = not self._new_family()
                self.on_change()
                continue
            if self.planner.any_running():
                return None
            work = self.planner.next_work(final=True)  # nothing else can arrive at any rung now
            self._tell_halted()
            if work is not None:
                return self._start(*work)
            self._end()
            return FINISHED

    def _tell_halted(self) -> None:
        """Tell Optuna the families whose chains a rung decision just ended."""
        halted = self.planner.take_halted()
        for family_id in sorted(halted):
            self._show_stages(family_id)
            if self.planner.family_done(family_id):
                self._tell(family_id)
        if halted:
            self.on_change()

    def _start(self, stage_id: str, target_epochs: int) -> str:
        self.planner.start(stage_id, target_epochs)
        self.on_change()
        return stage_id

    def _end(self) -> None:
        """Every chain ended, or the compute budget is spent: halt what still waits, tell every family."""
        self.ended_by = "chains" if self.planner.budget_left() else "budget"
        reason = ("the study's compute budget is spent" if self.ended_by == "budget"
                  else "the search ended before a rung decided it")
        if self.planner.halt(reason):
            self.on_change()
        for family_id in self._family_trial:
            if self.planner.family_done(family_id):
                self._tell(family_id)
        self.finished = True

    def stage_ended(
        self, stage_id: str, result: dict[str, Any] | None, error: bool = False, lost_node: str = ""
    ) -> None:
        """Record how a stage's trial ended: ``error`` (the process died; with ``lost_node``, the Ray node it ran
        on was lost: it waits again, see :meth:`~scalekit.study.engine.chain.ChainPlanner.retry`), a ``result`` without
        ``stage_status`` (stopped before it ended, e.g. Ctrl-C: it waits again), or the stage's report; show it
        on the family's trial and tell Optuna when that ended the family's chain."""
        report = None if error or not result else StageReport.from_dict(result)
        if error and lost_node and self.planner.retry(stage_id, f"its Ray node {lost_node} was lost"):
            self.on_change()
            return
        if error:
            log_file = self.planner.stage_dir(stage_id) / STAGE_LOG
            self.planner.finish(stage_id, "failed", f"the trial process died (see {log_file} and the Ray trial's "
                                                    "error.txt under ray/)")
        elif report is None:  # stopped by Tune before it ended (Ctrl-C)
            self.planner.interrupt([stage_id])
            self.on_change()
            return
        else:
            measured = report.measured()
            if "checkpoint" in measured:  # reported relative to the stage folder
                measured["checkpoint"] = str(self.planner.stage_dir(stage_id) / measured["checkpoint"])
            self.planner.finish(stage_id, report.status, report.reason, **measured)
        record = self.planner.table[stage_id]
        self._show_stages(record.family_id)
        if self.planner.family_done(record.family_id):
            self._tell(record.family_id)
        self.on_change()

    def locate(self, stage_id: str) -> tuple[ChainPlanner, str, None]:
        """The planner of a stage handed out, its id, and the study's own seed."""
        return self.planner, stage_id, None

    def state_location(self) -> dict[str, str]:
        return {"results": str(self.planner.table.path), "optuna_storage": self.settings.storage}

    def _opened(self) -> int:
        """The searched families opened so far (baselines are not counted against ``search.families``)."""
        baselines = {b.family_id for b in self.planner.space.baselines}
        return len([f for f in self.planner.family_ids() if f not in baselines])

    def _open_baselines(self) -> None:
        """Open every baseline, once per search (a baseline whose rows a run before wrote keeps them): they
        train whatever the sampler draws, through the same rungs, and no Optuna trial stands for them."""
        if self._baselines_open:
            return
        for baseline in self.planner.space.baselines:
            self.planner.open_family(baseline)
        self._baselines_open = True
        self.on_change()

    def _running_trial(self, family_id: str) -> optuna.trial.Trial | None:
        number = self._family_trial.get(family_id)
        if number is None:
            return None
        frozen = self.study.trials[number]
        return None if frozen.state.is_finished() else optuna.trial.Trial(self.study, frozen._trial_id)

    def _show_stages(self, family_id: str) -> None:
        """Each stage of the family as user attributes of its trial (:func:`shown_stage`; those that changed)
        and, with one objective, each rung of its chain's stages as an intermediate value (while the trial is
        open; a step reported before is kept)."""
        trial = self._running_trial(family_id)
        if trial is None:
            return
        stages = self.planner.stages(family_id)
        shown = trial.user_attrs
        for record in stages:
            for key, value in shown_stage(record).items():
                if key not in shown or shown[key] != value:
                    trial.set_user_attr(key, value)
        if len(self.settings.metrics) != 1 or self.settings.metrics[0] != "mean_dice":
            return
        reported = self.study._storage.get_trial(trial._trial_id).intermediate_values
        for record in stages:
            if record.is_control or record.epochs is None or record.cum_epochs is None:
                continue
            before = record.cum_epochs - record.epochs
            for epochs, dice in sorted(record.dice_curve.items(), key=lambda item: int(item[0])):
                if before + int(epochs) not in reported:
                    trial.report(float(dice), before + int(epochs))

    def _recover_trials(self) -> None:
        """Repair what a crash between two writes left in the Optuna storage: a trial asked but killed before
        it was given its family, or before that family's stages were written, is adopted now (a trial whose
        family parameters were not all drawn is failed)."""
        for frozen in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            trial = optuna.trial.Trial(self.study, frozen._trial_id)  # a running trial by its storage id
            if FAMILY_ATTR not in frozen.user_attrs and self.params.family_of(frozen.params) is None:
                self.study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
                continue
            log.info("adopting trial %d (params %s), asked before the crash", frozen.number, frozen.params)
            self._adopt(trial)

    def _tell_finished_families(self) -> None:
        """Tell Optuna every family whose chain ended but whose trial is still open (e.g. after a crash)."""
        for family_id, number in self._family_trial.items():
            trial = self.study.trials[number]
            if trial.state == optuna.trial.TrialState.RUNNING and self.planner.family_done(family_id):
                self._tell(family_id)

    def _tell(self, family_id: str) -> None:
        """Tell Optuna a family's result, once: a family told before (a stage retrained after its weights
        were deleted) keeps what it was told. COMPLETE with its best stage's objectives when a stage reached
        the full budget (or the family is infeasible), PRUNED when rung decisions halted it before that (with
        the rung and the reason it was halted), FAIL when it never got a score (``told_epochs``: the epochs of
        the stage told)."""
        trial = self._running_trial(family_id)
        if trial is None:
            return
        self._show_stages(family_id)
        best = self.planner.best_stage(family_id)
        if best.status == "infeasible" or best.is_valid:
            trial.set_user_attr(FIDELITY_ATTR, best.epochs or 0)
            self.study.tell(trial, objective_values(best, self.settings.metrics))
        elif best.mean_dice is not None:
            trial.set_user_attr(FIDELITY_ATTR, best.epochs or 0)
            trial.set_user_attr(HALTED_ATTR, best.epochs or 0)
            trial.set_user_attr(HALTED_REASON_ATTR, best.reason)
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def _adopt(self, trial: optuna.trial.Trial) -> bool:
        """Give an asked trial its family and open the family's stages (idempotent); False for a repeat of a
        family already opened, which is told at once (the known result, or failed while that family runs)."""
        family = self.params.suggest(trial)
        family_id = family.family_id
        known = self._family_trial.get(family_id, trial.number)
        if known != trial.number:
            if self.study.trials[known].state == optuna.trial.TrialState.COMPLETE:
                self.study.tell(trial, self.study.trials[known].values)
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return False
        trial.set_user_attr(FAMILY_ATTR, family_id)
        trial.set_user_attr(LABEL_ATTR, family.name)
        self._family_trial[family_id] = trial.number
        stages = self.planner.open_family(family)
        # The family trains only if its first stage is feasible, so that stage's excess is the family's.
        excess = self.planner.constraints.excess(stages[0])
        trial.set_user_attr(CONSTRAINT_ATTR, excess)
        if CONSTRAINT_ATTR not in trial.constraints:  # a resumed run adopts the trial again
            trial.set_constraint(CONSTRAINT_ATTR, excess)  # what the constrained samplers (TPE, NSGA-II) read
        if self.planner.family_done(family_id):  # infeasible from its first stage: never trains
            self._tell(family_id)
        return True

    def _new_family(self) -> bool:
        """Ask Optuna for a family not seen yet and open it; False when the space is exhausted."""
        return any(self._adopt(self.study.ask()) for _ in range(MAX_DUPLICATE_ASKS))
