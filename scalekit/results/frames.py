"""A study's results as pandas DataFrames with flat, typed columns, for notebooks:

    import scalekit.results
    stages = scalekit.results.read("runs/demo")           # one row per stage
    cases = scalekit.results.read_cases("runs/demo")      # one row per stage x validation case (last scoring)
    classes = scalekit.results.read_classes("runs/demo")  # one row per stage x foreground class

``results.csv`` keeps lists and dicts as JSON text in a cell; here every number is its own numeric column and
the per-case and per-class values are long tables keyed by ``stage_id``. The only module that imports pandas.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from scalekit.results.fidelity import dice_interval
from scalekit.results.pareto import require_study
from scalekit.records import NUMERIC, SINGLE_VALUED, StageRecord, read_results



def _records(study_dir: str | Path) -> list[StageRecord]:
    return read_results(require_study(study_dir))


def read(study_dir: str | Path) -> pd.DataFrame:
    """One row per stage: the record's single values (:data:`~scalekit.records.SINGLE_VALUED`, every measured
    one included), ``peak_memory_gb``, the 95% interval of the mean Dice (``dice_lo``, ``dice_hi``), and one
    column per block count, expansion ratio and rung
    (``block_counts_0`` ... ``exp_r_8``, ``dice_at_2`` ...); missing values are NaN."""
    rows = []
    for r in _records(study_dir):
        interval = dice_interval(r) or (None, None)
        row = {name: getattr(r, name) for name in SINGLE_VALUED}
        row.update(peak_memory_gb=r.peak_memory_gb, dice_lo=interval[0], dice_hi=interval[1])
        row.update({f"block_counts_{i}": v for i, v in enumerate(r.block_counts)})
        row.update({f"exp_r_{i}": v for i, v in enumerate(r.exp_r)})
        row.update({f"dice_at_{epochs}": v for epochs, v in sorted(r.dice_curve.items(), key=lambda e: int(e[0]))})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else list(SINGLE_VALUED))
    numeric = [c for c in frame.columns if c in NUMERIC or c.startswith(("dice_", "block_counts_", "exp_r_"))
               or c == "peak_memory_gb"]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    return frame


def read_cases(study_dir: str | Path) -> pd.DataFrame:
    """One row per stage and validation case of its last scoring: ``stage_id``, ``case`` (its index), ``dice``."""
    rows = [{"stage_id": r.stage_id, "case": i, "dice": v} for r in _records(study_dir) for i, v in
            enumerate(r.case_dice)]
    return pd.DataFrame(rows, columns=["stage_id", "case", "dice"]).astype({"case": "int64", "dice": "float64"})


def read_classes(study_dir: str | Path) -> pd.DataFrame:
    """One row per stage and foreground class (in label order): ``stage_id``, ``class_index``, ``dice``, ``nsd``."""
    rows = []
    for r in _records(study_dir):
        for i, dice in enumerate(r.per_class_dice):
            nsd = r.per_class_nsd[i] if i < len(r.per_class_nsd) else float("nan")
            rows.append({"stage_id": r.stage_id, "class_index": i + 1, "dice": dice, "nsd": nsd})
    return pd.DataFrame(rows, columns=["stage_id", "class_index", "dice", "nsd"]).astype(
        {"class_index": "int64", "dice": "float64", "nsd": "float64"})
