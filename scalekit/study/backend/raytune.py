"""The ``ray`` backend (:class:`RayBackend`): one Ray Tune trial per chain stage, handed out by
:class:`ChainSearcher`, a thin Ray ``Searcher`` over a :class:`~scalekit.study.backend.StageSource` (the search,
then the retraining of its finalists). The only module that imports Ray.

Ray has no dependencies between trials, so the searcher returns a stage only once its parent completed and
nothing (Tune asks again later) while everything runnable is running. State lives in the study directory, not
in Ray: the results table, the Optuna storage and each stage's folder (a checkpoint every epoch). A rerun
therefore starts a fresh Tuner that skips completed stages, resumes interrupted ones from their last
checkpoint and continues the search where the storage left it.

A Ray started here (no address) listens on the loopback interface only and authenticates with a token of its
own (:mod:`scalekit.study.backend.ray_access`); before the first trial :func:`ray_cluster` checks every port it opened
and stops if one is reachable from the network.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray._private import ray_constants
from ray._raylet import Config  # type: ignore[attr-defined]  # Ray's compiled module ships no stub for it
from ray.tune.search import Searcher
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from scalekit._atomic import write_atomic
from scalekit.errors import ScalekitError
from scalekit.records import StudyDir

from ..engine.messages import FINISHED, NODE_KEY, StageSpec
from ..engine.planning import fits_trial
from . import BackendSettings, Nodes, StageLauncher, StageSource, TrialResources, listeners
from .ray_access import TOKEN_FILE, local_environment, write_token

log = logging.getLogger(__name__)

def alive_nodes() -> dict[str, dict[str, float]]:
    """The resources (``CPU``, ``GPU``, ...) of each alive node of the connected Ray cluster, by node id."""
    return {n["NodeID"]: {k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n["Alive"]}


def _here() -> str:
    return ray.get_runtime_context().get_node_id()


_probe = ray.remote(num_cpus=0, max_retries=0)(_here)
PROBE_TIMEOUT_S = 120.0


def _pinned(node_id: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def lost_nodes(node_ids: set[str]) -> list[str]:
    """Those of ``node_ids`` that are gone. A tiny task pinned to each node answers at once from a node that
    lives; to a lost one it fails once Ray declares the node dead (its health checks, some seconds), which
    the cluster's node table then confirms."""
    refs = {node_id: _probe.options(scheduling_strategy=_pinned(node_id)).remote() for node_id in node_ids}
    unanswered = []
    for node_id, ref in refs.items():
        try:
            ray.get(ref, timeout=PROBE_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError):
            unanswered.append(node_id)
    alive = alive_nodes()
    return sorted(node_id for node_id in unanswered if node_id not in alive)


class ChainSearcher(Searcher):
    """Forwards Ray Tune's searcher calls to a stage source, one trial per stage.

    An error of the driver's own work (writing results.csv, the Optuna storage) would be swallowed by Tune
    into a trial failure: it is kept instead, no new stage starts, and :func:`run_chains` raises it.

    A trial that errors (its process died: a stage's own errors are reports) is told to the search with the
    node it ran on when that node is no longer alive (the node it last reported from; before its first
    report, any node alive when it started and gone now), so that the stage resumes elsewhere.
    """

    def __init__(
        self, search: StageSource, launch: StageLauncher,
        nodes: Callable[[], dict[str, Any]] = alive_nodes, lost: Callable[[set[str]], list[str]] = lost_nodes,
    ) -> None:
        super().__init__()
        self.search = search
        self.launch = launch
        self.nodes = nodes
        self.lost = lost
        self._trial_stage: dict[str, str] = {}
        self._trial_nodes: dict[str, set[str]] = {}
        """Per running trial: the node it last reported from, else the nodes alive when it was handed out."""
        self.error: Exception | None = None

    def suggest(self, trial_id: str) -> dict | str | None:  # type: ignore[override]  # Tune's stub omits FINISHED
        if self.error is not None:
            return Searcher.FINISHED
        try:
            stage_id = self.search.next_stage()
            if stage_id is None or stage_id == FINISHED:
                return None if stage_id is None else Searcher.FINISHED
            self._trial_stage[trial_id] = stage_id
            self._trial_nodes[trial_id] = set(self.nodes())
            return self.launch(*self.search.locate(stage_id)).to_dict()
        except Exception as err:  # noqa: BLE001 - kept and raised by run_chains
            self._fail(err)
            return Searcher.FINISHED

    def _fail(self, err: Exception) -> None:
        log.debug("the study stops: %s", err, exc_info=True)
        if self.error is None:
            self.error = err

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get(NODE_KEY):
            self._trial_nodes[trial_id] = {result[NODE_KEY]}
        self.search.on_change()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        stage_id = self._trial_stage.pop(trial_id, None)
        nodes = self._trial_nodes.pop(trial_id, set())
        if stage_id is None:
            return
        try:
            lost = self.lost(nodes) if error else []
            self.search.stage_ended(stage_id, result, error, lost_node=", ".join(lost))
        except Exception as err:  # noqa: BLE001 - see the class docstring
            self._fail(err)

    def _state_location(self) -> dict[str, str]:
        return self.search.state_location()

    def save(self, checkpoint_path: str) -> None:
        """Ray saves searchers with its experiment; scalekit's state is the results table and Optuna storage."""
        Path(checkpoint_path).write_text(json.dumps(self._state_location()))

    def __getstate__(self) -> dict[str, str]:
        """Ray pickles the Tuner for ``Tuner.restore``, which scalekit does not use: keep where the state is."""
        return self._state_location()

    def __setstate__(self, state: dict[str, str]) -> None:
        raise RuntimeError(
            f"a scalekit study is resumed by rerunning `scalekit study run` on its study file, not by Ray's "
            f"Tuner.restore; its state is {', '.join(state.values())}"
        )


def run_stage_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: train one chain stage; never raises, reports its status as a metric."""
    from .worker import execute_stage

    execute_stage(StageSpec.from_dict(config), report=tune.report, node=ray.get_runtime_context().get_node_id())


@dataclass(frozen=True)
class RaySettings:
    address: str | None
    env_vars: dict[str, str]
    log_file: Path | None = None
    """Where Ray's and Tune's driver-side messages go (e.g. a trial's error traceback), instead of stderr,
    which a live panel owns."""
    token_file: Path | None = None
    """Where a Ray started here keeps its authentication token while it runs (default: a temporary folder)."""


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


class RayExposedError(ScalekitError):
    """The Ray started for a study listens on an address other machines can reach; it was stopped."""


@contextmanager
def ray_cluster(settings: RaySettings) -> Iterator[dict[str, dict[str, float]]]:
    """Start (or join) Ray for the ``with`` block and yield each alive node's resources (``CPU``, ``GPU``, ...)
    by node id; shut Ray down afterwards if it was started here.

    A Ray started here (no ``settings.address``) is local-only and token-authenticated, and raises
    :class:`RayExposedError` (after stopping it) if a port it opened is bound to anything but loopback."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    started = not ray.is_initialized()
    local = started and settings.address is None
    with _local_only(settings.token_file) if local else contextlib.nullcontext():
        before = set(listeners.listening(listeners.descendants(os.getpid()))) if local else set()
        if started:
            _start_ray(settings)
        try:
            if local:
                _check_loopback(before)
            with _ray_logs_to(settings.log_file):  # after ray.init, which sets up the ray loggers' handlers
                yield alive_nodes()
        finally:
            if started:
                ray.shutdown()


@contextmanager
def _local_only(token_file: Path | None) -> Iterator[None]:
    """For the block: the environment of :func:`~scalekit.study.backend.ray_access.local_environment` with a new token
    in ``token_file`` (removed afterwards), in this process (Ray reads its settings once: they are read again
    here, as Ray's own token set-up does) and in every process it starts."""
    with contextlib.ExitStack() as stack:
        if token_file is None:
            token_file = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scalekit-ray-"))) / TOKEN_FILE
        stack.callback(token_file.unlink, missing_ok=True)
        write_token(token_file)
        environment = local_environment(token_file)
        stack.callback(Config.initialize, "")
        saved_flag = ray_constants.ENABLE_RAY_CLUSTER
        stack.callback(setattr, ray_constants, "ENABLE_RAY_CLUSTER", saved_flag)
        saved = {key: os.environ.get(key) for key in environment}
        stack.callback(_restore_environment, saved)
        os.environ.update(environment)
        ray_constants.ENABLE_RAY_CLUSTER = False  # read by Ray when it picks the node's address
        Config.initialize("")
        yield


def _restore_environment(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _check_loopback(before: set[listeners.Listener]) -> None:
    """Raise :class:`RayExposedError` if a port opened since ``before`` by this process or one it started is
    bound to anything but loopback (Linux; elsewhere there is nothing to read and nothing is checked)."""
    opened = [found for found in listeners.listening(listeners.descendants(os.getpid())) if found not in before]
    exposed = [found.describe() for found in opened if not found.loopback]
    log.debug("Ray listens on %s", ", ".join(found.describe() for found in opened))
    if exposed:
        raise RayExposedError(
            f"the Ray started for this study listens on addresses other machines can reach ({', '.join(exposed)}), "
            f"so it was stopped: Ray {ray.__version__} ignores its local-only setting; install a Ray whose "
            "local node listens on 127.0.0.1, or run the study on a cluster you secured (backend.address)"
        )


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
        num_cpus=None if settings.address else max(os.cpu_count() or 1, 1),
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


class SharedStorageError(ScalekitError):
    """A node of the Ray cluster that will run trials does not see the study directory or the nnU-Net folders."""


NODE_CHECK_FILE = ".scalekit-node-check"


def _what_is_missing(token_file: str, token: str, folders: list[str]) -> tuple[str, list[str]]:
    """On a node: its host name and what of the study it does not see."""
    missing = []
    try:
        if Path(token_file).read_text(encoding="utf-8") != token:
            missing.append(f"{Path(token_file).parent} (another directory at that path)")
    except OSError:
        missing.append(str(Path(token_file).parent))
    return socket.gethostname(), missing + [folder for folder in folders if not Path(folder).is_dir()]


_remote_check = ray.remote(num_cpus=0, max_retries=0)(_what_is_missing)


def node_views(node_ids: list[str], token_file: Path, token: str, folders: list[str]) -> dict[str, tuple]:
    """Run :func:`_what_is_missing` on each node (pinned to it), by node id."""
    refs = {
        node_id: _remote_check.options(scheduling_strategy=_pinned(node_id)).remote(str(token_file), token, folders)
        for node_id in node_ids
    }
    # Ray's ObjectRef stub is invariant, so a ref of a tuple is not one of an iterable to mypy:
    return {node_id: tuple(ray.get(ref, timeout=120)) for node_id, ref in refs.items()}  # type: ignore[arg-type]


def check_shared_storage(node_ids: list[str], study_dir: Path, folders: list[Path]) -> None:
    """Before the first trial: every node in ``node_ids`` must see ``study_dir`` (a token file the driver
    writes is read back there) and ``folders`` at the driver's paths; else :class:`SharedStorageError` names
    the first node that does not and what it misses."""
    token_file = study_dir / NODE_CHECK_FILE
    token = uuid.uuid4().hex
    write_atomic(token_file, token)
    try:
        views = node_views(node_ids, token_file, token, [str(folder) for folder in folders])
    finally:
        token_file.unlink(missing_ok=True)
    for node_id, (host, missing) in views.items():
        if missing:
            raise SharedStorageError(
                f"Ray node {node_id} on {host} does not see {', '.join(missing)}; every node that runs trials "
                "needs the study directory and the nnU-Net folders on shared storage at the driver's paths"
            )


class RayBackend:
    """Each stage a Ray Tune trial, on a Ray started for the study (local-only, with a token of its own) or on
    the cluster at ``settings.address``; Ray's driver-side messages go to ``<study>/ray/driver.log``."""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings

    def session(self) -> contextlib.AbstractContextManager[Nodes]:
        s = self.settings
        ray_dir = StudyDir(s.study_dir).ray
        return ray_cluster(RaySettings(s.address, s.env_vars, ray_dir / "driver.log", ray_dir / TOKEN_FILE))

    def check_nodes(self, nodes: Nodes, resources: TrialResources, folders: list[Path],
                    on_step: Callable[[str], None]) -> None:
        """On a cluster, every node that can hold a trial must see the study directory and ``folders``."""
        if self.settings.address is None:
            return
        workers = [node_id for node_id, free in nodes.items() if fits_trial(free, resources.cpus, resources.gpus)]
        on_step(f"checking that the {len(workers)} Ray node(s) that run trials see the study")
        check_shared_storage(workers, self.settings.study_dir, folders)

    def run(self, source: StageSource, launch: StageLauncher, resources: TrialResources) -> None:
        run_chains(ChainSearcher(source, launch), resources, StudyDir(self.settings.study_dir).ray)
