"""The demo study, shrunk (fewer cases, iterations and kernels), through run, report and export as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scalekit.study import load_study_config, read_results

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "studies" / "demo.yaml"


def test_demo_and_amos_study_files_are_valid() -> None:
    demo = load_study_config(DEMO)
    assert demo.space.kernels == (3, 5, 7) and len(demo.space.families) >= 3
    assert demo.finish.export is not None and demo.finish.report
    amos = load_study_config(DEMO.with_name("amos.yaml"))
    assert amos.dataset.id == 218 and amos.dataset.patch_size == (128, 128, 128)
    assert amos.dataset.spacing == (1.0, 1.0, 1.0) and amos.training.amp == "fp16"
    assert amos.constraints.max_memory_gb == 24 and amos.space.presets == ("S", "B", "M", "L")
    assert (amos.search.scheduler, amos.search.eta, amos.search.min_epochs) == ("halving", 3, 11)
    assert amos.search.budget_gpu_hours == 200 and amos.chain.controls == ("continue",)
    assert amos.space.resenc is not None and amos.space.resenc.presets == ("M", "L")  # the ResEnc baselines
    assert amos.space.resenc.batch == "planner" and amos.initial_lr("resenc") == 0.01
    assert demo.search.scheduler == "halving" and demo.chain.controls == ("continue",)


def test_shrunk_demo_runs_reports_and_exports(tmp_path: Path) -> None:
    data = yaml.safe_load(DEMO.read_text())
    data["output_dir"] = str(tmp_path / "demo")
    data["dataset"].update(demo={"cases": 6, "size": 32, "seed": 0}, raw_dir=str(tmp_path / "raw"),
                           preprocessed_dir=str(tmp_path / "preprocessed"))
    data["training"].update(epochs=2, iterations_per_epoch=2, val_iterations=1)  # halving: rungs 1 and 2 epochs
    data["space"]["families"] = data["space"]["families"][:2]
    data["space"]["kernels"] = [3, 5]
    data["search"]["families"] = 2
    data["finish"]["export"]["force"] = True  # two iterations an epoch teach nothing: export anyway, flagged
    study = tmp_path / "demo.yaml"
    study.write_text(yaml.safe_dump(data))
    env = {**os.environ, "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", "from scalekit.cli import main; main()", "study", "run", str(study), "--quiet"],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "demo"
    rows = {r.stage_id: r for r in read_results(out)}
    assert len(rows) == 6, sorted(rows)  # two families x (k3, the k3 control, k5)
    completed = [r for r in rows.values() if r.status == "completed"]
    # halving, synchronous (two families, one worker): at rung 1 either one k3 beats the other by more than the
    # noise and goes on alone (the other halted, saying what beat it), or two iterations an epoch taught neither
    # anything and both go on, which the summary says
    halted = [r for r in rows.values() if r.status == "stopped" and r.init == "scratch"]
    if halted:
        (loser,) = halted
        assert "halted at 1 of 2 epochs: not promoted at rung 1 epochs" in loser.reason and "went on" in loser.reason
        assert loser.mean_dice is not None and len({r.family_id for r in completed}) == 1
        assert sorted(r.init for r in completed) == ["continue", "scratch", "upkern"]
    else:
        assert "rung 1 epochs, the 2 k3 stages: no signal" in result.stdout + result.stderr
        assert "raise search.min_epochs" in result.stdout + result.stderr
        assert len({r.family_id for r in completed}) == 2 and {r.init for r in completed} == {"scratch", "upkern",
                                                                                             "continue"}
    assert not any("the search ended" in r.reason for r in rows.values())
    html = (out / "report.html").read_text()
    for stage_id in rows:
        assert stage_id in html
    selection = json.loads((out / "export" / "selection.json").read_text())
    assert selection["to"] == "nnunet" and selection["stage_id"] in {r.stage_id for r in completed}
    script = (out / "export" / "train.sh").read_text()
    assert "nnUNetv2_train 990" in script and "-tr ScalekitMedNeXtTrainer" in script
    assert f"report: {out / 'report.html'}" in result.stdout
    assert "\nanswer:\n  train for the study's 0.25 GiB budget: " in result.stdout  # the answer closes the run
    plans = next((tmp_path / "preprocessed").glob(f"*/scalekitPlans_{selection['stage_id']}.json"))
    assert f"note: the export wrote {plans} outside {out / 'export'}" in result.stderr
    _predictions_repeat_the_validation(tmp_path, out, selection["stage_id"],
                                       {**env, "OMP_NUM_THREADS": str(data["resources"]["cpus_per_trial"])})


def _case_dice(prediction: Path, label: Path) -> float:
    """Mean foreground Dice of a written segmentation, as the stage's validation computes it."""
    import numpy as np
    import SimpleITK as sitk

    from scalekit.metrics import case_metrics

    reference = sitk.ReadImage(str(label))
    result = case_metrics(sitk.GetArrayFromImage(sitk.ReadImage(str(prediction))),
                          sitk.GetArrayFromImage(reference), range(1, 5), reference.GetSpacing()[::-1], 1.0)
    return float(np.nanmean(result.dice))


def _predictions_repeat_the_validation(tmp_path: Path, out: Path, stage_id: str, env: dict[str, str]) -> None:
    """`scalekit predict` with the export (CLI) and with the study stage (library) segments validation cases
    of the fold to the Dice the stage's validation recorded: the same weights (final.pt, which the export
    carries), the same sliding-window settings (no mirroring) and the trial's threads (``env``), since a sum split
    over other threads may round a voxel near a tie the other way."""
    import torch

    from scalekit.nnunet.predict import predict, stage_model

    outcome = json.loads((out / "stages" / stage_id / "outcome.json").read_text())
    raw = tmp_path / "raw" / "Dataset990_ScalekitDemo"
    recorded = dict(zip(outcome["validation_cases"], outcome["case_dice"]))
    (first, second), predicted = sorted(recorded)[:2], {}
    for case in (first, second):
        (tmp_path / f"in_{case}").mkdir()
        shutil.copy(raw / "imagesTr" / f"{case}_0000.nii.gz", tmp_path / f"in_{case}")
    cli = subprocess.run(
        [sys.executable, "-c", "from scalekit.cli import main; main()", "predict", "--export", str(out / "export"),
         "-i", str(tmp_path / f"in_{first}"), "-o", str(tmp_path / "pred_export")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "pred_export").iterdir()) == [
        "dataset.json", f"{first}.nii.gz", "plans.json", "predict_from_raw_data_args.json"]
    predicted[first] = _case_dice(tmp_path / "pred_export" / f"{first}.nii.gz", raw / "labelsTr" / f"{first}.nii.gz")
    threads = torch.get_num_threads()
    torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    try:
        files = predict(stage_model(out, stage_id), tmp_path / f"in_{second}", tmp_path / "pred_stage", device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert files == [tmp_path / "pred_stage" / f"{second}.nii.gz"]
    predicted[second] = _case_dice(files[0], raw / "labelsTr" / f"{second}.nii.gz")
    for case, dice in predicted.items():
        assert dice == pytest.approx(recorded[case], abs=1e-6), (case, dice, recorded[case])
