"""A live terminal view of a running study (rich): the data step under way before the first stage, stage
counts, running stages with the rung each trains to and their last epoch (loss, ETA), best Dice, compute
spent, rungs whose Dice carries no signal, the latest lines of ``study.log``, elapsed time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from scalekit.results.fidelity import signal_warnings
from scalekit.records import ResultsTable, describe_spent, training_spent

from .eventlog import EventLog, stage_origin
from .events import describe_duration

_ORDER = ("completed", "running", "paused", "pending", "infeasible", "failed", "stopped")
_STYLE = {"completed": "green", "running": "cyan", "paused": "blue", "pending": "white", "infeasible": "yellow",
          "failed": "red", "stopped": "dim"}


class StudyProgress:
    """Renders the results table as a compact status panel; call :meth:`refresh` after every change."""

    def __init__(self, table: ResultsTable, title: str, events: EventLog, console: Console | None = None) -> None:
        self.table = table
        self.title = title
        self.events = events
        self.console = console or Console(stderr=True)
        self.started = time.monotonic()
        self._live: Live | None = None

    def render(self) -> Group:
        records = self.table.records()
        counts = {status: 0 for status in _ORDER}
        for record in records:
            counts[record.status] += 1
        valid = [r for r in records if r.is_valid]
        best = max(valid, key=lambda r: r.mean_dice or 0.0) if valid else None
        elapsed = time.monotonic() - self.started
        head = Text(f"{self.title}  ", style="bold")
        for status in _ORDER:
            head.append(f"{status} {counts[status]}  ", style=_STYLE[status])
        head.append(f"elapsed {elapsed / 60:.1f} min", style="dim")
        lines: list = [head]
        step = self.events.step
        if step is not None:
            waited = time.monotonic() - self.events.step_started
            lines.append(Text(f"  {step.describe()} ({describe_duration(waited)})", style="cyan"))
        lines.append(Text(f"spent {describe_spent(training_spent(records))}", style="dim"))
        if best is not None:
            lines.append(Text(f"best mean Dice {best.mean_dice:.4f}  ({best.stage_id}, {best.family_label})"))
        lines += [Text(f"! {warning}", style="yellow") for warning in signal_warnings(records)]
        running = [r for r in records if r.status == "running"]
        if running:
            table = Table(box=None, show_header=False, pad_edge=False)
            for record in running:
                origin = stage_origin(record)
                latest = self.events.epochs.get(record.stage_id)
                epoch = "" if latest is None else (
                    f"epoch {latest.event.epoch}/{latest.event.target} loss {latest.event.train_loss:.3f} "
                    f"ETA {describe_duration(latest.eta_now())}")
                table.add_row("  running", record.stage_id, record.family_label, f"k{record.kernel_size}",
                              f"to {record.target_epochs} epochs" if record.target_epochs else "", origin, epoch)
            lines.append(table)
        lines += [Text(line, style="dim") for line in self.events.latest_lines()]
        return Group(*lines)

    def __rich__(self) -> Group:
        return self.render()

    def refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    @contextmanager
    def live(self) -> Iterator[StudyProgress]:
        """Show the panel, re-rendered every second and on :meth:`refresh`, while the block runs."""
        with Live(self, console=self.console, refresh_per_second=1, transient=False) as live:
            self._live = live
            try:
                yield self
            finally:
                self._live = None
