"""``scalekit study ...``: validate and run studies (report, show and export live in study_results.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .study_results import export_command, report_command, show_command

app = typer.Typer(help="Run and inspect studies.", no_args_is_help=True)


@app.command("validate")
def validate(study_file: Annotated[Path, typer.Argument(help="A study YAML file.")]) -> None:
    """Check a study file and print every problem with its field path."""
    from scalekit.study import StudyConfigError
    from scalekit.study.config import read_yaml, study_problems

    problems = study_problems(read_yaml(study_file))
    if problems:
        for problem in problems:
            print(f"{study_file}: {problem}")
        raise StudyConfigError(f"{study_file}: {len(problems)} problem(s)")
    print(f"{study_file}: valid")


@app.command("run")
def run(
    study_file: Annotated[Path, typer.Argument(help="A study YAML file.")],
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address ('auto', 'ray://host:10001'); default: local.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No live progress display.")] = False,
) -> None:
    """Run a study, or resume it when its output directory already holds one."""
    import logging

    from scalekit.study import run_study

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    summary = run_study(study_file, address=address, show_progress=not quiet)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items()))
    state = "finished" if summary.finished else "stopped before the end: rerun the same command to resume"
    print(f"{summary.study_dir}: {counts}; {state}")
    print(f"results: {summary.study_dir / 'results.csv'}")
    if summary.report is not None:
        print(f"report: {summary.report}")
    if summary.export_dir is not None:
        print(f"export: {summary.export_dir} (selection.json says which stage and why)")


app.command("report")(report_command)
app.command("show")(show_command)
app.command("export")(export_command)
