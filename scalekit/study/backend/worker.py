"""One chain stage as a unit of work: the spec the driver hands to Ray, and its execution in a worker.

``stage_launcher`` turns a planned stage into a :class:`~scalekit.study.engine.messages.StageSpec` (architecture,
parent checkpoint for UpKern, training budget, folders). ``execute_stage`` runs in the Ray worker: it trains
through ``scalekit.nnunet.train_stage`` and always ends with one :class:`~scalekit.study.engine.messages.StageReport`:
``completed`` with the scores, ``failed`` (non-finite loss, any error: the reason and a traceback file), or
``infeasible`` (CUDA out of memory, with the memory figure). It never raises, so one bad stage never stops a
study. After each epoch it appends a line to the stage's ``progress.jsonl`` (read by the driver's event log);
the worker's own output (prints, warnings, logging) goes to the stage's ``stage.log``, never to the driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from scalekit.studyfile import StudyConfig

from ..engine.chain import ChainPlanner
from ..monitor.events import STAGE_LOG, ProgressWriter
from ..engine.messages import NODE_KEY, StageReport, StageSpec

log = logging.getLogger(__name__)

ERROR_LOG = "error.log"
DRIVER_POLL_S = 0.5


def stage_launcher(
    config: StudyConfig, prepared: Any, device: str, amp: str | None
) -> Callable[[ChainPlanner, str, int | None], StageSpec]:
    """A function that builds the spec of a stage from the study settings (``seed``: the study's when None)."""
    t = config.training

    def launch(planner: ChainPlanner, stage_id: str, seed: int | None = None) -> StageSpec:
        record = planner.table[stage_id]
        parent = planner.parent_checkpoint(record)
        return StageSpec(
            stage_id=stage_id,
            output_dir=str(planner.stage_dir(stage_id)),
            arch=record.config,
            init_from=None if parent is None else str(parent),
            prepared=prepared.to_dict(),
            fold=config.dataset.fold,
            batch_size=record.batch_size or config.dataset.batch_size,
            epochs=t.epochs,
            train_until=record.target_epochs or t.epochs,
            iterations_per_epoch=t.iterations_per_epoch,
            val_iterations=t.val_iterations,
            initial_lr=config.initial_lr(record.arch),
            amp=amp,
            device=device,
            seed=t.seed if seed is None else seed,
            nsd_tolerance_mm=t.nsd_tolerance_mm,
            driver_host=socket.gethostname(),
            driver_pid=os.getpid(),
        )

    return launch


def _cuda_peak() -> int | None:
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch_driver(host: str, pid: int, interval_s: float = DRIVER_POLL_S) -> None:
    """End this worker soon after the study driver that launched it dies (a SIGKILL, a lost terminal).

    Ray itself reaps orphaned workers only after several seconds, during which a rerun of the study could
    already be training the same stage. On another host than the driver's the check is left to Ray.
    """
    if not pid or host != socket.gethostname():
        return

    def watch() -> None:
        while _alive(pid):
            time.sleep(interval_s)
        log.warning("the study driver (PID %s) is gone: ending this stage worker", pid)
        for child in multiprocessing.active_children():
            child.kill()
        os._exit(1)

    threading.Thread(target=watch, name="scalekit-driver-watch", daemon=True).start()


def _request(spec: StageSpec) -> Any:
    from scalekit import nnunet
    from scalekit.networks import config_from_dict

    return nnunet.StageRequest(
        prepared=nnunet.PreparedDataset.from_dict(spec.prepared),
        fold=spec.fold,
        arch=config_from_dict(spec.arch),
        epochs=spec.epochs,
        train_until=spec.train_until,
        iterations_per_epoch=spec.iterations_per_epoch,
        val_iterations=spec.val_iterations,
        initial_lr=spec.initial_lr,
        init_from=None if spec.init_from is None else Path(spec.init_from),
        output_dir=Path(spec.output_dir),
        resume=True,
        amp=spec.amp,
        device=spec.device,
        seed=spec.seed,
        nsd_tolerance_mm=spec.nsd_tolerance_mm,
        batch_size=spec.batch_size,
    )


def _train(spec: StageSpec, on_epoch: Callable[[dict[str, Any]], None]) -> StageReport:
    """Train the stage and say how it ended; never raises."""
    import torch

    from scalekit import nnunet

    output_dir = Path(spec.output_dir)
    request = _request(spec)
    try:
        try:
            outcome = nnunet.train_stage(request, on_epoch=on_epoch)
        except nnunet.StageMismatchError as err:
            log.warning("%s; starting the stage over", err)
            outcome = nnunet.train_stage(dataclasses.replace(request, resume=False), on_epoch=on_epoch)
    except nnunet.NonFiniteLossError as err:
        return StageReport("failed", str(err))
    except torch.OutOfMemoryError:
        peak = _cuda_peak()
        figure = f" at {peak / 2**30:.2f} GB allocated" if peak else ""
        return StageReport("infeasible", f"CUDA out of memory{figure} ({spec.device}, batch {spec.batch_size})",
                           peak_memory_bytes=peak, memory_method="measured" if peak else "")
    except Exception as err:  # noqa: BLE001 - every error becomes the stage's recorded reason
        (output_dir / ERROR_LOG).write_text(traceback.format_exc())
        log.error("stage %s failed: %s", spec.stage_id, err)
        return StageReport("failed", f"{type(err).__name__}: {err} (traceback: {output_dir / ERROR_LOG})")
    peak = _cuda_peak()
    return StageReport(
        "completed", mean_dice=outcome.mean_dice, per_class_dice=list(outcome.per_class_dice),
        mean_nsd=outcome.mean_nsd, per_class_nsd=list(outcome.per_class_nsd), epochs=outcome.epochs_total,
        wall_time_s=round(outcome.wall_time_s, 2),
        checkpoint=outcome.checkpoint.relative_to(output_dir.resolve()).as_posix(),
        peak_memory_bytes=peak, memory_method="measured" if peak else "",
        dice_curve=dict(outcome.dice_curve), case_dice=list(outcome.case_dice),
        case_curve={k: list(v) for k, v in outcome.case_curve.items()},
    )


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C-level output and child processes
    too) and the ``scalekit`` loggers' INFO records to ``path`` (appended) for the ``with`` block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    logger = logging.getLogger("scalekit")
    level = logger.level
    with open(path, "a", encoding="utf-8", buffering=1) as f:
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def execute_stage(spec: StageSpec, report: Callable[[dict[str, Any]], None], node: str = "") -> None:
    """Train one stage (resuming from its folder's last checkpoint) and report how it ended, as the last of
    its reports (the epoch reports come before it, each after its line in the progress file). ``node``, the
    Ray node id this runs on, goes into every progress line and report."""
    watch_driver(spec.driver_host, spec.driver_pid)
    output_dir = Path(spec.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    progress = ProgressWriter(output_dir, spec.stage_id, spec.train_until, node)

    def on_epoch(metrics: dict[str, Any]) -> None:
        progress.append(metrics)
        report({**metrics, NODE_KEY: node})

    started = time.monotonic()
    with output_to(output_dir / STAGE_LOG):
        report(_train(spec, on_epoch).with_values(node=node).to_dict())
        log.info("stage %s ended after %.1f s", spec.stage_id, time.monotonic() - started)
