"""Where a study's stages train: a backend runs the stages a :class:`StageSource` hands out, one worker per stage,
and tells the source how each ended.

Two backends are registered (:data:`BACKENDS`): ``ray`` (:mod:`.raytune`: Ray Tune on this machine or a cluster,
the only module that imports Ray) and ``local`` (:mod:`.local`: a pool of worker processes on this machine, no
Ray). Both run the same worker (:func:`.worker.execute_stage`), so a study gives the same results table on
either. A new backend is one module with a class that has :class:`Backend`'s three methods, and its line in
:data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scalekit.errors import ScalekitError

from ..engine.chain import ChainPlanner
from ..engine.messages import StageSpec

Nodes = dict[str, dict[str, float]]
"""Each node that can run trials, by id, with its resources (``CPU``, ``GPU``, ...)."""
StageLauncher = Callable[[ChainPlanner, str, "int | None"], StageSpec]
"""Builds the spec of a stage from its planner, id and seed (None: the study's), when it is handed out."""


class StageSource(Protocol):
    """What hands stages out: the search (:class:`~scalekit.study.engine.search.ChainSearch`) and the retraining of
    its finalists (:class:`~scalekit.study.engine.confirm.SeedRuns`). A key is what the backend sees of a stage."""

    def next_stage(self) -> str | None:
        """The key of the next stage to train, None while the rest waits on running ones, or FINISHED."""

    def stage_ended(self, key: str, result: dict[str, Any] | None, error: bool = False,
                    lost_node: str = "") -> None:
        """A stage's worker ended: its last report (None: it reported nothing), whether its process died, and
        the node that was lost with it, if any."""

    def on_change(self) -> None:
        """A running stage reported an epoch."""

    def locate(self, key: str) -> tuple[ChainPlanner, str, int | None]:
        """The planner, stage id and seed (None: the study's) of a key."""

    def state_location(self) -> dict[str, str]:
        """Where the source keeps its state (for messages)."""


@dataclass(frozen=True)
class TrialResources:
    """What one stage's worker takes, and how many run at once."""

    cpus: float
    gpus: float
    max_concurrent: int


@dataclass(frozen=True)
class BackendSettings:
    """What every backend is started with."""

    study_dir: Path
    env_vars: dict[str, str] = field(default_factory=dict)
    """Set in every worker process."""
    address: str | None = None
    """A cluster to join (Ray: ``auto`` or ``ray://host:port``); None: this machine."""


class Backend(Protocol):
    def session(self) -> AbstractContextManager[Nodes]:
        """Start (or join) the backend for the ``with`` block and yield the nodes that can run trials."""

    def check_nodes(self, nodes: Nodes, resources: TrialResources, folders: list[Path],
                    on_step: Callable[[str], None]) -> None:
        """Before the first stage: every node that will run one sees the study and ``folders``."""

    def run(self, source: StageSource, launch: StageLauncher, resources: TrialResources) -> None:
        """Train every stage ``source`` hands out until it says FINISHED; raise an error of the source's own
        work (e.g. a full disk under results.csv) once the running stages ended."""


BACKENDS = {"ray": ("scalekit.study.backend.raytune", "RayBackend"),
            "local": ("scalekit.study.backend.local", "LocalBackend")}
"""Backend name -> (module, class): imported only when that backend is used."""


def make_backend(name: str, settings: BackendSettings) -> Backend:
    """The backend called ``name``; an unknown name is an error, naming the known ones."""
    try:
        module, cls = BACKENDS[name]
    except KeyError:
        raise ScalekitError(f"backend {name!r} is unknown; use one of {', '.join(BACKENDS)}") from None
    backend: Backend = getattr(importlib.import_module(module), cls)(settings)
    return backend
