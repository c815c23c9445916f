"""Peak memory of a training step predicted on CPU: a fake-tensor run, traced, replayed for a CUDA device.

1. The step of :mod:`scalekit.profiler.step` runs on fake tensors (``FakeTensorMode``: shapes, dtypes and
   storages, no data, no arithmetic) under ``torch.distributed._tools.mem_tracker.MemTracker``, which sees every
   storage created and freed, with its role (parameter, gradient, optimizer state, activation, temporary).
   Under AMP the CPU autocast key is given CUDA autocast's cast policy (:mod:`.cuda_policy`).
2. The sequence of storage allocations and frees is recorded and replayed either exactly (bytes, what a CPU
   run holds) or through a model of the CUDA caching allocator (:mod:`.allocator`: 512 B rounding, 2 MiB /
   20 MiB / rounded-up segments, best fit), which gives the peak of ``max_memory_allocated`` and
   ``max_memory_reserved``.
3. Constants for what the trace cannot contain: a cuDNN workspace allowance, added to the allocated and
   reserved peaks, and the CUDA context (reported separately; PyTorch's counters never include it).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker

from scalekit import networks
from scalekit.networks import NetworkConfig

from .allocator import CachingAllocatorModel
from .cuda_policy import cuda_autocast_policy
from .step import ScalerStandIn, autocast_context, fill_optimizer_state, make_batch, make_optimizer, training_step

CUDNN_WORKSPACE_BYTES = 64 << 20
"""Allowance for cuDNN's convolution workspace at the peak (an assumption: cuDNN chooses it at run time)."""
CUDA_CONTEXT_BYTES = 512 << 20
"""CUDA context and kernels of a torch process (0.3-0.6 GiB on current GPUs); outside PyTorch's counters."""

STATE_KINDS = ("Parameter", "Buffer", "Gradient", "Optstate")
ACTIVATION_KINDS = ("Activation", "Temp")
KINDS = ("state", "activations", "other")


def _kind(reftype: Any) -> str:
    value = getattr(reftype, "value", str(reftype))
    if value in STATE_KINDS:
        return "state"
    return "activations" if value in ACTIVATION_KINDS else "other"


class _TracingMemTracker(MemTracker):
    """A MemTracker that also records every storage event: (op, storage id, bytes, kind)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, int, int, str]] = []

    def _update_snap(self, u_type: Any, winfo: Any, old_mem_consumed: int | None = None,
                     old_reftype: Any = None) -> None:
        super()._update_snap(u_type, winfo, old_mem_consumed, old_reftype)
        op = getattr(u_type, "name", str(u_type))
        self.events.append((op, id(winfo), winfo.mem_consumed, _kind(winfo.reftype)))

    def _update_peak_stats(self, peak_state: Any) -> None:
        """Skipped: the peak comes from the replayed events (MemTracker's per-module peaks cost O(modules))."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one step in bytes, split at the moment of the peak."""

    peak_bytes: int
    reserved_bytes: int
    state_bytes: int
    activation_bytes: int
    other_bytes: int


def trace_step(arch: NetworkConfig, patch: tuple[int, ...], batch_size: int, amp: str | None,
               checkpointing: bool, cuda_policy: bool = True) -> list[tuple[str, int, int, str]]:
    """Run one training step on fake CPU tensors (the model's default, fast path, as in training) and return
    its storage events in order.

    ``cuda_policy`` gives CPU autocast CUDA autocast's cast policy (the default: the prediction is for a GPU).
    """
    policy = cuda_autocast_policy() if amp is not None and cuda_policy else contextlib.nullcontext()
    with FakeTensorMode():
        model = networks.build(arch.replace(checkpointing=checkpointing))
        model.train()
        optimizer = make_optimizer(model, arch)
        fill_optimizer_state(optimizer)
        x, targets = make_batch(arch, patch, batch_size, "cpu")
        tracker = _TracingMemTracker()
        tracker.track_external(model, optimizer, x, *targets)
        with policy, tracker:
            training_step(model, optimizer, x, targets, autocast_context("cpu", amp),
                          ScalerStandIn(amp == "fp16"))
    return tracker.events


def _replay(events: list[tuple[str, int, int, str]], allocator: CachingAllocatorModel | None) -> MemoryEstimate:
    live: dict[int, tuple[int, str, Any]] = {}
    by_kind = dict.fromkeys(KINDS, 0)
    total = peak = 0
    at_peak = dict(by_kind)

    def add(key: int, nbytes: int, kind: str) -> None:
        nonlocal total
        block = allocator.malloc(nbytes) if allocator is not None else None
        size = block.size if block is not None else nbytes
        live[key] = (size, kind, block)
        by_kind[kind] += size
        total += size

    def remove(key: int) -> None:
        nonlocal total
        size, kind, block = live.pop(key)
        if allocator is not None:
            allocator.free(block)
        by_kind[kind] -= size
        total -= size

    for op, key, nbytes, kind in events:
        if op == "ADD":
            add(key, nbytes, kind)
        elif op == "DEL":
            remove(key)
        elif op == "SIZE":
            remove(key)
            add(key, nbytes, kind)
        elif op == "REF" and key in live:
            size, old, block = live[key]
            by_kind[old] -= size
            by_kind[kind] += size
            live[key] = (size, kind, block)
        if total > peak:
            peak, at_peak = total, dict(by_kind)
    reserved = allocator.peak_reserved if allocator is not None else peak
    return MemoryEstimate(peak, reserved, at_peak["state"], at_peak["activations"], at_peak["other"])


def replay_exact(events: list[tuple[str, int, int, str]]) -> MemoryEstimate:
    """Peak of the live storage bytes (what a CPU run of the same step holds)."""
    return _replay(events, None)


def replay_cuda(events: list[tuple[str, int, int, str]]) -> MemoryEstimate:
    """Peak allocated and reserved bytes through the caching-allocator model, plus the cuDNN allowance."""
    estimate = _replay(events, CachingAllocatorModel())
    workspace = CUDNN_WORKSPACE_BYTES
    return MemoryEstimate(
        peak_bytes=estimate.peak_bytes + workspace,
        reserved_bytes=estimate.reserved_bytes + math.ceil(workspace / (2 << 20)) * (2 << 20),
        state_bytes=estimate.state_bytes,
        activation_bytes=estimate.activation_bytes,
        other_bytes=estimate.other_bytes + workspace,
    )


def predict_memory(arch: NetworkConfig, patch: tuple[int, ...], batch_size: int, amp: str | None,
                   checkpointing: bool) -> MemoryEstimate:
    """Predicted CUDA peak memory of one training step (see the module docstring for what is modelled)."""
    return replay_cuda(trace_step(arch, patch, batch_size, amp, checkpointing))

