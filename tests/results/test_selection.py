"""Selection rules (best, knee, max-dice-under, stage id) and the ``config`` export of the chosen stage."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from scalekit.cli.study_results import export_command, show_command
from scalekit.mednext import MedNeXt, MedNeXtConfig, count_parameters, load_mednext, read_checkpoint
from scalekit.records import StageRecord, read_results, write_results
from scalekit.studyfile.rules import parse_memory_budget
from scalekit.results.export import export_stage
from scalekit.results.selection import find_knee, select_stage

from tests.helpers.study_fixture import make_study

GIB = 2**30


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    path = tmp_path_factory.mktemp("study")
    make_study(path)
    return path


def _stage(stage_id: str, dice: float, memory_gb: float, status: str = "completed") -> StageRecord:
    return StageRecord(stage_id=stage_id, family_id="f", n_channels=4, block_counts=[1] * 9, exp_r=[2] * 9,
                       kernel_size=3, status=status, mean_dice=dice, peak_memory_bytes=int(memory_gb * GIB))


def test_best_is_highest_dice_with_ties_to_lower_memory(study) -> None:
    records = read_results(study)
    choice = select_stage(records, "best")
    assert choice.stage.stage_id == "B-k5"  # G-k3 has the same Dice at 10 GB instead of 9 GB
    assert "highest mean Dice" in choice.explanation


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("max-dice-under=24GB", "B-k5"), ("max-dice-under=9GB", "B-k5"), ("max-dice-under=8.99GB", "B-k3"),
     ("max-dice-under=8GiB", "B-k3"), ("max-dice-under=8192MB", "B-k3"), ("max-dice-under=4", "A-k5"),
     ("max-dice-under=2.5GB", "A-k3")],
)
def test_max_dice_under_budget(study, rule, expected) -> None:
    assert select_stage(read_results(study), rule).stage.stage_id == expected


def test_budget_parsing_and_errors(study) -> None:
    assert parse_memory_budget("24GB") == 24 * GIB
    assert parse_memory_budget(" 800 MB") == 800 * 2**20
    for bad in ("abc", "24TB", "0GB", ""):
        with pytest.raises(ValueError, match="memory budget"):
            parse_memory_budget(bad)
    with pytest.raises(ValueError, match="smallest peak memory is 2.00 GB"):
        select_stage(read_results(study), "max-dice-under=1GB")


def test_stage_id_and_unknown_rules(study) -> None:
    records = read_results(study)
    assert select_stage(records, "C-k3").stage.stage_id == "C-k3"
    with pytest.raises(ValueError, match="stage D-k3 is failed: RuntimeError: CUDA out of memory"):
        select_stage(records, "D-k3")
    with pytest.raises(ValueError, match="neither a rule .* nor a stage id"):
        select_stage(records, "biggest")
    with pytest.raises(ValueError, match="no completed stage"):
        select_stage([r for r in records if not r.is_valid], "best")


def test_knee_is_furthest_above_the_chord() -> None:
    front = [_stage("m1", 0.50, 1), _stage("m2", 0.80, 2), _stage("m4", 0.85, 4), _stage("m8", 0.88, 8)]
    dominated = [_stage("x", 0.79, 3), _stage("failed", 0.99, 0.5, status="failed")]
    assert find_knee(front + dominated) == find_knee(front)
    assert (find_knee(front).stage.stage_id, find_knee(front).fallback) == ("m2", "")
    knee = select_stage(front, "knee")
    assert knee.explanation.startswith("m2: knee of the Dice-memory Pareto front") and not knee.fallback
    # No point above the chord: the knee falls back to the best stage, and the explanation says so and why.
    concave = [_stage("c1", 0.50, 1), _stage("c2", 0.55, 2), _stage("c3", 0.90, 3)]
    for records, best, shape in ((concave, "c3", "a concave front"), (front[:2], "m2", "a front of 2 points"),
                                 (front[:1], "m1", "a single point")):
        assert find_knee(records).stage.stage_id == best == select_stage(records, "best").stage.stage_id
        knee = select_stage(records, "knee")
        assert knee.stage.stage_id == best and shape in knee.fallback
        assert "knee of the" not in knee.explanation
        assert knee.explanation.startswith(f"{best}: no knee (") and "fell back to best" in knee.explanation


def test_knee_of_the_fixture(study) -> None:
    # A-k5 and E-k3 tie (same Dice and memory) at the largest distance; the smaller id wins.
    assert select_stage(read_results(study), "knee").stage.stage_id == "A-k5"


def test_export_config_rebuilds_the_network_and_loads_weights_strictly(study, tmp_path) -> None:
    selection, files = export_stage(study, "max-dice-under=8GB", "config", tmp_path)
    stage = selection.stage
    assert stage.stage_id == "B-k3"
    assert sorted(p.name for p in files) == ["network_config.json", "selection.json", "weights.pt"]
    config = MedNeXtConfig.from_dict(json.loads((tmp_path / "network_config.json").read_text()))
    model = MedNeXt(config)
    assert count_parameters(model) == stage.params
    state = read_checkpoint(tmp_path / "weights.pt")["state_dict"]
    model.load_state_dict(state, strict=True)
    original = read_checkpoint(study / stage.checkpoint)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], original[k]) for k in original)
    assert count_parameters(load_mednext(tmp_path / "weights.pt")) == stage.params
    record = json.loads((tmp_path / "selection.json").read_text())
    assert (record["rule"], record["stage_id"], record["to"]) == ("max-dice-under=8GB", "B-k3", "config")
    assert record["mean_dice"] == pytest.approx(0.76)


def test_export_refuses_inconsistent_or_missing_checkpoints(study, tmp_path) -> None:
    broken = tmp_path / "study"
    shutil.copytree(study, broken)
    records = read_results(broken)
    changed = [dataclasses.replace(r, config={**r.config, "n_channels": 16}) if r.stage_id == "B-k5" else r
               for r in records]
    write_results(broken, changed)
    with pytest.raises(ValueError, match="holds another architecture"):
        export_stage(broken, "B-k5", "config", tmp_path / "out")
    (broken / "checkpoints" / "B-k3.pt").unlink()
    with pytest.raises(ValueError, match="checkpoint .*B-k3.pt does not exist"):
        export_stage(broken, "B-k3", "config", tmp_path / "out")
    with pytest.raises(ValueError, match="--to 'onnx' is unknown"):
        export_stage(broken, "best", "onnx", tmp_path / "out")


def test_cli_show_and_export(study, tmp_path) -> None:
    app = typer.Typer()
    app.command("show")(show_command)
    app.command("export")(export_command)
    runner = CliRunner()
    shown = runner.invoke(app, ["show", str(study)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "Pareto front (maximize mean_dice, minimize peak_memory_gb, minimize gflops_train): " \
           "A-k3, A-k7, B-k3, B-k5, E-k3, F-k3" in shown.output
    assert "best: B-k5" in shown.output and "knee: A-k5" in shown.output
    assert "CUDA out of memory" in shown.output
    exported = runner.invoke(app, ["export", str(study), "--select", "A-k7", "--out", str(tmp_path)])
    assert exported.exit_code == 0, exported.output
    assert "selected (A-k7): A-k7: chosen by stage id" in exported.output
    assert json.loads((tmp_path / "selection.json").read_text())["stage_id"] == "A-k7"


def test_study_show_does_not_import_plotly(tmp_path: Path) -> None:
    """`scalekit study show` prints the tables without the report's plotly (a fast start, fewer dependencies)."""
    import subprocess
    import sys

    make_study(tmp_path / "study")
    code = ("import sys; from scalekit.cli import main; sys.argv = ['scalekit', 'study', 'show', sys.argv[1]]\n"
            "try:\n    main()\nfinally:\n    assert 'plotly' not in sys.modules, 'plotly was imported'")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "study")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "A-k3" in result.stdout


def test_no_signal_study_refuses_to_pick_without_force_or_a_stage_id(study, tmp_path) -> None:
    """Every stage scored Dice ~0: the study ends with the no-signal note and exports nothing, `study export`
    refuses a rule unless --force, and a stage id is exported with the warning in selection.json."""
    from scalekit.results.selection import NoSignalError
    from scalekit.study.runner import finish_study, result_notes
    from scalekit.studyfile import load_study_config
    from scalekit.studyfile.models import ExportSpec, FinishSection

    flat = tmp_path / "flat"
    shutil.copytree(study, flat)
    records = [dataclasses.replace(r, mean_dice=0.002 if r.is_valid else None, case_dice=[0.0, 0.004, 0.002])
               for r in read_results(flat)]
    write_results(flat, records)
    with pytest.raises(NoSignalError, match="carry no signal .*below 0.01.*--force"):
        export_stage(flat, "knee", "config", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    forced, _ = export_stage(flat, "best", "config", tmp_path / "forced", force=True)
    assert "NO SIGNAL" in forced.explanation
    assert "below 0.01" in json.loads((tmp_path / "forced" / "selection.json").read_text())["no_signal"]
    named, _ = export_stage(flat, "A-k3", "config", tmp_path / "named")
    assert named.stage.stage_id == "A-k3" and named.no_signal
    notes = result_notes(read_results(flat))
    assert any("completed stages: no signal" in n and "Raise training.epochs" in n for n in notes)
    config = load_study_config(flat / "study.yaml").model_copy(update={
        "output_dir": flat, "finish": FinishSection(report=False, export=ExportSpec(select="knee", to="config"))})
    report, export_dir, export_notes = finish_study(config)
    assert export_dir is None and len(export_notes) == 1
    assert "nothing exported" in export_notes[0] and "no signal" in export_notes[0]
    app = typer.Typer()
    app.command("show")(show_command)
    app.command("export")(export_command)
    shown = CliRunner().invoke(app, ["show", str(flat)], env={"COLUMNS": "200"})
    assert "NO SIGNAL" in shown.output and "no signal" in shown.output
    cli = CliRunner().invoke(app, ["export", str(flat), "--select", "knee", "--out", str(tmp_path / "c"), "--force"])
    assert cli.exit_code == 0, cli.output
