"""``scalekit study report | show | export``: look at a study's results and take the chosen network away."""

from __future__ import annotations

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
    from scalekit.report import write_report

    result = write_report(study_dir, out, images=images, style=style)
    print(f"report: {result.html}")
    if result.images:
        print(f"images: {len(result.images)} files in {result.images[0].parent}")
    if result.note:
        print(f"note: {result.note}")


def show_command(study_dir: StudyDir) -> None:
    """Print the stages and the Pareto front of a study in the terminal."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from scalekit.fidelity import findings
    from scalekit.pareto import study_front
    from scalekit.records import describe_spent, training_spent
    from scalekit.selection import rule_choices
    from scalekit.tables import stage_tables

    study = study_front(study_dir)
    console = Console()
    for table in stage_tables(study.records, study.front_ids):
        if not table.rows:
            continue
        view = Table(title=table.title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        for header in table.headers:
            # Stage ids stay whole; other columns wrap or shorten when the terminal is narrow.
            view.add_column(header, no_wrap=header == "stage")
        for row in table.rows:
            view.add_row(*row, style="bold" if row[0] in study.front_ids else None)
        console.print(view)
    objectives = ", ".join(f"{o.direction} {o.metric}" for o in study.goals.objectives)
    front = ", ".join(r.stage_id for r in study.records if r.stage_id in study.front_ids)
    console.print(f"Pareto front ({objectives}): {front or 'empty (no completed stage yet)'}")
    for rule, choice in rule_choices(study.records).items():
        console.print(f"{rule}: {choice.explanation}")
    console.print(f"compute: {describe_spent(training_spent(study.records))}")
    for line in findings(study.records):
        console.print(line, markup=False)


def export_command(
    study_dir: StudyDir,
    out: Annotated[Path, typer.Option(help="Folder to write the export and selection.json to; an earlier export "
                                           "there is replaced only once the new one is complete.")],
    select: Annotated[
        str, typer.Option(help="best | knee | max-dice-under=24GB | a stage id (see `scalekit study show`).")
    ] = "best",
    to: Annotated[str, typer.Option(help="config (MedNeXt config + weights) or nnunet (plans, trainer).")] = "config",
    force: Annotated[bool, typer.Option(help="Export even when the stages' Dice carry no signal.")] = False,
) -> None:
    """Export one stage of a study, chosen by a selection rule, as a standalone network or an nnU-Net setup."""
    from scalekit.selection import export_stage

    selection, files = export_stage(study_dir, select, to, out, force)
    print(f"selected ({selection.rule}): {selection.explanation}")
    for path in files:
        print(f"wrote {path}")
        if path.name == "train.sh":
            print(f"train it with these commands ({path}):\n{path.read_text()}")
