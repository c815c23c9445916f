"""``scalekit study report | show | export``: look at a study's results and take the chosen network away."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated

import typer

StudyDir = Annotated[Path, typer.Argument(help="The study directory (holds results.csv and study.yaml).")]


def report_command(
    study_dir: StudyDir,
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default STUDY_DIR/report.html).")] = None,
    images: Annotated[bool, typer.Option(help="Also write PNG and SVG of each figure (needs Chromium).")] = True,
    style: Annotated[str, typer.Option(help="Figure style: 'paper' (3.5 in wide, 10 pt type, no titles: one "
                                            "column of a two-column paper) or 'screen' (larger, titled).")] = "paper",
) -> None:
    """Write the HTML report (Pareto plots, UpKern gains, all stages); safe to run while the study runs."""
    from scalekit.report.output import write_report

    result = write_report(study_dir, out, images=images, style=style)
    print(f"report: {result.html}")
    if result.images:
        print(f"images: {len(result.images)} files in {result.images[0].parent}")
    if result.note:
        print(f"note: {result.note}")


def show_command(
    study_dir: StudyDir,
    wide: Annotated[bool, typer.Option(help="Every column of the stage tables, however wide the terminal.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead (schema: "
                                                         "docs/show.schema.json), for scripts.")] = False,
) -> None:
    """Print the study's answer, then its stages and Pareto front, in the terminal (80 columns are enough).

    Example: scalekit study show runs/demo --json > demo.json
    """
    if as_json:
        import json

        from scalekit.results.summary import study_summary

        print(json.dumps(study_summary(study_dir), indent=1))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from scalekit.results.answer import read_answer
    from scalekit.results.fidelity import findings
    from scalekit.results.pareto import study_front
    from scalekit.records import describe_spent, training_spent
    from scalekit.results.scaling import scaling_summary
    from scalekit.results.tables import fit_table, stage_tables

    study = study_front(study_dir)
    console = Console()
    answer = read_answer(study_dir)
    console.print("Answer", style="bold")
    for line in answer.lines():
        console.print(_indented(line, console.width), markup=False, highlight=False)
    for table in stage_tables(study.records, study.front_ids):
        if not table.rows:
            continue
        view = fit_table(table, console.width, wide)
        console.print()
        console.print(view.title, style="bold", markup=False)
        if view.width > console.width:  # --wide on a narrow terminal or a pipe: a record per stage, cells whole
            for row in view.rows:
                console.print(row[0], style="bold" if row[0] in study.front_ids else None, markup=False)
                for header, cell in zip(view.headers[1:], row[1:]):
                    console.print(_indented(f"{header}: {cell}", console.width), markup=False, highlight=False)
            continue
        grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
        for header in view.headers:
            grid.add_column(header, overflow="fold")
        for stage_id, row in zip((r[0] for r in table.rows), view.rows):
            grid.add_row(*row, style="bold" if stage_id in study.front_ids else None)
        console.print(grid)
        for note in view.notes:
            console.print(note, markup=False)
        if view.hidden:
            console.print(f"(--wide adds: {', '.join(view.hidden)})", markup=False)
    console.print()
    objectives = ", ".join(f"{o.direction} {o.metric}" for o in study.goals.objectives)
    front = ", ".join(r.stage_id for r in study.records if r.stage_id in study.front_ids)
    console.print(f"Pareto front ({objectives}): {front or 'empty (no completed stage yet)'}", markup=False)
    for rule, choice in answer.choices.items():
        console.print(f"{rule}: {choice.explanation}", markup=False)
    console.print(f"compute: {describe_spent(training_spent(study.records))}")
    for line in findings(study.records):
        console.print(line, markup=False)
    console.print()
    console.print("Compound scaling (what each axis bought; the report has the pairs)", style="bold")
    for line in scaling_summary(study.records):
        console.print(_indented(line, console.width), markup=False, highlight=False)


def _indented(line: str, width: int) -> str:
    """A line wrapped at spaces to ``width`` and indented by two: ids and paths are never broken."""
    return textwrap.fill(line, width, initial_indent="  ", subsequent_indent="  ", break_long_words=False,
                         break_on_hyphens=False)


def export_command(
    study_dir: StudyDir,
    out: Annotated[Path, typer.Option(help="Folder to write the export and selection.json to; an earlier export "
                                           "there is replaced only once the new one is complete.")],
    select: Annotated[
        str, typer.Option(help="best | knee | max-dice-under=24GB | a stage id (see `scalekit study show`).")
    ] = "best",
    to: Annotated[str, typer.Option(help="config (MedNeXt config + weights) or nnunet (plans, trainer).")] = "config",
    force: Annotated[bool, typer.Option(help="Export even when the stages' Dice carry no signal.")] = False,
    plans: Annotated[str | None, typer.Option(help="nnU-Net plans identifier (--to nnunet; default "
                                                   "scalekitPlans_<stage id>).")] = None,
) -> None:
    """Export one stage of a study, chosen by a selection rule, as a standalone network or an nnU-Net setup."""
    from scalekit.results.export import export_stage

    from .nnunet import print_written

    selection, files = export_stage(study_dir, select, to, out, force, plans)
    print(f"selected ({selection.rule}): {selection.explanation}")
    for path in files:
        print_written([path], out)
        if path.name == "train.sh":
            print(f"train it with these commands ({path}):\n{path.read_text()}")
