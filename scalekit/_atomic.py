"""Writing outputs so that a kill or a full disk leaves the old file (or folder) or the new one, never part of one.

- :func:`write_atomic`: text or bytes to a file.
- :func:`atomic_path`: a temporary path for writers that take a path (kaleido, ``torch.save``).
- :func:`staged_dir`: a whole folder, written beside its place and renamed into it when complete.

Temporary files and folders are hidden siblings (``.NAME.<random>.tmp<suffix>``) of their target, so the final
rename stays within one file system. They are created like any other file (permissions from the umask), so a
replaced file keeps the usual modes. A killed process can leave such a sibling behind, never a partial target.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scalekit.errors import ScalekitError


def _sibling(path: Path) -> Path:
    """A fresh hidden name beside ``path`` that keeps its suffix (kaleido picks the image format by it)."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}")


def _encoded(data: str | bytes, encoding: str) -> bytes:
    return data.encode(encoding) if isinstance(data, str) else data


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Re-raise an OSError of the block as one that names ``path`` (``torch.save`` and ``write`` do not)."""
    try:
        yield
    except OSError as err:
        message = f"cannot write {path}: {err.strerror or err}"
        raise (OSError(message) if err.errno is None else OSError(err.errno, message)) from err


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to: it replaces ``path`` when the block ends without an error
    and is removed otherwise, so ``path`` is always either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text is encoded with ``encoding``) to ``path`` atomically; returns ``path``.

    An OSError (a full disk, say) names ``path`` and leaves the old file as it was.
    """
    path = Path(path)
    with _naming(path), atomic_path(path) as tmp:
        tmp.write_bytes(_encoded(data, encoding))
    return path


@dataclass(frozen=True)
class Staging:
    """A folder being written (``folder``, a hidden sibling of ``final``) that takes ``final``'s place when complete."""

    folder: Path
    final: Path

    @contextmanager
    def file(self, name: str) -> Iterator[Path]:
        """Where to write ``name`` (a path relative to the folder) now; an OSError of the block names the
        file's final path."""
        path = self.folder / name
        with _naming(self.final / name):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield path

    def write(self, name: str, data: str | bytes, encoding: str = "utf-8") -> Path:
        """Write ``name`` into the folder; returns the path it will have once the folder is in place."""
        with self.file(name) as path:
            path.write_bytes(_encoded(data, encoding))
        return self.final / name


def _replaceable(folder: Path, marker: str) -> bool:
    return folder.is_dir() and ((folder / marker).exists() or not any(folder.iterdir()))


def _swap_in(new: Path, final: Path) -> None:
    """Rename ``new`` to ``final``; an existing ``final`` is moved aside first and deleted once ``new`` is in place."""
    old = _sibling(final)
    if final.exists():
        final.rename(old)
    try:
        new.rename(final)
    except OSError:
        if old.exists():
            old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_dir(final: str | Path, marker: str) -> Iterator[Staging]:
    """A new folder beside ``final`` to write into: when the block ends without an error it takes ``final``'s
    place (an older ``final`` is removed only then); otherwise it is removed and ``final`` is left as it was.

    An existing ``final`` is replaced only if it is empty or holds ``marker`` (it is an earlier output of the
    same kind); any other path is refused with a ValueError before anything is written.
    """
    final = Path(final)
    if final.exists() and not _replaceable(final, marker):
        raise ScalekitError(
            f"{final} exists and is not an earlier export (it has no {marker}); choose a new or an empty folder"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Staging(_sibling(final), final)
    staging.folder.mkdir()
    try:
        yield staging
        _swap_in(staging.folder, final)
    finally:
        shutil.rmtree(staging.folder, ignore_errors=True)
