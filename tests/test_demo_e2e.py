"""The demo study, shrunk (fewer cases, iterations and kernels), through run, report and export as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scalekit.study import load_study_config, read_results

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[1] / "studies" / "demo.yaml"


def test_demo_and_amos_study_files_are_valid() -> None:
    demo = load_study_config(DEMO)
    assert demo.space.kernels == (3, 5, 7) and len(demo.space.families) >= 3
    assert demo.finish.export is not None and demo.finish.report
    amos = load_study_config(DEMO.with_name("amos.yaml"))
    assert amos.dataset.id == 218 and amos.dataset.patch_size == (128, 128, 128)
    assert amos.dataset.spacing == (1.0, 1.0, 1.0) and amos.training.amp == "fp16"
    assert amos.constraints.max_memory_gb == 24 and amos.space.presets == ("S", "B", "M", "L")


def test_shrunk_demo_runs_reports_and_exports(tmp_path: Path) -> None:
    data = yaml.safe_load(DEMO.read_text())
    data["output_dir"] = str(tmp_path / "demo")
    data["dataset"].update(demo={"cases": 6, "size": 32, "seed": 0}, raw_dir=str(tmp_path / "raw"),
                           preprocessed_dir=str(tmp_path / "preprocessed"))
    data["training"].update(iterations_per_epoch=2, val_iterations=1)
    data["space"]["families"] = data["space"]["families"][:2]
    data["space"]["kernels"] = [3, 5]
    data["search"]["families"] = 2
    study = tmp_path / "demo.yaml"
    study.write_text(yaml.safe_dump(data))
    env = {**os.environ, "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", "from scalekit.cli import main; main()", "study", "run", str(study), "--quiet"],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "demo"
    rows = read_results(out)
    assert len(rows) == 4 and all(r.status == "completed" for r in rows), [(r.stage_id, r.reason) for r in rows]
    html = (out / "report.html").read_text()
    for row in rows:
        assert row.stage_id in html
    upkern_rows = [r for r in rows if r.init == "upkern"]
    assert len(upkern_rows) == 2 and all(r.parent_stage in html for r in upkern_rows)
    selection = json.loads((out / "export" / "selection.json").read_text())
    assert selection["to"] == "nnunet" and selection["stage_id"] in {r.stage_id for r in rows}
    script = (out / "export" / "train.sh").read_text()
    assert "nnUNetv2_train 990" in script and "-tr ScalekitMedNeXtTrainer" in script
    assert f"report: {out / 'report.html'}" in result.stdout
