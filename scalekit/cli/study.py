"""``scalekit study ...``: validate and run studies (report, show and export live in study_results.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .study_results import export_command, report_command, show_command

app = typer.Typer(help="Run and inspect studies.", no_args_is_help=True)


@app.command("validate")
def validate(study_file: Annotated[Path, typer.Argument(help="A study YAML file.")]) -> None:
    """Check a study file and print every problem with its field path: the file's own, then (when it parses)
    its dataset, folds, output folders and storage, as a run would find them before any work. A valid study
    says where its raw dataset was found and where it is preprocessed, and warns about a random split or a
    surface-Dice tolerance finer than the voxels."""
    from scalekit.study import StudyConfig, StudyConfigError
    from scalekit.study.setup.advice import advise
    from scalekit.study.setup.checks import preflight
    from scalekit.studyfile import read_yaml, study_problems

    data = read_yaml(study_file)
    problems = study_problems(data)
    config = None if problems else StudyConfig.model_validate(data).resolve_paths(Path.cwd())
    if config is not None:
        problems = preflight(config)
    if problems or config is None:
        for problem in problems:
            print(f"{study_file}: {problem}")
        raise StudyConfigError(f"{study_file}: {len(problems)} problem(s)")
    advice = advise(config)
    for line in advice.locations:
        print(f"{study_file}: {line}")
    for warning in advice.warnings:
        print(f"{study_file}: warning: {warning}")
    print(f"{study_file}: valid")


@app.command("new")
def new(
    dataset: Annotated[str, typer.Argument(help="Raw dataset folder, or its id / name under --raw-root.")],
    gpu_memory: Annotated[float, typer.Option(help="GPU memory in GiB: the study's memory budget.")],
    out: Annotated[Path, typer.Option(help="The study file to write.")] = Path("study.yaml"),
    raw_root: Annotated[Path | None, typer.Option(help="Folder of raw datasets (default: $nnUNet_raw).")] = None,
    preprocessed: Annotated[
        Path | None, typer.Option(help="nnUNet_preprocessed folder (default: $nnUNet_preprocessed, else the "
                                       "study's own).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing study file.")] = False,
) -> None:
    """Write a starting study file for a raw dataset and a GPU budget (the paper's presets, halving, the knee
    exported); it passes `scalekit study validate` as written."""
    from scalekit.study.setup.new import write_new_study

    study = write_new_study(out, dataset, gpu_memory, force=force, raw_root=raw_root, preprocessed_root=preprocessed)
    patch = "nnU-Net's planned patch" if study.planned else "the paper's patch (not preprocessed yet)"
    print(f"{out}: a study of {study.dataset.name} for {gpu_memory:g} GiB at {patch}; next: scalekit study "
          f"validate {out}")


@app.command("profile")
def profile(
    study_file: Annotated[Path, typer.Argument(help="A study YAML file.")],
    in_channels: Annotated[int | None, typer.Option(help="Image channels (default: from the dataset).")] = None,
    num_classes: Annotated[
        int | None, typer.Option(help="Classes with background (default: from the dataset).")
    ] = None,
) -> None:
    """Profile every stage of a study's space (no GPU needed) and show which fit its constraints."""
    from rich.console import Console
    from rich.table import Table

    from scalekit.study import StudyConfigError, load_study_config
    from scalekit.study.setup.checks import inspect_dataset
    from scalekit.study.engine.planning import dataset_channels, profile_study

    config = load_study_config(study_file)
    found = dataset_channels(config)
    channels, classes = in_channels, num_classes
    if channels is None or classes is None:
        if found is None:
            facts, problems = inspect_dataset(config)  # demo data still to generate: its channels and classes
            if facts is None or facts.channels is None or facts.classes is None:
                raise StudyConfigError(
                    f"{study_file}: {problems[0] if problems else 'the dataset is not prepared'}. Its image "
                    "channels and classes are unknown: pass --in-channels and --num-classes (classes include the "
                    "background)"
                )
            found = facts.channels, facts.classes
        channels = channels if channels is not None else found[0]
        classes = classes if classes is not None else found[1]
    records = profile_study(config, channels, classes)
    budget = config.constraints.max_memory_gb
    table = Table(title=f"{config.name}: {len(records)} stages at patch {list(config.dataset.patch_size)}, "
                  f"batch {config.dataset.batch_size}"
                  + (" (ResEnc baselines: nnU-Net's planner's)" if any(r.batch_size for r in records) else "")
                  + (f", budget {budget:g} GB" if budget else ""))
    for column in ("family", "k", "batch", "ckpt", "params (M)", "GFLOPs train", "peak GB", "fits"):
        table.add_column(column, justify="left" if column in ("family", "fits") else "right")
    for r in records:
        if r.params is None or r.gflops_train is None or r.peak_memory_gb is None:
            raise ValueError(f"stage {r.stage_id} was planned without its profile")
        fits = "yes" if r.status == "pending" else f"no: {r.reason}"
        batch = str(r.batch_size or config.dataset.batch_size) + ("" if r.batch_size is None else " (planner)")
        table.add_row(r.family_label, str(r.kernel_size), batch, "on" if r.config["checkpointing"] else "off",
                      f"{r.params / 1e6:.2f}", f"{r.gflops_train:.1f}", f"{r.peak_memory_gb:.2f}", fits)
    Console(width=max(Console().width, 120)).print(table)
    feasible = sum(r.status == "pending" for r in records)
    print(f"{feasible} of {len(records)} stages fit ({records[0].memory_method} memory)")


@app.command("run")
def run(
    study_file: Annotated[Path, typer.Argument(help="A study YAML file.")],
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address ('auto', 'ray://host:10001'); default: local.")
    ] = None,
    quiet: Annotated[bool, typer.Option(
        help="No live panel and no event lines on stdout (study.log is written all the same).")] = False,
) -> None:
    """Run a study, or resume it when its output directory already holds one.

    A terminal shows a live panel (data steps, running stages with epoch, loss and ETA); any other stdout
    gets one timestamped line per event, the lines that <study>/study.log collects in every case.

    Exit status: 0 finished with completed stages, 1 finished without any, 130 interrupted (rerun to
    resume), 2 bad input (the study file, its dataset, a study directory in use).
    """
    import logging

    from scalekit.records import describe_spent
    from scalekit.study import run_study

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    summary = run_study(study_file, address=address, show_progress=not quiet)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items()))
    if summary.state == "interrupted":
        print(f"{summary.study_dir}: {counts}; interrupted: rerun the same command to resume")
        raise typer.Exit(130)
    print(f"{summary.study_dir}: {counts}; finished")
    if summary.state == "finished":
        from scalekit.results.answer import read_answer

        print("answer:")
        for line in read_answer(summary.study_dir).lines():
            print(f"  {line}")
    print(f"results: {summary.study_dir / 'results.csv'}")
    if summary.report is not None:
        print(f"report: {summary.report}")
    if summary.export_dir is not None:
        print(f"export: {summary.export_dir} (selection.json says which stage and why)")
    spent = summary.spent
    if spent:
        print(f"compute: {describe_spent(spent)}")
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    if summary.state == "none-completed":
        print("no stage completed, so nothing was exported; the stages ended so:", file=sys.stderr)
        for reason, n in sorted(summary.reasons.items(), key=lambda item: -item[1]):
            print(f"  {n} x {reason}", file=sys.stderr)
        raise typer.Exit(1)


app.command("report")(report_command)
app.command("show")(show_command)
app.command("export")(export_command)
