"""Study events: their plain lines, the stage progress file (a killed writer's partial line), the event log."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

from rich.console import Console

from scalekit.records import ResultsTable, StageRecord
from scalekit.study.monitor.eventlog import EventLog
from scalekit.study.monitor.events import (
    PROGRESS_FILE,
    EpochDone,
    ProgressWriter,
    StageFinished,
    StageStarted,
    StudyFinished,
    format_line,
    read_progress,
)
from scalekit.study.monitor.progress import StudyProgress

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "


def metrics(epoch: int, loss: float, seconds: float = 30.0) -> dict:
    return {"epoch": epoch, "train_loss": loss, "mean_fg_dice": 0.5, "epoch_seconds": seconds}


def test_event_lines() -> None:
    when = time.mktime((2026, 12, 1, 16, 20, 5, 0, 0, -1))
    epoch = EpochDone("f1a2b3c4-k3", 2, 4, 0.91349, None, 31.0, 62.0)
    expected = "2026-12-01 16:20:05 stage f1a2b3c4-k3 epoch 2/4 loss 0.913 31.0 s/epoch ETA 62 s"
    assert format_line(epoch, when) == expected
    assert "val pseudo-Dice 0.420" in EpochDone("s", 1, 4, 1.0, 0.42, 10.0, 300.0).describe()
    assert EpochDone("s", 1, 4, 1.0, None, 10.0, 300.0).describe().endswith("ETA 5 min")
    started = StageStarted("f1-k5", "a k5", 2, "upkern from f1-k3").describe()
    assert started == "stage f1-k5 started: a k5 upkern from f1-k3, to 2 epochs"
    done = StageFinished("f1-k5", "completed", 0.41234, 7500.0, 4).describe()
    assert done == "stage f1-k5 completed: Dice 0.4123 after 4 epochs in 2.1 h"
    failed = StageFinished("f1-k5", "failed", None, None, None, "ValueError: bad (traceback: /s/error.log)")
    assert failed.describe() == "stage f1-k5 failed: ValueError: bad (traceback: /s/error.log)"
    assert StageFinished("f1-k5", "pending", None, None, None).describe() == "stage f1-k5 interrupted"
    end = StudyFinished("finished", {"completed": 3, "failed": 1}, "f1-k5", 0.41234, "4 training epochs")
    assert end.describe() == "study finished: 3 completed, 1 failed; best Dice 0.4123 (f1-k5); spent 4 training epochs"


def test_progress_file_ignores_a_partial_last_line_and_the_next_session_cuts_it(tmp_path: Path) -> None:
    writer = ProgressWriter(tmp_path, "s-k3", target=4)
    writer.append(metrics(0, 1.5, 20.0))
    second = writer.append(metrics(1, 1.2, 40.0))
    assert second.epoch == 2 and second.eta_s == 60.0  # mean 30 s/epoch, 2 epochs to go
    path = tmp_path / PROGRESS_FILE
    with open(path, "a") as f:
        f.write('{"stage_id": "s-k3", "epoch": 3, "tar')  # killed mid-write
    events, offset = read_progress(path)
    assert [e.epoch for e in events] == [1, 2] and offset < path.stat().st_size
    assert read_progress(path, offset) == ([], offset), "the partial line stays unread"

    ProgressWriter(tmp_path, "s-k3", target=4).append(metrics(2, 1.0))  # the rerun's session
    events, end = read_progress(path, offset)
    assert [(e.epoch, e.train_loss) for e in events] == [(3, 1.0)] and end == path.stat().st_size
    assert [e.epoch for e in read_progress(path)[0]] == [1, 2, 3]
    path.write_text(path.read_text() + "not json\n")
    assert [e.epoch for e in read_progress(path)[0]] == [1, 2, 3], "a garbage line is skipped"
    assert read_progress(tmp_path / "missing.jsonl") == ([], 0)


def record(stage_id: str, **changes) -> StageRecord:
    fields = dict(family_id="f1", n_channels=4, block_counts=[1] * 9, exp_r=[2] * 9, kernel_size=3, family_label="a")
    return StageRecord(stage_id=stage_id, **{**fields, **changes})


def test_event_log_follows_the_table_and_the_progress_files(tmp_path: Path) -> None:
    table = ResultsTable(tmp_path)
    table.upsert(record("f1-k3", status="completed", mean_dice=0.3))  # before the run: no event
    table.upsert(record("f2-k3"))
    echo = io.StringIO()
    events = EventLog(tmp_path, echo=echo)
    events.data_step("checking the raw dataset")
    events.watch(table, tmp_path / "stages")
    stage_dir = tmp_path / "stages" / "f2-k3"
    stage_dir.mkdir(parents=True)
    ProgressWriter(stage_dir, "f2-k3", 2).append(metrics(0, 9.0))  # an earlier session's epoch
    panel = StudyProgress(table, "study t", events, Console(width=200, record=True))
    panel.console.print(panel)
    assert "checking the raw dataset (0 s)" in panel.console.export_text()
    table.update("f2-k3", status="running", target_epochs=2)
    events.poll()
    assert events.step is None
    ProgressWriter(stage_dir, "f2-k3", 2).append(metrics(1, 0.8, 12.0))
    events.poll()
    assert events.epochs["f2-k3"].event.epoch == 2
    panel.console.print(panel)
    shown = panel.console.export_text()
    assert "checking the raw dataset (" not in shown and "epoch 2/2 loss 0.800 ETA 0 s" in shown
    assert "stage f2-k3 started" in shown, "the latest events"
    table.update("f2-k3", status="completed", mean_dice=0.45, wall_time_s=30.0, epochs=2)
    events.poll()
    events.poll()
    lines = echo.getvalue().splitlines()
    assert all(re.match(STAMP, line) for line in lines)
    assert [line[20:] for line in lines] == [
        "checking the raw dataset",
        "stage f2-k3 started: a k3 resumed from its epoch-1 checkpoint, to 2 epochs",
        "stage f2-k3 epoch 2/2 loss 0.800 val pseudo-Dice 0.500 12.0 s/epoch ETA 0 s",
        "stage f2-k3 completed: Dice 0.4500 after 2 epochs in 30 s",
    ]
    assert (tmp_path / "study.log").read_text().splitlines() == lines
    assert "f2-k3" not in events.epochs and events.latest_lines() == lines[-4:]


def test_a_promoted_stage_says_it_resumes_from_its_rung(tmp_path: Path) -> None:
    """A stage paused at rung 2 and promoted to 4 epochs resumes from its rung-2 checkpoint, not from scratch;
    a stage that never trained starts from scratch (or from its parent)."""
    table = ResultsTable(tmp_path)
    table.upsert(record("f1-k3", status="paused", mean_dice=0.2, epochs=2, dice_curve={"1": 0.1, "2": 0.2}))
    table.upsert(record("f1-k5", kernel_size=5, parent_stage="f1-k3", init="upkern"))
    echo = io.StringIO()
    events = EventLog(tmp_path, echo=echo)
    events.watch(table, tmp_path / "stages")
    table.update("f1-k3", status="running", target_epochs=4)
    table.update("f1-k5", status="running", target_epochs=2)
    events.poll()
    assert [line[20:] for line in echo.getvalue().splitlines()] == [
        "stage f1-k3 started: a k3 resumed from its rung-2 checkpoint, to 4 epochs",
        "stage f1-k5 started: a k5 upkern from f1-k3, to 2 epochs",
    ]
    panel = StudyProgress(table, "study t", events, Console(width=200, record=True))
    panel.console.print(panel)
    assert "resumed from its rung-2 checkpoint" in panel.console.export_text()
