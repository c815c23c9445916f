"""Reading nnU-Net v2 checkpoints and writing starting weights, without unpickling arbitrary objects.

nnU-Net's ``checkpoint_*.pth`` files hold weights, optimizer state, logged curves (numpy scalars), plans and
dataset.json (plain containers) and a ``torch.device``: :func:`scalekit.networks.read_checkpoint` (``weights_only``
with numpy scalars allowed) reads them as they are; no further safe globals are needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from scalekit.networks import read_checkpoint
from scalekit.networks.mednext import CheckpointError, MedNeXt, UpKernReport, infer_config, upkern


def read_nnunet_checkpoint(path: Path) -> dict[str, Any]:
    """An nnU-Net v2 checkpoint (or starting-weights file) as a dict, read with ``weights_only=True``."""
    data = read_checkpoint(path)
    if not isinstance(data, Mapping) or "network_weights" not in data:
        raise CheckpointError(f"{path} is not an nnU-Net v2 checkpoint (no 'network_weights' entry)")
    return dict(data)


def write_starting_weights(path: Path, model: torch.nn.Module) -> Path:
    """Write ``model``'s weights in the layout nnU-Net's ``-pretrained_weights`` option reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": model.state_dict()}, path)
    return path


def upkern_nnunet_checkpoint(source: Path, kernel_size: int, out: Path) -> UpKernReport:
    """Resample a trained nnU-Net checkpoint of a scalekit MedNeXt to ``kernel_size`` (UpKern) and write
    starting weights for ``nnUNetv2_train -pretrained_weights``."""
    state = read_nnunet_checkpoint(source)["network_weights"]
    target = MedNeXt(infer_config(state).replace(kernel_size=kernel_size))
    report = upkern(target, state)
    write_starting_weights(out, target)
    return report
