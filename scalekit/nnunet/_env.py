"""nnU-Net's process environment: folder variables, worker counts, and its console output routed to logging.

nnU-Net v2 reads ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` from the environment and fixes
``nnUNet_def_n_proc`` when ``nnunetv2.configuration`` is first imported, so every entry point of this package
calls :func:`configure` before it imports anything from nnunetv2. The variables are set for the whole process
(and the processes it starts), which is what a Ray worker running one stage wants.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("scalekit.nnunet")


def default_workers() -> int:
    """Worker processes for preprocessing: half the cores, at least 1, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def default_augmentation_workers() -> int:
    """Data-augmentation workers: none (in-process) on small machines, where spawned workers cost more than
    they give; otherwise all cores but two, at most 12."""
    cores = os.cpu_count() or 2
    return 0 if cores <= 4 else min(12, cores - 2)


def configure(
    raw: Path | None = None,
    preprocessed: Path | None = None,
    results: Path | None = None,
    num_processes: int | None = None,
) -> None:
    """Point nnU-Net at folders and choose worker counts (variables already set by the user are kept).

    Folders given here always win; ``num_processes`` sets ``nnUNet_def_n_proc`` unless the user set it.
    """
    for name, value in (("nnUNet_raw", raw), ("nnUNet_preprocessed", preprocessed), ("nnUNet_results", results)):
        if value is not None:
            Path(value).mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(Path(value).resolve())
    os.environ.setdefault("nnUNet_def_n_proc", str(num_processes or default_workers()))
    os.environ.setdefault("nnUNet_n_proc_DA", str(default_augmentation_workers()))
    os.environ.setdefault("nnUNet_compile", "false")


class _LogStream(io.TextIOBase):
    """A text stream that forwards complete lines to a logger at DEBUG level."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            if line.strip():
                self._logger.debug("%s", line)
        return len(text)


@contextlib.contextmanager
def nnunet_output_to_log() -> Iterator[None]:
    """Route nnU-Net's ``print`` output (stdout) to the ``scalekit.nnunet`` logger at DEBUG level."""
    with contextlib.redirect_stdout(_LogStream(log)):
        yield


@contextlib.contextmanager
def temporary(**variables: str) -> Iterator[None]:
    """Set environment variables for the duration of a block, restoring the previous values afterwards."""
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
