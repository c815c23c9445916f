"""Pareto fronts of study stages for any number of objectives, each minimised or maximised.

A point *dominates* another when it is at least as good in every objective and strictly better in one. The
front is every point that no other point dominates, so exact duplicates are all on the front together, and a
point equal in one objective but worse in another is not. Only valid stages (``StageRecord.is_valid``:
completed, with a Dice) that have a value for every objective take part; pending, running, stopped,
infeasible and failed stages are never on the front.

The objectives and constraints of a study are read from its ``study.yaml`` (keys ``objectives`` and
``constraints`` only), so the front can be computed for any study directory, also while the study runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from scalekit.errors import ScalekitError
from scalekit.records import Objective, StageRecord, read_results

log = logging.getLogger(__name__)

STUDY_FILE = "study.yaml"
DEFAULT_OBJECTIVES = (Objective("mean_dice", "maximize"), Objective("peak_memory_gb", "minimize"))


@dataclass(frozen=True)
class StudyGoals:
    """What a study optimises (``objectives``) and the budgets it must respect (None: no limit)."""

    objectives: tuple[Objective, ...] = DEFAULT_OBJECTIVES
    max_memory_gb: float | None = None
    max_gflops: float | None = None


def _number_or_none(path: Path, key: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ScalekitError(f"{path}: constraints.{key} must be a positive number or null, got {value!r}")
    return float(value)


def read_goals(study_dir: str | Path) -> StudyGoals:
    """The objectives and constraints of ``study_dir/study.yaml``; the defaults where the file is absent.

    Defaults: maximise ``mean_dice``, minimise ``peak_memory_gb``, no budgets.
    """
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        log.info("%s not found: using the default objectives (max mean_dice, min peak_memory_gb)", path)
        return StudyGoals()
    with path.open() as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ScalekitError(f"{path} must hold a mapping with 'objectives' and 'constraints'")
    raw_objectives = data.get("objectives") or [o.__dict__ for o in DEFAULT_OBJECTIVES]
    if not isinstance(raw_objectives, list) or not all(isinstance(o, dict) for o in raw_objectives):
        raise ScalekitError(f"{path}: 'objectives' must be a list of {{metric: ..., direction: ...}} entries")
    try:
        objectives = tuple(Objective(str(o.get("metric")), o.get("direction") or "") for o in raw_objectives)
    except ValueError as err:
        raise ScalekitError(f"{path}: {err}") from None
    constraints = data.get("constraints") or {}
    if not isinstance(constraints, dict):
        raise ScalekitError(f"{path}: 'constraints' must be a mapping like {{max_memory_gb: 24, max_gflops: null}}")
    return StudyGoals(
        objectives=objectives,
        max_memory_gb=_number_or_none(path, "max_memory_gb", constraints.get("max_memory_gb")),
        max_gflops=_number_or_none(path, "max_gflops", constraints.get("max_gflops")),
    )


def pareto_mask(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Which rows of ``values`` (shape ``(n, m)``: n points, m objectives) are on the Pareto front.

    ``maximize[j]`` says whether objective j is maximised (else minimised). Rows holding NaN are never on
    the front and dominate nothing. Returns a boolean array of shape ``(n,)``. O(n^2 m), fine for the few
    hundred stages of a study.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(maximize):
        raise ScalekitError(
            f"values must have shape (points, {len(maximize)} objectives), got {values.shape}"
        )
    if values.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    sign = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    cost = values * sign  # every objective minimised
    finite = ~np.isnan(cost).any(axis=1)
    cost = cost[finite]
    # no_worse[i, j]: point j is at least as good as point i in every objective; better: strictly in one.
    no_worse = (cost[None, :, :] <= cost[:, None, :]).all(axis=2)
    better = (cost[None, :, :] < cost[:, None, :]).any(axis=2)
    dominated = (no_worse & better).any(axis=1)
    mask = np.zeros(values.shape[0], dtype=bool)
    mask[np.flatnonzero(finite)[~dominated]] = True
    return mask


def pareto_front(records: Sequence[StageRecord], objectives: Sequence[Objective]) -> list[StageRecord]:
    """The valid stages that no other valid stage dominates, in the order of ``records``.

    A valid stage without a value for one of the objectives cannot be compared and is left out.
    """
    if not objectives:
        raise ScalekitError("a Pareto front needs at least one objective")
    candidates = [r for r in records if r.is_valid]
    values = np.array(
        [[np.nan if (v := o.value(r)) is None else v for o in objectives] for r in candidates],
        dtype=float,
    ).reshape(len(candidates), len(objectives))
    for record, row in zip(candidates, values):
        if np.isnan(row).any():
            missing = [o.metric for o, v in zip(objectives, row) if np.isnan(v)]
            log.warning("stage %s has no %s: left out of the Pareto front", record.stage_id, ", ".join(missing))
    mask = pareto_mask(values, [o.maximize for o in objectives])
    return [r for r, on in zip(candidates, mask) if on]


@dataclass(frozen=True)
class StudyFront:
    """All stages of a study, its goals and the ids of the stages on the front of its objectives."""

    records: list[StageRecord]
    goals: StudyGoals
    front_ids: frozenset[str]


def study_front(study_dir: str | Path) -> StudyFront:
    """Read a study directory (possibly partial, while it runs) and compute its Pareto front."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise ScalekitError(f"study directory {study_dir} does not exist; pass the folder of a `scalekit study run`")
    records = read_results(study_dir)
    goals = read_goals(study_dir)
    front = pareto_front(records, goals.objectives)
    return StudyFront(records, goals, frozenset(r.stage_id for r in front))
