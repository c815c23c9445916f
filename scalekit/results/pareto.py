"""Pareto fronts of study stages for any number of objectives, each minimised or maximised.

A point *dominates* another when it is at least as good in every objective and strictly better in one. The
front is every point that no other point dominates, so exact duplicates are all on the front together, and a
point equal in one objective but worse in another is not. Only valid stages (``StageRecord.is_valid``:
completed, with a Dice) that have a value for every objective take part; pending, running, stopped,
infeasible and failed stages are never on the front.

The objectives and constraints of a study are read from its saved ``study.yaml`` (through the study file's
models), so the front can be computed for any study directory, also while the study runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scalekit.errors import ScalekitError
from scalekit.records import Objective, StageRecord, StudyDir, read_results
from scalekit.studyfile import read_saved_study

log = logging.getLogger(__name__)

DEFAULT_OBJECTIVES = (Objective("mean_dice", "maximize"), Objective("peak_memory_gb", "minimize"))


@dataclass(frozen=True)
class StudyGoals:
    """What a study optimises (``objectives``) and the budgets it must respect (None: no limit)."""

    objectives: tuple[Objective, ...] = DEFAULT_OBJECTIVES
    max_memory_gb: float | None = None
    max_gflops: float | None = None


def read_goals(study_dir: str | Path) -> StudyGoals:
    """The objectives and constraints of the study saved in ``study_dir`` (read through its
    :class:`~scalekit.studyfile.StudyConfig`); the defaults where the directory holds no study.yaml.

    Defaults: maximise ``mean_dice``, minimise ``peak_memory_gb``, no budgets.
    """
    config = read_saved_study(study_dir)
    if config is None:
        log.info("%s holds no study.yaml: using the default objectives (max mean_dice, min peak_memory_gb)",
                 study_dir)
        return StudyGoals()
    return StudyGoals(
        objectives=tuple(o.goal() for o in config.objectives),
        max_memory_gb=config.constraints.max_memory_gb,
        max_gflops=config.constraints.max_gflops,
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


def require_study(study_dir: str | Path) -> Path:
    """``study_dir`` as a path, once it is a study's folder (it holds the results table or the saved study
    file, which ``scalekit study run`` writes first); a one-line error otherwise."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise ScalekitError(f"study directory {study_dir} does not exist; pass the folder of a `scalekit study run`")
    layout = StudyDir(study_dir)
    if not (layout.results.is_file() or layout.study_file.is_file()):
        raise ScalekitError(f"{study_dir} is not a study folder: it holds neither {layout.results.name} nor "
                            f"{layout.study_file.name}; "
                            "pass the output_dir of a study (`scalekit study run` writes both there)")
    return study_dir


def study_front(study_dir: str | Path) -> StudyFront:
    """Read a study directory (possibly partial, while it runs) and compute its Pareto front."""
    study_dir = require_study(study_dir)
    records = read_results(study_dir)
    goals = read_goals(study_dir)
    front = pareto_front(records, goals.objectives)
    return StudyFront(records, goals, frozenset(r.stage_id for r in front))
