"""nnU-Net's residual-encoder U-Net (ResEnc; Isensee et al., MICCAI 2024), the second registered network kind.

The network is ``dynamic_network_architectures.architectures.unet.ResidualEncoderUNet``, built with exactly the
arguments nnU-Net's ResEnc planners write into a plans file (:meth:`ResEncConfig.arch_kwargs`), so a ResEnc
that scalekit builds has the parameters of the one ``nnUNetv2_train`` builds from the same plans. What varies
between configurations is what the planners vary: the number of stages, the features, kernels and strides per
stage and the blocks per stage; the rest (conv bias, InstanceNorm with affine and eps 1e-5, LeakyReLU, no
dropout) is fixed as nnU-Net fixes it. Its recipe is nnU-Net's stock trainer's: SGD (lr 1e-2, momentum 0.99,
Nesterov, weight decay 3e-5) with the poly schedule, deep-supervision weights 1/2^i with the lowest
resolution's set to 0. ``dynamic_network_architectures`` (nnU-Net's dependency; torch and numpy only at
import) is imported when a network is built, so this module imports only torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from math import prod
from typing import Any, ClassVar

import torch
from torch import nn

from scalekit.errors import ScalekitError
from scalekit.mednext.checkpoint import CheckpointError
from scalekit.mednext.upkern import upkern
from scalekit.stored import config_fields

from .registry import NetworkKind, register

CLASS_NAME = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
"""The ``network_class_name`` of nnU-Net's ResEnc plans."""
ENCODER_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)
"""Residual blocks per encoder stage of nnU-Net's ResEnc planners (M, L and XL alike)."""
BASE_FEATURES = 32
MAX_FEATURES = {2: 512, 3: 320}
"""Features of stage s: ``min(MAX_FEATURES[dim], BASE_FEATURES * 2**s)``, as nnU-Net's planners set them."""
NORM_KWARGS = {"eps": 1e-05, "affine": True}
NONLIN_KWARGS = {"inplace": True}
PRESETS = ("M", "L", "XL")
"""nnU-Net's residual-encoder presets, named by its planners' memory targets (8, 24 and 40 GB)."""
INITIAL_LR = 1e-2
WEIGHT_DECAY = 3e-5
MOMENTUM = 0.99


def _ops(dim: int) -> dict[str, str]:
    """The dotted names nnU-Net's plans give the torch classes of a ``dim``-D ResEnc."""
    return {"conv_op": f"torch.nn.modules.conv.Conv{dim}d",
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
            "nonlin": "torch.nn.LeakyReLU"}


PLANS_IMPORTS: dict[str, frozenset[str]] = {
    "conv_op": frozenset(_ops(d)["conv_op"] for d in (2, 3)),
    "norm_op": frozenset(_ops(d)["norm_op"] for d in (2, 3)),
    "dropout_op": frozenset(),
    "nonlin": frozenset(_ops(d)["nonlin"] for d in (2, 3)),
}
"""The ``_kw_requires_import`` arguments of nnU-Net's ResEnc plans (in the planners' order) and the names each
may hold: nnU-Net imports these, so a plans file may name nothing else (no dropout)."""


def _ints(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ScalekitError(f"{name} must be a list of integers >= 1, got {value!r}")
    values = tuple(value)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ScalekitError(f"{name} must be a list of integers >= 1, got {list(values)}")
    return values


def _per_axis(name: str, value: Any) -> tuple[tuple[int, ...], ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ScalekitError(f"{name} must be a list with one list of per-axis integers per stage, got {value!r}")
    return tuple(_ints(f"{name}[{i}]", v) for i, v in enumerate(value))


def nnunet_features(n_stages: int, dim: int = 3) -> tuple[int, ...]:
    """Features per stage as nnU-Net's planners set them (32, 64, ... capped at 320 in 3-D, 512 in 2-D)."""
    return tuple(min(MAX_FEATURES[dim], BASE_FEATURES * 2**s) for s in range(n_stages))


@dataclasses.dataclass(frozen=True)
class ResEncConfig:
    """A ResEnc architecture, as the ``arch_kwargs`` of an nnU-Net ResEnc plan describe it.

    Attributes:
        in_channels: image channels; num_classes: segmentation outputs (background included).
        features_per_stage: channels of each stage, highest resolution first.
        kernel_sizes: the conv kernel of each stage, per axis.
        strides: the downsampling into each stage, per axis (the first is all ones).
        n_blocks_per_stage: residual blocks of each encoder stage.
        n_conv_per_stage_decoder: convolutions of each decoder stage (one fewer entry than stages).
        deep_supervision: return one output per decoder stage (highest resolution first).
        checkpointing: always False (nnU-Net's ResEnc has no gradient checkpointing); present because every
            kind's config says whether it checkpoints.
    """

    in_channels: int = 1
    num_classes: int = 2
    features_per_stage: tuple[int, ...] = nnunet_features(6)
    kernel_sizes: tuple[tuple[int, ...], ...] = ((3, 3, 3),) * 6
    strides: tuple[tuple[int, ...], ...] = ((1, 1, 1),) + ((2, 2, 2),) * 5
    n_blocks_per_stage: tuple[int, ...] = ENCODER_BLOCKS[:6]
    n_conv_per_stage_decoder: tuple[int, ...] = (1,) * 5
    deep_supervision: bool = False
    checkpointing: bool = False
    arch: ClassVar[str] = "resenc"
    """The registry name (:mod:`scalekit.networks`)."""

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ScalekitError(f"{name} must be an integer >= 1, got {value!r}")
        object.__setattr__(self, "features_per_stage", _ints("features_per_stage", self.features_per_stage))
        object.__setattr__(self, "kernel_sizes", _per_axis("kernel_sizes", self.kernel_sizes))
        object.__setattr__(self, "strides", _per_axis("strides", self.strides))
        object.__setattr__(self, "n_blocks_per_stage", _ints("n_blocks_per_stage", self.n_blocks_per_stage))
        object.__setattr__(self, "n_conv_per_stage_decoder",
                           _ints("n_conv_per_stage_decoder", self.n_conv_per_stage_decoder))
        stages = len(self.features_per_stage)
        if stages < 2:
            raise ScalekitError(f"a ResEnc needs at least 2 stages, got features_per_stage {list(self.features_per_stage)}")
        lengths = {"kernel_sizes": len(self.kernel_sizes), "strides": len(self.strides),
                   "n_blocks_per_stage": len(self.n_blocks_per_stage)}
        wrong = {k: n for k, n in lengths.items() if n != stages}
        if wrong or len(self.n_conv_per_stage_decoder) != stages - 1:
            raise ScalekitError(
                f"a ResEnc of {stages} stages (features_per_stage) needs {stages} kernel_sizes, strides and "
                f"n_blocks_per_stage and {stages - 1} n_conv_per_stage_decoder, got "
                f"{ {**lengths, 'n_conv_per_stage_decoder': len(self.n_conv_per_stage_decoder)} }"
            )
        dims = {len(k) for k in (*self.kernel_sizes, *self.strides)}
        if len(dims) != 1 or dims.pop() not in (2, 3):
            raise ScalekitError("kernel_sizes and strides must all have 2 or all have 3 entries (the axes)")
        if any(k % 2 == 0 for kernel in self.kernel_sizes for k in kernel):
            raise ScalekitError(f"kernel_sizes must be odd, got {[list(k) for k in self.kernel_sizes]}")
        if any(s != 1 for s in self.strides[0]):
            raise ScalekitError(f"the first stage's stride must be 1 on every axis, got {list(self.strides[0])}")
        if self.checkpointing:
            raise ScalekitError("nnU-Net's ResEnc has no gradient checkpointing; set checkpointing to false")

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    @property
    def dim(self) -> int:
        return len(self.strides[0])

    @property
    def divisor(self) -> tuple[int, ...]:
        """What every spatial size must be a multiple of, per axis (the product of the strides)."""
        return tuple(prod(s[axis] for s in self.strides) for axis in range(self.dim))

    def replace(self, **changes: Any) -> ResEncConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (lists), led by ``arch``: ``"resenc"``."""
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"arch": self.arch} | {
            k: [list(v) if isinstance(v, tuple) else v for v in value] if isinstance(value, tuple) else value
            for k, value in plain.items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResEncConfig:
        """Inverse of :meth:`to_dict` (``arch`` and field names checked)."""
        return cls(**config_fields(cls, data, "ResEnc"))

    def check_input_shape(self, spatial: Sequence[int]) -> None:
        if len(spatial) != self.dim:
            raise ScalekitError(f"a {self.dim}-D ResEnc takes {self.dim} spatial sizes, got {tuple(spatial)}")
        bad = [s for s, d in zip(spatial, self.divisor) if s % d]
        if bad:
            raise ScalekitError(
                f"spatial size {tuple(spatial)} is not allowed: with strides {[list(s) for s in self.strides]} "
                f"every size must be a multiple of {self.divisor} per axis"
            )

    def arch_kwargs(self) -> dict[str, Any]:
        """The ``arch_kwargs`` of an nnU-Net plans ``architecture`` entry for this network (channels, classes
        and deep supervision excepted: nnU-Net passes those)."""
        ops = _ops(self.dim)
        return {
            "n_stages": self.n_stages,
            "features_per_stage": list(self.features_per_stage),
            "conv_op": ops["conv_op"],
            "kernel_sizes": [list(k) for k in self.kernel_sizes],
            "strides": [list(s) for s in self.strides],
            "n_blocks_per_stage": list(self.n_blocks_per_stage),
            "n_conv_per_stage_decoder": list(self.n_conv_per_stage_decoder),
            "conv_bias": True,
            "norm_op": ops["norm_op"],
            "norm_op_kwargs": dict(NORM_KWARGS),
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": ops["nonlin"],
            "nonlin_kwargs": dict(NONLIN_KWARGS),
        }

    @classmethod
    def from_arch_kwargs(cls, kwargs: Mapping[str, Any], in_channels: int, num_classes: int,
                         deep_supervision: bool = False) -> ResEncConfig:
        """The config a plans entry's ``arch_kwargs`` describe; anything nnU-Net's ResEnc planners do not
        write (another norm, bias, dropout, non-linearity, block type) is an error naming the key."""
        varied = ("features_per_stage", "kernel_sizes", "strides", "n_blocks_per_stage", "n_conv_per_stage_decoder")
        missing = [k for k in ("n_stages", *varied) if k not in kwargs]
        if missing:
            raise ScalekitError(f"ResEnc arch_kwargs lack {missing}")
        config = cls(in_channels=in_channels, num_classes=num_classes, deep_supervision=bool(deep_supervision),
                     **{k: kwargs[k] for k in varied})
        expected = config.arch_kwargs()
        for key, value in kwargs.items():
            if key not in expected:
                raise ScalekitError(f"ResEnc arch_kwargs has {key!r}, which nnU-Net's ResEnc plans do not set")
            if key not in varied and value != expected[key]:
                raise ScalekitError(f"ResEnc arch_kwargs {key}={value!r}; scalekit builds nnU-Net's ResEnc, "
                                    f"with {key}={expected[key]!r}")
        return config


def build_resenc(config: ResEncConfig) -> nn.Module:
    """nnU-Net's ``ResidualEncoderUNet`` of ``config``, initialised as nnU-Net initialises it; ``config`` is
    kept as its ``config``."""
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    conv, norm = {2: (nn.Conv2d, nn.InstanceNorm2d), 3: (nn.Conv3d, nn.InstanceNorm3d)}[config.dim]
    network = ResidualEncoderUNet(
        input_channels=config.in_channels, n_stages=config.n_stages,
        features_per_stage=list(config.features_per_stage), conv_op=conv,
        kernel_sizes=[list(k) for k in config.kernel_sizes], strides=[list(s) for s in config.strides],
        n_blocks_per_stage=list(config.n_blocks_per_stage), num_classes=config.num_classes,
        n_conv_per_stage_decoder=list(config.n_conv_per_stage_decoder), conv_bias=True, norm_op=norm,
        norm_op_kwargs=dict(NORM_KWARGS), dropout_op=None, dropout_op_kwargs=None, nonlin=nn.LeakyReLU,
        nonlin_kwargs=dict(NONLIN_KWARGS), deep_supervision=config.deep_supervision,
    )
    network.apply(network.initialize)
    network.config = config
    return network


def resenc_output_strides(config: ResEncConfig) -> list[tuple[int, ...]]:
    """The downsampling of each output per axis: the cumulative strides, one output per decoder stage."""
    outputs = config.n_stages - 1 if config.deep_supervision else 1
    scales, current = [], (1,) * config.dim
    for stride in config.strides[:outputs]:
        current = tuple(c * s for c, s in zip(current, stride))
        scales.append(current)
    return scales


def resenc_loss_weights(n_outputs: int) -> tuple[float, ...]:
    """nnU-Net's deep-supervision weights: 1/2^i, the lowest resolution's set to 0, normalised to sum 1."""
    raw = [2.0**-i for i in range(n_outputs)]
    if n_outputs > 1:
        raw[-1] = 0.0
    return tuple(w / sum(raw) for w in raw)


def make_sgd(parameters: Iterable[nn.Parameter], lr: float = INITIAL_LR, foreach: bool | None = None) -> torch.optim.SGD:
    """nnU-Net's stock optimizer: SGD, momentum 0.99, Nesterov, weight decay 3e-5."""
    return torch.optim.SGD(parameters, lr=lr, weight_decay=WEIGHT_DECAY, momentum=MOMENTUM, nesterov=True,
                           foreach=foreach)


def _set_deep_supervision(model: Any, enabled: bool) -> None:
    model.decoder.deep_supervision = enabled


def _no_foreign_format(data: Any, path: Any) -> Any:
    raise CheckpointError(f"{path} is not a scalekit checkpoint; a ResEnc is read from scalekit's own files")


RESENC = register(NetworkKind(
    name=ResEncConfig.arch,
    label="ResEnc",
    config_type=ResEncConfig,
    build=build_resenc,
    output_strides=resenc_output_strides,
    loss_weights=resenc_loss_weights,
    make_optimizer=make_sgd,
    initialise=upkern,
    set_deep_supervision=_set_deep_supervision,
    plain_path=lambda model: None,
    load_foreign=_no_foreign_format,
    columns=lambda config: (config.features_per_stage[0], list(config.n_blocks_per_stage), []),
))
