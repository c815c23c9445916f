"""The typed result of one profile."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class ProfileResult:
    """Parameters, FLOPs and peak memory of one MedNeXt training step.

    Attributes:
        params: parameter elements.
        gmacs_forward: forward multiply-accumulates of the convolutions, in 1e9.
        gflops_fvcore: ``gmacs_forward`` + 5 per GroupNorm input element (fvcore's count, the README's "GFlops").
        gflops_forward: 2 x ``gmacs_forward``.
        gflops_train: 2 x convolution MACs of one step: forward, recomputation of checkpointed blocks, and the
            input and weight gradients (depthwise convolutions counted with their groups).
        peak_memory_bytes: peak bytes held by tensors during the step (``torch.cuda.max_memory_allocated``).
        reserved_memory_bytes: peak bytes reserved by the caching allocator (``max_memory_reserved``).
        cuda_context_bytes: the CUDA context, outside both counters (measured, or the modelled constant).
        state_bytes, activation_bytes, other_bytes: ``peak_memory_bytes`` split at the peak into weights +
            gradients + optimizer state, activations (saved tensors and backward temporaries), and the rest
            (inputs, targets, cuDNN workspace).
        memory_method: ``"measured"`` (CUDA) or ``"predicted"`` (fake tensors, no GPU).
        step_time_s: median step time in seconds when measured, else ``None``.
        patch_size, batch_size, amp, checkpointing, device: what it was computed for; ``device`` is the GPU's
            name when measured and ``"predicted (CUDA)"`` otherwise.
    """

    params: int
    gmacs_forward: float
    gflops_fvcore: float
    gflops_forward: float
    gflops_train: float
    peak_memory_bytes: int
    reserved_memory_bytes: int
    cuda_context_bytes: int
    state_bytes: int
    activation_bytes: int
    other_bytes: int
    memory_method: str
    step_time_s: float | None
    patch_size: tuple[int, ...]
    batch_size: int
    amp: str | None
    checkpointing: bool
    device: str

    @property
    def device_bytes(self) -> int:
        """What the GPU must hold: reserved bytes plus the CUDA context."""
        return self.reserved_memory_bytes + self.cuda_context_bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-able values (the patch as a list), plus ``device_bytes``."""
        data = dataclasses.asdict(self)
        data["patch_size"] = list(self.patch_size)
        data["device_bytes"] = self.device_bytes
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileResult:
        """Inverse of :meth:`to_dict`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["patch_size"] = tuple(values["patch_size"])
        return cls(**values)
