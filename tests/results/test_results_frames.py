"""scalekit.results: a study as pandas DataFrames with flat, typed columns and long per-case/per-class tables."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

import scalekit.results
from scalekit.records import read_results, write_results

from tests.helpers.study_fixture import make_study


def test_stages_cases_and_classes_are_flat_and_typed(tmp_path) -> None:
    make_study(tmp_path)
    records = read_results(tmp_path)
    first = records[0]
    records[0] = dataclasses.replace(first, case_dice=[0.5, 0.6, 0.7], per_class_dice=[0.4, 0.8],
                                     per_class_nsd=[0.5, 0.9], dice_curve={"2": 0.3, "4": 0.6})
    write_results(tmp_path, records)
    stages = scalekit.results.read(tmp_path)
    assert list(stages["stage_id"]) == [r.stage_id for r in records]
    for column in ("mean_dice", "peak_memory_gb", "gflops_train", "dice_lo", "dice_hi", "block_counts_0", "exp_r_8",
                   "dice_at_2", "kernel_size", "n_channels"):
        assert pd.api.types.is_numeric_dtype(stages[column]), column
    assert not any(stages[c].map(lambda v: isinstance(v, (list, dict, str)) and str(v).startswith(("[", "{"))).any()
                   for c in stages.columns)
    row = stages.iloc[0]
    assert row["dice_at_4"] == pytest.approx(0.6) and row["dice_lo"] <= 0.6 <= row["dice_hi"]
    cases = scalekit.results.read_cases(tmp_path)
    assert list(cases[cases.stage_id == first.stage_id]["dice"]) == [0.5, 0.6, 0.7]
    classes = scalekit.results.read_classes(tmp_path)
    mine = classes[classes.stage_id == first.stage_id]
    assert list(mine["class_index"]) == [1, 2] and list(mine["nsd"]) == [0.5, 0.9]
    assert classes["dice"].dtype == "float64" and cases["case"].dtype == "int64"


def test_reading_a_folder_that_is_not_a_study_says_so(tmp_path) -> None:
    with pytest.raises(ValueError, match="is not a study folder"):
        scalekit.results.read(tmp_path)
