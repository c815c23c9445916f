"""The training step that the profiler predicts and measures (the reference MedNeXt recipe, mednext-v1.md §4;
the network, its outputs and its optimizer come from its kind, :mod:`scalekit.networks`).

One step: ``zero_grad(set_to_none=True)``; forward under autocast with deep supervision; the deep-supervision
loss (weights 16:8:4:2:1 normalised over the five outputs) of soft Dice + cross-entropy per output; backward of
the (scaled) loss; ``unscale_``; gradient clipping at norm 12; AdamW step (lr 1e-3, weight decay 3e-5, eps 1e-4);
scaler update.

AdamW runs with ``foreach=True``: that is what torch picks by default for CUDA parameters, hence what an nnU-Net
training actually runs, and it is the variant that needs an extra parameter-sized float32 temporary during the
step (``sqrt`` of the second moments), so predicting it is the safe side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scalekit import networks
from scalekit.networks import NetworkConfig, recipe


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + (1 - soft Dice) of one output, as nnU-Net's ``DC_and_CE_loss`` (weights 1:1).

    Args:
        logits: (N, K, *S) raw network output.
        target: (N, *S) int64 labels in [0, K).

    Soft Dice: softmax probabilities, a boolean one-hot target, per-sample and per-class sums over space,
    smooth 1e-5, background excluded. scalekit's own implementation of that formula.
    """
    ce = F.cross_entropy(logits, target)
    probs = torch.softmax(logits, 1)
    onehot = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    onehot.scatter_(1, target.unsqueeze(1), True)
    axes = tuple(range(2, logits.ndim))
    intersect = (probs * onehot).sum(axes)
    denominator = probs.sum(axes) + onehot.sum(axes)
    dice = (2 * intersect + recipe.DICE_SMOOTH) / (denominator + recipe.DICE_SMOOTH).clamp_min(1e-8)
    return ce + 1 - dice[:, 1:].mean()


def deep_supervision_loss(outputs: torch.Tensor | Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                          weights: Sequence[float]) -> torch.Tensor:
    """Weighted sum of :func:`dice_ce_loss` over the outputs (one target per output, same resolution); an output
    of weight 0 is not scored, as nnU-Net's ``DeepSupervisionWrapper`` skips it."""
    outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    loss = sum(w * dice_ce_loss(o, t) for w, o, t in zip(weights, outputs, targets) if w)
    if not isinstance(loss, torch.Tensor):
        raise ValueError("deep_supervision_loss needs at least one output and one target")
    return loss


def make_batch(arch: NetworkConfig, patch: tuple[int, ...], batch_size: int,
               device: torch.device | str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A random input (N, C_in, *patch) float32 and one int64 label map per network output (full, 1/2, ...)."""
    x = torch.randn((batch_size, arch.in_channels, *patch), device=device)
    targets = [
        torch.randint(0, arch.num_classes, (batch_size, *(s // f for s, f in zip(patch, strides))), device=device)
        for strides in networks.output_strides(arch)
    ]
    return x, targets


def make_optimizer(model: nn.Module, arch: NetworkConfig) -> torch.optim.Optimizer:
    """The optimizer of ``arch``'s kind (MedNeXt: the recipe's AdamW) with ``foreach`` (what torch picks for CUDA
    parameters; see the module docstring)."""
    return networks.make_optimizer(arch, model.parameters(), foreach=True)


def fill_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimizer's state as after a first step (AdamW: both moments; SGD with momentum: the momentum
    buffer), so one step shows the steady-state memory of training."""
    names: tuple[str, ...]
    if isinstance(optimizer, torch.optim.AdamW):
        names = ("exp_avg", "exp_avg_sq")
    elif isinstance(optimizer, torch.optim.SGD):
        names = ("momentum_buffer",) if all(g["momentum"] for g in optimizer.param_groups) else ()
    else:
        raise TypeError(f"the profiler knows the state of AdamW and SGD, not of {type(optimizer).__name__}")
    for group in optimizer.param_groups:
        for p in group["params"]:
            state: dict[str, torch.Tensor] = {name: torch.zeros_like(p, memory_format=torch.preserve_format)
                                              for name in names}
            if isinstance(optimizer, torch.optim.AdamW):
                state["step"] = torch.tensor(0.0)
            optimizer.state[p] = state


class ScalerStandIn:
    """``GradScaler``'s memory behaviour without its host synchronisation (which fake tensors cannot do).

    The loss is multiplied by a scalar tensor, the gradients are divided in place, the step always runs.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._scale: torch.Tensor | None = None

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return loss
        self._scale = torch.full((), 2.0 ** 16, device=loss.device)
        return loss * self._scale

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if self.enabled and self._scale is not None:
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch._foreach_mul_(grads, 1.0 / 2.0 ** 16)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def update(self) -> None:
        self._scale = None


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                  targets: Sequence[torch.Tensor], autocast: Any, scaler: Any) -> None:
    """One step of the recipe; ``autocast`` is a context manager, ``scaler`` a GradScaler or :class:`ScalerStandIn`."""
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        loss = deep_supervision_loss(model(x), targets, networks.loss_weights(networks.config_of(model)))
    scaler.scale(loss).backward()
    del loss
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.GRAD_CLIP, foreach=True)
    scaler.step(optimizer)
    scaler.update()


def autocast_context(device_type: str, amp: str | None) -> Any:
    """``torch.autocast`` for ``amp`` ("fp16", "bf16") or a null context for ``None``."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=recipe.AMP_DTYPES[amp])
