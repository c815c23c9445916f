"""What a running study tells its user: typed events, one plain line each, and the stage progress file.

The driver sees the data steps, each stage's start and end and the study's end. The epochs happen in the stage
worker, a Ray process that may run on another host of a shared filesystem: after each epoch it appends one JSON
line to its stage folder's ``progress.jsonl`` (flushed, synced and closed), and the driver reads the lines added
since the stage started. A worker killed mid-write leaves a partial last line: the reader leaves it unread, and
the next session's writer cuts it off before it appends.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scalekit.records import Status

StudyState = Literal["finished", "none-completed", "interrupted"]
"""How a run of a study ended."""

PROGRESS_FILE = "progress.jsonl"
STAGE_LOG = "stage.log"
"""The stage worker's own output (prints, warnings, logging), in its stage folder."""
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def describe_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.4 h``: a duration at the precision a person reads it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class DataStep:
    """A step before the stages train: generating the demo data, checking or preparing the dataset, Ray."""

    step: str

    def describe(self) -> str:
        return self.step


@dataclass(frozen=True)
class StageStarted:
    """A stage was handed to a worker, to train to ``target_epochs`` (a rung, or the full budget)."""

    stage_id: str
    name: str
    """The stage's name (``a k5``, ``ResEnc M``: :attr:`~scalekit.records.StageRecord.name`)."""
    target_epochs: int | None
    origin: str
    """``from scratch``, ``upkern from <parent>`` / ``continue from <parent>``, or ``resumed from its rung-N
    checkpoint`` (see :func:`~scalekit.study.monitor.eventlog.stage_origin`)."""

    def describe(self) -> str:
        target = f", to {self.target_epochs} epochs" if self.target_epochs else ""
        return f"stage {self.stage_id} started: {self.name} {self.origin}{target}"


@dataclass(frozen=True)
class EpochDone:
    """An epoch of a training stage ended (``epoch`` counts from 1, over every session of the stage)."""

    stage_id: str
    epoch: int
    target: int
    train_loss: float
    val_dice: float | None
    """nnU-Net's pseudo Dice on the epoch's validation patches, when it validated."""
    epoch_seconds: float
    eta_s: float
    """Until the stage reaches ``target``, at this session's mean epoch time."""
    node: str = ""
    """The Ray node that trained the epoch."""

    def describe(self) -> str:
        dice = f" val pseudo-Dice {self.val_dice:.3f}" if self.val_dice is not None else ""
        return (f"stage {self.stage_id} epoch {self.epoch}/{self.target} loss {self.train_loss:.3f}{dice} "
                f"{self.epoch_seconds:.1f} s/epoch ETA {describe_duration(self.eta_s)}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, line: str) -> EpochDone | None:
        """The event of one progress line, or None when the line is not one (garbage is skipped, not raised)."""
        try:
            data = json.loads(line)
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in names})
        except (ValueError, TypeError):
            return None


@dataclass(frozen=True)
class StageFinished:
    """A stage's training session ended: ``completed``, ``paused`` at a rung, ``failed``, ``infeasible``,
    ``stopped``, or ``pending`` again (interrupted; a rerun resumes it)."""

    stage_id: str
    status: Status
    mean_dice: float | None
    wall_time_s: float | None
    epochs: int | None
    reason: str = ""

    def describe(self) -> str:
        head = f"stage {self.stage_id} {'interrupted' if self.status == 'pending' else self.status}"
        if self.mean_dice is None:
            return f"{head}: {self.reason}" if self.reason else head
        epochs = f" after {self.epochs} epochs" if self.epochs else ""
        took = f" in {describe_duration(self.wall_time_s)}" if self.wall_time_s is not None else ""
        return f"{head}: Dice {self.mean_dice:.4f}{epochs}{took}"


@dataclass(frozen=True)
class StudyFinished:
    """The run ended: ``finished``, ``none-completed`` or ``interrupted``, with its stage counts, best stage and
    the compute spent."""

    state: StudyState
    counts: Mapping[str, int]
    best_stage: str = ""
    best_dice: float | None = None
    spent: str = ""

    def describe(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()))
        best = f"; best Dice {self.best_dice:.4f} ({self.best_stage})" if self.best_dice is not None else ""
        spent = f"; spent {self.spent}" if self.spent else ""
        return f"study {self.state}: {counts}{best}{spent}"


Event = DataStep | StageStarted | EpochDone | StageFinished | StudyFinished


def format_line(event: Event, when: float) -> str:
    """The event as one plain line, stamped with the local time ``when`` (seconds since the epoch)."""
    return f"{time.strftime(TIME_FORMAT, time.localtime(when))} {event.describe()}"


class ProgressWriter:
    """The worker's side of a stage's progress file: one :class:`EpochDone` line appended per epoch."""

    def __init__(self, stage_dir: Path, stage_id: str, target: int, node: str = "") -> None:
        self.path = Path(stage_dir) / PROGRESS_FILE
        self.stage_id = stage_id
        self.target = target
        self.node = node
        self._seconds: list[float] = []
        _drop_partial_line(self.path)

    def append(self, metrics: Mapping[str, Any]) -> EpochDone:
        """Record an epoch from the trainer's metrics (``epoch`` counted from 0, ``train_loss``,
        ``mean_fg_dice``, ``epoch_seconds``)."""
        epoch = int(metrics["epoch"]) + 1
        seconds = float(metrics["epoch_seconds"])
        self._seconds.append(seconds)
        dice = float(metrics.get("mean_fg_dice", math.nan))
        event = EpochDone(
            stage_id=self.stage_id, epoch=epoch, target=self.target, train_loss=float(metrics["train_loss"]),
            val_dice=dice if math.isfinite(dice) else None, epoch_seconds=round(seconds, 3),
            eta_s=round(sum(self._seconds) / len(self._seconds) * max(0, self.target - epoch), 1),
            node=self.node,
        )
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(event.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        return event


def _drop_partial_line(path: Path) -> None:
    """Cut a partial last line (a session killed mid-write) so that the next line starts on its own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def read_progress(path: Path, offset: int = 0) -> tuple[list[EpochDone], int]:
    """The epochs a progress file holds after byte ``offset``, and the offset to read on from.

    Only complete lines count: a partial last line (being written, or left by a killed worker) is left unread,
    and a line that is not an epoch event is skipped. A file shorter than ``offset`` (started over) is read
    from its beginning.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < offset:
                offset = 0
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], 0
    complete = data[: data.rfind(b"\n") + 1]
    events = [EpochDone.from_json(line) for line in complete.decode("utf-8", "replace").splitlines()]
    return [e for e in events if e is not None], offset + len(complete)

