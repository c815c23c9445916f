"""``profile``: validate the request, look in the cache, count, then measure or predict memory."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from scalekit.errors import ScalekitError
from scalekit import networks
from scalekit.networks import NetworkConfig, recipe

from . import cache as _cache
from .counting import count
from .result import ProfileResult

logger = logging.getLogger(__name__)

AMP_CHOICES = (*recipe.AMP_DTYPES, None)
"""The profiler takes an explicit autocast dtype or None (fp32); ``auto`` is resolved by the caller."""
DEVICE_CHOICES = ("auto", "cpu", "cuda")
PREDICTED_DEVICE = "predicted (CUDA)"


def normalise_patch(arch: NetworkConfig, patch_size: int | Sequence[int]) -> tuple[int, ...]:
    """An int becomes a cube (square in 2-D); the result is checked against the architecture."""
    if isinstance(patch_size, bool):
        raise ScalekitError(f"patch_size={patch_size!r} is not a size; give an int or {arch.dim} ints")
    patch = (patch_size,) * arch.dim if isinstance(patch_size, int) else tuple(patch_size)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in patch):
        raise ScalekitError(f"patch_size={patch_size!r} must be positive integers")
    arch.check_input_shape(patch)
    return patch


@functools.cache
def code_revision() -> str:
    """A digest of the code a profile depends on (the profiler, the networks and their registry): part of every
    cache key, so a changed profiler or model never answers with a number an older one cached."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for package in ("profiler", "networks", "mednext"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def profile(
    arch: NetworkConfig,
    patch_size: int | Sequence[int],
    batch_size: int,
    amp: str | None = "fp16",
    checkpointing: bool | None = None,
    device: str = "auto",
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ProfileResult:
    """Parameters, FLOPs and peak memory of one training step of ``arch`` on (batch, C_in, *patch) inputs.

    Args:
        arch: the architecture; its ``deep_supervision`` decides the number of outputs and losses.
        patch_size: an int (cube / square) or ``arch.dim`` ints, each divisible by 16.
        batch_size: >= 1.
        amp: "fp16" (autocast + GradScaler), "bf16" (autocast) or None (float32).
        checkpointing: gradient checkpointing of every block; None takes ``arch.checkpointing``.
        device: "cuda" measures on the GPU, "cpu" predicts without one, "auto" measures when CUDA is available.
        cache: read and write the JSON cache (``cache_dir``, else ``$SCALEKIT_CACHE_DIR``, else
            ``~/.cache/scalekit/profiles``).

    Raises:
        ValueError: bad patch, batch, amp or device, before any work.
    """
    networks.kind_of(arch)
    patch = normalise_patch(arch, patch_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ScalekitError(f"batch_size={batch_size!r} is not allowed; use an integer >= 1")
    if amp not in AMP_CHOICES:
        raise ScalekitError(f"amp={amp!r} is unknown; use 'fp16', 'bf16' or None")
    if device not in DEVICE_CHOICES:
        raise ScalekitError(f"device={device!r} is unknown; use 'auto', 'cpu' or 'cuda'")
    if device == "cuda" and not torch.cuda.is_available():
        raise ScalekitError("device='cuda' but no CUDA GPU is available; use device='cpu' to predict")
    ckpt = arch.checkpointing if checkpointing is None else bool(checkpointing)
    measured = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    device_name = torch.cuda.get_device_name() if measured else PREDICTED_DEVICE
    identity = {
        "arch": arch.to_dict(), "patch": list(patch), "batch": batch_size, "amp": amp,
        "checkpointing": ckpt, "device": device_name, "torch": torch.__version__,
        "code": code_revision(),
    }
    directory, key = _cache.cache_dir(cache_dir), _cache.cache_key(identity)
    if cache and (hit := _cache.load(directory, key)) is not None:
        return ProfileResult.from_dict(hit)
    result = _compute(arch, patch, batch_size, amp, ckpt, measured, device_name)
    if cache:
        _cache.store(directory, key, result.to_dict())
    return result


def _compute(arch: NetworkConfig, patch: tuple[int, ...], batch_size: int, amp: str | None,
             checkpointing: bool, measured: bool, device_name: str) -> ProfileResult:
    logger.info("profiling %s patch %s batch %d amp %s checkpointing %s on %s",
                arch, patch, batch_size, amp, checkpointing, device_name)
    counts = count(arch, patch, batch_size, checkpointing)
    result = ProfileResult(
        params=counts.params, gmacs_forward=counts.gmacs_forward, gflops_fvcore=counts.gflops_fvcore,
        gflops_forward=counts.gflops_forward, gflops_train=counts.gflops_train,
        peak_memory_bytes=0, reserved_memory_bytes=0, cuda_context_bytes=0, state_bytes=0,
        activation_bytes=0, other_bytes=0, memory_method="measured" if measured else "predicted",
        step_time_s=None, patch_size=patch, batch_size=batch_size, amp=amp, checkpointing=checkpointing,
        device=device_name,
    )
    if measured:
        from .measure import measure_cuda

        m = measure_cuda(arch, patch, batch_size, amp, checkpointing)
        return replace(
            result, peak_memory_bytes=m.peak_bytes, reserved_memory_bytes=m.reserved_bytes,
            cuda_context_bytes=m.context_bytes, state_bytes=m.state_bytes, other_bytes=m.input_bytes,
            activation_bytes=max(0, m.peak_bytes - m.state_bytes - m.input_bytes), step_time_s=m.step_time_s,
        )
    from .predict import CUDA_CONTEXT_BYTES, predict_memory

    estimate = predict_memory(arch, patch, batch_size, amp, checkpointing)
    return replace(
        result, peak_memory_bytes=estimate.peak_bytes, reserved_memory_bytes=estimate.reserved_bytes,
        cuda_context_bytes=CUDA_CONTEXT_BYTES, state_bytes=estimate.state_bytes,
        activation_bytes=estimate.activation_bytes, other_bytes=estimate.other_bytes,
    )
