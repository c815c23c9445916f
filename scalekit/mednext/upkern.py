"""UpKern: initialise a MedNeXt from a trained one with another kernel size (Roy et al. 2023, section 2.3).

Tensors of equal shape are copied; convolution weights that differ only in their spatial kernel are resampled
as the reference does: ``F.interpolate`` (linear / bilinear / trilinear by spatial rank) with
``align_corners=False``, no antialiasing and no rescaling. For 3 -> 5 each axis becomes
``[w0, .6 w0 + .4 w1, w1, .4 w1 + .6 w2, w2]``. Anything else (other channel counts, missing or surplus
tensors) is refused unless the caller allows leaving those tensors at their initialisation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from scalekit.errors import ScalekitError

from .checkpoint import translate_reference_state_dict

log = logging.getLogger(__name__)

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


class UpKernError(ScalekitError):
    """Source and target networks do not correspond tensor by tensor."""


@dataclass
class UpKernReport:
    """What UpKern did to each target tensor."""

    copied: list[str] = field(default_factory=list)
    resampled: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    left_at_init: list[str] = field(default_factory=list)
    unused_source: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.copied)} copied, {len(self.resampled)} resampled, "
            f"{len(self.left_at_init)} left at initialisation, {len(self.unused_source)} source tensors unused"
        )

    def to_dict(self) -> dict[str, list]:
        return {
            "copied": self.copied,
            "resampled": [[n, list(a), list(b)] for n, a, b in self.resampled],
            "left_at_init": self.left_at_init,
            "unused_source": self.unused_source,
        }


def resample_kernel(weight: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Resample the trailing spatial dims of a conv weight (out, in, *k) to ``spatial`` like the reference."""
    rank = weight.ndim - 2
    if rank not in _MODES or len(spatial) != rank:
        raise UpKernError(f"cannot resample a weight of shape {tuple(weight.shape)} to kernel {spatial}")
    return F.interpolate(weight, size=spatial, mode=_MODES[rank], align_corners=False)


def upkern(
    target: nn.Module,
    source: nn.Module | Mapping[str, torch.Tensor],
    allow_uninitialised: bool = False,
) -> UpKernReport:
    """Load ``source`` weights into ``target``, resampling depthwise kernels of another size.

    Args:
        target: the network to initialise (modified in place).
        source: a trained network or its state dict (reference keys with ``module.`` / ``dummy_tensor`` accepted).
        allow_uninitialised: leave target tensors whose channel counts differ, or that the source lacks, at
            their initialisation instead of raising; surplus source tensors are then ignored.

    Returns:
        An :class:`UpKernReport` naming every target tensor as copied, resampled or left at initialisation.
    """
    src = source.state_dict() if isinstance(source, nn.Module) else source
    src = translate_reference_state_dict(src)
    dst = target.state_dict()
    report = UpKernReport(unused_source=sorted(set(src) - set(dst)))
    mismatched: list[str] = []
    new_state: dict[str, torch.Tensor] = {}
    for name, current in dst.items():
        if name not in src:
            report.left_at_init.append(name)
            mismatched.append(f"{name}: missing in source, target {tuple(current.shape)}")
            continue
        value = src[name]
        if value.shape == current.shape:
            new_state[name] = value
            report.copied.append(name)
        elif value.ndim == current.ndim >= 3 and value.shape[:2] == current.shape[:2]:
            new_state[name] = resample_kernel(value, tuple(current.shape[2:]))
            report.resampled.append((name, tuple(value.shape), tuple(current.shape)))
        else:
            report.left_at_init.append(name)
            mismatched.append(f"{name}: source {tuple(value.shape)} vs target {tuple(current.shape)}")
    for name in report.unused_source:
        mismatched.append(f"{name}: in source only {tuple(src[name].shape)}")
    if mismatched and not allow_uninitialised:
        listing = "\n  ".join(mismatched)
        raise UpKernError(
            f"UpKern can only resample kernel sizes; {len(mismatched)} tensor(s) do not correspond "
            f"(different channel counts, classes or blocks):\n  {listing}\n"
            "Pass allow_uninitialised=True (CLI: --allow-uninitialised) to leave these at their initialisation."
        )
    if mismatched:
        log.warning("UpKern left %d tensor(s) at initialisation: %s", len(mismatched), "; ".join(mismatched))
    with torch.no_grad():
        for name, value in new_state.items():
            dst[name].copy_(value)
    return report
