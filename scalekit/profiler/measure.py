"""Peak memory and step time of a training step measured on a CUDA GPU."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from scalekit import networks
from scalekit.networks import NetworkConfig

from .step import autocast_context, make_batch, make_optimizer, training_step

WARMUP_STEPS = 2
TIMED_STEPS = 3


@dataclass(frozen=True)
class Measurement:
    """Measured bytes (after warm-up, over the timed steps) and the median step time."""

    peak_bytes: int
    reserved_bytes: int
    context_bytes: int
    state_bytes: int
    input_bytes: int
    step_time_s: float
    device: str


def _nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure_cuda(arch: NetworkConfig, patch: tuple[int, ...], batch_size: int, amp: str | None,
                 checkpointing: bool, warmup: int = WARMUP_STEPS, steps: int = TIMED_STEPS) -> Measurement:
    """Run ``warmup`` steps (cuDNN autotuning, optimizer state), release cached blocks, reset the peak
    counters, run ``steps`` timed steps; ``max_memory_allocated``/``max_memory_reserved`` over those.

    Raises ``torch.cuda.OutOfMemoryError`` when the step does not fit.
    """
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    gc.collect()
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    context = max(0, total - free - torch.cuda.memory_reserved())
    model = networks.build(arch.replace(checkpointing=checkpointing)).to(device)
    model.train()
    optimizer = make_optimizer(model, arch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    x, targets = make_batch(arch, patch, batch_size, device)
    try:
        for _ in range(warmup):
            training_step(model, optimizer, x, targets, autocast_context("cuda", amp), scaler)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            training_step(model, optimizer, x, targets, autocast_context("cuda", amp), scaler)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        params = list(model.parameters())
        state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        grads = [p.grad for p in params if p.grad is not None]
        return Measurement(
            peak_bytes=torch.cuda.max_memory_allocated(),
            reserved_bytes=torch.cuda.max_memory_reserved(),
            context_bytes=context,
            state_bytes=_nbytes(params) + _nbytes(grads) + _nbytes([s for s in state if s.is_cuda]),
            input_bytes=_nbytes([x, *targets]),
            step_time_s=statistics.median(times),
            device=torch.cuda.get_device_name(device),
        )
    finally:
        del model, optimizer, x, targets
        gc.collect()
        torch.cuda.empty_cache()
