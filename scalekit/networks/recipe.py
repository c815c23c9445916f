"""The training recipe (the reference MedNeXt nnU-Net v1 trainer; ``shared/reference/mednext-v1.md``), defined
once: the trial trainer (:mod:`scalekit.nnunet.trainer`) trains with it and the profiler's training step
(:mod:`scalekit.profiler.step`) measures it, so a predicted peak memory always describes what trials run.

AdamW (lr 1e-3, weight decay 3e-5, eps 1e-4), gradient clipping at norm 12, Dice + cross-entropy per output
with deep-supervision weights 1/2^i normalised (16:8:4:2:1 / 31 for MedNeXt's five outputs), autocast in
fp16 (CUDA) or bf16. The optimizer is the network kind's (:attr:`scalekit.networks.NetworkKind.make_optimizer`;
MedNeXt's is :func:`make_optimizer` here). Also the one place that turns the ``device`` and ``amp`` settings
into torch objects.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from scalekit.errors import ScalekitError

EPOCHS = 1000
ITERATIONS_PER_EPOCH = 250
VAL_ITERATIONS = 50
"""The MedNeXt paper's schedule: epochs, training batches per epoch, validation batches per epoch (nnU-Net's
pseudo Dice). Every default of scalekit's training settings (study file, stage request, trainer) is these."""
INITIAL_LR = 1e-3
WEIGHT_DECAY = 3e-5
ADAM_EPS = 1e-4
GRAD_CLIP = 12.0
DICE_SMOOTH = 1e-5
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
"""Autocast dtypes by setting; ``None`` or ``"none"``: fp32."""
AMP_SETTINGS = (None, "none", "auto", *AMP_DTYPES)
"""Every ``amp`` setting: fp32 (``None``, ``"none"``), ``"auto"`` (fp16 on CUDA, fp32 on the CPU), a dtype."""


def deep_supervision_weights(n_outputs: int) -> tuple[float, ...]:
    """Loss weights of the outputs [full, 1/2, ...]: 2^-i normalised to sum 1 (16:8:4:2:1 / 31 for five)."""
    raw = [2.0**-i for i in range(n_outputs)]
    return tuple(w / sum(raw) for w in raw)


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter], lr: float = INITIAL_LR, foreach: bool | None = None
) -> torch.optim.AdamW:
    """The recipe's AdamW (``foreach=None`` lets torch choose, as nnU-Net's trainer does)."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=WEIGHT_DECAY, eps=ADAM_EPS, foreach=foreach)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"`` as a torch device; CUDA must exist when asked for."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ScalekitError(f"device={device!r} is unknown; use 'auto', 'cpu' or 'cuda'")
    if device == "cuda" and not torch.cuda.is_available():
        raise ScalekitError("device='cuda' was asked for but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(device)


def resolve_amp(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting on a device; ``None`` means fp32."""
    if amp not in AMP_SETTINGS:
        raise ScalekitError(f"amp={amp!r} is unknown; use one of {AMP_SETTINGS}")
    if amp in (None, "none"):
        return None
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else None
    if amp == "fp16" and device.type != "cuda":
        raise ScalekitError("amp='fp16' needs a CUDA device; use amp='bf16' or None on the CPU")
    return AMP_DTYPES[amp]
