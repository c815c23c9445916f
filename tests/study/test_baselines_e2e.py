"""A tiny study with one MedNeXt family and a small nnU-Net ResEnc (M, scaled down) as a baseline, run by `scalekit study run` (local
backend) through successive halving to an answer that names both kinds; the report marks the kind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scalekit.nnunet import PreparedDataset
from scalekit.nnunet.resenc import dataset_voxels, planner_batch
from scalekit.networks import config_from_dict
from scalekit.report import write_report
from scalekit.results.answer import read_answer
from scalekit.study import read_results
from tests.helpers.study_run import ENV, FAMILIES, study_file

pytestmark = pytest.mark.slow
NAME = "ResEnc M-f0.25-b0.5"
"""The baseline: nnU-Net's ResEnc M topology at 32^3 with a quarter of its features and half its blocks."""


def test_a_mednext_family_and_a_resenc_baseline_reach_one_answer(tmp_path: Path, nnunet_dirs: dict) -> None:
    path = study_file(tmp_path, nnunet_dirs, training__epochs=2, search__families=1, search__scheduler="halving",
                      search__eta=2, search__min_epochs=1, backend={"kind": "local"}, finish={"report": False},
                      space={"families": FAMILIES[:1], "kernels": [3],
                             "resenc": {"presets": [], "scaling": {"base": "M", "features": [0.25], "blocks": [0.5]}}})
    result = subprocess.run([sys.executable, "-c", "from scalekit.cli import main; main()", "study", "run",
                             str(path), "--quiet"], capture_output=True, text=True, timeout=900, env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = tmp_path / "study"
    rows = read_results(study)
    by_kind = {kind: [r for r in rows if r.arch == kind] for kind in ("mednext", "resenc")}
    assert len(by_kind["mednext"]) == 1 and len(by_kind["resenc"]) == 1
    resenc = by_kind["resenc"][0]
    assert resenc.family_label == NAME and resenc.parent_stage == "" and resenc.kernel_size == 3
    assert resenc.n_channels == 8 and resenc.block_counts == [1, 2, 2, 3]  # ResEnc M's features / 4, blocks / 2
    # Its batch is what nnU-Net's ResEnc M planner gives its network at the study's patch, its cap included.
    prepared = PreparedDataset.from_dict(json.loads((study / "prepared.json").read_text()))
    assert resenc.batch_size is not None and resenc.batch_size > 2
    assert resenc.batch_size == planner_batch("M", config_from_dict(resenc.config), (32, 32, 32),
                                              dataset_voxels(prepared))
    request = json.loads((study / "stages" / resenc.stage_id / "request.json").read_text())
    assert request["batch_size"] == resenc.batch_size and request["settings"]["initial_lr"] == 0.01
    first = [r for r in rows if not r.parent_stage]  # both kinds scored at rung 1, ranked there together
    assert all(r.dice_curve.get("1") is not None for r in first)
    halted = [r for r in first if r.status == "stopped"]
    log = (study / "study.log").read_text()
    assert halted or "rung 1 epochs, chain position 1: no signal" in log, "rung 1 decided nothing and said nothing"
    assert all(r.reason.startswith("halted at 1 of 2 epochs") for r in halted)
    assert any(r.status == "completed" for r in first)
    lines = read_answer(study).lines()
    kinds = [line for line in lines if line.startswith(("MedNeXt or ResEnc", "ResEnc or MedNeXt"))]
    assert len(kinds) == 1, lines
    assert NAME in kinds[0] and f"MedNeXt {FAMILIES[0]['label']} k" in kinds[0]
    assert kinds[0] in result.stdout  # the terminal's answer says it too
    page = write_report(study, tmp_path / "report.html", images=False)  # the page alone: no browser needed
    assert '"symbol":["hexagram"]' in page.html.read_text()  # the baseline's marker: its kind, not a kernel
    assert f"stage {resenc.stage_id} started: {NAME} from scratch, to 1 epochs" in log
