"""A study's results as one JSON document (``scalekit study show --json``): the answer, every stage with its
interval, the Pareto front, the rule choices, each decision the search made, and the findings.

The document's shape is ``docs/show.schema.json`` (JSON Schema, draft 2020-12); :data:`SCHEMA_VERSION` changes
when a field changes meaning or goes away. Plain data over the results contract, no plotly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from scalekit.results.answer import Fit, read_answer
from scalekit.results.fidelity import dice_interval, findings
from scalekit.results.pareto import study_front
from scalekit.records import StageRecord
from scalekit.results.seeds import Confirmation

SCHEMA_VERSION = 1


def _number(value: float | None) -> float | None:
    """JSON has no NaN: a value that is not finite is null."""
    return None if value is None or not math.isfinite(value) else float(value)


def _stage(record: StageRecord, front: frozenset[str]) -> dict[str, Any]:
    interval = dice_interval(record)
    return {
        "stage_id": record.stage_id, "family_id": record.family_id, "family_label": record.family_label,
        "kernel_size": record.kernel_size, "init": record.init, "parent_stage": record.parent_stage or None,
        "status": record.status, "reason": record.reason, "mean_dice": _number(record.mean_dice),
        "dice_interval": None if interval is None else [_number(v) for v in interval],
        "mean_nsd": _number(record.mean_nsd), "peak_memory_gb": _number(record.peak_memory_gb),
        "memory_method": record.memory_method or None, "gflops_train": _number(record.gflops_train),
        "params": record.params, "epochs": record.epochs, "cum_epochs": record.cum_epochs,
        "cum_train_tflops": _number(record.cum_train_tflops),
        "rung_dice": {k: _number(v) for k, v in record.dice_curve.items()},
        "case_dice": [_number(v) for v in record.case_dice],
        "per_class_dice": [_number(v) for v in record.per_class_dice],
        "on_front": record.stage_id in front,
    }


def _fit(fit: Fit) -> dict[str, Any]:
    return {"sizes_gb": list(fit.sizes_gb), "stage_id": fit.stage.stage_id if fit.stage is not None else None}


def study_summary(study_dir: str | Path) -> dict[str, Any]:
    """The document ``study show --json`` prints for the study in ``study_dir``."""
    study = study_front(study_dir)
    answer = read_answer(study_dir)
    decisions = [{"stage_id": r.stage_id, "status": r.status, "reason": r.reason}
                 for r in study.records if r.status in ("stopped", "infeasible", "failed")]
    return {
        "schema_version": SCHEMA_VERSION,
        "study_dir": str(Path(study_dir).resolve()),
        "objectives": [{"metric": o.metric, "maximize": o.maximize} for o in study.goals.objectives],
        "max_memory_gb": study.goals.max_memory_gb,
        "answer": {
            "lines": answer.lines(),
            "budget": _fit(answer.budget) if answer.budget is not None else None,
            "gpus": [_fit(f) for f in answer.gpus],
            "warnings": list(answer.warnings),
        },
        "choices": {rule: {"stage_id": c.stage.stage_id, "explanation": c.explanation}
                    for rule, c in answer.choices.items()},
        "front": [r.stage_id for r in study.records if r.stage_id in study.front_ids],
        "stages": [_stage(r, study.front_ids) for r in study.records],
        "decisions": decisions,
        "findings": findings(study.records),
        "confirmation": _confirmation(answer.confirmation),
    }


def _confirmation(confirmation: Confirmation | None) -> dict[str, Any] | None:
    if confirmation is None:
        return None
    plan = confirmation.plan
    return {
        "answer": plan.answer, "seeds": [plan.base_seed, *plan.seeds],
        "finalists": [{"stage_id": r.stage.stage_id, "dice_by_seed": {str(k): v for k, v in sorted(r.dice.items())},
                       "mean_dice": _number(r.mean) if r.dice else None, "sd_dice": _number(r.sd)}
                      for r in confirmation.results],
        "held": confirmation.held, "pending": list(confirmation.pending), "left_out": list(plan.left_out),
        "spent": dict(confirmation.spent),
    }
