"""The published MedNeXt configurations (S, B, M, L) and tiny variants for tests, behind one builder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scalekit.errors import ScalekitError

from .config import MedNeXtConfig
from .model import MedNeXt


@dataclass(frozen=True)
class Preset:
    """Width, expansion ratios, block counts and checkpointing of a named MedNeXt variant."""

    n_channels: int
    exp_r: tuple[int, ...]
    block_counts: tuple[int, ...]
    checkpointing: bool


PRESETS: dict[str, Preset] = {
    "S": Preset(32, (2,) * 9, (2,) * 9, False),
    "B": Preset(32, (2, 3, 4, 4, 4, 4, 4, 3, 2), (2,) * 9, False),
    "M": Preset(32, (2, 3, 4, 4, 4, 4, 4, 3, 2), (3, 4, 4, 4, 4, 4, 4, 4, 3), True),
    "L": Preset(32, (3, 4, 8, 8, 8, 8, 8, 4, 3), (3, 4, 8, 8, 8, 8, 8, 4, 3), True),
    # Tiny variants: same topology, small enough for CPU tests and demos.
    "T": Preset(4, (2,) * 9, (1,) * 9, False),
    "T8": Preset(8, (2,) * 9, (1,) * 9, False),
}
"""S/B/M/L are the paper's (Roy et al. 2023, Table 1); T/T8 are scalekit's test variants."""


def preset_config(
    name: str,
    in_channels: int = 1,
    num_classes: int = 2,
    kernel_size: int = 3,
    deep_supervision: bool = False,
    dim: int = 3,
    **overrides: Any,
) -> MedNeXtConfig:
    """The :class:`MedNeXtConfig` of a named preset; ``overrides`` replace any config field."""
    key = name.upper() if isinstance(name, str) else name
    if key not in PRESETS:
        raise ScalekitError(f"unknown MedNeXt preset {name!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[key]
    fields: dict[str, Any] = dict(
        in_channels=in_channels,
        num_classes=num_classes,
        n_channels=p.n_channels,
        exp_r=p.exp_r,
        block_counts=p.block_counts,
        enc_kernel_size=kernel_size,
        dec_kernel_size=kernel_size,
        deep_supervision=deep_supervision,
        checkpointing=p.checkpointing,
        dim=dim,
    )
    fields.update(overrides)
    return MedNeXtConfig(**fields)


def create_mednext(name: str, *args: Any, **kwargs: Any) -> MedNeXt:
    """Build a preset (arguments as :func:`preset_config`), e.g. ``create_mednext("L", in_channels=1,
    num_classes=14, kernel_size=5, deep_supervision=True, dim=3)``."""
    return MedNeXt(preset_config(name, *args, **kwargs))
