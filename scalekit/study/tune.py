"""Ray Tune runs the UpKern chains: one trial per chain stage, handed out by :class:`ChainSearcher`, a thin
Ray ``Searcher`` over :class:`~scalekit.study.search.ChainSearch`. The only module that imports Ray.

Ray has no dependencies between trials, so the searcher returns a stage only once its parent completed and
nothing (Tune asks again later) while everything runnable is running. State lives in the study directory, not
in Ray: the results table, the Optuna storage and each stage's folder (a checkpoint every epoch). A rerun
therefore starts a fresh Tuner that skips completed stages, resumes interrupted ones from their last
checkpoint and continues the search where the storage left it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search import Searcher

from .chain import ChainPlanner
from .messages import StageSpec
from .search import FINISHED, ChainSearch

log = logging.getLogger(__name__)

StageLauncher = Callable[[ChainPlanner, str], StageSpec]
"""Builds the spec of a stage (called when the searcher hands the stage out)."""


class ChainSearcher(Searcher):
    """Forwards Ray Tune's searcher calls to a :class:`ChainSearch`, one trial per stage.

    An error of the driver's own work (writing results.csv, the Optuna storage) would be swallowed by Tune
    into a trial failure: it is kept instead, no new stage starts, and :func:`run_chains` raises it.
    """

    def __init__(self, search: ChainSearch, launch: StageLauncher) -> None:
        super().__init__()
        self.search = search
        self.launch = launch
        self._trial_stage: dict[str, str] = {}
        self.error: Exception | None = None

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.error is not None:
            return Searcher.FINISHED
        try:
            stage_id = self.search.next_stage()
            if stage_id is None or stage_id == FINISHED:
                return None if stage_id is None else Searcher.FINISHED
            self._trial_stage[trial_id] = stage_id
            return self.launch(self.search.planner, stage_id).to_dict()
        except Exception as err:  # noqa: BLE001 - kept and raised by run_chains
            self._fail(err)
            return Searcher.FINISHED

    def _fail(self, err: Exception) -> None:
        log.debug("the study stops: %s", err, exc_info=True)
        if self.error is None:
            self.error = err

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.search.on_change()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        stage_id = self._trial_stage.pop(trial_id, None)
        if stage_id is None:
            return
        try:
            self.search.stage_ended(stage_id, result, error)
        except Exception as err:  # noqa: BLE001 - see the class docstring
            self._fail(err)

    def _state_location(self) -> dict[str, str]:
        return {"results": str(self.search.planner.table.path), "optuna_storage": self.search.settings.storage}

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



def run_stage_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: train one chain stage; never raises, reports its status as a metric."""
    from .stage import execute_stage

    execute_stage(StageSpec.from_dict(config), report=tune.report)


@dataclass(frozen=True)
class RaySettings:
    address: str | None
    env_vars: dict[str, str]
    log_file: Path | None = None
    """Where Ray's and Tune's driver-side messages go (e.g. a trial's error traceback), instead of stderr,
    which a live panel owns."""


@contextmanager
def _ray_logs_to(path: Path | None) -> Iterator[None]:
    """Send the ``ray`` loggers' records to ``path`` (their console handlers off) for the ``with`` block."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("ray")
    saved = list(logger.handlers), logger.propagate
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.handlers, logger.propagate = [handler], False
    try:
        yield
    finally:
        handler.close()
        logger.handlers, logger.propagate = saved


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
        _start_ray(settings)
    try:
        with _ray_logs_to(settings.log_file):  # after ray.init, which sets up the ray loggers' handlers
            yield {k: float(v) for k, v in ray.cluster_resources().items()}
    finally:
        if started:
            ray.shutdown()


def _start_ray(settings: RaySettings) -> None:
    # Without an address, a new Ray on this machine: plain ray.init() would join a cluster that `ray start`
    # left running here (it records itself in /tmp/ray/ray_current_cluster), which the study never asked for.
    ray.init(
        address=settings.address or "local",
        logging_level=logging.ERROR,
        log_to_driver=False,
        include_dashboard=False,
        configure_logging=True,
        runtime_env={"env_vars": settings.env_vars},
        **({} if settings.address else {"num_cpus": max(os.cpu_count() or 1, 1)}),
    )


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
