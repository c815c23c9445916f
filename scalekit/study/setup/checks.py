"""Preflight: every problem of a valid study that only the disk, the dataset or the storage can show.

:func:`preflight` runs after a study file has parsed into a :class:`StudyConfig` and before any work: it
generates no data, preprocesses nothing, writes nothing and finishes in seconds. ``scalekit study validate``
and :func:`~scalekit.study.run_study` call it. Each problem is one line naming the study field and the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalekit.nnunet.splits import SPLITS_FILE, SplitsError, read_splits
from scalekit.records import STAGE_ID
from scalekit.studyfile import StudyConfig

from ..engine.planning import BaselineError, build_space, prepared_of, resenc_template

SIMPLEITK_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".bmp", ".tif", ".tiff")
"""Image formats whose header SimpleITK reads without the pixels; other formats skip the dimension check."""
MAX_FOLDS = 5
"""nnU-Net (and scalekit's preparation) split the training cases into min(5, cases) folds."""
_CONNECT_TIMEOUT = {"psycopg2": "connect_timeout", "psycopg": "connect_timeout", "pg8000": "timeout",
                    "pymysql": "connect_timeout", "mysqldb": "connect_timeout", "mysqlconnector": "connection_timeout"}
"""The connect-timeout argument of the database drivers that have one, by SQLAlchemy driver name."""
CONNECT_TIMEOUT_S = 3


@dataclass(frozen=True)
class DatasetFacts:
    """What preflight learns about a study's raw dataset without preprocessing it (``None``: not known)."""

    name: str
    """The nnU-Net folder name ``Dataset{id:03d}_{Name}``."""
    folder: Path | None
    """The raw dataset folder; ``None`` while the demo data is still to be generated."""
    channels: int | None
    classes: int | None
    cases: int | None
    dim: int | None
    """Spatial dimensions of the images (a 3-D image with one slice counts as 2-D)."""
    case_ids: tuple[str, ...] | None = None
    spacing: tuple[float, ...] | None = None
    """Voxel spacing in mm of the first training image, in nnU-Net's axis order (z, y, x)."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _dataset_field(config: StudyConfig) -> str:
    return "dataset.name" if config.dataset.name is not None else "dataset.id"


def demo_folder(config: StudyConfig) -> Path:
    """Where a study with ``dataset.demo`` finds (or generates) its demo dataset, as the study run does."""
    d = config.dataset
    name = (d.name or "ScalekitDemo").split("_", 1)[-1]
    return config.nnunet_roots()[0] / f"Dataset{(d.id or 990):03d}_{name}"


def _not_found(config: StudyConfig) -> str:
    """Where the dataset was looked for, what is there, and how to point the study at it (or, for an id that
    several folders share, that it is ambiguous)."""
    d = config.dataset
    root = config.nnunet_roots()[0]
    wanted = d.name or f"Dataset{d.id:03d}_*"
    if root.is_dir():
        known = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("Dataset"))
        same_id = [k for k in known if k.startswith(wanted.removesuffix("*"))] if d.name is None else []
        if len(same_id) > 1:
            return (f"dataset.id: {wanted} is ambiguous in {root} ({config.raw_root_origin()}): it matches "
                    f"{', '.join(same_id)}; give dataset.name")
        more = f" and {len(known) - 10} more" if len(known) > 10 else ""
        found = f"holds {', '.join(known[:10])}{more}" if known else "holds no Dataset* folder"
    else:
        found = "is not a folder" if root.exists() else "does not exist"
    return (
        f"{_dataset_field(config)}: {wanted} not found: looked in {root} ({config.raw_root_origin()}), which "
        f"{found}; put the dataset there, or set dataset.raw_dir or $nnUNet_raw to the folder that holds it"
    )


def _training_files(folder: Path, content: dict[str, Any]) -> tuple[tuple[str, ...], Path | None, str | None]:
    """Training case ids, the first image file (or ``None``) and a problem (or ``None``) of a raw dataset."""
    if isinstance(content.get("dataset"), dict):  # explicit file lists instead of imagesTr/labelsTr
        entries = content["dataset"]
        entry = entries[min(entries)] if entries else {}
        images = entry.get("images") if isinstance(entry, dict) else None
        first = Path(images[0]) if isinstance(images, list) and images else None
        ids = tuple(sorted(str(key) for key in entries))
        return ids, None if first is None else (first if first.is_absolute() else folder / first), None
    ending = content.get("file_ending")
    if not isinstance(ending, str) or not (folder / "labelsTr").is_dir():
        return (), None, f"{folder} needs labelsTr/ and a 'file_ending' in dataset.json"
    ids = tuple(sorted(p.name.removesuffix(ending) for p in (folder / "labelsTr").glob(f"*{ending}")))
    first = next(iter(sorted((folder / "imagesTr").glob(f"*_0000{ending}"))), None)
    return ids, first, None


def _read_dataset_json(folder: Path) -> tuple[dict[str, Any], str | None]:
    """The content of a raw dataset's dataset.json (empty when unreadable) and its problem, if any."""
    path = folder / "dataset.json"
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, f"{folder} has no dataset.json (nnU-Net v2 needs one with channel_names and labels)"
    except (OSError, ValueError) as err:
        return {}, f"{path} cannot be read as JSON: {_first_line(err)}"
    if not isinstance(content, dict):
        return {}, f"{path} holds no JSON object"
    missing = [key for key in ("channel_names", "labels") if not isinstance(content.get(key), dict) or not content[key]]
    if missing:
        return content, f"{path} has no {' or '.join(missing)} mapping; nnU-Net v2 needs both"
    if any(isinstance(value, list) for value in content["labels"].values()):
        return content, f"{path}: region-based labels (lists in 'labels') are not supported"
    return content, None


def _image_header(path: Path) -> tuple[int, tuple[float, ...]]:
    """Spatial dimensions (one-slice 3-D images count as 2-D) and spacing (z, y, x) of an image, from its
    header alone."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = reader.GetSize()
    dim = sum(s > 1 for s in size) if len(size) == 3 else len(size)
    return dim, tuple(float(s) for s in reversed(reader.GetSpacing()))


def _read_folder(config: StudyConfig, folder: Path) -> tuple[DatasetFacts, list[str]]:
    """Facts and problems of an existing raw dataset folder: dataset.json, its cases, one image header."""
    content, problem = _read_dataset_json(folder)
    problems = [problem] if problem else []
    ids: tuple[str, ...] = ()
    first = None
    if content:
        ids, first, problem = _training_files(folder, content)
        if problem or len(ids) < 2:
            problems.append(problem or f"{folder} has {len(ids)} training case(s); nnU-Net needs at least 2")
    dim = spacing = None
    if first is not None and first.name.lower().endswith(SIMPLEITK_ENDINGS):
        try:
            dim, spacing = _image_header(first)
        except RuntimeError as err:
            problems.append(f"cannot read the header of {first}: {_first_line(err)}")

    def count(key: str) -> int | None:
        value = content.get(key)
        return len(value) if isinstance(value, dict) and value else None

    facts = DatasetFacts(folder.name, folder, count("channel_names"), count("labels"), len(ids) or None, dim,
                         ids or None, spacing)
    return facts, [f"{_dataset_field(config)}: {p}" for p in problems]


def inspect_dataset(config: StudyConfig) -> tuple[DatasetFacts | None, list[str]]:
    """The study's raw dataset: its facts (``None`` when it is not found) and its problems.

    Demo data not generated yet is described by the study's ``dataset.demo`` (3-D, one channel); an existing
    folder is read: dataset.json, the training cases, the header of one image.
    """
    from scalekit.nnunet.prepare import resolve_raw_dataset

    d = config.dataset
    if d.demo is not None:
        folder = demo_folder(config)
        if not (folder / "dataset.json").exists():
            from scalekit.nnunet.demo import LABELS

            return DatasetFacts(folder.name, None, 1, len(LABELS), d.demo.cases, 3), []
    else:
        try:
            folder = resolve_raw_dataset(d.reference, config.nnunet_roots()[0])
        except ValueError:
            return None, [_not_found(config)]
    return _read_folder(config, folder)


def _fold_problems(config: StudyConfig, facts: DatasetFacts) -> list[str]:
    """The study's splits file is valid for the dataset, and ``dataset.fold`` is one of the folds it will use."""
    fold, own = config.dataset.fold, config.dataset.splits
    splits = own or config.nnunet_roots()[1] / facts.name / SPLITS_FILE
    if splits.is_file() or own is not None:
        field = "dataset.splits" if own is not None else "dataset.fold"
        try:
            folds = read_splits(splits, facts.case_ids if own is not None else None)
        except SplitsError as err:
            again = "" if own is not None else "; delete it to have it made again"
            return [f"{field}: {err}{again}"]
        count, origin = len(folds), f"in {splits}"
    elif facts.cases:
        count, origin = min(MAX_FOLDS, facts.cases), f"min({MAX_FOLDS}, cases) of {facts.cases} cases"
    else:
        return []
    if fold < count:
        return []
    return [f"dataset.fold: {fold} but the dataset has {count} folds (0..{count - 1}, {origin}); "
            "use one of them"]


def _dim_problems(config: StudyConfig, facts: DatasetFacts) -> list[str]:
    if facts.dim == 2 and config.dim == 3:
        return [f"dataset.patch_size: {list(config.dataset.patch_size)} is 3-D but the images of {facts.name} are "
                "2-D; set configuration: 2d with a 2-entry patch_size, e.g. [256, 256]"]
    return []


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be created or written to, or ``None`` (nothing is created to find out)."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def _folder_problems(config: StudyConfig, facts: DatasetFacts | None) -> list[str]:
    """The folders a run writes: the output directory, a preprocessed root set apart, the demo's raw root."""
    folders = {"output_dir": config.output_dir}
    raw, pre = config.data_roots()
    set_apart = ("dataset.raw_dir", "$nnUNet_raw", "dataset.preprocessed_dir", "$nnUNet_preprocessed")
    if pre.origin in set_apart:
        folders[pre.origin] = pre.path
    if facts is not None and facts.folder is None and raw.origin in set_apart:
        folders[raw.origin] = raw.path
    problems = []
    for field, folder in folders.items():
        reason = _unwritable(folder)
        if reason:
            problems.append(f"{field}: {folder} cannot be created or written: {reason}; choose another folder "
                            "or fix its permissions")
    return problems


def _sqlite_problems(database: str | None, output_dir: Path) -> list[str]:
    if not database or database == ":memory:":
        return []
    path = Path(database).absolute()
    if path.exists():
        if not path.is_file():
            return [f"storage: SQLite database {path} is not a file"]
        return [] if os.access(path, os.R_OK | os.W_OK) else [f"storage: SQLite database {path} is not writable"]
    if not path.parent.is_dir() and not path.parent.is_relative_to(output_dir):
        return [f"storage: folder {path.parent} of the SQLite database does not exist (SQLite does not create "
                "folders); create it or put the database in the output directory"]
    reason = _unwritable(path.parent)
    return [f"storage: SQLite database {path} cannot be created: {reason}"] if reason else []


def _storage_problems(config: StudyConfig) -> list[str]:
    """The Optuna storage URL parses and, but for SQLite (checked on disk, never created), connects."""
    if config.storage is None:  # SQLite in the output directory, checked with it
        return []
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    try:
        url = make_url(config.storage)
    except ArgumentError:
        return [f"storage: {config.storage!r} is not a database URL; write e.g. sqlite:///runs/study/optuna.db or "
                "postgresql://user:password@host/db, or leave storage out (SQLite in the output directory)"]
    if url.get_backend_name() == "sqlite":
        return _sqlite_problems(url.database, config.output_dir)
    shown = url.render_as_string(hide_password=True)
    try:
        timeout = _CONNECT_TIMEOUT.get(url.get_driver_name())
        engine = create_engine(url, poolclass=NullPool, connect_args={timeout: CONNECT_TIMEOUT_S} if timeout else {})
    except NoSuchModuleError:
        return [f"storage: {shown}: {url.drivername!r} is no database SQLAlchemy knows; use e.g. sqlite, "
                "postgresql or mysql"]
    except ImportError as err:
        return [f"storage: {shown} needs a database driver that is not installed ({_first_line(err)}); "
                "install it, or use another storage"]
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as err:
        reason = _first_line(getattr(err, "orig", None) or err)
        return [f"storage: cannot connect to {shown}: {reason}; start the database or correct the URL"]
    finally:
        engine.dispose()
    return []


def _selection_problems(config: StudyConfig) -> list[str]:
    """A stage id given as the export rule must be a stage of the study's space."""
    export = config.finish.export
    rule = export.select.strip() if export is not None else ""
    if not STAGE_ID.fullmatch(rule):
        return []
    space = build_space(config)
    stages = [family.stage_id(kernel) for family in space.trained
              for kernel in space.chain(family.family_id)]
    if rule in stages:
        return []
    return [f"finish.export.select: {rule} is not a stage of this study's space (its {len(stages)} stages are "
            f"e.g. {', '.join(stages[:3])}); use best, knee, a memory budget or one of its stage ids"]


def _baseline_problems(config: StudyConfig) -> list[str]:
    """ResEnc baselines need a patch that nnU-Net's topology divides at the dataset's spacing: checked where the
    spacing is known before any work (``dataset.spacing``, or an earlier preparation), else once prepared."""
    if config.space.resenc is None:
        return []
    prepared = prepared_of(config)
    if prepared is None and config.dataset.spacing is None:
        return []
    try:
        resenc_template(config, 1, 2, prepared)
    except BaselineError as err:
        return [str(err)]
    return []


def preflight(config: StudyConfig) -> list[str]:
    """Every problem of a validated study that can be known before any work, one line each; empty if none.

    Checked: the dataset is found (or is demo data to generate) and its dataset.json has channels and labels;
    the patch's dimensions fit the images; ``dataset.fold`` exists in the splits (``splits_final.json``, or the
    min(5, cases) folds nnU-Net will make); the output folders can be written; the storage URL parses and
    connects; a stage id given as the export rule is in the space; ResEnc baselines fit the patch.
    """
    facts, problems = inspect_dataset(config)
    if facts is not None:
        problems += _fold_problems(config, facts) + _dim_problems(config, facts)
    return (problems + _folder_problems(config, facts) + _storage_problems(config) + _selection_problems(config)
            + _baseline_problems(config))
