"""A stage's end is always reported, never raised: OOM -> infeasible with the figure, errors -> failed + traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scalekit import nnunet
from scalekit.mednext import preset_config
from scalekit.study.engine.messages import StageReport, StageSpec
from scalekit.study.backend.worker import ERROR_LOG, STAGE_LOG, execute_stage

PREPARED = {
    "dataset_id": 990, "dataset_name": "Dataset990_X", "raw_dir": "/nonexistent/raw/Dataset990_X",
    "preprocessed_root": "/nonexistent/pre", "plans_identifier": "nnUNetPlans", "configuration": "3d_fullres",
    "label_names": ["background", "a"], "patch_size": [32, 32, 32], "spacing": [1.0, 1.0, 1.0],
    "num_input_channels": 1,
}


def spec(tmp_path: Path) -> StageSpec:
    return StageSpec.from_dict({
        "stage_id": "fabc-k3", "output_dir": str(tmp_path / "stage"), "arch": preset_config("T", 1, 2).to_dict(),
        "init_from": None, "prepared": PREPARED, "fold": 0, "batch_size": 2, "epochs": 1, "train_until": 1,
        "iterations_per_epoch": 1, "val_iterations": 1, "initial_lr": 1e-3, "amp": None, "device": "cpu",
        "seed": 0, "nsd_tolerance_mm": 1.0,
    })


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "infeasible", "out of memory"),
        (nnunet.NonFiniteLossError(3, float("nan")), "failed", "loss became nan in epoch 3"),
        (RuntimeError("dataloader worker died"), "failed", "RuntimeError: dataloader worker died"),
    ],
)
def test_errors_become_reported_statuses(tmp_path: Path, monkeypatch, error, status, reason) -> None:
    def broken(request, on_epoch=None):
        assert request.arch.n_channels == 4 and request.batch_size == 2 and request.resume
        raise error

    monkeypatch.setattr(nnunet, "train_stage", broken)
    reports: list[dict] = []
    execute_stage(spec(tmp_path), reports.append)
    assert reports[-1]["stage_status"] == status
    assert reason in reports[-1]["stage_reason"]
    traceback_file = tmp_path / "stage" / ERROR_LOG
    if reason.startswith("RuntimeError"):
        assert "Traceback" in traceback_file.read_text() and str(traceback_file) in reports[-1]["stage_reason"]
        assert "stage fabc-k3 failed: dataloader worker died" in (tmp_path / "stage" / STAGE_LOG).read_text()
    else:
        assert not traceback_file.exists()


def test_messages_round_trip_through_plain_dicts(tmp_path: Path) -> None:
    """Ray carries dicts: the spec and the report survive the trip, and a trial's epoch report is no report."""
    assert StageSpec.from_dict(spec(tmp_path).to_dict()) == spec(tmp_path)
    report = StageReport("completed", mean_dice=0.5, per_class_dice=[0.4, 0.6], checkpoint="final.pt")
    assert StageReport.from_dict({**report.to_dict(), "epoch": 3}) == report
    assert StageReport.from_dict({"epoch": 3, "train_loss": 1.0}) is None
    with pytest.raises(ValueError, match="not a stage spec"):
        StageSpec.from_dict({"stage_id": "x"})
    with pytest.raises(ValueError, match="status"):
        StageReport("running")


def test_every_declared_measured_field_travels_from_the_report_to_the_table_and_no_other(tmp_path: Path) -> None:
    """The one field list: whatever StageRecord declares with records.measured, a report carries through Ray's
    plain dicts into results.csv; a name it does not declare is refused at the worker."""
    import dataclasses

    from scalekit.records import MEASURED, ResultsTable, StageRecord

    samples = {float: 0.625, int: 7, str: "x", list: [0.5, 0.75]}
    values: dict = {}
    for f in dataclasses.fields(StageRecord):
        if f.name in MEASURED:
            kind = str(f.type)
            values[f.name] = ({"3": 0.5} if "dict[str, float]" in kind else {"3": [0.5, 0.75]} if kind.startswith("dict")
                              else samples[next(t for t in (list, float, int, str) if t.__name__ in kind)])
    assert set(values) == set(MEASURED) and {"mean_dice", "case_curve", "peak_memory_bytes"} <= set(values)
    report = StageReport.from_dict(StageReport("completed", **values).to_dict())
    table = ResultsTable(tmp_path)
    table.upsert(StageRecord("f00000001-k3", "f00000001", 4, [1] * 9, [2] * 9, 3))
    table.update("f00000001-k3", status="completed", **report.measured())
    row = ResultsTable(tmp_path)["f00000001-k3"]
    assert {name: getattr(row, name) for name in MEASURED} == values
    with pytest.raises(ValueError, match="dummy_score is not a measured field of the results table"):
        StageReport("completed", dummy_score=1.0)
