"""Where nnU-Net's folders are: one precedence for every command, the environment variables nnU-Net v2 reads.

A folder given explicitly (a study field, a command-line option) wins over the variable; a study's own
``<output_dir>/nnunet/`` folder comes last. :func:`nnunet_root` says which of them was used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RAW = "nnUNet_raw"
PREPROCESSED = "nnUNet_preprocessed"
RESULTS = "nnUNet_results"


@dataclass(frozen=True)
class NnunetRoot:
    """One of nnU-Net's root folders and, in words, where it came from (``dataset.raw_dir``, ``--raw-root``,
    ``$nnUNet_raw``, or the study's default folder)."""

    path: Path
    origin: str


def nnunet_root(variable: str, given: str | Path | None = None, given_by: str = "") -> NnunetRoot | None:
    """The folder meant for nnU-Net's ``variable``: ``given`` (by the field or option named ``given_by``), else
    the folder the environment variable names, else None."""
    if given is not None:
        return NnunetRoot(Path(given), given_by or "given")
    value = os.environ.get(variable)
    return NnunetRoot(Path(value), f"${variable}") if value else None


def study_root(variable: str, given: Path | None, given_by: str, default: Path) -> NnunetRoot:
    """:func:`nnunet_root` for a study: its field ``given_by``, else the variable, else its own ``default``."""
    return nnunet_root(variable, given, given_by) or NnunetRoot(
        default, f"the default <output_dir>/nnunet/{default.name}: neither {given_by} nor ${variable} is set"
    )


def nnunet_folder(variable: str, given: str | Path | None = None) -> Path | None:
    """The path of :func:`nnunet_root` without a default: ``given``, else the variable's folder, else None."""
    root = nnunet_root(variable, given)
    return None if root is None else root.path
