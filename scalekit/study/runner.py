"""Run a study end to end: data, profiles, UpKern chains on a backend (Ray, or local worker processes), results
as they arrive.

``run_study("studies/demo.yaml")`` validates the study file, generates the demo data if the study asks for it,
prepares the nnU-Net dataset, and runs the chains. Rerunning it on the same output directory resumes: the
results table, the Optuna storage and the stage folders are the state.

Study directory layout::

    .scalekit.lock   held by the one process that runs the study (names its host and PID)
    study.yaml       the validated study file (a rerun must match it)
    study.log        one timestamped line per event (data steps, stage started / epoch / ended, study end),
                     appended by every run
    prepared.json    the prepared nnU-Net dataset
    results.csv      one row per chain stage, rewritten as each stage changes
    optuna.db        the Optuna storage (unless ``storage`` names another)
    stages/<id>/     each stage's training folder, checkpoints and final weights; progress.jsonl (a line per
                     epoch), stage.log (the worker's output), error.log (the traceback of a failed stage)
    confirm/         the finalists retrained with other seeds (finish.confirm): plan.json, seed-<s>/results.csv
                     and seed-<s>/stages/ like the study's own
    ray/run-*/       (ray backend) the Ray Tune experiments, one per invocation; ray/driver.log: Ray's and Tune's
                     messages; ray/auth_token: the token of the study's own Ray while it runs (owner-readable only)
    nnunet/          nnU-Net raw / preprocessed / results folders (unless the study names others)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scalekit._atomic import write_atomic
from scalekit.faults import ENV_VARIABLES
from scalekit.records import ResultsTable, StudyDir
from scalekit.studyfile import (
    StudyConfig,
    StudyConfigError,
    format_problems,
    load_study_config,
    read_saved_study,
)

from .setup.advice import advise
from .engine.chain import ChainPlanner
from .setup.checks import demo_folder, preflight
from .monitor.eventlog import EventLog
from .monitor.events import StudyFinished, StudyState
from .lock import StudyLock
from .engine.planning import build_space, chain_rules, resolve_hardware, stage_planning

log = logging.getLogger(__name__)

STUDY_DIR_ENV = "SCALEKIT_STUDY_DIR"
"""Set in every process a run starts (every backend's workers included), so that a test or a user can find them
all."""
IDENTITY_IGNORED = {"output_dir", "resources", "backend", "finish", "dataset.raw_dir", "dataset.preprocessed_dir"}
"""What may change between two runs of one study directory: where it lives and runs, and what it writes at the
end. Everything else (name, storage, search, space, dataset, training, chain, objectives, constraints) defines
the study: a rerun with another value would mix results or fork the Optuna history."""
FORWARDED_ENV = ("nnUNet_def_n_proc", "nnUNet_n_proc_DA", *ENV_VARIABLES)


@dataclass(frozen=True)
class StudySummary:
    """What a run left: the study directory, stage counts, how it ended, and the outputs written at the end
    (report, export folder) when the study finished.

    ``state``: ``finished`` (every chain ended, some stage completed), ``none-completed`` (every chain ended
    without a completed stage), ``interrupted`` (stopped before the end; rerun to resume). ``notes``: what the
    user must know about the results: rungs or completed stages whose Dice carries no signal, an export
    refused for that reason, the compute budget that ended the search, and for each UpKern step with a
    control whether continuing the parent or the larger kernel paid more per unit of compute.
    """

    study_dir: Path
    counts: dict[str, int]
    state: StudyState
    reasons: dict[str, int] = field(default_factory=dict)
    report: Path | None = None
    export_dir: Path | None = None
    notes: tuple[str, ...] = ()
    spent: dict[str, float] = field(default_factory=dict)
    """Training spent: ``epochs``, ``device_hours``, ``train_tflops`` over every stage."""

    @property
    def finished(self) -> bool:
        return self.state != "interrupted"


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            path = f"{prefix}{key}"
            if path not in IDENTITY_IGNORED:
                out += _differences(saved.get(key), current.get(key), f"{path}.")
        return out
    return [] if saved == current else [prefix.rstrip(".")]


def check_same_study(config: StudyConfig, study_dir: Path) -> None:
    """Refuse to run a study file in a directory that holds another study (any defining field changed)."""
    saved = read_saved_study(study_dir)
    if saved is None:
        return
    changed = _differences(saved.model_dump(mode="json"), config.model_dump(mode="json"))
    if changed:
        raise StudyConfigError(
            f"{study_dir} holds a study whose {', '.join(changed)} differ(s) from this study file; results "
            "would mix. Restore those fields, or give the study a new output_dir."
        )


def prepare_data(config: StudyConfig, on_step: Callable[[str], None] = lambda step: None) -> Any:
    """Generate the demo data if asked and missing, then validate and preprocess (reused when unchanged);
    ``on_step`` hears each step as it begins."""
    from scalekit import nnunet

    raw_root, pre_root = config.nnunet_roots()
    d = config.dataset
    dataset: Any = d.reference
    if d.demo is not None:
        folder = demo_folder(config)
        if not (folder / "dataset.json").exists():
            on_step(f"generating the demo dataset in {folder}")
            nnunet.make_demo_dataset(
                raw_root, cases=d.demo.cases, size=d.demo.size, seed=d.demo.seed, dataset_id=d.id or 990,
                name=folder.name.split("_", 1)[1],
            )
        dataset = folder
    return nnunet.prepare_dataset(
        dataset, pre_root, configuration=d.configuration, patch_size=d.patch_size, spacing=d.spacing,
        raw_root=raw_root, splits=d.splits, on_step=on_step,
    )


def run_study(
    study_file: str | Path, address: str | None = None, show_progress: bool = True
) -> StudySummary:
    """Run (or resume) the study described by ``study_file``; returns when every chain has ended or when the
    run is interrupted (Ctrl-C: the summary's state says so, and a rerun resumes).

    Every event is appended to ``<study>/study.log``. With ``show_progress`` a terminal shows a live panel,
    and any other stdout (a file, a pipe, a cluster job's log) gets the same lines as study.log.

    Raises:
        StudyConfigError: a bad study file, a study directory holding another study, or anything
            :func:`~scalekit.study.setup.checks.preflight` finds, before anything is written.
        StudyLockedError: another process runs this study directory.
    """
    config = load_study_config(study_file)
    if address is not None:
        if config.backend.kind != "ray":
            raise StudyConfigError(f"--address {address}: the study's backend is {config.backend.kind!r}, which runs "
                                   "on this machine; set backend.kind: ray to use a cluster")
        config = config.model_copy(update={"backend": config.backend.model_copy(update={"address": address})})
    problems = preflight(config)
    if problems:
        raise StudyConfigError(format_problems(study_file, problems))
    for warning in advise(config).warnings:
        log.warning("%s", warning)
    study_dir = config.output_dir
    terminal = show_progress and sys.stdout.isatty()
    with StudyLock(study_dir):
        check_same_study(config, study_dir)
        write_atomic(StudyDir(study_dir).study_file, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        events = EventLog(study_dir, echo=sys.stdout if show_progress and not terminal else None)
        try:
            summary = _run_locked(config, events, terminal)
        except KeyboardInterrupt:  # before or after the chains (data, report): nothing is lost, rerun resumes
            log.warning("interrupted")
            summary = StudySummary(study_dir, ResultsTable(study_dir).counts(), "interrupted")
        events.emit(study_finished(summary))
        return summary


def study_finished(summary: StudySummary) -> StudyFinished:
    """The last event of a run: how it ended, its best stage and what it spent."""
    from scalekit.records import describe_spent

    valid = [r for r in ResultsTable(summary.study_dir).records() if r.is_valid]
    best = max(valid, key=lambda r: r.mean_dice or 0.0) if valid else None
    return StudyFinished(summary.state, summary.counts, best.stage_id if best else "",
                         best.mean_dice if best else None, describe_spent(summary.spent) if summary.spent else "")


def _run_locked(config: StudyConfig, events: EventLog, terminal: bool) -> StudySummary:
    from .monitor.progress import StudyProgress
    from .engine.search import SearchSettings

    study_dir = config.output_dir
    space = build_space(config)
    settings = SearchSettings(
        sampler=config.search.sampler,
        families=config.search.families,
        seed=config.search.seed,
        metrics=tuple(o.metric for o in config.objectives),
        directions=tuple(o.resolved_direction for o in config.objectives),
        storage=config.storage or f"sqlite:///{StudyDir(study_dir).optuna_db}",
        study_name=config.name,
    )
    table = ResultsTable(study_dir)
    progress = StudyProgress(table, f"study {config.name}", events)
    with progress.live() if terminal else contextlib.nullcontext():
        planner, search, confirm, interrupted = _train_chains(config, space, settings, table, events,
                                                              progress.refresh)
    return _finish_run(config, table, planner, search, confirm, interrupted)


def _train_chains(
    config: StudyConfig, space: Any, settings: Any, table: ResultsTable, events: EventLog,
    refresh: Callable[[], None],
) -> tuple[ChainPlanner, Any, Any, bool]:
    """Prepare the data, start the backend, run the chains and then the confirmation of the finalists; the
    planner, the search, the confirmation (None without one) and whether the run was interrupted."""
    from .backend import BackendSettings, TrialResources, make_backend
    from .backend.worker import stage_launcher
    from .engine.search import ChainSearch, open_optuna_study

    study_dir = config.output_dir
    study = open_optuna_study(settings, space)
    prepared = prepare_data(config, events.data_step)
    write_atomic(StudyDir(study_dir).prepared, json.dumps(prepared.to_dict(), indent=1))
    events.data_step(f"data ready: {prepared.dataset_name}, patch {list(prepared.patch_size)}; starting the "
                     f"{config.backend.kind} backend")
    threads = str(max(1, int(config.resources.cpus_per_trial)))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1",
           STUDY_DIR_ENV: str(study_dir)}
    env.update({key: os.environ[key] for key in FORWARDED_ENV if key in os.environ})
    os.environ[STUDY_DIR_ENV] = str(study_dir)
    backend = make_backend(config.backend.kind, BackendSettings(study_dir, env, config.backend.address))
    with backend.session() as nodes:
        gpus, device, amp = resolve_hardware(config, list(nodes.values()))
        resources = TrialResources(config.resources.cpus_per_trial, gpus, config.resources.max_concurrent)
        backend.check_nodes(nodes, resources, list(config.nnunet_roots()), events.data_step)
        planning = stage_planning(config, prepared.num_input_channels, prepared.num_classes, amp, prepared)
        planner = ChainPlanner(
            planning.resolve(space), table, planning.templates, planning.profile, planning.constraints,
            StudyDir(study_dir).stages,
            chain_rules(config, gpus if gpus > 0 else 1.0), planning.checkpointing,
        )
        for kind, stage_ids in planner.recover().items():
            if stage_ids:
                log.warning("%s stages: %s", kind, ", ".join(stage_ids))
        events.watch(table, StudyDir(study_dir).stages)

        def on_change() -> None:
            events.poll()
            refresh()

        search = ChainSearch(planner, study, settings, on_change=on_change)
        launch = stage_launcher(config, prepared, device, amp)
        confirm = None
        try:
            backend.run(search, launch, resources)
            confirm = _seed_runs(config, planner, search, events, on_change)
            if confirm is not None:
                backend.run(confirm, launch, resources)
        except KeyboardInterrupt:
            log.warning("interrupted")
        interrupted = bool(planner.interrupt()) or (confirm is not None and bool(confirm.interrupt()))
        events.poll()
    return planner, search, confirm, interrupted


def _seed_runs(config: StudyConfig, planner: ChainPlanner, search: Any, events: EventLog,
               on_change: Callable[[], None]) -> Any:
    """The retraining of the finalists once the search has ended, when ``finish.confirm`` asks for it."""
    from .engine.confirm import SeedRuns, plan_confirmation

    spec = config.finish.confirm
    if spec is None or not search.finished:
        return None
    plan = plan_confirmation(planner, config.constraints.max_memory_gb, spec.seeds, spec.max_finalists,
                             config.training.seed)
    if plan is None:
        return None
    events.data_step(f"confirming {len(plan.finalists)} finalist(s) ({', '.join(plan.finalists)}) with seeds "
                     f"{', '.join(map(str, plan.seeds))}")
    return SeedRuns(planner, plan, on_change)


def _finish_run(
    config: StudyConfig, table: ResultsTable, planner: ChainPlanner, search: Any, confirm: Any, interrupted: bool
) -> StudySummary:
    """The summary of the run; the report and the export when every chain (and the confirmation) ended."""
    study_dir = config.output_dir
    spent = planner.spent()
    if confirm is not None:
        spent = {key: value + confirm.spent()[key] for key, value in spent.items()}
    if interrupted or not search.finished or (confirm is not None and not confirm.finished):
        return StudySummary(study_dir, table.counts(), "interrupted", spent=spent)
    records = table.records()
    notes = result_notes(records)
    if confirm is not None:
        from scalekit.results.seeds import read_confirmation

        confirmation = read_confirmation(study_dir, records)
        notes += confirmation.lines() if confirmation is not None else []
    if search.ended_by == "budget":
        notes.insert(0, f"the compute budget is spent ({spent['device_hours']:.2f} device-hours, "
                        f"{spent['epochs']:.0f} epochs): stages still waiting were halted")
    if not any(r.is_valid for r in records):
        reasons = Counter(f"{r.status}: {r.reason}" for r in records if r.reason)
        report, _, _ = finish_study(config, export=False)
        return StudySummary(study_dir, table.counts(), "none-completed", dict(reasons), report, None,
                            tuple(notes), spent)
    report, export_dir, export_notes = finish_study(config)
    notes += export_notes
    return StudySummary(study_dir, table.counts(), "finished", {}, report, export_dir, tuple(notes), spent)


def result_notes(records: list[Any]) -> list[str]:
    """The signal warnings of the results and the verdict of each controlled UpKern step."""
    from scalekit.results.fidelity import signal_warnings, upkern_steps

    steps = [step.describe() for step in upkern_steps(records) if step.control]
    return signal_warnings(records) + steps


def finish_study(config: StudyConfig, export: bool = True) -> tuple[Path | None, Path | None, list[str]]:
    """Write the report and the export that the study's ``finish`` section asks for (no export when
    ``export`` is false: a study without a completed stage has nothing to export). The third value holds what
    the user must know of the export: that it was refused (the stages' Dice carries no signal) or forced, and
    every file it wrote outside the export folder (the plans nnU-Net reads from the preprocessed folder)."""
    report = export_dir = None
    if config.finish.report:
        from scalekit.report.output import write_report

        report = write_report(config.output_dir).html
    spec = config.finish.export
    if spec is None or not export:
        return report, None, []
    from scalekit.results.export import export_stage
    from scalekit.results.selection import NoSignalError

    export_dir = StudyDir(config.output_dir).export
    try:
        selection, files = export_stage(config.output_dir, spec.select, spec.to, export_dir, spec.force)
    except NoSignalError as err:
        log.warning("%s", err)
        return report, None, [f"nothing exported: {err}"]
    log.info("exported %s (%s) to %s", selection.stage.stage_id, spec.select, export_dir)
    notes = [f"the export wrote {path} outside {export_dir}: nnU-Net reads plans from the preprocessed folder"
             for path in files if not path.resolve().is_relative_to(export_dir.resolve())]
    if selection.no_signal:
        notes.insert(0, f"exported {selection.stage.stage_id} although its Dice carries no signal")
    return report, export_dir, notes
