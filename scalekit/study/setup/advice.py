"""What ``study validate`` and a run tell the user about a valid study before any work: where the raw dataset is
looked for and where it is preprocessed (and by which setting), and three warnings: no split of the user's own
(a random one mixes a subject's repeated scans over training and validation), a surface-Dice tolerance finer
than the voxels, and a Ray cluster reached over a public address without token authentication.

Pure reading: nothing is generated, preprocessed or written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalekit.nnunet.dataset import RECORD
from scalekit.nnunet.splits import SPLITS_FILE, SplitsError, random_splits, read_splits
from scalekit.studyfile import StudyConfig

from .checks import DatasetFacts, demo_folder, inspect_dataset
from ..backend.ray_access import cluster_warning

PLANS_FILE = "nnUNetPlans.json"


@dataclass(frozen=True)
class DataAdvice:
    """Lines for the user: ``locations`` (where the data is and goes), ``warnings`` (each with its fix)."""

    locations: tuple[str, ...]
    warnings: tuple[str, ...]


def _locations(config: StudyConfig, facts: DatasetFacts | None) -> list[str]:
    raw, pre = config.data_roots()
    if facts is None:
        return [f"raw datasets: looked in {raw.path} ({raw.origin})"]
    folder = facts.folder or demo_folder(config)
    state = " (demo data, generated on the first run)" if facts.folder is None else ""
    target = pre.path / facts.name
    prepared = ", prepared before: reused when unchanged" if (target / RECORD).is_file() else ""
    return [f"raw dataset: {folder}{state}; root from {raw.origin}",
            f"preprocessed into: {target}{prepared}; root from {pre.origin}"]


def splits_warning(config: StudyConfig, facts: DatasetFacts) -> str | None:
    """A warning when the study trains on the random split: no ``dataset.splits``, and no split in the
    preprocessed dataset other than the random one that preparation writes (demo data: none needed)."""
    d = config.dataset
    if d.splits is not None or d.demo is not None:
        return None
    target = config.nnunet_roots()[1] / facts.name / SPLITS_FILE
    if target.is_file():
        try:
            folds = read_splits(target)
        except SplitsError:
            return None  # preflight reports it
        if facts.case_ids is None or folds != random_splits(facts.case_ids):
            return None  # the dataset's own split
    folds_count = min(5, facts.cases or 5)
    return (f"dataset.splits: not set and {target} holds no split of your own, so a random {folds_count}-fold "
            "split is used: repeated scans of one subject may land in training and validation of one fold "
            f"(an optimistic Dice); write a split grouped by subject as {target} or set dataset.splits to one")


def planned(config: StudyConfig, facts: DatasetFacts) -> tuple[dict[str, Any], Path] | None:
    """nnU-Net's plans of the study's configuration (patch, spacing, ...) and their file, where the dataset was
    preprocessed before; None otherwise."""
    plans = config.nnunet_roots()[1] / facts.name / PLANS_FILE
    try:
        return json.loads(plans.read_text())["configurations"][config.dataset.configuration], plans
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _spacing(config: StudyConfig, facts: DatasetFacts) -> tuple[tuple[float, ...], str] | None:
    """The voxel spacing the study's Dice is measured at, and where it comes from."""
    if config.dataset.spacing is not None:
        return config.dataset.spacing, "dataset.spacing"
    found = planned(config, facts)
    if found is not None:
        try:
            return tuple(float(s) for s in found[0]["spacing"]), f"nnU-Net's plans {found[1]}"
        except (KeyError, TypeError, ValueError):
            pass
    if facts.spacing is not None:
        return facts.spacing, "the first training image"
    return None


def nsd_warning(config: StudyConfig, facts: DatasetFacts) -> str | None:
    """A warning when ``training.nsd_tolerance_mm`` is below the largest voxel spacing: a border one voxel off
    along that axis then counts as a miss, and surface Dice measures voxel noise."""
    found = _spacing(config, facts)
    tolerance = config.training.nsd_tolerance_mm
    if found is None or tolerance >= max(found[0]):
        return None
    spacing, source = found
    return (f"training.nsd_tolerance_mm: {tolerance:g} mm is below the voxel spacing {[round(s, 3) for s in spacing]} "
            f"mm ({source}), so a border one voxel off counts as a miss; set it to {max(spacing):.3g} "
            "(the largest spacing) or more")


def advise(config: StudyConfig) -> DataAdvice:
    """Where the study's data is and goes, and the warnings about its split, its surface-Dice tolerance and
    the exposure of its Ray cluster."""
    facts, _ = inspect_dataset(config)
    data = [] if facts is None else [splits_warning(config, facts), nsd_warning(config, facts)]
    warnings = [w for w in (*data, cluster_warning(config.backend.address)) if w]
    return DataAdvice(tuple(_locations(config, facts)), tuple(warnings))
