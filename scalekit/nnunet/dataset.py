"""The prepared-dataset contract that the rest of :mod:`scalekit.nnunet` reads: what scalekit recorded of a
preprocessed nnU-Net v2 dataset (folders, plans, labels, patch, spacing, channels) and the digest of every
preprocessed file, checked before a stage trains on them. :mod:`.prepare` writes it."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scalekit.errors import ScalekitError

from . import _env
from .splits import SPLITS_FILE

RECORD = "scalekit_prepared.json"
UNTRACKED = (RECORD, SPLITS_FILE)
"""Files of a preprocessed dataset that are no preprocessed data and carry no digest: scalekit's record, and
the split (JSON, never unpickled), which a study's ``dataset.splits`` may replace."""
HASH_CHUNK_BYTES = 1 << 20
RE_PREPARE = "delete the folder and rerun to prepare again"


class PreparedDataChangedError(ScalekitError):
    """Preprocessed files differ from those scalekit prepared; ``changes`` lists ``"<file> (changed|missing|added)"``
    by path relative to ``preprocessed_dir``."""

    def __init__(self, preprocessed_dir: Path, changes: list[str], reason: str | None = None) -> None:
        self.preprocessed_dir = preprocessed_dir
        self.changes = changes
        reason = reason or (f"{len(changes)} preprocessed file(s) changed since scalekit prepared them: "
                            f"{', '.join(changes)}")
        super().__init__(f"{preprocessed_dir}: {reason}; {RE_PREPARE}")


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def digest_files(folder: Path, workers: int | None = None) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (recursively, keyed by POSIX path relative to it) except the
    :data:`UNTRACKED` ones; symbolic links are followed to files, not into folders."""
    paths = (Path(root) / name for root, _, names in os.walk(folder) for name in names)
    files = sorted(path for path in paths if path.is_file() and path.relative_to(folder).as_posix() not in UNTRACKED)
    with ThreadPoolExecutor(max_workers=workers or _env.default_workers()) as pool:  # hashlib drops the GIL
        digests = list(pool.map(file_digest, files))
    return {path.relative_to(folder).as_posix(): digest for path, digest in zip(files, digests)}


def _guarded(name: str) -> bool:
    """Whether an added file would be read as data: anything in a data folder, or a binary format at the top.
    Top-level JSON files may be added: they are never unpickled (``scalekit nnunet export`` writes its plans
    file there, as nnU-Net's ``-p PLANS`` expects)."""
    return "/" in name or not name.endswith(".json")


@dataclass(frozen=True)
class PreparedDataset:
    """A preprocessed nnU-Net v2 dataset and the configuration scalekit trains on.

    Attributes:
        dataset_id: nnU-Net dataset id (1..999).
        dataset_name: folder name ``Dataset{id:03d}_{Name}``.
        raw_dir: the raw dataset folder (images are read from here for validation metrics).
        preprocessed_root: the folder used as ``nnUNet_preprocessed``.
        plans_identifier: nnU-Net plans name (``nnUNetPlans``).
        configuration: the preprocessed nnU-Net configuration (``3d_fullres`` or ``2d``).
        label_names: class names by label value, background first.
        patch_size: training patch, every entry a multiple of 16 (may differ from nnU-Net's planned patch).
        spacing: target voxel spacing of the preprocessed data in mm, in nnU-Net's axis order.
        num_input_channels: image channels (modalities).
        file_digests: SHA-256 of every preprocessed file by its POSIX path relative to ``preprocessed_dir``
            (empty for preparations made before scalekit recorded them); see :meth:`verify_files`.
    """

    dataset_id: int
    dataset_name: str
    raw_dir: Path
    preprocessed_root: Path
    plans_identifier: str
    configuration: str
    label_names: tuple[str, ...]
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]
    num_input_channels: int
    file_digests: dict[str, str] = field(default_factory=dict, hash=False, repr=False)

    @property
    def num_classes(self) -> int:
        """Network outputs: foreground classes plus background."""
        return len(self.label_names)

    @property
    def preprocessed_dir(self) -> Path:
        return self.preprocessed_root / self.dataset_name

    @property
    def plans_file(self) -> Path:
        return self.preprocessed_dir / f"{self.plans_identifier}.json"

    def load_plans(self) -> dict[str, Any]:
        """The nnU-Net plans dictionary of this preparation."""
        return json.loads(self.plans_file.read_text())

    def load_dataset_json(self) -> dict[str, Any]:
        return json.loads((self.preprocessed_dir / "dataset.json").read_text())

    def verify_files(self) -> None:
        """Check that the preprocessed files are exactly those scalekit prepared (all of them, byte for byte).

        Raises:
            PreparedDataChangedError: naming every changed, missing and added file; also when no digests
                were recorded (an older scalekit) or the folder is gone.
        """
        folder = self.preprocessed_dir
        if not self.file_digests:
            raise PreparedDataChangedError(folder, [], "no digests of its preprocessed files were recorded "
                                           "(prepared by an older scalekit), so they cannot be checked")
        if not folder.is_dir():
            raise PreparedDataChangedError(folder, [], "the preprocessed folder does not exist")
        current = digest_files(folder)
        recorded = {name: digest for name, digest in self.file_digests.items() if name not in UNTRACKED}
        changes = sorted(
            [f"{name} (changed)" for name in recorded.keys() & current.keys() if recorded[name] != current[name]]
            + [f"{name} (missing)" for name in recorded.keys() - current.keys()]
            + [f"{name} (added)" for name in current.keys() - recorded.keys() if _guarded(name)]
        )
        if changes:
            raise PreparedDataChangedError(folder, changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(raw_dir=str(self.raw_dir), preprocessed_root=str(self.preprocessed_root))
        data.update(label_names=list(self.label_names), patch_size=list(self.patch_size), spacing=list(self.spacing))
        data.update(file_digests=dict(sorted(self.file_digests.items())))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreparedDataset:
        return cls(
            dataset_id=int(data["dataset_id"]),
            dataset_name=data["dataset_name"],
            raw_dir=Path(data["raw_dir"]),
            preprocessed_root=Path(data["preprocessed_root"]),
            plans_identifier=data["plans_identifier"],
            configuration=data["configuration"],
            label_names=tuple(data["label_names"]),
            patch_size=tuple(int(p) for p in data["patch_size"]),
            spacing=tuple(float(s) for s in data["spacing"]),
            num_input_channels=int(data["num_input_channels"]),
            file_digests=dict(data.get("file_digests", {})),
        )

    @classmethod
    def load(cls, preprocessed_dir: Path) -> PreparedDataset:
        """Read the record that :func:`prepare_dataset` left in ``preprocessed_root/Dataset...``."""
        path = Path(preprocessed_dir) / RECORD
        if not path.is_file():
            raise ScalekitError(f"{preprocessed_dir} was not prepared by scalekit ({RECORD} missing); "
                             "run `scalekit data prepare` first")
        return cls.from_dict(json.loads(path.read_text())["prepared"])
