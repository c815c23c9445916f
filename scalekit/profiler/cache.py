"""A directory of small JSON files, one per profile, keyed by a hash of everything that changes the answer."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CACHE_ENV = "SCALEKIT_CACHE_DIR"
SCHEMA = 1
"""Bump when the layout of an entry changes; the profiler's and the networks' code is in every key already
(:func:`scalekit.profiler.api.code_revision`), so a changed method never reads an older one's entries."""


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """``override``, else ``$SCALEKIT_CACHE_DIR``, else ``~/.cache/scalekit/profiles``."""
    if override is not None:
        return Path(override)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path.home() / ".cache" / "scalekit" / "profiles"


def cache_key(identity: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``identity`` (plus the cache schema)."""
    text = json.dumps({"schema": SCHEMA, **identity}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def load(directory: Path, key: str) -> dict[str, Any] | None:
    """The stored entry, or ``None`` when absent or unreadable (a broken file is ignored and logged)."""
    path = directory / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        logger.warning("ignoring unreadable profile cache entry %s: %s", path, err)
        return None


def store(directory: Path, key: str, value: dict[str, Any]) -> Path:
    """Write atomically: a temporary file in the same directory, then ``os.replace``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{key}.json"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(value, handle, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
