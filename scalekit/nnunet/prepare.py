"""Validate and preprocess an nnU-Net v2 raw dataset once: fingerprint, plan, preprocess one configuration.

The result is a :class:`PreparedDataset`, a small record that every later step (trial training, metrics,
export) takes instead of reading nnU-Net's environment. Preparation is idempotent: a record of its inputs
(dataset.json, the size and time stamp of every raw file by its path inside the raw dataset folder, the
overrides, the nnU-Net version) is kept beside the preprocessed data, and an unchanged dataset is not
preprocessed again, also after the raw and preprocessed folders were moved.

nnU-Net unpickles its preprocessed ``*.pkl`` files when it trains, so the record also holds a SHA-256 digest
of every preprocessed file: :meth:`PreparedDataset.verify_files` refuses files changed, removed or added
since, and a preparation is only reused after that check.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from scalekit._atomic import write_atomic
from scalekit.errors import ScalekitError
from scalekit.faults import fault_point
from scalekit.networks.mednext import DIVISOR
from scalekit.paths import RAW, nnunet_folder

from . import _env
from .dataset import RECORD, PreparedDataset, digest_files
from .splits import SPLITS_FILE, install_splits, random_splits
from .validate import DATASET_FOLDER, RawDataset, validate_raw_dataset

log = logging.getLogger(__name__)

def resolve_raw_dataset(dataset: Path | str | int, raw_root: Path | None = None) -> Path:
    """The raw dataset folder for a path, an id (``42``, ``"042"``) or a name (``"Dataset042_Liver"``).

    Ids and names are looked up in ``raw_root`` or else ``$nnUNet_raw``.
    """
    if isinstance(dataset, (str, os.PathLike)) and Path(dataset).is_dir():
        return Path(dataset).resolve()
    root = nnunet_folder(RAW, raw_root)
    text = str(dataset)
    if root is None or not root.is_dir():
        raise ScalekitError(
            f"dataset {text!r} is not a folder, and no raw root to look it up in: pass the dataset folder, "
            "or set nnUNet_raw / --raw-root"
        )
    if text.isdigit():
        matches = sorted(p for p in root.glob(f"Dataset{int(text):03d}_*") if p.is_dir())
    else:
        matches = [root / text] if (root / text).is_dir() else []
    if len(matches) != 1:
        known = sorted(p.name for p in root.iterdir() if DATASET_FOLDER.match(p.name))
        raise ScalekitError(f"dataset {text!r} {'is ambiguous' if matches else 'not found'} in {root}; known: {known}")
    return matches[0].resolve()


def _input_key(raw: RawDataset, settings: dict[str, Any]) -> str:
    """A digest of what preprocessing depends on: dataset.json, every case file's size and time stamp by its
    path relative to the raw folder (so that a moved dataset keeps its key), the overrides, nnU-Net's version."""
    digest = hashlib.sha256()
    digest.update((raw.folder / "dataset.json").read_bytes())
    for path in raw.files:
        name = path.relative_to(raw.folder).as_posix() if path.is_relative_to(raw.folder) else str(path)
        stat = path.stat()
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(metadata.version("nnunetv2").encode())
    return digest.hexdigest()


def mednext_patch(planned: Sequence[int]) -> tuple[int, ...]:
    """nnU-Net's planned patch rounded up to multiples of 16, never a single 16-voxel bottleneck voxel."""
    patch = [max(DIVISOR, math.ceil(p / DIVISOR) * DIVISOR) for p in planned]
    if all(p == DIVISOR for p in patch):
        patch[0] = 2 * DIVISOR
    return tuple(patch)


def _check_overrides(configuration: str, patch_size: Sequence[int] | None, spacing: Sequence[float] | None) -> None:
    dims = 2 if configuration == "2d" else 3
    if patch_size is not None:
        if len(patch_size) != dims or any(int(p) % DIVISOR or int(p) < DIVISOR for p in patch_size):
            raise ScalekitError(
                f"patch_size {list(patch_size)} must be {dims} multiples of {DIVISOR} for configuration "
                f"{configuration!r} (MedNeXt halves every axis four times), e.g. {[128] * dims}"
            )
    if spacing is not None:
        if configuration != "3d_fullres":
            raise ScalekitError(f"a target spacing can only be set for 3d_fullres, not {configuration!r}")
        if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
            raise ScalekitError(f"spacing {list(spacing)} must be three positive numbers in mm, e.g. [1, 1, 1]")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on a file, so that concurrent workers prepare a dataset once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _reusable(record_path: Path, key: str, raw: RawDataset, preprocessed_root: Path) -> PreparedDataset | None:
    """The recorded preparation of the same inputs, at the current folders, after checking its files."""
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    if record.get("input_key") != key:
        return None
    prepared = replace(PreparedDataset.from_dict(record["prepared"]), raw_dir=raw.folder,
                       preprocessed_root=preprocessed_root)
    prepared.verify_files()
    plans = prepared.load_plans()
    data_dir = prepared.preprocessed_dir / plans["configurations"][prepared.configuration]["data_identifier"]
    return prepared if data_dir.is_dir() and any(data_dir.iterdir()) else None


def prepare_dataset(
    dataset: Path | str | int,
    preprocessed_root: Path,
    configuration: str = "3d_fullres",
    patch_size: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    num_processes: int | None = None,
    raw_root: Path | None = None,
    splits: Path | None = None,
    on_step: Callable[[str], None] = lambda step: None,
) -> PreparedDataset:
    """Validate a raw dataset, then run nnU-Net v2's fingerprint extraction, planning and preprocessing.

    Args:
        dataset: raw dataset folder, or its id / name under ``raw_root`` (or ``$nnUNet_raw``).
        preprocessed_root: where nnU-Net's preprocessed data goes (``nnUNet_preprocessed``).
        configuration: nnU-Net configuration to preprocess: ``3d_fullres`` (default) or ``2d``.
        patch_size: training patch override, multiples of 16 (the paper: 128^3); default: nnU-Net's planned
            patch rounded up to multiples of 16.
        spacing: target spacing override in mm (3d_fullres only; the paper: 1 mm isotropic).
        num_processes: worker processes for fingerprint and preprocessing (default: half the cores, <= 8).
        raw_root: folder of raw datasets for id / name lookups.
        splits: a splits file (checked against the cases) copied to ``splits_final.json``; without one, the
            dataset's own ``splits_final.json`` is kept, else a random split of min(5, cases) folds is written.
        on_step: hears each step as it begins (checking the raw dataset, reusing a preparation, nnU-Net's
            fingerprint, plans, preprocessing), as one line of text.

    Returns:
        The :class:`PreparedDataset` with a digest of every preprocessed file; an unchanged dataset prepared
        before (also in since moved folders, also for another training patch, which preprocessing does not
        depend on) is reused after checking those digests.

    Raises:
        DatasetValidationError: listing every bad case, before any preprocessing.
        PreparedDataChangedError: the preparation to reuse has changed, missing or added files.
        SplitsError: ``splits`` is not a list of folds of the dataset's case ids.
        ValueError: bad overrides or an unknown dataset.
    """
    if configuration not in ("3d_fullres", "2d"):
        raise ScalekitError(f"configuration {configuration!r} is not supported; use '3d_fullres' or '2d'")
    _check_overrides(configuration, patch_size, spacing)
    raw_dir = resolve_raw_dataset(dataset, raw_root)
    preprocessed_root = Path(preprocessed_root).resolve()
    workers = num_processes or _env.default_workers()
    on_step(f"checking the raw dataset {raw_dir}")
    raw = validate_raw_dataset(raw_dir, num_workers=workers)
    if any(isinstance(v, list) for v in raw.labels.values()):
        raise ScalekitError(f"{raw_dir}: region-based labels (lists in dataset.json 'labels') are not supported")
    settings = {"configuration": configuration, "spacing": [float(s) for s in spacing] if spacing else None}
    key = _input_key(raw, settings)
    record_path = preprocessed_root / raw.dataset_name / RECORD
    with _locked(preprocessed_root / f".{raw.dataset_name}.lock"):
        prepared = _reusable(record_path, key, raw, preprocessed_root)
        if prepared is not None:
            log.info("reusing the preparation of %s in %s", raw.dataset_name, prepared.preprocessed_dir)
            on_step(f"reusing the preparation of {raw.dataset_name} in {prepared.preprocessed_dir}")
        else:
            prepared = _run_nnunet(raw, preprocessed_root, configuration, spacing, workers, on_step)
            fault_point("prepare")
            write_atomic(record_path, json.dumps({"input_key": key, "prepared": prepared.to_dict()}, indent=2) + "\n")
        if splits is not None:
            install_splits(splits, prepared.preprocessed_dir, raw.cases)
        _write_random_splits(prepared.preprocessed_dir, raw.cases)
    planned = prepared.load_plans()["configurations"][configuration]["patch_size"]
    return replace(prepared, patch_size=tuple(int(p) for p in patch_size) if patch_size else mednext_patch(planned))


def _write_random_splits(folder: Path, cases: Sequence[str]) -> None:
    """The random split when the dataset has none, written once here so that parallel trials never race to
    create it."""
    if not (folder / SPLITS_FILE).is_file():
        write_atomic(folder / SPLITS_FILE, json.dumps(random_splits(cases), indent=1) + "\n")


def _run_nnunet(
    raw: RawDataset,
    preprocessed_root: Path,
    configuration: str,
    spacing: Sequence[float] | None,
    workers: int,
    on_step: Callable[[str], None],
) -> PreparedDataset:
    _env.configure(raw=raw.folder.parent, preprocessed=preprocessed_root, num_processes=workers)
    # nnU-Net's planner sets torch's thread count to the augmentation worker count, which must be >= 1.
    planning_threads = str(max(1, int(os.environ["nnUNet_n_proc_DA"])))
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )

    log.info("preparing %s: fingerprint, plans, preprocessing (%s, %d workers)", raw.dataset_name,
             configuration, workers)
    with _env.nnunet_output_to_log(), _env.temporary(nnUNet_n_proc_DA=planning_threads):
        on_step(f"nnU-Net fingerprint of {raw.dataset_name} ({workers} workers)")
        extract_fingerprint_dataset(raw.dataset_id, num_processes=workers, clean=True, verbose=False,
                                    show_progress_bar=False)
        target = tuple(float(s) for s in spacing) if spacing else None
        on_step(f"nnU-Net plans of {raw.dataset_name}")
        plans, identifier = plan_experiment_dataset(raw.dataset_id, overwrite_target_spacing=target)
        if configuration not in plans["configurations"]:
            raise ScalekitError(f"nnU-Net planned no {configuration!r} configuration for {raw.dataset_name}; "
                             f"planned: {sorted(plans['configurations'])}")
        on_step(f"nnU-Net preprocessing of {raw.dataset_name} ({configuration})")
        preprocess_dataset(raw.dataset_id, identifier, configurations=[configuration], num_processes=[workers],
                           verbose=False, show_progress_bar=False)
    planned = plans["configurations"][configuration]
    names = [name for name, _ in sorted(raw.labels.items(), key=lambda item: int(item[1]))]
    return PreparedDataset(
        dataset_id=raw.dataset_id,
        dataset_name=raw.dataset_name,
        raw_dir=raw.folder,
        preprocessed_root=preprocessed_root,
        plans_identifier=identifier,
        configuration=configuration,
        label_names=tuple(names),
        patch_size=mednext_patch(planned["patch_size"]),
        spacing=tuple(float(s) for s in planned["spacing"]),
        num_input_channels=raw.num_channels,
        file_digests=digest_files(preprocessed_root / raw.dataset_name, workers),
    )
