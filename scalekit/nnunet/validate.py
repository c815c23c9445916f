"""Check an nnU-Net v2 raw dataset completely before any preprocessing, and report every bad case at once.

A raw dataset is a folder ``Dataset{ID:03d}_{Name}`` with ``dataset.json``, ``imagesTr/{case}_{channel:04d}
{file_ending}`` and ``labelsTr/{case}{file_ending}`` (or explicit file lists under ``dataset`` in dataset.json).

Every file is first read as bytes in one streaming pass: a gzip stream must decompress to its end (a truncated
``.nii.gz`` would otherwise be read as zero-filled), a NIfTI file must hold the data its header declares, and
NaN / infinite voxels are counted from the stored values (SimpleITK reads them from NIfTI as 0).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
from nibabel.spatialimages import HeaderDataError

from scalekit.errors import ScalekitError

from . import _env

DATASET_FOLDER = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-]+)$")
SPACING_RTOL = 1e-3
CHUNK_BYTES = 1 << 20
NIFTI_ENDINGS = (".nii", ".nii.gz")
MAX_LISTED_VALUES = 5


class InputValidationError(ScalekitError):
    """Input files have problems; ``problems`` lists one line per problem, each naming its case or file. The
    message is one line for one problem, else a line per problem under a heading."""

    def __init__(self, what: str, problems: list[str], outcome: str) -> None:
        self.problems = problems
        if len(problems) == 1:
            message = f"{what}: {problems[0]}; {outcome}"
        else:
            listing = "\n  ".join(problems)
            message = f"{what} has {len(problems)} problem(s); {outcome}. Fix them and run again:\n  {listing}"
        super().__init__(message)


class DatasetValidationError(InputValidationError):
    """The raw dataset has problems (see :class:`InputValidationError`); nothing was preprocessed."""

    def __init__(self, dataset_dir: Path, problems: list[str]) -> None:
        self.dataset_dir = dataset_dir
        super().__init__(f"raw dataset {dataset_dir}", problems, "nothing was preprocessed")


class ImagesValidationError(InputValidationError):
    """Images to segment have problems (see :class:`InputValidationError`); nothing was predicted."""

    def __init__(self, folder: Path, problems: list[str]) -> None:
        self.folder = folder
        super().__init__(f"images to segment in {folder}", problems, "nothing was predicted")


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
    files: tuple[Path, ...]
    """Every image and label file of every case."""


def parse_dataset_folder(folder: Path) -> tuple[int, str]:
    """``(id, folder name)`` of a raw dataset folder named ``Dataset{ID:03d}_{Name}``."""
    match = DATASET_FOLDER.match(folder.name)
    if not match:
        raise ScalekitError(
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


@dataclass(frozen=True)
class _NiftiLayout:
    """Where a NIfTI file keeps its voxels: ``count`` values of ``dtype`` from byte ``offset`` on."""

    offset: int
    dtype: np.dtype
    count: int

    @property
    def end(self) -> int:
        return self.offset + self.count * self.dtype.itemsize


def _open(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _chunks(path: Path) -> Iterator[bytes]:
    """The (decompressed) bytes of a file in chunks; gzip raises on a truncated or corrupt stream."""
    with _open(path) as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def _nifti_layout(path: Path) -> _NiftiLayout | None:
    """The data layout from a NIfTI-1 or NIfTI-2 header, or None where the header is not one nibabel reads
    (the image reader then decides)."""
    with _open(path) as handle:
        head = handle.read(nibabel.Nifti2Header.template_dtype.itemsize)
    for header_cls in (nibabel.Nifti1Header, nibabel.Nifti2Header):
        if header_cls.may_contain_header(head):
            size = header_cls.template_dtype.itemsize
            try:
                header = header_cls(head[:size])
                dtype, shape = header.get_data_dtype(), header.get_data_shape()
            except (HeaderDataError, KeyError, ValueError):
                return None
            # Single-file NIfTI keeps its data after the header and the 4-byte extension flag.
            offset = max(int(header.get_data_offset()), size + 4)
            return _NiftiLayout(offset=offset, dtype=dtype, count=math.prod(int(n) for n in shape))
    return None


def _count_bytes_and_nonfinite(chunks: Iterable[bytes], layout: _NiftiLayout | None) -> tuple[int, int]:
    """Total bytes of a stream, and the NaN / infinite values in the layout's data region (floating types)."""
    if layout is None or layout.dtype.kind not in "fc":
        return sum(len(chunk) for chunk in chunks), 0
    total = nonfinite = 0
    pending = b""
    for chunk in chunks:
        start, total = total, total + len(chunk)
        low, high = max(layout.offset - start, 0), min(layout.end - start, len(chunk))
        if low >= high:
            continue
        pending += chunk[low:high]
        whole = len(pending) // layout.dtype.itemsize
        values = np.frombuffer(pending, layout.dtype, count=whole)
        nonfinite += whole - int(np.count_nonzero(np.isfinite(values)))
        pending = pending[whole * layout.dtype.itemsize :]
    return total, nonfinite


def _scan_file(path: Path) -> tuple[str | None, int | None]:
    """``(problem, NaN/infinite voxel count)`` from one streaming pass over a file's bytes.

    The count is None where it must come from the image reader instead (formats other than NIfTI).
    """
    corrupt = f"{path.name} is truncated or corrupt ({{}}); re-export or re-download it"
    try:
        layout = _nifti_layout(path) if path.name.endswith(NIFTI_ENDINGS) else None
        total, nonfinite = _count_bytes_and_nonfinite(_chunks(path), layout)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        return corrupt.format(err), None
    except OSError as err:
        return f"{path.name} cannot be read ({err})", None
    if layout is not None and total < layout.end:
        return corrupt.format(f"{total} bytes, its NIfTI header needs {layout.end}"), None
    return None, nonfinite if layout is not None else None


@dataclass(frozen=True)
class _FileShape:
    """How nnU-Net sees one file: ``volumes`` (more than 1: a 4-D file) of ``spatial_dims`` (2 or 3)."""

    kind: str
    name: str
    volumes: int
    spatial_dims: int

    @property
    def dims(self) -> int:
        return self.spatial_dims + (self.volumes > 1)


@dataclass
class _CaseReport:
    problems: list[str] = field(default_factory=list)
    shapes: list[_FileShape] = field(default_factory=list)


def _file_shape(kind: str, path: Path, array: np.ndarray) -> _FileShape:
    """nnU-Net readers return (volumes, z, y, x); a 2-D image (or 3-D with one slice) has z == 1."""
    return _FileShape(kind, path.name, volumes=int(array.shape[0]), spatial_dims=2 if array.shape[1] == 1 else 3)


def _nonfinite(counted: int | None, array: np.ndarray) -> int:
    return counted if counted is not None else int(array.size - np.count_nonzero(np.isfinite(array)))


@dataclass(frozen=True)
class _ReadFile:
    """One file of a case as nnU-Net's reader returned it, with the NaN/infinite count of the byte scan."""

    kind: str
    path: Path
    array: np.ndarray
    spacing: np.ndarray | None
    counted: int | None

    @property
    def shape(self) -> _FileShape:
        return _file_shape(self.kind, self.path, self.array)


def _read_case(case: str, files: list[tuple[str, Path]], reader_cls: type) -> tuple[list[str], list[_ReadFile]]:
    """Problems of a case's files read one by one (intact bytes first, then nnU-Net's reader), and the files
    read; no files once one has a problem."""
    scans = [_scan_file(path) for _, path in files]
    broken = [f"{case}: {problem}" for problem, _ in scans if problem]
    if broken:
        return broken, []
    reader = reader_cls()
    read = []
    for (kind, path), (_, counted) in zip(files, scans):
        try:
            array, props = reader.read_seg(str(path)) if kind == "label" else reader.read_images([str(path)])
        except Exception as err:  # noqa: BLE001 - any reader failure is a problem of this case
            return [f"{case}: {kind} {path.name} cannot be read ({type(err).__name__}: {err})"], []
        spacing = props.get("spacing") if isinstance(props, dict) else None
        read.append(_ReadFile(kind, path, array, None if spacing is None else np.asarray(spacing, float), counted))
    return [], read


def _agreement(case: str, files: list[_ReadFile], reference: _ReadFile, named: str) -> list[str]:
    """Images whose shape or spacing differ from ``reference`` (called ``named``), and NaN/infinite voxels."""
    problems = []
    for file in files:
        if file is reference or file.kind != "image":
            continue
        if file.array.shape[1:] != reference.array.shape[1:]:
            problems.append(f"{case}: image shape {tuple(file.array.shape[1:])} differs from {named} shape "
                            f"{tuple(reference.array.shape[1:])} ({file.path.name})")
        if (file.spacing is None or reference.spacing is None or file.spacing.shape != reference.spacing.shape
                or not np.allclose(file.spacing, reference.spacing, rtol=SPACING_RTOL)):
            problems.append(f"{case}: image spacing {_spacing_text(file.spacing)} differs from {named} spacing "
                            f"{_spacing_text(reference.spacing)} ({file.path.name})")
    for file in files:
        bad = _nonfinite(file.counted, file.array) if file.kind == "image" else 0
        if bad:
            problems.append(f"{case}: image {file.path.name} contains {bad} NaN/infinite voxels")
    return problems


def _spacing_text(spacing: np.ndarray | None) -> str:
    return "(none)" if spacing is None else str(tuple(float(s) for s in spacing))


def _check_case(case: str, images: list[str], label: str, reader_cls: type, allowed: set[int]) -> _CaseReport:
    """Problems of one case whose files all exist: intact files, readability, dimensions, shapes, spacings,
    finite intensities, whole label values declared in dataset.json."""
    files = [("image", Path(p)) for p in images] + [("label", Path(label))]
    problems, read = _read_case(case, files, reader_cls)
    if problems:
        return _CaseReport(problems)
    shapes = [file.shape for file in read]
    report = _CaseReport(shapes=shapes)
    if len({s.dims for s in shapes}) > 1 or any(s.volumes > 1 for s in shapes):
        return report  # reported against the whole dataset's dimensionality
    seg = read[-1]
    order = [f for f in read if f.kind == "image"] + [seg]
    report.problems.extend(_agreement(case, order, seg, "label"))
    report.problems.extend(_label_problems(case, seg.path.name, seg.array, seg.counted, allowed))
    return report


def _check_images(case: str, images: list[Path], reader_cls: type, dim: int) -> list[str]:
    """Problems of one case to segment: intact, readable files, one volume each of the network's
    dimensionality (a 2-D network also takes 3-D images, slice by slice), a spacing, channels that agree in
    shape and spacing, finite intensities."""
    problems, read = _read_case(case, [("image", path) for path in images], reader_cls)
    if problems:
        return problems
    for file in read:
        shape = file.shape
        if shape.volumes > 1:
            problems.append(f"{case}: image {shape.name} is {shape.dims}-D ({shape.volumes} {shape.spatial_dims}-D "
                            "volumes); nnU-Net takes one 2-D or 3-D file per channel (_0000, _0001, ...)")
        elif dim == 3 and shape.spatial_dims == 2:
            problems.append(f"{case}: image {shape.name} is 2-D but the network segments 3-D images")
        elif file.spacing is None or not (np.isfinite(file.spacing).all() and (file.spacing > 0).all()):
            problems.append(f"{case}: image {shape.name} has no valid voxel spacing ({_spacing_text(file.spacing)}); "
                            "write the image with its spacing in the header")
    if problems:
        return problems
    return _agreement(case, read, read[0], f"{read[0].path.name}'s")


def validate_images(cases: Mapping[str, Sequence[Path]], reader_cls: type, dim: int, folder: Path,
                    num_workers: int | None = None) -> None:
    """Check images to segment (``cases``: case id -> its channel files in order) as training data is
    checked, and raise one :class:`ImagesValidationError` listing every problem of every case: intact files
    (complete gzip streams, NIfTI data as long as its header says), readable by ``reader_cls``, one volume of
    ``dim`` spatial dimensions per file, a voxel spacing, channels that agree, finite intensities."""
    workers = num_workers or _env.default_workers()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda item: _check_images(item[0], list(item[1]), reader_cls, dim), cases.items()))
    problems = [problem for found in results for problem in found]
    if problems:
        raise ImagesValidationError(folder, problems)


def _listed(values: np.ndarray) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:MAX_LISTED_VALUES])
    return shown + (f" and {len(values) - MAX_LISTED_VALUES} more" if len(values) > MAX_LISTED_VALUES else "")


def _label_problems(case: str, name: str, seg: np.ndarray, counted: int | None, allowed: set[int]) -> list[str]:
    problems = []
    bad = _nonfinite(counted, seg)
    if bad:
        problems.append(f"{case}: label {name} contains {bad} NaN/infinite voxels")
    values = np.unique(seg[np.isfinite(seg)])
    whole = values == np.round(values)
    if not whole.all():
        problems.append(f"{case}: label values must be whole numbers, found {_listed(values[~whole])}")
    unexpected = sorted(set(values[whole].astype(int).tolist()) - allowed)
    if unexpected:
        problems.append(
            f"{case}: label values {unexpected} are not in dataset.json labels (allowed: {sorted(allowed)})"
        )
    return problems


def _dimension_problems(case: str, shapes: list[_FileShape], usual: int | None) -> list[str]:
    """Files of a case that hold several volumes, or whose dimensionality differs from the other cases'."""
    problems = []
    others = f", the other cases are {usual}-D" if usual is not None else ""
    for shape in shapes:
        if shape.volumes > 1:
            hint = ("nnU-Net takes one 2-D or 3-D file per channel (_0000, _0001, ...)" if shape.kind == "image"
                    else "a label must be one 2-D or 3-D file")
            problems.append(f"{case}: {shape.kind} {shape.name} is {shape.dims}-D ({shape.volumes} "
                            f"{shape.spatial_dims}-D volumes){others}; {hint}")
        elif usual is not None and shape.dims != usual:
            problems.append(f"{case}: {shape.kind} {shape.name} is {shape.dims}-D{others}")
    return problems


def _usual_dims(reports: Iterable[_CaseReport]) -> int | None:
    """The most common dimensionality of single-volume files over all cases (None if there is none)."""
    counts = Counter(s.dims for report in reports for s in report.shapes if s.volumes == 1)
    return counts.most_common(1)[0][0] if counts else None


def validate_raw_dataset(folder: Path, num_workers: int | None = None) -> RawDataset:
    """Check a raw dataset and raise one :class:`DatasetValidationError` listing every problem.

    Checked: folder name, dataset.json entries, a label file for every case and images for every label file,
    all channels present, ``numTraining``, intact files (complete gzip streams, NIfTI data as long as its
    header says), readability, one 2-D or 3-D volume per file and the same dimensionality in every case,
    image/label shape and spacing agreement, finite intensities and labels, whole label values declared in
    dataset.json. Reads every case (``num_workers`` threads).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ScalekitError(f"raw dataset folder {folder} does not exist")
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
            reports = list(pool.map(
                lambda item: _check_case(item[0], item[1]["images"], item[1]["label"], reader_cls, allowed),
                complete.items(),
            ))
        usual = _usual_dims(reports)
        for case, report in zip(complete, reports):
            problems.extend(report.problems)
            problems.extend(_dimension_problems(case, report.shapes, usual))
    if problems:
        raise DatasetValidationError(folder, problems)
    case_files = sorted(Path(p).resolve() for entry in files.values() for p in [*entry["images"], entry["label"]])
    return RawDataset(
        folder=folder.resolve(),
        dataset_id=dataset_id,
        dataset_name=dataset_name,
        labels=dict(content["labels"]),
        num_channels=num_channels,
        file_ending=ending,
        cases=tuple(sorted(files)),
        files=tuple(case_files),
    )
