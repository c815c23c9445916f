"""The results contract of a study: the stage record, the objectives it can be ranked by, and the results
table (one row per chain stage, rewritten atomically as each stage changes). The ground floor of scalekit:
it imports nothing of scalekit but the fault points.

The table (``results.csv`` in the study directory) is the contract between the study engine, the report, the
terminal view and the export. List-valued columns (block counts, ratios, per-class scores) and the full
architecture are stored as JSON strings so that the CSV stays one row per stage and opens in any tool.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from scalekit.errors import ScalekitError
from scalekit.faults import fault_point

RESULTS_FILE = "results.csv"


def _entry(name: str, what: str) -> Any:
    """A :class:`StudyDir` path: ``name`` inside the study directory."""
    return property(lambda self: self.path / name, doc=f"``{name}``: {what}")


@dataclass(frozen=True)
class StudyDir:
    """Every file and folder of a study directory, by name: the one owner of its layout (see
    :mod:`scalekit.study.runner` for what each holds)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    results = _entry(RESULTS_FILE, "one row per chain stage")
    study_file = _entry("study.yaml", "the validated study file (a rerun must match it)")
    prepared = _entry("prepared.json", "the prepared nnU-Net dataset")
    optuna_db = _entry("optuna.db", "the Optuna storage, unless the study names another")
    stages = _entry("stages", "each stage's training folder")
    log = _entry("study.log", "one line per event, appended by every run")
    lock = _entry(".scalekit.lock", "held by the one process that runs the study")
    confirm = _entry("confirm", "the finalists retrained with other seeds")
    report = _entry("report.html", "the report")
    ray = _entry("ray", "the Ray backend's experiments, log and token")
    export = _entry("export", "the export the study's finish section asks for")

Status = Literal["pending", "running", "paused", "completed", "infeasible", "failed", "stopped"]
STATUSES: tuple[Status, ...] = get_args(Status)
"""The states of a stage (mypy checks every status a module sets or compares against them). ``paused``:
trained to a rung of successive halving and scored there, waiting to be promoted. ``completed``: trained to the
full stage budget. ``stopped``: its chain ended before it (saturation, a failed or infeasible
parent, the study budget) or it was halted at a rung (then it keeps the Dice it reached); its ``reason`` says
which. ``infeasible``: profiled or measured to break a constraint (or ran out of GPU memory). ``failed``:
training broke (non-finite loss, an error); ``reason`` holds the message."""

Init = Literal["scratch", "upkern", "continue"]
INITS: tuple[Init, ...] = get_args(Init)
"""How a stage starts. ``continue``: a control stage, the parent's network trained on (same kernel) for the
budget of the UpKern step beside it."""

CONTROL_SUFFIX = "c"
STAGE_ID = re.compile(r"f[0-9a-f]{8}-k\d+c?")
"""The form of a stage id: the family id (``f`` and 8 hex digits, a hash of C, B and R) and the kernel, with a
``c`` for the continuation control of the UpKern step after that kernel."""


def make_stage_id(family_id: str, kernel: int, control: bool = False) -> str:
    """The id of a family's chain stage with kernel size ``kernel``: ``<family id>-k<kernel>``; with
    ``control``, the stage that continues that kernel beside the next UpKern step (``<family id>-k3c``)."""
    return f"{family_id}-k{kernel}{CONTROL_SUFFIX if control else ''}"

TABLE_MODE = 0o644
"""results.csv is readable by the group and others, like every other file a study writes (mkstemp makes 0600)."""
GIB = 2**30
"""Bytes in a GB as GPU memory is quoted (a "24 GB" card), the unit of every ``*_gb`` value."""


MEASURED_KEY = "measured"


def measured(default: Any = None, factory: Callable[[], Any] | None = None) -> Any:
    """A :class:`StageRecord` field that a stage's worker measures and reports: declaring a field with it is all
    it takes for the worker's report (:class:`~scalekit.study.engine.messages.StageReport`) to carry it to the
    table (see :data:`MEASURED`)."""
    if factory is not None:
        return field(default_factory=factory, metadata={MEASURED_KEY: True})
    return field(default=default, metadata={MEASURED_KEY: True})


DEFAULT_ARCH = "mednext"
"""The network kind of a stage whose row names none (tables written before kinds)."""


@dataclass
class StageRecord:
    """One chain stage of one family: its architecture, how it started, how it ended and what it measured.

    The architecture is stored generically: ``arch`` (the registered network kind, :mod:`scalekit.networks`)
    and ``config`` (the whole config, with its ``arch`` key) rebuild it; ``n_channels``, ``block_counts``,
    ``exp_r`` and ``kernel_size`` are its readable columns (width, depth, expansion, kernel)."""

    stage_id: str
    family_id: str
    n_channels: int
    block_counts: list[int]
    exp_r: list[int]
    kernel_size: int
    arch: str = DEFAULT_ARCH
    """The network kind (``config["arch"]``); tables written before it was a column are MedNeXt's."""
    batch_size: int | None = None
    """The batch it trains with when it is not the study's (a ResEnc baseline at its planner's batch)."""
    parent_stage: str = ""
    init: Init = "scratch"
    status: Status = "pending"
    reason: str = ""
    family_label: str = ""
    mean_dice: float | None = measured(None)
    per_class_dice: list[float] = measured(factory=list)
    mean_nsd: float | None = measured(None)
    per_class_nsd: list[float] = measured(factory=list)
    params: int | None = None
    gflops_fvcore: float | None = None
    gflops_train: float | None = None
    peak_memory_bytes: int | None = measured(None)
    memory_method: str = measured("")
    wall_time_s: float | None = measured(None)
    epochs: int | None = measured(None)
    """Epochs this stage has trained (its own, not its parent's)."""
    checkpoint: str = measured("")
    config: dict[str, Any] = field(default_factory=dict)
    target_epochs: int | None = None
    """The epoch count it was last asked to reach (a rung of successive halving, or the full budget)."""
    dice_curve: dict[str, float] = measured(factory=dict)
    """Mean Dice at each epoch count it was scored at (keys: epochs as text): its rungs."""
    case_dice: list[float] = measured(factory=list)
    """Each validation case's mean Dice at its last scoring."""
    dice_interval: list[float] = field(default_factory=list)
    """The 95% bootstrap interval of ``mean_dice`` over the validation cases ([low, high]; empty when unknown)."""
    case_curve: dict[str, list[float]] = measured(factory=dict)
    """Each validation case's mean Dice at each rung (keys as ``dice_curve``): the noise of each rung value."""
    train_tflops: float | None = None
    """Training compute of this stage: epochs x iterations x the profiled FLOPs of one training step."""
    cum_epochs: int | None = None
    cum_iterations: int | None = None
    cum_train_tflops: float | None = None
    """Training since scratch: this stage's and its ancestors' (the UpKern or continuation sources)."""
    device_hours: float | None = None
    """Wall time of its training sessions times the devices of a trial (GPUs, or 1 on a CPU)."""
    node: str = measured("")
    """The Ray node id that ran its last training session."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ScalekitError(f"stage {self.stage_id}: status {self.status!r} is not one of {STATUSES}")
        if self.init not in INITS:
            raise ScalekitError(f"stage {self.stage_id}: init {self.init!r} is not one of {INITS}")

    @property
    def peak_memory_gb(self) -> float | None:
        """Peak training-step memory in GB as GPU memory is quoted (2**30 bytes: a "24 GB" card)."""
        return None if self.peak_memory_bytes is None else self.peak_memory_bytes / GIB

    def checkpoint_path(self, study_dir: str | Path) -> Path | None:
        """The stage's final weights: ``checkpoint`` is stored relative to the study directory (absolute in
        studies written before 0.2), so a moved study directory keeps working."""
        if not self.checkpoint:
            return None
        path = Path(self.checkpoint)
        return path if path.is_absolute() else Path(study_dir) / path

    @property
    def is_control(self) -> bool:
        return self.init == "continue"

    @property
    def name(self) -> str:
        """How messages name the stage: its family's label (else id) and, in a MedNeXt's UpKern chain, its
        kernel, ``c`` for a control (``wide k3``, ``wide k3c``; a one-stage baseline: ``ResEnc L``)."""
        label = self.family_label or self.family_id
        if self.arch != DEFAULT_ARCH:
            return label
        return f"{label} k{self.kernel_size}{CONTROL_SUFFIX if self.is_control else ''}"

    @property
    def is_valid(self) -> bool:
        """Trained and measured: the only stages eligible for a Pareto front or a selection."""
        return self.status == "completed" and self.mean_dice is not None

    def to_row(self) -> dict[str, str]:
        row: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (list, dict)):
                row[f.name] = json.dumps(value, separators=(",", ":"))
            elif value is None:
                row[f.name] = ""
            else:
                row[f.name] = str(value)
        return row

    @classmethod
    def from_row(cls, row: dict[str, str]) -> StageRecord:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = row.get(f.name, "")
            kind = f.type if isinstance(f.type, str) else str(f.type)
            if raw == "":
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                    continue
                raise ScalekitError(f"results row without {f.name!r}: {row}")
            if kind.startswith(("list", "dict")):
                values[f.name] = json.loads(raw)
            elif kind.startswith("int"):
                values[f.name] = int(raw)
            elif kind.startswith("float"):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        return cls(**values)


COLUMNS = [f.name for f in dataclasses.fields(StageRecord)]
MEASURED: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(StageRecord) if f.metadata.get(MEASURED_KEY))
"""The fields a stage's worker reports (declared with :func:`measured`): the one list from worker to table."""
KEYED: frozenset[str] = frozenset(f.name for f in dataclasses.fields(StageRecord) if str(f.type).startswith("dict"))
"""Fields holding a mapping (curves keyed by epochs, the architecture)."""
SINGLE_VALUED: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(StageRecord) if not str(f.type).startswith(("list", "dict")))
"""Fields holding one value (not a list or a mapping), in the table's order."""
NUMERIC: frozenset[str] = frozenset(
    f.name for f in dataclasses.fields(StageRecord) if str(f.type).startswith(("int", "float")))
"""Fields holding one number."""


def training_spent(records: Iterable[StageRecord]) -> dict[str, float]:
    """Training spent over ``records``: ``epochs``, ``device_hours`` and ``train_tflops``."""
    records = list(records)
    return {
        "epochs": float(sum(r.epochs or 0 for r in records)),
        "device_hours": sum(r.device_hours or 0.0 for r in records),
        "train_tflops": sum(r.train_tflops or 0.0 for r in records),
    }


def describe_spent(spent: dict[str, float]) -> str:
    return (f"{spent['epochs']:.0f} training epochs, {spent['device_hours']:.3f} device-hours, "
            f"{spent['train_tflops']:,.1f} training TFLOPs")


OBJECTIVES = {
    "mean_dice": "maximize",
    "mean_nsd": "maximize",
    "peak_memory_gb": "minimize",
    "gflops_train": "minimize",
    "gflops_fvcore": "minimize",
    "params": "minimize",
    "wall_time_s": "minimize",
}
"""The stage metrics a study may optimise, each with its natural direction: the one registry that the study
file, the Pareto fronts, the report and the Optuna storage read."""
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class Objective:
    """One objective: a stage metric (a key of :data:`OBJECTIVES`) and whether larger or smaller is better."""

    metric: str
    direction: str = ""
    """``maximize`` or ``minimize``; empty: the metric's natural direction (:data:`OBJECTIVES`)."""

    def __post_init__(self) -> None:
        if self.metric not in OBJECTIVES:
            raise ScalekitError(f"objective metric {self.metric!r} is unknown; use one of {', '.join(OBJECTIVES)}")
        if not self.direction:
            object.__setattr__(self, "direction", OBJECTIVES[self.metric])
        if self.direction not in DIRECTIONS:
            raise ScalekitError(
                f"objective {self.metric!r}: direction {self.direction!r} is unknown; use 'maximize' or 'minimize'"
            )

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def value(self, record: StageRecord) -> float | None:
        """The stage's value of this metric, or None where it was not measured."""
        value = getattr(record, self.metric)
        return None if value is None else float(value)


class ResultsTable:
    """The stages of a study, keyed by stage id, persisted to ``results.csv`` after every change.

    Writes go to a temporary file that replaces the table, so a crash never leaves a half-written table.
    Safe to share between threads of one process (the study driver); one process writes a study at a time.
    """

    def __init__(self, study_dir: str | Path) -> None:
        self.path = StudyDir(Path(study_dir)).results
        self._lock = threading.Lock()
        self._rows: dict[str, StageRecord] = {r.stage_id: r for r in read_results(self.path.parent)}

    def __contains__(self, stage_id: str) -> bool:
        return stage_id in self._rows

    def __getitem__(self, stage_id: str) -> StageRecord:
        return self._rows[stage_id]

    def get(self, stage_id: str) -> StageRecord | None:
        return self._rows.get(stage_id)

    def records(self) -> list[StageRecord]:
        with self._lock:
            return list(self._rows.values())

    def counts(self) -> dict[str, int]:
        """Stages per status."""
        return dict(Counter(r.status for r in self.records()))

    def upsert(self, record: StageRecord) -> None:
        """Insert or replace a stage and rewrite the table."""
        with self._lock:
            self._commit(record)

    def update(self, stage_id: str, status: Status | None = None, **changes: Any) -> StageRecord:
        """Change some fields of a stage (``status`` typed: it must be one of :data:`STATUSES`) and rewrite the
        table."""
        if status is not None:
            changes["status"] = status
        with self._lock:
            return self._commit(dataclasses.replace(self._rows[stage_id], **changes))

    def _commit(self, record: StageRecord) -> StageRecord:
        """Write the table with ``record``, then hold it: a failed write (a full disk) changes nothing."""
        rows = {**self._rows, record.stage_id: record}
        write_results(self.path.parent, rows.values())
        self._rows = rows
        return record


def write_results(study_dir: str | Path, records: Iterable[StageRecord]) -> Path:
    """Atomically (re)write ``results.csv`` in ``study_dir`` (flushed to disk before it replaces the old)."""
    records = list(records)
    path = StudyDir(Path(study_dir)).results
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".csv")
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for record in records:
            writer.writerow(record.to_row())
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, TABLE_MODE)
    if any(r.status == "completed" for r in records):
        fault_point("results-write")
    os.replace(tmp, path)
    return path


def read_results(study_dir: str | Path) -> list[StageRecord]:
    """The stages in ``study_dir/results.csv`` (empty if the study has not written one yet)."""
    path = StudyDir(Path(study_dir)).results
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = []
    for line, row in enumerate(rows, start=2):
        try:
            records.append(StageRecord.from_row(row))
        except (ValueError, json.JSONDecodeError) as err:
            raise ScalekitError(f"{path}, line {line}: {err}") from None
    return records
