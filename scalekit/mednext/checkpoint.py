"""Checkpoints: scalekit's own format, and the one place that translates reference (nnU-Net v1) checkpoints.

Every file is read with ``torch.load(..., weights_only=True)``: nothing is unpickled beyond tensors, plain
containers and numpy scalars (which nnU-Net v1 checkpoints carry in their training curves).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .config import NUM_LEVELS, MedNeXtConfig
from .model import MedNeXt

FORMAT = "scalekit-mednext/1"
_STAGE_PREFIXES = [f"enc_block_{i}" for i in range(4)] + ["bottleneck"] + [
    f"dec_block_{i}" for i in reversed(range(4))
]


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not describe a MedNeXt."""


def _numpy_safe_globals() -> list[Any]:
    """numpy scalar and dtype constructors: data-only, needed for nnU-Net v1's logged training curves."""
    try:
        import numpy as np
    except ImportError:
        return []
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 moved numpy.core to numpy._core
    scalar = core.multiarray.scalar
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "bool")]
    return [scalar, np.dtype, *dtypes]


def read_checkpoint(path: str | Path) -> Any:
    """Load a checkpoint file without unpickling arbitrary objects; refuse unsafe files with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} holds Python objects that scalekit will not unpickle (they could run arbitrary code): "
            f"{first_line}. Re-save only the weights, e.g. torch.save({{'state_dict': model.state_dict()}}, "
            "path), from an environment you trust."
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {err}") from None


def translate_reference_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a reference MedNeXt state dict onto scalekit's names: strip ``module.`` and drop ``dummy_tensor``.

    Parameter names and shapes are otherwise identical, transposed-conv layouts included.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key == "dummy_tensor":
            continue
        out[key] = value
    return out


def infer_config(state: Mapping[str, torch.Tensor], **known: Any) -> MedNeXtConfig:
    """Reconstruct the architecture from a (translated) state dict.

    Widths, ratios, block counts, kernels, dimension, heads, residual branches and GRN are read from the
    tensor shapes. Settings without parameters cannot be seen and default to the published configurations
    (``do_res=True``, GroupNorm, reference up-block alignment, no checkpointing); pass ``known`` to override.
    """
    try:
        stem = state["stem.weight"]
        head = state["out_0.conv_out.weight"]
    except KeyError as err:
        raise CheckpointError(f"not a MedNeXt state dict: missing {err.args[0]!r}") from None
    dim = stem.ndim - 2
    block_counts, exp_r = [], []
    for prefix in _STAGE_PREFIXES:
        indices = {int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
        if not indices:
            raise CheckpointError(f"not a MedNeXt state dict: no blocks under {prefix!r}")
        block_counts.append(max(indices) + 1)
        first = f"{prefix}.0"
        exp_r.append(state[f"{first}.conv2.weight"].shape[0] // state[f"{first}.conv2.weight"].shape[1])
    fields: dict[str, Any] = dict(
        in_channels=stem.shape[1],
        n_channels=stem.shape[0],
        num_classes=head.shape[1],
        exp_r=tuple(exp_r),
        block_counts=tuple(block_counts),
        enc_kernel_size=state["enc_block_0.0.conv1.weight"].shape[-1],
        dec_kernel_size=state["dec_block_0.0.conv1.weight"].shape[-1],
        deep_supervision=f"out_{NUM_LEVELS - 1}.conv_out.weight" in state,
        do_res_up_down="down_0.res_conv.weight" in state,
        grn="enc_block_0.0.grn_gamma" in state,
        dim=dim,
    )
    fields.update(known)
    return MedNeXtConfig(**fields)


def save_checkpoint(path: str | Path, model: MedNeXt, **extra: Any) -> Path:
    """Write a scalekit checkpoint: format tag, architecture (plain dict) and weights, plus ``extra`` data."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "config": model.config.to_dict(), "state_dict": model.state_dict(), **extra}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_state(path: str | Path) -> tuple[dict[str, torch.Tensor], MedNeXtConfig, str]:
    """Weights, architecture and source kind (``"scalekit"`` or ``"reference"``) of a checkpoint file.

    Accepts a scalekit checkpoint, a reference nnU-Net v1 ``*.model`` file (a dict with ``state_dict``,
    keys possibly prefixed ``module.``) or a bare reference state dict.
    """
    data = read_checkpoint(path)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a checkpoint dict")
    if data.get("format") == FORMAT:
        return dict(data["state_dict"]), MedNeXtConfig.from_dict(data["config"]), "scalekit"
    state = data.get("state_dict", data)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} has no state dict of tensors (expected a 'state_dict' entry)")
    state = translate_reference_state_dict(state)
    try:
        return state, infer_config(state), "reference"
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None


def load_mednext(path: str | Path, **known: Any) -> MedNeXt:
    """Build the network a checkpoint describes and load its weights with strict checking.

    ``known`` overrides architecture settings that a reference state dict cannot show (e.g. ``do_res``,
    ``norm_type="layer"``, ``checkpointing=True``).
    """
    state, config, _ = load_state(path)
    if known:
        config = config.replace(**known)
    model = MedNeXt(config)
    model.load_state_dict(state, strict=True)
    return model
