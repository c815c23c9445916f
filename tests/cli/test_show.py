"""``scalekit study show``: the answer first, then tables whose columns fit the terminal with every value whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from scalekit.cli.study_results import show_command
from scalekit.results.pareto import read_goals
from scalekit.records import read_results
from scalekit.results.scaling import scaling_summary
from scalekit.results.selection import select_stage
from scalekit.results.tables import Table, decimals, fit_table, fmt, stage_tables

from tests.helpers.study_fixture import STAGES, make_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    path = tmp_path_factory.mktemp("study")
    make_study(path)
    return path


def _show(study, *args: str, columns: int = 80) -> str:
    app = typer.Typer()
    app.command()(show_command)
    result = CliRunner().invoke(app, [str(study), *args], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


def test_show_at_80_columns_opens_with_the_answer_and_cuts_no_value(study) -> None:
    output = _show(study)
    lines = output.splitlines()
    records = read_results(study)
    budget = read_goals(study).max_memory_gb
    assert lines[0] == "Answer"
    answer = " ".join(" ".join(lines[1:lines.index("")]).split())  # the answer, its wrapped lines joined
    under = select_stage(records, f"max-dice-under={budget:g}GB").stage.stage_id
    knee = select_stage(records, "knee").stage.stage_id
    assert answer.startswith(f"train for the study's {budget:g} GiB budget: {under} (")
    assert f"knee: {knee} (" in answer
    assert answer.index("train for") < answer.index("knee:") < len(answer)
    assert output.index("Answer") < output.index("All trained") < output.index("Pareto front")
    assert "…" not in output and max(map(len, lines)) <= 80
    words = set(output.split())
    flowing = " ".join(output.split())
    for stage_id, _, _, _, dice, nsd, memory, _, reason in STAGES:
        assert stage_id in words
        if dice is not None:
            assert f"{dice:.4f}" in words and f"{memory:.2f}" in words
        if reason:
            assert f"{stage_id}: {reason}" in flowing  # printed whole (wrapped at most)
    assert "(--wide adds: parent, 95% interval, params, epochs, TFLOPs since scratch)" in output
    assert output.index("Pareto front") < output.index("Compound scaling")
    for line in scaling_summary(records):  # what each scaling axis bought, as the report's table has it
        assert " ".join(line.split()) in flowing


def test_wide_shows_every_column(study) -> None:
    output = _show(study, "--wide", columns=250)
    assert "TFLOPs since scratch" in output and "parent" in output and "--wide adds" not in output
    assert "…" not in output
    for record in read_results(study):
        if record.is_valid:
            assert fmt(record.params) in output.split()


def test_columns_fit_the_width_in_priority_order() -> None:
    table = Table("t", ["stage", "long text", "x", "note"], [["s1", "a" * 30, "1", "why"], ["s2", "b", "2", ""]],
                  compact=("stage", "x", "long text"), short={"x": "ex"}, text_column="note")
    narrow = fit_table(table, 20)
    assert (narrow.headers, narrow.rows) == (["stage", "ex"], [["s1", "1"], ["s2", "2"]])
    assert narrow.notes == ["s1: why"] and narrow.hidden == ["long text"] and narrow.width <= 20
    roomy = fit_table(table, 60)
    assert roomy.headers == ["stage", "long text", "ex"] and roomy.hidden == []
    assert fit_table(table, 5).headers == ["stage"]  # the first column always
    assert fit_table(table, 20, wide=True).headers == table.headers


def test_memory_gets_the_digits_that_tell_stages_apart(study) -> None:
    assert decimals([9.0, 10.0, None]) == 2
    assert decimals([0.113, 0.114]) == 3  # three significant digits
    assert decimals([0.11312, 0.11348]) == 4  # distinct values print distinct
    assert decimals([1.0, 1.0 + 1e-9]) == 6  # but never more than six decimals
    records = read_results(study)
    tiny = [r for r in records if r.peak_memory_bytes is not None][:3]
    for i, record in enumerate(tiny):
        record.peak_memory_bytes = int((0.1131 + 0.0002 * i) * 2**30)
    cells = {row[0]: row[8] for row in stage_tables(tiny, frozenset())[0].rows}
    assert len(set(cells.values())) == 3 and all(len(c) == 6 for c in cells.values()), cells


@pytest.mark.parametrize("command", [["study", "show"], ["study", "report"],
                                     ["study", "export", "--out", "EXPORT"]])
def test_results_commands_on_a_folder_that_is_not_a_study_exit_2(tmp_path: Path, command: list[str]) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"\xff\xd8")
    argv = [a.replace("EXPORT", str(tmp_path / "export")) for a in command]
    result = subprocess.run([sys.executable, "-c", "from scalekit.cli import main; main()", *argv[:2], str(folder),
                             *argv[2:]], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{folder} is not a study folder: it holds neither results.csv nor study.yaml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "export").exists()


def test_show_json_validates_against_its_schema(study) -> None:
    import json

    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "show.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    output = _show(study, "--json")
    document = json.loads(output)
    jsonschema.validate(document, schema)
    records = {r.stage_id: r for r in read_results(study)}
    assert {s["stage_id"] for s in document["stages"]} == set(records)
    assert document["answer"]["lines"][0].startswith("train for the study's")
    assert set(document["front"]) <= set(records) and document["choices"]["best"]["stage_id"] in records
    stopped = {d["stage_id"] for d in document["decisions"]}
    assert stopped == {s for s, r in records.items() if r.status in ("stopped", "infeasible", "failed")}
    broken = dict(document, stages=[dict(document["stages"][0], mean_dice="0.5")])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_wide_on_a_narrow_terminal_prints_a_record_per_stage_with_every_cell_whole(study) -> None:
    output = _show(study, "--wide", columns=80)
    lines = output.splitlines()
    assert max(map(len, lines)) <= 80
    for record in read_results(study):
        assert record.stage_id in lines or f"  stage: {record.stage_id}" in lines  # never split
    assert any(line.startswith("  TFLOPs since scratch: ") for line in lines)
