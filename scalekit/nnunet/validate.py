"""Check an nnU-Net v2 raw dataset completely before any preprocessing, and report every bad case at once.

A raw dataset is a folder ``Dataset{ID:03d}_{Name}`` with ``dataset.json``, ``imagesTr/{case}_{channel:04d}
{file_ending}`` and ``labelsTr/{case}{file_ending}`` (or explicit file lists under ``dataset`` in dataset.json).
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _env

DATASET_FOLDER = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-]+)$")
SPACING_RTOL = 1e-3


class DatasetValidationError(ValueError):
    """The raw dataset has problems; ``problems`` lists one line per problem, each naming its case or file."""

    def __init__(self, dataset_dir: Path, problems: list[str]) -> None:
        self.dataset_dir = dataset_dir
        self.problems = problems
        listing = "\n  ".join(problems)
        super().__init__(
            f"raw dataset {dataset_dir} has {len(problems)} problem(s); nothing was preprocessed. "
            f"Fix them and run again:\n  {listing}"
        )


@dataclass(frozen=True)
class RawDataset:
    """What validation learned about a raw dataset."""

    folder: Path
    dataset_id: int
    dataset_name: str
    labels: dict[str, Any]
    num_channels: int
    file_ending: str
    cases: tuple[str, ...]


def parse_dataset_folder(folder: Path) -> tuple[int, str]:
    """``(id, folder name)`` of a raw dataset folder named ``Dataset{ID:03d}_{Name}``."""
    match = DATASET_FOLDER.match(folder.name)
    if not match:
        raise ValueError(
            f"raw dataset folder {folder} must be named Dataset<3-digit id>_<Name>, e.g. Dataset042_Liver "
            "(nnU-Net finds datasets by that name); rename or symlink it"
        )
    return int(match.group(1)), folder.name


def _label_values(labels: dict[str, Any]) -> set[int]:
    values: set[int] = set()
    for value in labels.values():
        values.update(value if isinstance(value, list) else [value])
    return {int(v) for v in values}


def _read_dataset_json(folder: Path) -> dict[str, Any]:
    path = folder / "dataset.json"
    if not path.is_file():
        raise DatasetValidationError(folder, [f"dataset.json is missing ({path})"])
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetValidationError(folder, [f"dataset.json is not valid JSON: {err}"]) from None
    problems = [
        f"dataset.json has no {key!r} entry" for key in ("channel_names", "labels", "file_ending") if key not in content
    ]
    labels = content.get("labels", {})
    if "labels" in content and (not isinstance(labels, dict) or labels.get("background") != 0):
        problems.append(f"dataset.json 'labels' must map names to values and include 'background': 0, got {labels}")
    elif "labels" in content and sorted(_label_values(labels)) != list(range(len(_label_values(labels)))):
        problems.append(f"dataset.json 'labels' values must be consecutive integers 0..N-1 (nnU-Net), got {labels}")
    if problems:
        raise DatasetValidationError(folder, problems)
    return content


def _check_case(
    case: str, images: list[str], label: str, reader_cls: type, allowed: set[int]
) -> list[str]:
    """Problems of one case whose files all exist: readability, shapes, spacings, label values, finiteness."""
    reader = reader_cls()
    try:
        data, image_props = reader.read_images(images)
        seg, seg_props = reader.read_seg(label)
    except Exception as err:  # noqa: BLE001 - any reader failure is a problem of this case
        return [f"{case}: cannot be read ({type(err).__name__}: {err})"]
    problems = []
    if data.shape[1:] != seg.shape[1:]:
        problems.append(f"{case}: image shape {tuple(data.shape[1:])} differs from label shape {tuple(seg.shape[1:])}")
    spacing, seg_spacing = np.asarray(image_props["spacing"]), np.asarray(seg_props["spacing"])
    if spacing.shape != seg_spacing.shape or not np.allclose(spacing, seg_spacing, rtol=SPACING_RTOL):
        problems.append(f"{case}: image spacing {tuple(spacing)} differs from label spacing {tuple(seg_spacing)}")
    unexpected = sorted(set(np.unique(seg).astype(int).tolist()) - allowed)
    if unexpected:
        problems.append(
            f"{case}: label values {unexpected} are not in dataset.json labels (allowed: {sorted(allowed)})"
        )
    if not np.isfinite(data).all():
        problems.append(f"{case}: image contains NaN or infinite values")
    return problems


def validate_raw_dataset(folder: Path, num_workers: int | None = None) -> RawDataset:
    """Check a raw dataset and raise one :class:`DatasetValidationError` listing every problem.

    Checked: folder name, dataset.json entries, a label file for every case and images for every label file,
    all channels present, ``numTraining``, readability, image/label shape and spacing agreement, label values
    declared in dataset.json, finite intensities. Reads every case (``num_workers`` threads).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"raw dataset folder {folder} does not exist")
    dataset_id, dataset_name = parse_dataset_folder(folder)
    content = _read_dataset_json(folder)
    _env.configure()
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    ending = content["file_ending"]
    num_channels = len(content["channel_names"])
    problems: list[str] = []
    if "dataset" not in content:
        for sub in ("imagesTr", "labelsTr"):
            if not (folder / sub).is_dir():
                raise DatasetValidationError(folder, [f"folder {sub}/ is missing"])
    files = get_filenames_of_train_images_and_targets(str(folder), json.loads(json.dumps(content)))
    if not files:
        raise DatasetValidationError(folder, [f"no training images found in imagesTr/ (expected *_0000{ending})"])
    complete = {}
    for case, entry in sorted(files.items()):
        missing = [Path(p).name for p in entry["images"] if not Path(p).is_file()]
        if len(entry["images"]) != num_channels:
            problems.append(f"{case}: {len(entry['images'])} image channel(s) found, dataset.json declares {num_channels}")
        elif missing:
            problems.append(f"{case}: image file(s) missing: {missing}")
        if not Path(entry["label"]).is_file():
            problems.append(f"{case}: label file {Path(entry['label']).name} is missing")
        elif len(entry["images"]) == num_channels and not missing:
            complete[case] = entry
    if "dataset" not in content:
        orphans = sorted(p.name for p in (folder / "labelsTr").glob(f"*{ending}") if p.name[: -len(ending)] not in files)
        problems.extend(f"{name[: -len(ending)]}: label file {name} has no image in imagesTr/" for name in orphans)
    if content.get("numTraining") not in (None, len(files)):
        problems.append(f"dataset.json numTraining={content['numTraining']} but {len(files)} cases were found")
    if complete:
        first = next(iter(complete.values()))["images"][0]
        with _env.nnunet_output_to_log():
            reader_cls = determine_reader_writer_from_dataset_json(content, first, verbose=False)
        allowed = _label_values(content["labels"])
        workers = num_workers or _env.default_workers()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            per_case = pool.map(
                lambda item: _check_case(item[0], item[1]["images"], item[1]["label"], reader_cls, allowed),
                complete.items(),
            )
            for found in per_case:
                problems.extend(found)
    if problems:
        raise DatasetValidationError(folder, problems)
    return RawDataset(
        folder=folder.resolve(),
        dataset_id=dataset_id,
        dataset_name=dataset_name,
        labels=dict(content["labels"]),
        num_channels=num_channels,
        file_ending=ending,
        cases=tuple(sorted(files)),
    )
