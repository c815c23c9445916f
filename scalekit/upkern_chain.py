"""UpKern chains as Ray Tune trials, families chosen by Optuna. The only module that imports Ray and Optuna.

Every chain stage is its own Ray Tune trial. Ray has no dependencies between trials, so a custom
:class:`ChainSearcher` hands out work: a stage whose parent completed (initialised by UpKern from the parent's
final weights), else the first stage of a new family asked from Optuna (NSGA-II, TPE, grid or random). Tune
asks again later when the searcher has nothing runnable while stages run. When a family's chain ends, its best
stage's objectives are told to Optuna, with its constraint excess, so the sampler learns what was infeasible.

State lives in the study directory, not in Ray: the results table, the Optuna storage and each stage's folder
(with a checkpoint every epoch). A rerun therefore starts a fresh Tuner that skips completed stages, resumes
interrupted ones from their last checkpoint and continues the search where the storage left it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.search import Searcher
from sqlalchemy.exc import SQLAlchemyError

from scalekit.space import SearchSpace
from scalekit.study.chain import ChainPlanner, objective_values

log = logging.getLogger(__name__)

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


class StorageError(ValueError):
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


StageLauncher = Callable[[ChainPlanner, str], dict[str, Any]]
"""Builds the Ray trial config of a stage (called when the searcher hands the stage out)."""


class ChainSearcher(Searcher):
    """Hands Ray Tune the runnable stages of UpKern chains and asks Optuna for new families.

    ``suggest`` returns a stage whose parent completed (k5 after k3, k7 after k5), otherwise the first
    feasible stage of a newly asked family, ``None`` while everything runnable is running, and ``FINISHED``
    when the family budget is spent and every chain has ended.
    """

    def __init__(
        self,
        planner: ChainPlanner,
        study: optuna.Study,
        settings: SearchSettings,
        launch: StageLauncher,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__()
        self.planner = planner
        self.study = study
        self.settings = settings
        self.launch = launch
        self.on_change = on_change
        self._trial_stage: dict[str, str] = {}
        self._family_trial = {
            t.user_attrs[FAMILY_ATTR]: t.number for t in study.trials if FAMILY_ATTR in t.user_attrs
        }
        self._exhausted = False
        self.finished = False
        self.error: Exception | None = None
        self._recover_trials()
        self._tell_finished_families()

    # ---- Optuna ----------------------------------------------------------------------------------------------

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
        distributions = self.planner.space.optuna_distributions()
        return any(self._adopt(self.study.ask(distributions)) for _ in range(MAX_DUPLICATE_ASKS))

    # ---- Ray Tune --------------------------------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.error is not None:
            return Searcher.FINISHED
        try:
            return self._suggest(trial_id)
        except Exception as err:  # noqa: BLE001 - Tune would swallow it into a trial failure; run_study raises it
            self._fail(err)
            return Searcher.FINISHED

    def _suggest(self, trial_id: str) -> dict | str | None:
        while True:
            runnable = self.planner.runnable()
            if runnable:
                stage_id = runnable[0].stage_id
                self.planner.start(stage_id)
                self._trial_stage[trial_id] = stage_id
                self.on_change()
                return self.launch(self.planner, stage_id)
            budget_left = self._opened() < min(self.settings.families, len(self.planner.space))
            if budget_left and not self._exhausted:
                self._exhausted = not self._new_family()
                self.on_change()
                continue
            if any(not self.planner.family_done(f) for f in self.planner.family_ids()):
                return None
            self.finished = True
            return Searcher.FINISHED

    def _fail(self, err: Exception) -> None:
        """Keep the first error of the driver's own work (writing results.csv, the Optuna storage): no new
        stage starts, and :func:`run_chains` raises it once the running ones ended."""
        log.debug("the study stops: %s", err, exc_info=True)
        if self.error is None:
            self.error = err

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.on_change()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        stage_id = self._trial_stage.pop(trial_id, None)
        if stage_id is None:
            return
        try:
            self._complete(stage_id, result, error)
        except Exception as err:  # noqa: BLE001 - see suggest
            self._fail(err)
        self.on_change()

    def _complete(self, stage_id: str, result: dict | None, error: bool) -> None:
        if error:
            self.planner.finish(stage_id, "failed", "the trial process died (see the Ray trial log)")
        elif not result or "stage_status" not in result:  # stopped by Tune before it ended (Ctrl-C)
            self.planner.interrupt([stage_id])
            return
        else:
            measured = {k: result[k] for k in MEASURED_FIELDS if k in result}
            if "checkpoint" in measured:  # reported relative to the stage folder
                measured["checkpoint"] = str(self.planner.stage_dir(stage_id) / measured["checkpoint"])
            self.planner.finish(stage_id, result["stage_status"], result.get("stage_reason", ""), **measured)
        family_id = self.planner.table[stage_id].family_id
        if self.planner.family_done(family_id):
            self._tell(family_id)

    def _state_location(self) -> dict[str, str]:
        return {"results": str(self.planner.table.path), "optuna_storage": self.settings.storage}

    def save(self, checkpoint_path: str) -> None:
        """Ray saves searchers with its experiment; scalekit's state is the results table and Optuna storage."""
        Path(checkpoint_path).write_text(json.dumps(self._state_location()))

    def __getstate__(self) -> dict[str, str]:
        """Ray pickles the Tuner for ``Tuner.restore``, which scalekit does not use: keep where the state is."""
        return self._state_location()

    def __setstate__(self, state: dict[str, str]) -> None:
        raise RuntimeError(
            f"a scalekit study is resumed by rerunning `scalekit study run` on its study file, not by Ray's "
            f"Tuner.restore; its state is {state['results']} and {state['optuna_storage']}"
        )


MEASURED_FIELDS = (
    "mean_dice", "per_class_dice", "mean_nsd", "per_class_nsd", "wall_time_s", "epochs", "checkpoint",
    "peak_memory_bytes", "memory_method",
)


def run_stage_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: train one chain stage; never raises, reports its status as a metric."""
    from scalekit.study.stage import execute_stage

    execute_stage(config, report=tune.report)


@dataclass(frozen=True)
class RaySettings:
    address: str | None
    env_vars: dict[str, str]


@dataclass(frozen=True)
class TrialResources:
    cpus: float
    gpus: float
    max_concurrent: int


@contextmanager
def ray_cluster(settings: RaySettings) -> Iterator[dict[str, float]]:
    """Start (or join) Ray for the ``with`` block and yield the cluster's resources (``CPU``, ``GPU``, ...);
    shut Ray down afterwards if it was started here."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=settings.address,
            logging_level=logging.ERROR,
            log_to_driver=False,
            include_dashboard=False,
            configure_logging=True,
            runtime_env={"env_vars": settings.env_vars},
            **({} if settings.address else {"num_cpus": max(os.cpu_count() or 1, 1)}),
        )
    try:
        yield {k: float(v) for k, v in ray.cluster_resources().items()}
    finally:
        if started:
            ray.shutdown()


def run_chains(searcher: ChainSearcher, resources: TrialResources, experiment_dir: Path) -> None:
    """Run every stage the searcher hands out as a Ray Tune trial, inside :func:`ray_cluster`; an error of the
    searcher's own work (e.g. a full disk under results.csv) is raised after the running trials ended."""
    trainable = tune.with_resources(run_stage_trial, {"cpu": resources.cpus, "gpu": resources.gpus})
    run_name = time.strftime("run-%Y%m%d-%H%M%S")
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=-1,
            max_concurrent_trials=resources.max_concurrent,
            trial_dirname_creator=lambda trial: trial.config["stage_id"],
            trial_name_creator=lambda trial: trial.config["stage_id"],
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=str(experiment_dir),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    tuner.fit()
    if searcher.error is not None:
        raise searcher.error
