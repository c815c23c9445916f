"""Checkpoints: scalekit's own format, and the one place that translates reference (nnU-Net v1) checkpoints.

Every file is read with ``torch.load(..., weights_only=True)``: nothing is unpickled beyond tensors, plain
containers and numpy scalars (which nnU-Net v1 checkpoints carry in their training curves).
"""

from __future__ import annotations

import pickle
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from scalekit.errors import ScalekitError

from .config import NUM_LEVELS, MedNeXtConfig
from .model import MedNeXt

FORMAT = "scalekit-mednext/1"
_STAGE_PREFIXES = [f"enc_block_{i}" for i in range(4)] + ["bottleneck"] + [
    f"dec_block_{i}" for i in reversed(range(4))
]


_ZIP_MAGIC = b"PK\x03\x04"
"""How torch.save's zip format starts."""
_PICKLE_PROTOCOL = b"\x80"
"""How a pickle of protocol 2 or later starts (torch's legacy format, nnU-Net v1's ``*.model`` files)."""


class CheckpointError(ScalekitError):
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


def _reason(err: BaseException) -> str:
    """The informative part of torch.load's error, on one line (its messages run to paragraphs)."""
    text = str(err).strip()
    detail = re.search(r"Unsupported (?:operand \d+|global: GLOBAL \S+)", text)
    if detail:
        return detail.group(0)
    return text.splitlines()[0].split(". ")[0] if text else type(err).__name__


def read_checkpoint(path: str | Path) -> Any:
    """Load a checkpoint file without unpickling arbitrary objects; refuse anything else with a clear error.

    Raises:
        CheckpointError: the file is missing, unreadable, empty, neither torch's zip format nor a (legacy)
            pickle, truncated or corrupted, or holds objects beyond tensors and plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} {'is a folder' if path.is_dir() else 'does not exist'}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as err:
        raise CheckpointError(f"checkpoint file {path} cannot be read: {err.strerror}") from None
    if not head:
        raise CheckpointError(f"checkpoint file {path} is empty")
    if not head.startswith((_ZIP_MAGIC, _PICKLE_PROTOCOL)):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint: it is neither torch.save's zip archive nor a binary pickle "
            f"(it starts with {head!r})"
        )
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _reason(err)
        if reason.startswith("Unsupported global"):
            raise CheckpointError(
                f"{path} holds Python objects that scalekit will not unpickle (they could run arbitrary code): "
                f"{reason}. Re-save only the weights, e.g. torch.save({{'state_dict': model.state_dict()}}, path), "
                "from an environment you trust."
            ) from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {reason}") from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, struct.error) as err:
        # what a truncated or corrupted zip archive or pickle stream raises inside torch.load
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupted?): {_reason(err)}"
        ) from None


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


def save_checkpoint(path: str | Path, model: torch.nn.Module, **extra: Any) -> Path:
    """Write a scalekit checkpoint: format tag, architecture (``model.config``'s plain dict, with its ``arch``)
    and weights, plus ``extra`` data.

    The file appears whole or not at all: a failed write (a full disk) leaves no partial file behind.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the checkpoint's file name, e.g. {path / 'model.pt'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "config": getattr(model, "config").to_dict(), "state_dict": model.state_dict(), **extra}
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_state(path: str | Path) -> tuple[dict[str, torch.Tensor], MedNeXtConfig, str]:
    """Weights, architecture and source kind (``"scalekit"`` or ``"reference"``) of a checkpoint file.

    Accepts a scalekit checkpoint, a reference nnU-Net v1 ``*.model`` file (a dict with ``state_dict``,
    keys possibly prefixed ``module.``) or a bare reference state dict.
    """
    return state_of(read_checkpoint(path), path)


def state_of(data: Any, path: str | Path) -> tuple[dict[str, torch.Tensor], MedNeXtConfig, str]:
    """:func:`load_state` of what :func:`read_checkpoint` read from ``path`` (named in errors)."""
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
    problems = state_mismatch(model.state_dict(), state)
    if problems:
        overrides = f" with {', '.join(f'{k}={v!r}' for k, v in known.items())}" if known else ""
        raise CheckpointError(f"{path}: its weights do not fit the MedNeXt it describes{overrides}: {problems}")
    model.load_state_dict(state, strict=True)
    return model


def state_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], show: int = 3) -> str:
    """What keeps ``state`` from loading strictly where ``expected`` is (the first ``show`` of each kind), or ``""``."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]

    def listing(what: str, items: list[str]) -> str:
        more = f" and {len(items) - show} more" if len(items) > show else ""
        return f"{len(items)} {what} ({', '.join(items[:show])}{more})"

    parts = [listing(what, items) for what, items in (
        ("tensor(s) of another shape (checkpoint vs network)", shapes),
        ("tensor(s) missing", missing),
        ("unexpected tensor(s)", unexpected),
    ) if items]
    return "; ".join(parts)
