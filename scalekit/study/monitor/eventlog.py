"""The study driver's event log: turns what happens into :mod:`~scalekit.study.monitor.events`, appends each as one line
to ``<study>/study.log`` (append-only: a kill loses at most the last line) and, when asked, echoes it on a
stream (stdout when it is not a terminal). The live panel reads the current step, the last epoch of each
running stage and the latest lines from here.

Stage starts and ends are read off the results table (a status leaving or entering ``running``) on every
change the search reports; the epochs are read from each running stage's progress file at the same moments.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from scalekit.records import ResultsTable, StageRecord, StudyDir

from .events import (
    PROGRESS_FILE,
    DataStep,
    EpochDone,
    Event,
    StageFinished,
    StageStarted,
    format_line,
    read_progress,
)

RECENT_LINES = 4


@dataclass(frozen=True)
class LatestEpoch:
    """The last epoch of a running stage and when the driver read it (``time.monotonic``)."""

    event: EpochDone
    seen: float

    def eta_now(self) -> float:
        return max(0.0, self.event.eta_s - (time.monotonic() - self.seen))


def stage_origin(record: StageRecord, epochs_before: int = 0) -> str:
    """How a stage handed out now starts: ``from scratch``, ``upkern from <parent>``, ``continue from <parent>``,
    or, when it trained before (``epochs_before`` epochs in its progress file, or the rung it was scored at),
    ``resumed from its rung-N checkpoint`` (promoted from rung N) / ``resumed from its epoch-N checkpoint``."""
    done = max(epochs_before, record.epochs or 0)
    if done:
        return f"resumed from its {'rung' if str(done) in record.dice_curve else 'epoch'}-{done} checkpoint"
    return f"{record.init} from {record.parent_stage}" if record.parent_stage else "from scratch"


def stage_started(record: StageRecord, epochs_before: int = 0) -> StageStarted:
    return StageStarted(record.stage_id, record.name, record.target_epochs,
                        stage_origin(record, epochs_before))


def stage_finished(record: StageRecord) -> StageFinished:
    return StageFinished(record.stage_id, record.status, record.mean_dice, record.wall_time_s, record.epochs,
                         record.reason)


class EventLog:
    """Writes the study's events to ``study.log`` (and ``echo``); thread-safe."""

    def __init__(self, study_dir: Path, echo: TextIO | None = None) -> None:
        self.path = StudyDir(Path(study_dir)).log
        self.echo = echo
        self.recent: deque[str] = deque(maxlen=RECENT_LINES)
        self.step: DataStep | None = None
        self.step_started = time.monotonic()
        self.epochs: dict[str, LatestEpoch] = {}
        self._table: ResultsTable | None = None
        self._stages_dir = StudyDir(Path(study_dir)).stages
        self._status: dict[str, str] = {}
        self._offsets: dict[str, int] = {}
        self._lock = threading.RLock()

    def emit(self, event: Event) -> str:
        line = format_line(event, time.time())
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
            if self.echo is not None:
                print(line, file=self.echo, flush=True)
            self.recent.append(line)
        return line

    def latest_lines(self) -> list[str]:
        """The last few lines written (a copy: the panel renders from another thread)."""
        with self._lock:
            return list(self.recent)

    def data_step(self, step: str) -> None:
        """A step before training (shown as the panel's current step until the first stage starts)."""
        with self._lock:
            self.step = DataStep(step)
            self.step_started = time.monotonic()
            self.emit(self.step)

    def watch(self, table: ResultsTable, stages_dir: Path) -> None:
        """Follow ``table`` from now on: its current statuses are the starting point (no events for them)."""
        with self._lock:
            self._table = table
            self._stages_dir = Path(stages_dir)
            self._status = {r.stage_id: r.status for r in table.records()}

    def poll(self) -> None:
        """Emit what changed since the last call: stages started, their new epochs, stages ended."""
        if self._table is None:
            return
        with self._lock:
            for record in self._table.records():
                before = self._status.get(record.stage_id)
                self._status[record.stage_id] = record.status
                running = record.status == "running"
                if running and before != "running":
                    self.step = None
                    # the epochs of earlier sessions are not news: read on from after them
                    earlier, self._offsets[record.stage_id] = read_progress(self._progress(record.stage_id))
                    self.emit(stage_started(record, earlier[-1].epoch if earlier else 0))
                if running or before == "running":
                    self._read_epochs(record.stage_id)
                if before == "running" and not running:
                    self.epochs.pop(record.stage_id, None)
                    self.emit(stage_finished(record))

    def _progress(self, stage_id: str) -> Path:
        return self._stages_dir / stage_id / PROGRESS_FILE

    def _read_epochs(self, stage_id: str) -> None:
        events, self._offsets[stage_id] = read_progress(self._progress(stage_id), self._offsets.get(stage_id, 0))
        for event in events:
            self.epochs[stage_id] = LatestEpoch(event, time.monotonic())
            self.emit(event)
