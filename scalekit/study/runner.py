"""Run a study end to end: data, profiles, UpKern chains on Ray, results as they arrive.

``run_study("studies/demo.yaml")`` validates the study file, generates the demo data if the study asks for it,
prepares the nnU-Net dataset, and runs the chains. Rerunning it on the same output directory resumes: the
results table, the Optuna storage and the stage folders are the state.

Study directory layout::

    study.yaml       the validated study file (a rerun must match it)
    prepared.json    the prepared nnU-Net dataset
    results.csv      one row per chain stage, rewritten as each stage changes
    optuna.db        the Optuna storage (unless ``storage`` names another)
    stages/<id>/     each stage's training folder, checkpoints and final weights
    ray/run-*/       the Ray Tune experiments, one per invocation
    nnunet/          nnU-Net raw / preprocessed / results folders (unless the study names others)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scalekit.space import Family, SearchSpace

from .chain import ChainPlanner
from .config import StudyConfig, StudyConfigError, load_study_config
from .feasibility import resolve_hardware, stage_planning
from .results import ResultsTable

log = logging.getLogger(__name__)

STUDY_FILE = "study.yaml"
PREPARED_FILE = "prepared.json"
RESULT_SECTIONS = ("dataset", "training", "space", "chain", "objectives", "constraints")
"""Sections that change results: a rerun on the same directory must keep them."""


@dataclass(frozen=True)
class StudySummary:
    """What a run left: the study directory, stage counts, whether every chain has ended, and the outputs
    written at the end (report, export folder) when the study finished."""

    study_dir: Path
    counts: dict[str, int]
    finished: bool
    report: Path | None = None
    export_dir: Path | None = None


def build_space(config: StudyConfig) -> SearchSpace:
    """The study's search space (presets, explicit families, compound-scaling range)."""
    s = config.space
    families = [Family(f.n_channels, f.block_counts, f.exp_r, f.label) for f in s.families]
    scaling = None
    if s.scaling is not None:
        scaling = (s.scaling.base, s.scaling.depth, s.scaling.expansion, s.scaling.n_channels)
    return SearchSpace.build(s.presets, families, scaling, s.kernels, s.preset_channels)


def _check_same_study(config: StudyConfig, study_dir: Path) -> None:
    saved_path = study_dir / STUDY_FILE
    if not saved_path.exists():
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}
    current = config.model_dump(mode="json")
    changed = [s for s in RESULT_SECTIONS if saved.get(s) != current.get(s)]
    if changed:
        raise StudyConfigError(
            f"{study_dir} holds a study whose {', '.join(changed)} section(s) differ from this study file; "
            "results would mix. Restore those sections, or give the study a new output_dir."
        )


def prepare_data(config: StudyConfig) -> Any:
    """Generate the demo data if asked and missing, then validate and preprocess (reused when unchanged)."""
    from scalekit import nnunet

    raw_root, pre_root = config.nnunet_roots()
    d = config.dataset
    dataset: Any = d.name if d.name is not None else d.id
    if d.demo is not None:
        name = (d.name or "ScalekitDemo").split("_", 1)[-1]
        folder = raw_root / f"Dataset{(d.id or 990):03d}_{name}"
        if not (folder / "dataset.json").exists():
            log.info("generating the demo dataset in %s", folder)
            nnunet.make_demo_dataset(
                raw_root, cases=d.demo.cases, size=d.demo.size, seed=d.demo.seed, dataset_id=d.id or 990, name=name
            )
        dataset = folder
    return nnunet.prepare_dataset(
        dataset, pre_root, configuration=d.configuration, patch_size=d.patch_size, spacing=d.spacing,
        raw_root=raw_root,
    )


def run_study(
    study_file: str | Path, address: str | None = None, show_progress: bool = True
) -> StudySummary:
    """Run (or resume) the study described by ``study_file``; returns when every chain has ended or on Ctrl-C."""
    from scalekit.upkern_chain import ChainSearcher, RaySettings, SearchSettings, open_optuna_study, run_chains

    from .progress import StudyProgress
    from .stage import stage_launcher

    config = load_study_config(study_file)
    if address is not None:
        config = config.model_copy(update={"ray": config.ray.model_copy(update={"address": address})})
    study_dir = config.output_dir
    _check_same_study(config, study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / STUDY_FILE).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))

    space = build_space(config)
    prepared = prepare_data(config)
    (study_dir / PREPARED_FILE).write_text(json.dumps(prepared.to_dict(), indent=1))
    gpus, device, amp = resolve_hardware(config)
    planning = stage_planning(config, prepared.num_input_channels, prepared.num_classes)
    table = ResultsTable(study_dir)
    planner = ChainPlanner(
        space, table, planning.template, planning.profile, planning.constraints,
        study_dir / "stages", config.chain.min_improvement, planning.checkpointing,
    )
    interrupted = planner.recover_interrupted()
    if interrupted:
        log.info("resuming interrupted stages: %s", ", ".join(interrupted))
    settings = SearchSettings(
        sampler=config.search.sampler,
        families=config.search.families,
        seed=config.search.seed,
        metrics=tuple(o.metric for o in config.objectives),
        directions=tuple(o.resolved_direction for o in config.objectives),
        storage=config.storage or f"sqlite:///{study_dir / 'optuna.db'}",
        study_name=config.name,
    )
    progress = StudyProgress(table, f"study {config.name}")
    searcher = ChainSearcher(
        planner, open_optuna_study(settings, space), settings,
        stage_launcher(config, prepared, device, amp), on_change=progress.refresh,
    )
    threads = str(max(1, int(config.ray.cpus_per_trial)))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
    for key in ("nnUNet_def_n_proc", "nnUNet_n_proc_DA"):
        if key in os.environ:
            env[key] = os.environ[key]
    ray_settings = RaySettings(config.ray.address, config.ray.cpus_per_trial, gpus, config.ray.max_concurrent, env)
    if show_progress:
        with progress.live():
            run_chains(searcher, ray_settings, study_dir / "ray")
    else:
        run_chains(searcher, ray_settings, study_dir / "ray")
    counts = planner.counts()
    finished = not counts.get("pending") and not counts.get("running")
    if not finished:
        return StudySummary(study_dir, counts, finished)
    return StudySummary(study_dir, counts, finished, *finish_study(config))


def finish_study(config: StudyConfig) -> tuple[Path | None, Path | None]:
    """Write the report and the export that the study's ``finish`` section asks for."""
    report = export_dir = None
    if config.finish.report:
        from scalekit.report import write_report

        report = write_report(config.output_dir).html
    spec = config.finish.export
    if spec is not None:
        from scalekit.selection import export_stage

        export_dir = config.output_dir / "export"
        selection, _ = export_stage(config.output_dir, spec.select, spec.to, export_dir)
        log.info("exported %s (%s) to %s", selection.stage.stage_id, spec.select, export_dir)
    return report, export_dir
