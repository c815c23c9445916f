"""A fake profile for chain and search tests: memory grows with width and kernel."""

from __future__ import annotations

from dataclasses import dataclass

from scalekit.mednext import MedNeXtConfig


@dataclass
class FakeProfile:
    params: int
    gflops_fvcore: float
    gflops_train: float
    peak_memory_bytes: int
    memory_method: str = "predicted"


def profile_by_width(config: MedNeXtConfig, batch_size: int | None = None) -> FakeProfile:
    """Memory grows with width and kernel: C=4 k3 -> 1 GiB ... C=8 -> 2 GiB per unit."""
    gib = config.n_channels // 4 * (1 + (config.enc_kernel_size - 3) // 2)
    return FakeProfile(1000 * config.n_channels, 1.0, 3.0, gib * 2**30)
