"""The messages between the study driver and its stage workers, typed at both ends.

Ray carries plain dicts (a trial's config, its reported metrics), so each message has ``to_dict`` and a
``from_dict`` that checks what arrived: :class:`StageSpec` is what a worker trains, :class:`StageReport` how
the stage ended (its last report; the epoch reports before it carry no ``stage_status``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal, get_args

from scalekit.errors import ScalekitError
from scalekit.records import KEYED, MEASURED

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


class StageReport:
    """How a stage ended: ``completed`` with what it measured, ``failed`` or ``infeasible`` with the reason.

    The measured values are the :class:`~scalekit.records.StageRecord` fields declared with
    :func:`~scalekit.records.measured` (:data:`~scalekit.records.MEASURED`), by name: a field declared there
    travels from the worker to the table with no other change here. ``checkpoint`` is relative to the stage
    folder; ``node`` is the node that trained it.
    """

    def __init__(self, status: ReportStatus, reason: str = "", **values: Any) -> None:
        if status not in REPORT_STATUSES:
            raise ScalekitError(f"stage report status {status!r} is not one of {REPORT_STATUSES}")
        unknown = sorted(set(values) - set(MEASURED))
        if unknown:
            raise ScalekitError(f"stage report: {', '.join(unknown)} is not a measured field of the results table "
                                f"(declare it with records.measured; measured: {', '.join(MEASURED)})")
        self.status: ReportStatus = status
        self.reason = reason
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        if name in MEASURED:
            return self.__dict__["_values"].get(name)
        raise AttributeError(name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StageReport) and (self.status, self.reason, self.measured()) == (
            other.status, other.reason, other.measured())

    def __repr__(self) -> str:
        return f"StageReport({self.status!r}, {self.reason!r}, {self.measured()!r})"

    def with_values(self, **values: Any) -> StageReport:
        return StageReport(self.status, self.reason, **{**self._values, **values})

    def measured(self) -> dict[str, Any]:
        """The results-row fields this report sets (those it carries)."""
        return {name: value for name, value in self._values.items() if value not in (None, "", [], {})}

    def to_dict(self) -> dict[str, Any]:
        """The report as Ray carries it: mappings (the curves) as JSON text, since Ray flattens nested dicts."""
        measured = {name: json.dumps(value) if name in KEYED else value for name, value in self.measured().items()}
        return {STATUS_KEY: self.status, REASON_KEY: self.reason, **measured}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageReport | None:
        """The report in a trial's last result, or None when the trial stopped before it ended."""
        if STATUS_KEY not in data:
            return None
        values = {k: json.loads(v) if k in KEYED and isinstance(v, str) else v
                  for k, v in data.items() if k in MEASURED}
        return cls(data[STATUS_KEY], data.get(REASON_KEY, ""), **values)
