"""The ``local`` backend: each stage in a worker process of its own on this machine, without Ray.

For one machine where Ray is unwanted or unavailable. Up to ``max_concurrent`` workers run at once, each a
fresh (spawned) Python process with the study's environment, running the same worker as Ray
(:func:`~scalekit.study.backend.worker.execute_stage`); with GPUs each worker is given its own (whole GPUs per
trial; a fractional request shares every GPU). Nothing listens on any port: the workers report to the driver
through a pipe-backed queue. A worker whose process dies is reported as such (``error``), like a Ray trial whose
process died; a driver killed or interrupted ends its workers, and a rerun resumes every stage from its last
checkpoint. A Ctrl-C is taken between two reports, never in the middle of recording one (the results table, the
Optuna storage): the driver notes it and stops at the next poll.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from ..engine.messages import FINISHED, STATUS_KEY, StageSpec
from . import BackendSettings, Nodes, StageLauncher, StageSource, TrialResources

log = logging.getLogger(__name__)

POLL_S = 0.2
NODE = "local"


def _work(spec: dict[str, Any], key: str, reports: Any, env: dict[str, str], devices: str | None) -> None:
    """A worker process: the study's environment, its GPUs, then the stage; every report goes to the driver. A
    Ctrl-C is the driver's to take (it ends the workers at its next poll), not the worker's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(env)
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    from .worker import execute_stage

    execute_stage(StageSpec.from_dict(spec), report=lambda result: reports.put((key, result)),
                  node=f"{NODE}:{socket.gethostname()}")


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


@contextmanager
def _interrupt_at_polls() -> Iterator[threading.Event]:
    """SIGINT sets the event instead of raising wherever the driver is; the previous handler is back afterwards.
    Where Python's own handler is not the one in place (SIGINT ignored, as in a background job, or a handler of
    the caller's), and outside the main thread (where signals cannot be caught), nothing changes."""
    interrupted = threading.Event()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield interrupted
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _Running:
    process: BaseProcess
    devices: list[int] = field(default_factory=list)
    last: dict[str, Any] | None = None


class LocalBackend:
    """Worker processes on this machine (see the module docstring)."""

    def __init__(self, settings: BackendSettings) -> None:
        if settings.address is not None:
            raise ValueError("the local backend runs on this machine only: remove the cluster address")
        self.settings = settings
        self._gpus = 0

    @contextmanager
    def session(self) -> Iterator[Nodes]:
        self._gpus = _gpu_count()
        yield {NODE: {"CPU": float(os.cpu_count() or 1), "GPU": float(self._gpus)}}

    def check_nodes(self, nodes: Nodes, resources: TrialResources, folders: list[Path],
                    on_step: Callable[[str], None]) -> None:
        """One machine: it sees its own folders."""

    def run(self, source: StageSource, launch: StageLauncher, resources: TrialResources) -> None:
        with _interrupt_at_polls() as interrupted:
            self._run(source, launch, resources, interrupted)

    def _run(self, source: StageSource, launch: StageLauncher, resources: TrialResources,
             interrupted: threading.Event) -> None:
        context = multiprocessing.get_context("spawn")
        reports = context.Queue()
        running: dict[str, _Running] = {}
        free = list(range(self._gpus))
        whole = int(resources.gpus) if resources.gpus >= 1 else 0
        finished = False
        try:
            while not finished or running:
                if interrupted.is_set():
                    raise KeyboardInterrupt
                while not finished and len(running) < resources.max_concurrent and len(free) >= whole:
                    key = source.next_stage()
                    if key is None:
                        break
                    if key == FINISHED:
                        finished = True
                        break
                    devices, free = free[:whole], free[whole:]
                    spec = launch(*source.locate(key)).to_dict()
                    # Not daemonic: nnU-Net's data augmentation starts processes of its own, which a daemonic
                    # process may not; _stop ends every worker the driver leaves.
                    process = context.Process(
                        target=_work, name=f"scalekit-{key}", daemon=False,
                        args=(spec, key, reports, self.settings.env_vars,
                              ",".join(map(str, devices)) if whole else None))
                    process.start()
                    running[key] = _Running(process, devices)
                self._collect(source, reports, running)
                for key, worker in list(running.items()):
                    if worker.process.is_alive():
                        continue
                    if interrupted.is_set():  # a worker that the Ctrl-C ended is interrupted, not failed
                        raise KeyboardInterrupt
                    worker.process.join()
                    self._collect(source, reports, running, wait=False)
                    del running[key]
                    free = sorted(free + worker.devices)
                    ended = worker.last is not None and STATUS_KEY in worker.last
                    if not ended and worker.process.exitcode:
                        log.warning("the worker of %s died (exit code %s)", key, worker.process.exitcode)
                    source.stage_ended(key, worker.last, error=not ended and bool(worker.process.exitcode))
        finally:
            self._stop(source, running)

    @staticmethod
    def _collect(source: StageSource, reports: Any, running: dict[str, _Running], wait: bool = True) -> None:
        """Take every report that arrived (waiting up to :data:`POLL_S` for the first one)."""
        timeout = POLL_S if wait else 0.0
        while True:
            try:
                key, result = reports.get(timeout=timeout) if timeout else reports.get_nowait()
            except queue.Empty:
                return
            timeout = 0.0
            if key in running:
                running[key].last = result
                source.on_change()

    @staticmethod
    def _stop(source: StageSource, running: dict[str, _Running]) -> None:
        """End the workers still running (the driver was interrupted): each stage waits again."""
        for key, worker in running.items():
            with contextlib.suppress(OSError):
                worker.process.kill()
            worker.process.join(timeout=30)
            source.stage_ended(key, None)
