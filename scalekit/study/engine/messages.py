"""The messages between the study driver and its stage workers, typed at both ends.

Ray carries plain dicts (a trial's config, its reported metrics), so each message has ``to_dict`` and a
``from_dict`` that checks what arrived: :class:`StageSpec` is what a worker trains, :class:`StageReport` how
the stage ended (its last report; the epoch reports before it carry no ``stage_status``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from scalekit.errors import ScalekitError

ReportStatus = Literal["completed", "failed", "infeasible"]
REPORT_STATUSES: tuple[ReportStatus, ...] = get_args(ReportStatus)
STATUS_KEY = "stage_status"
REASON_KEY = "stage_reason"
NODE_KEY = "node"
"""The node (a Ray node id, or the host of a local worker) in every report of a stage worker."""
FINISHED = "FINISHED"
"""What a stage source's ``next_stage`` returns once nothing is left to hand out (Ray Tune's own sentinel)."""


@dataclass(frozen=True)
class StageSpec:
    """One stage to train: its architecture, UpKern source, budget, data and folders, and who asked."""

    stage_id: str
    output_dir: str
    arch: dict[str, Any]
    init_from: str | None
    prepared: dict[str, Any]
    fold: int
    batch_size: int
    epochs: int
    train_until: int
    """The rung to train to now (``epochs``: the full budget); the schedule runs over ``epochs``."""
    iterations_per_epoch: int
    val_iterations: int
    initial_lr: float
    amp: str | None
    device: str
    seed: int
    nsd_tolerance_mm: float
    driver_host: str = ""
    driver_pid: int = 0
    """The study driver's host and PID: the worker ends soon after it dies (same host only)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as err:
            raise ScalekitError(f"not a stage spec ({err}): {sorted(data)}") from None


_CURVES = ("dice_curve", "case_curve")
"""Report fields keyed by epochs, carried through Ray as JSON text."""


@dataclass(frozen=True)
class StageReport:
    """How a stage ended: ``completed`` with its scores, ``failed`` or ``infeasible`` with the reason."""

    status: ReportStatus
    reason: str = ""
    mean_dice: float | None = None
    per_class_dice: list[float] = field(default_factory=list)
    mean_nsd: float | None = None
    per_class_nsd: list[float] = field(default_factory=list)
    wall_time_s: float | None = None
    epochs: int | None = None
    checkpoint: str = ""
    """The final weights, relative to the stage folder."""
    peak_memory_bytes: int | None = None
    memory_method: str = ""
    dice_curve: dict[str, float] = field(default_factory=dict)
    case_dice: list[float] = field(default_factory=list)
    case_curve: dict[str, list[float]] = field(default_factory=dict)
    node: str = ""
    """The Ray node id that trained it."""

    def __post_init__(self) -> None:
        if self.status not in REPORT_STATUSES:
            raise ScalekitError(f"stage report status {self.status!r} is not one of {REPORT_STATUSES}")

    def measured(self) -> dict[str, Any]:
        """The results-row fields this report sets (those it carries)."""
        skip = {"status", "reason"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in skip and getattr(self, f.name) not in (None, "", [], {})}

    def to_dict(self) -> dict[str, Any]:
        """The report as Ray carries it: the curves as JSON text (Ray flattens nested dicts of a result)."""
        measured = self.measured()
        for name in _CURVES:
            if name in measured:
                measured[name] = json.dumps(measured[name])
        return {STATUS_KEY: self.status, REASON_KEY: self.reason, **measured}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageReport | None:
        """The report in a trial's last result, or None when the trial stopped before it ended."""
        if STATUS_KEY not in data:
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names - {"status", "reason"}}
        for name in _CURVES:
            if isinstance(values.get(name), str):
                values[name] = json.loads(values[name])
        return cls(status=data[STATUS_KEY], reason=data.get(REASON_KEY, ""), **values)
