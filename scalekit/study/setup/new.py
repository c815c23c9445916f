"""``scalekit study new``: a starting study file for a user's nnU-Net raw dataset and GPU budget.

The file names the dataset (found by the same precedence as every command: the given path, ``--raw-root`` or
``$nnUNet_raw``), trains at nnU-Net's planned patch when the dataset is already preprocessed (else the
paper's 128^3), searches the paper's presets S, B, M and L along k3 -> k5 -> k7 with successive halving, trains
nnU-Net's ResEnc presets whose memory target the GPU holds (M 8, L 24, XL 40 GB; M at least) beside them as
baselines (3-D datasets), keeps every stage within the GPU budget and exports the knee. It passes ``scalekit
study validate`` as written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scalekit import paths
from scalekit._atomic import write_atomic
from scalekit.errors import ScalekitError
from scalekit.studyfile import StudyConfig, StudyConfigError, format_problems, study_problems

from .advice import planned
from .checks import DatasetFacts, inspect_dataset, preflight

PAPER_PRESETS = ("S", "B", "M", "L")
PAPER_PATCH = 128
"""The MedNeXt paper trains at 128^3 (3-D); a 2-D dataset gets 512^2 / 4 = 256 per side."""
EPOCHS, MIN_EPOCHS, ETA = 90, 10, 3
"""Halving rungs 10, 30, 90 epochs per stage: a first look at every family, the full budget for the best."""


class StudyExistsError(ScalekitError):
    """``study new`` would overwrite an existing file."""


@dataclass(frozen=True)
class NewStudy:
    """The study file's content and what it was made from (for the command's message)."""

    text: str
    dataset: DatasetFacts
    planned: bool
    """Whether the patch came from nnU-Net's plans (the dataset was preprocessed before)."""


def _dataset_section(folder: Path, given_raw: paths.NnunetRoot | None,
                     preprocessed: paths.NnunetRoot | None) -> dict[str, Any]:
    from scalekit.nnunet.validate import DATASET_FOLDER

    name = folder.name
    if not DATASET_FOLDER.match(name):
        raise ScalekitError(f"{folder}: an nnU-Net raw dataset folder is named DatasetXXX_Name (XXX: 3 digits)")
    section: dict[str, Any] = {"name": name, "id": int(name[7:10]), "configuration": "3d_fullres", "fold": 0}
    if given_raw is None or given_raw.origin != f"${paths.RAW}":  # $nnUNet_raw finds it again; a path is kept
        section["raw_dir"] = str(folder.parent)
    if preprocessed is not None and preprocessed.origin != f"${paths.PREPROCESSED}":
        section["preprocessed_dir"] = str(preprocessed.path)
    return section


def resenc_presets(gpu_memory_gb: float) -> list[str]:
    """nnU-Net's ResEnc presets whose memory target a GPU of ``gpu_memory_gb`` holds (M at least)."""
    from scalekit.nnunet.resenc import MEMORY_TARGET_GB

    return [name for name, target in MEMORY_TARGET_GB.items() if target <= gpu_memory_gb] or ["M"]


def _sections(dataset: dict[str, Any], gpu_memory_gb: float, output_dir: Path) -> dict[str, dict[str, Any] | Any]:
    return {
        "name": dataset["name"],
        "output_dir": str(output_dir),
        "dataset": dataset,
        "training": {"epochs": EPOCHS, "iterations_per_epoch": 250, "val_iterations": 50, "initial_lr": 0.001,
                     "amp": "auto", "device": "auto", "nsd_tolerance_mm": 1.0},
        "space": {"presets": list(PAPER_PRESETS), "kernels": [3, 5, 7]},
        "objectives": [{"metric": "mean_dice", "direction": "maximize"},
                       {"metric": "peak_memory_gb", "direction": "minimize"}],
        "constraints": {"max_memory_gb": float(gpu_memory_gb)},
        "search": {"sampler": "grid", "families": len(PAPER_PRESETS), "scheduler": "halving", "eta": ETA,
                   "min_epochs": MIN_EPOCHS},
        "resources": {"cpus_per_trial": min(4, os.cpu_count() or 1), "gpus_per_trial": "auto", "max_concurrent": 1},
        "backend": {"kind": "ray", "address": None},
        "finish": {"report": True, "export": {"select": "knee", "to": "nnunet"}},
    }


_COMMENTS = {
    "dataset": "patch_size: nnU-Net's planned patch rounded to multiples of 16 when preprocessed before, else "
               "the paper's; add splits: FILE for a split of your own (grouped by subject)",
    "training": "per stage; nsd_tolerance_mm: the surface-Dice tolerance, at least the largest voxel spacing",
    "space": f"the MedNeXt paper's presets {', '.join(PAPER_PRESETS)}, each along its UpKern chain k3 -> k5 -> k7; "
             "resenc: nnU-Net's ResEnc presets as baselines, at the batch nnU-Net's planner gives each at this patch "
             "(remove the entry for MedNeXt alone)",
    "constraints": "peak training memory per stage (GiB), predicted: scalekit study profile FILE shows which fit",
    "search": f"successive halving: rungs {MIN_EPOCHS}, {MIN_EPOCHS * ETA}, {EPOCHS} epochs; the top 1/{ETA} go on",
    "backend": "ray: Ray Tune here (address null) or on a cluster ('auto'); local: worker processes here, no Ray",
    "finish": "the report, and the knee of the Dice-memory front exported for nnU-Net",
}


class _Dumper(yaml.SafeDumper):
    """The safe dumper, writing lists of plain values on one line (``kernels: [3, 5, 7]``)."""


def _sequence(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(item, (dict, list)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _sequence)


def _render(sections: dict[str, Any], header: list[str]) -> str:
    """YAML (the safe dumper, one section at a time) with a comment above each section."""
    lines = [f"# {line}" for line in header]
    for key, value in sections.items():
        if key in _COMMENTS:
            lines.append(f"# {_COMMENTS[key]}")
        lines.append(yaml.dump({key: value}, Dumper=_Dumper, sort_keys=False, default_flow_style=False).rstrip())
    return "\n".join(lines) + "\n"


def new_study(
    dataset: str | Path | int,
    gpu_memory_gb: float,
    raw_root: Path | None = None,
    preprocessed_root: Path | None = None,
    output_dir: Path | None = None,
) -> NewStudy:
    """A starting study for a raw dataset (a folder, or an id / name under ``raw_root`` or ``$nnUNet_raw``) and
    a GPU budget in GiB; checked as ``study validate`` checks it.

    Raises:
        ScalekitError: the dataset is not found, or the study made from it has problems (listed).
    """
    from scalekit.nnunet.prepare import mednext_patch, resolve_raw_dataset

    if not gpu_memory_gb > 0:
        raise ScalekitError(f"--gpu-memory {gpu_memory_gb}: give the GPU's memory in GiB, e.g. 24")
    given_raw = paths.nnunet_root(paths.RAW, raw_root, "--raw-root")
    folder = resolve_raw_dataset(dataset, None if given_raw is None else given_raw.path)
    pre = paths.nnunet_root(paths.PREPROCESSED, preprocessed_root, "--preprocessed")
    section = _dataset_section(folder, given_raw, pre)
    sections = _sections(section, gpu_memory_gb, output_dir or Path("runs") / section["name"])
    facts, problems = inspect_dataset(_config(sections, Path.cwd()))
    if facts is None or problems:
        raise ScalekitError(f"{folder}: " + "; ".join(problems or ["not a readable nnU-Net raw dataset"]))
    if facts.dim == 2:
        section["configuration"] = "2d"
    else:
        sections["space"]["resenc"] = {"presets": resenc_presets(gpu_memory_gb)}
    config = _config(sections, Path.cwd())
    plans = planned(config, facts)
    if plans is not None:
        section["patch_size"] = list(mednext_patch(plans[0]["patch_size"]))
        spacing = [float(s) for s in plans[0]["spacing"]]
    else:
        section["patch_size"] = [PAPER_PATCH * (2 if facts.dim == 2 else 1)] * (facts.dim or 3)
        spacing = list(facts.spacing or ())
    section["batch_size"] = 2
    if "resenc" in sections["space"] and spacing and not _resenc_divides(section["patch_size"], spacing):
        del sections["space"]["resenc"]  # nnU-Net's topology would pad this patch: MedNeXt alone
    if spacing and max(spacing) > 1.0:
        sections["training"]["nsd_tolerance_mm"] = round(max(spacing), 3)
    config = _config(sections, Path.cwd())
    problems = preflight(config)
    if problems:
        raise StudyConfigError(format_problems(f"the study for {folder}", problems))
    header = [
        f"A starting study for {facts.name} ({facts.channels} channel(s), {facts.classes} classes with the "
        f"background, {facts.cases} training cases) and a {gpu_memory_gb:g} GiB GPU; written by scalekit study new.",
        "Next: scalekit study validate FILE; scalekit study profile FILE; scalekit study run FILE",
    ]
    return NewStudy(_render(sections, header), facts, plans is not None)


def _resenc_divides(patch: list[int], spacing: list[float]) -> bool:
    """Whether nnU-Net's ResEnc topology at ``spacing`` takes ``patch`` as it is."""
    from scalekit.nnunet.resenc import resenc_for_patch

    try:
        resenc_for_patch(tuple(patch), tuple(spacing), 1, 2)
    except ScalekitError:
        return False
    return True


def _config(sections: dict[str, Any], base: Path) -> StudyConfig:
    problems = study_problems(sections)
    if problems:  # a bug of this module, never a user's mistake
        raise StudyConfigError(format_problems("the new study", problems))
    return StudyConfig.model_validate(sections).resolve_paths(base)


def write_new_study(path: Path, dataset: str | Path | int, gpu_memory_gb: float, force: bool = False,
                    **options: Any) -> NewStudy:
    """:func:`new_study` written to ``path`` (atomically); an existing file is kept unless ``force``.

    Raises:
        StudyExistsError: ``path`` exists and ``force`` is false.
    """
    path = Path(path)
    if path.exists() and not force:
        raise StudyExistsError(f"{path} exists; pass --force to overwrite it, or give another file")
    study = new_study(dataset, gpu_memory_gb, **options)
    write_atomic(path, study.text)
    return study
