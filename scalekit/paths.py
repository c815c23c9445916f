"""Where nnU-Net's folders are: the environment variables nnU-Net v2 reads, looked up in one place.

A folder given explicitly (a study field, a command-line option) always wins over the variable.
"""

from __future__ import annotations

import os
from pathlib import Path

RAW = "nnUNet_raw"
PREPROCESSED = "nnUNet_preprocessed"
RESULTS = "nnUNet_results"


def nnunet_folder(variable: str, given: str | Path | None = None) -> Path | None:
    """``given`` if set, else the folder that the environment ``variable`` names, else None."""
    if given is not None:
        return Path(given)
    value = os.environ.get(variable)
    return Path(value) if value else None
