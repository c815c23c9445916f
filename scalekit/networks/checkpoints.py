"""Checkpoint files of any registered kind: scalekit's format (the config, with its ``arch``, beside the
weights) read without unpickling code, the kind picked from the file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from scalekit.mednext.checkpoint import FORMAT, read_checkpoint, save_checkpoint, state_mismatch

from .registry import DEFAULT_ARCH, config_from_dict, get_kind


def load_state(path: str | Path) -> tuple[dict[str, torch.Tensor], Any, str]:
    """Weights, config and source (``"scalekit"``, or a foreign format such as MedNeXt's ``"reference"``) of a
    checkpoint file. A scalekit checkpoint's config names its kind (``arch``; MedNeXt when absent); any other
    file is read as the foreign formats of MedNeXt, the only kind that has them."""
    data = read_checkpoint(path)
    if isinstance(data, Mapping) and data.get("format") == FORMAT and isinstance(data.get("config"), Mapping):
        return dict(data["state_dict"]), config_from_dict(data["config"]), "scalekit"
    return get_kind(DEFAULT_ARCH).load_foreign(data, path)


__all__ = ["load_state", "read_checkpoint", "save_checkpoint", "state_mismatch"]
