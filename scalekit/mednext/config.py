"""The architecture of one MedNeXt as a frozen, validated, serialisable record.

A :class:`MedNeXtConfig` is everything that decides a network's parameters and outputs. It is the contract
between the search space, the profiler, the trainer and the export: it round-trips through ``to_dict`` /
``from_dict`` (JSON, YAML, checkpoints) and is hashable, so it can key caches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from scalekit.errors import ScalekitError
from scalekit.stored import config_fields

NUM_STAGES = 9
"""Entries of ``exp_r`` and ``block_counts``: enc0, enc1, enc2, enc3, bottleneck, dec3, dec2, dec1, dec0."""
NUM_LEVELS = 5
"""Resolution levels; four stride-2 steps, so every spatial size must be divisible by 2**4 = 16."""
DIVISOR = 2 ** (NUM_LEVELS - 1)

NormType = Literal["group", "layer"]
UpAlignment = Literal["reference", "aligned"]

STAGE_NAMES = ("enc0", "enc1", "enc2", "enc3", "bottleneck", "dec3", "dec2", "dec1", "dec0")


def per_stage(name: str, value: int | Sequence[int]) -> tuple[int, ...]:
    """``value`` for each of the nine stages (one int for all, or nine ints), checked: ints >= 1."""
    if isinstance(value, bool):
        raise ScalekitError(f"{name} must be an int or a list of {NUM_STAGES} ints, got {value!r}")
    if isinstance(value, int):
        values: tuple[int, ...] = (value,) * NUM_STAGES
    else:
        values = tuple(value)
        if len(values) != NUM_STAGES:
            raise ScalekitError(
                f"{name} must have {NUM_STAGES} entries ({', '.join(STAGE_NAMES)}), "
                f"got {len(values)}: {list(values)}"
            )
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ScalekitError(f"{name} entries must be integers >= 1, got {list(values)}")
    return values


def _check_kernel(name: str, k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ScalekitError(
            f"{name}={k!r} is not allowed: MedNeXt kernel sizes must be odd integers >= 1 (3, 5, 7, ...), "
            "because an even kernel changes the spatial size and the skip connections no longer fit"
        )


@dataclasses.dataclass(frozen=True)
class MedNeXtConfig:
    """A MedNeXt architecture.

    Attributes:
        in_channels: input image channels (modalities).
        num_classes: output channels of every head (including background).
        n_channels: base width C; level l has ``C * 2**l`` channels.
        exp_r: expansion ratio per stage, an int (all nine) or nine ints, in the order of ``STAGE_NAMES``.
        block_counts: MedNeXt blocks per stage, an int or nine ints; every level adds one down/up block.
        enc_kernel_size: depthwise kernel of the encoder blocks and down blocks.
        dec_kernel_size: depthwise kernel of the bottleneck, up blocks and decoder blocks (as the reference).
        deep_supervision: build the four extra heads; the forward then returns five outputs.
        do_res: identity residuals in the regular blocks.
        do_res_up_down: 1x1 residual branches in the down and up blocks.
        checkpointing: gradient checkpointing of every block and head (non-reentrant).
        norm_type: ``"group"`` (one group per channel, the default) or ``"layer"`` (channels-first LayerNorm).
        dim: 2 or 3 spatial dimensions.
        grn: ConvNeXt-V2 Global Response Normalisation in every block except ``down_0`` (the reference's quirk).
        up_alignment: ``"reference"`` reproduces the reference's one-voxel shift of each up block;
            ``"aligned"`` pads on the other side so decoder features line up with their skip connection.
    """

    in_channels: int = 1
    num_classes: int = 2
    n_channels: int = 32
    exp_r: tuple[int, ...] = (4,) * NUM_STAGES
    block_counts: tuple[int, ...] = (2,) * NUM_STAGES
    enc_kernel_size: int = 3
    dec_kernel_size: int = 3
    deep_supervision: bool = False
    do_res: bool = True
    do_res_up_down: bool = True
    checkpointing: bool = False
    norm_type: NormType = "group"
    dim: int = 3
    grn: bool = False
    up_alignment: UpAlignment = "reference"
    arch: ClassVar[str] = "mednext"
    """The network kind's registry name (:mod:`scalekit.networks`): the ``arch`` key of every stored config."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "exp_r", per_stage("exp_r", self.exp_r))
        object.__setattr__(self, "block_counts", per_stage("block_counts", self.block_counts))
        for name in ("in_channels", "num_classes", "n_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ScalekitError(f"{name} must be an integer >= 1, got {value!r}")
        _check_kernel("enc_kernel_size", self.enc_kernel_size)
        _check_kernel("dec_kernel_size", self.dec_kernel_size)
        if self.norm_type not in ("group", "layer"):
            raise ScalekitError(f"norm_type={self.norm_type!r} is unknown; use 'group' or 'layer'")
        if self.dim not in (2, 3):
            raise ScalekitError(f"dim={self.dim!r} is not supported; use 2 or 3 spatial dimensions")
        if self.up_alignment not in ("reference", "aligned"):
            raise ScalekitError(f"up_alignment={self.up_alignment!r} is unknown; use 'reference' or 'aligned'")

    @property
    def kernel_size(self) -> int:
        """The kernel size when encoder and decoder agree; raises otherwise."""
        if self.enc_kernel_size != self.dec_kernel_size:
            raise ScalekitError(
                f"encoder and decoder kernels differ ({self.enc_kernel_size} vs {self.dec_kernel_size})"
            )
        return self.enc_kernel_size

    def replace(self, **changes: Any) -> MedNeXtConfig:
        """A copy with some fields changed; ``kernel_size=k`` sets both encoder and decoder kernels."""
        if "kernel_size" in changes:
            k = changes.pop("kernel_size")
            changes.setdefault("enc_kernel_size", k)
            changes.setdefault("dec_kernel_size", k)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (lists instead of tuples), led by ``arch``: ``"mednext"``."""
        return {"arch": self.arch} | {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MedNeXtConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error that lists the known ones. ``arch`` may be
        absent (configs stored before it was written), else it must be ``"mednext"``."""
        return cls(**config_fields(cls, data, "MedNeXt"))

    def check_input_shape(self, spatial: Sequence[int]) -> None:
        """Raise a ValueError if a batch with these spatial sizes cannot pass through the network."""
        if len(spatial) != self.dim:
            raise ScalekitError(
                f"expected an input of shape (N, {self.in_channels}, {', '.join('S' * self.dim)}) for a "
                f"{self.dim}-D MedNeXt, got {len(spatial)} spatial dims {tuple(spatial)}"
            )
        bad = [s for s in spatial if s % DIVISOR]
        if bad:
            raise ScalekitError(
                f"spatial size {tuple(spatial)} is not allowed: every spatial size must be divisible by "
                f"{DIVISOR} (MedNeXt has four stride-2 levels); pad or crop to e.g. "
                f"{tuple(max(DIVISOR, round(s / DIVISOR) * DIVISOR) for s in spatial)}"
            )
        if self.norm_type == "group" and all(s == DIVISOR for s in spatial):
            raise ScalekitError(
                f"spatial size {tuple(spatial)} gives a bottleneck of one voxel, where GroupNorm with one "
                "group per channel normalises a single value (its output is always zero, and torch refuses it "
                f"in training mode); use a patch of at least {2 * DIVISOR} along one axis"
            )
