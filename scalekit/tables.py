"""The stage tables of a study as plain cells, shared by the HTML report and ``scalekit study show``.

Free of plotly, so the terminal view starts fast and works where the report's dependencies are missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scalekit.records import StageRecord

NOT_TRAINED = ("infeasible", "failed", "stopped")


def fmt(value: float | int | None, digits: int = 4) -> str:
    """A table cell: thousands separators, ``digits`` decimals for floats, an em dash for a missing value."""
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.{digits}f}"


@dataclass(frozen=True)
class Table:
    """A titled table of preformatted cells."""

    title: str
    headers: list[str]
    rows: list[list[str]]


def _trained(record: StageRecord) -> bool:
    """Trained, training or waiting to: everything but stages that never trained (a stage halted at a rung
    trained and was scored there)."""
    return record.status not in NOT_TRAINED or bool(record.epochs)


def stage_tables(records: Sequence[StageRecord], front_ids: frozenset[str]) -> list[Table]:
    """The stage tables of the report and of ``scalekit study show``: trained or in progress, then not trained."""
    trained = [
        [r.stage_id, r.family_label or r.family_id, f"k{r.kernel_size}", r.init, r.parent_stage, r.status,
         fmt(r.mean_dice), fmt(r.mean_nsd), fmt(r.peak_memory_gb, 2), fmt(r.gflops_train, 1), fmt(r.params),
         fmt(r.epochs), fmt(r.cum_train_tflops, 1), "✓" if r.stage_id in front_ids else "", r.reason]
        for r in records if _trained(r)
    ]
    headers = ["stage", "family", "kernel", "init", "parent", "status", "mean Dice", "NSD", "peak GB",
               "GFLOPs train", "params", "epochs", "TFLOPs since scratch", "study front", "note"]
    failed = [[r.stage_id, r.family_label or r.family_id, f"k{r.kernel_size}", r.status, r.reason or "—"]
              for r in records if not _trained(r)]
    return [
        Table("All trained or scheduled stages (a stage halted at a rung keeps its Dice there)", headers, trained),
        Table("Not trained (infeasible, failed or stopped)", ["stage", "family", "kernel", "status", "reason"],
              failed),
    ]
