"""MedNeXt building blocks: the ConvNeXt block, its down- and up-sampling variants, and the output head.

Parameter names and shapes follow the reference implementation (MIC-DKFZ/MedNeXt, ``mednextv1``), so that
state dicts trained with it load into these modules unchanged. All blocks work for 2-D and 3-D inputs.

Block order (Roy et al., MICCAI 2023): depthwise k^D conv -> norm -> 1x1 expansion (x r) -> GELU -> [GRN]
-> 1x1 compression -> (+ residual).

Every block has a ``fast`` attribute (default True): the fast path of :mod:`scalekit.mednext.speed` computes
the same function with the same parameters, only faster; ``fast = False`` calls the modules as built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from . import speed
from .config import NormType, UpAlignment
from .speed import ConvNd, ConvTransposeNd

_CONV_CLS: dict[int, type[ConvNd]] = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE_CLS: dict[int, type[ConvTransposeNd]] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def conv_cls(dim: int) -> type[ConvNd]:
    """The convolution class for ``dim`` spatial dimensions."""
    return _CONV_CLS[dim]


def conv_transpose_cls(dim: int) -> type[ConvTransposeNd]:
    """The transposed-convolution class for ``dim`` spatial dimensions."""
    return _CONV_TRANSPOSE_CLS[dim]


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel dimension of an (N, C, *spatial) tensor, for any number of spatial dims.

    Mean and biased variance are taken over C alone (eps 1e-5), then a per-channel affine is applied. The
    parameter names (``weight``, ``bias``) and shapes ``(C,)`` match the reference's 3-D-only version.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)


def make_norm(norm_type: NormType, channels: int) -> nn.Module:
    """One group per channel GroupNorm (the MedNeXt default) or channels-first LayerNorm."""
    if norm_type == "group":
        return nn.GroupNorm(num_groups=channels, num_channels=channels)
    return ChannelsFirstLayerNorm(channels)


class MedNeXtBlock(nn.Module):
    """The MedNeXt (ConvNeXt) block at constant resolution.

    Args:
        in_channels, out_channels: channel counts; an identity residual (``do_res``) needs them equal.
        exp_r: expansion ratio r of the inverted bottleneck (hidden width ``r * in_channels``).
        kernel_size: odd depthwise kernel size k.
        do_res: add the block input to its output.
        norm_type: ``"group"`` (one group per channel) or ``"layer"`` (channels-first LayerNorm).
        dim: 2 or 3 spatial dimensions.
        grn: Global Response Normalisation after GELU (ConvNeXt-V2), the identity at initialisation.

    Shapes: (N, in_channels, *S) -> (N, out_channels, *S).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        exp_r: int = 4,
        kernel_size: int = 3,
        do_res: bool = True,
        norm_type: NormType = "group",
        dim: int = 3,
        grn: bool = False,
    ) -> None:
        super().__init__()
        self.do_res = do_res
        self.conv1: ConvNd | ConvTransposeNd = self._spatial_conv(in_channels, kernel_size, dim)
        self.norm = make_norm(norm_type, in_channels)
        conv = conv_cls(dim)
        hidden = exp_r * in_channels
        self.conv2 = conv(in_channels, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.conv3 = conv(hidden, out_channels, kernel_size=1)
        self.grn = grn
        self.fast = True
        if grn:
            shape = (1, hidden) + (1,) * dim
            self.grn_gamma = nn.Parameter(torch.zeros(shape))
            self.grn_beta = nn.Parameter(torch.zeros(shape))

    @staticmethod
    def _spatial_conv(channels: int, kernel_size: int, dim: int) -> ConvNd | ConvTransposeNd:
        return conv_cls(dim)(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        # This block's conv1 is the convolution its _spatial_conv builds; the up block, whose conv1 is a
        # transposed convolution, overrides _spatial.
        return speed.depthwise_conv(x, cast(ConvNd, self.conv1)) if self.fast else self.conv1(x)

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self._spatial(x))
        if self.fast:
            y = speed.keep_format(y, x)
        y = self.act(self.conv2(y))
        if self.grn:
            spatial = tuple(range(2, y.ndim))
            gx = torch.linalg.vector_norm(y, ord=2, dim=spatial, keepdim=True)
            nx = gx / (gx.mean(dim=1, keepdim=True) + 1e-6)
            y = self.grn_gamma * (y * nx) + self.grn_beta + y
        return self.conv3(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._branch(x)
        return x + y if self.do_res else y


class _ResamplingBlock(MedNeXtBlock):
    """The block without its own residual, plus (with ``do_res``) a 1x1 stride-2 convolution of the input
    (``res_conv``, of the class ``_res_conv_cls`` gives) that the down and up blocks add to change resolution."""

    _res_conv_cls: Callable[[int], type[ConvNd] | type[ConvTransposeNd]]

    def __init__(
        self, in_channels: int, out_channels: int, exp_r: int = 4, kernel_size: int = 3, do_res: bool = False,
        **options: Any,
    ) -> None:
        """Arguments as :class:`MedNeXtBlock`; ``do_res`` adds ``res_conv`` instead of the identity residual."""
        super().__init__(in_channels, out_channels, exp_r, kernel_size, False, **options)
        self.resample_res = do_res
        if do_res:
            dim = self.conv1.weight.ndim - 2
            self.res_conv: ConvNd | ConvTransposeNd = type(self)._res_conv_cls(dim)(
                in_channels, out_channels, kernel_size=1, stride=2
            )


class MedNeXtDownBlock(_ResamplingBlock):
    """Halves the resolution: a stride-2 depthwise conv, then the block at the coarse resolution.

    With ``do_res`` a 1x1 stride-2 convolution of the input (``res_conv``) is added. Spatial n -> ceil(n/2).
    """

    _res_conv_cls = staticmethod(conv_cls)
    res_conv: ConvNd

    @staticmethod
    def _spatial_conv(channels: int, kernel_size: int, dim: int) -> ConvNd:
        return conv_cls(dim)(
            channels, channels, kernel_size, stride=2, padding=kernel_size // 2, groups=channels
        )

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._branch(x)
        if not self.resample_res:
            return y
        return y + (speed.strided_pointwise(x, self.res_conv) if self.fast else self.res_conv(x))


class MedNeXtUpBlock(_ResamplingBlock):
    """Doubles the resolution: a stride-2 depthwise transposed conv (n -> 2n-1), the block, then a one-voxel pad.

    ``alignment="reference"`` pads at the start of every spatial dim, as the reference does: coarse voxel i
    lands on fine index 2i+1, one voxel off the skip connection. ``"aligned"`` pads at the end instead, so
    coarse voxel i lands on 2i, matching the down path (fine 2j -> coarse j). Both have identical parameters.
    With ``do_res`` a 1x1 stride-2 transposed conv of the input (``res_conv``, zero insertion) is added.
    """

    _res_conv_cls = staticmethod(conv_transpose_cls)
    conv1: ConvTransposeNd
    res_conv: ConvTransposeNd

    def __init__(self, *args: Any, alignment: UpAlignment = "reference", **kwargs: Any) -> None:
        """Arguments as :class:`MedNeXtBlock` (``do_res`` adds ``res_conv``), and the ``alignment``."""
        super().__init__(*args, **kwargs)
        dim = self.conv1.weight.ndim - 2
        self.pad = ((1, 0) if alignment == "reference" else (0, 1)) * dim
        inner = slice(1, None) if alignment == "reference" else slice(None, -1)
        self._inner = (slice(None), slice(None)) + (inner,) * dim
        self._even = (slice(None), slice(None)) + (slice(None, None, 2),) * dim

    @staticmethod
    def _spatial_conv(channels: int, kernel_size: int, dim: int) -> ConvTransposeNd:
        return conv_transpose_cls(dim)(
            channels, channels, kernel_size, stride=2, padding=kernel_size // 2, groups=channels
        )

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast and x.device.type == "cpu":
            return speed.transposed_depthwise_conv(x, self.conv1)
        return self.conv1(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._branch(x)
        if not self.resample_res:
            return F.pad(y, self.pad)
        if not self.fast:
            return F.pad(y + self.res_conv(x), self.pad)
        # res_conv is a 1x1 stride-2 transposed conv: its bias everywhere, W^T x on the even voxels.
        out = F.pad(y, self.pad)
        inner = out[self._inner]
        bias = cast(torch.Tensor, self.res_conv.bias)  # res_conv is built with a bias (the default)
        inner.add_(bias.view((1, -1) + (1,) * (x.ndim - 2)))
        inner[self._even].add_(speed.transposed_pointwise(x, self.res_conv, bias=False))
        return out


class OutBlock(nn.Module):
    """Segmentation head: a kernel-1 transposed convolution (the reference's weight layout (in, out, 1...))."""

    def __init__(self, in_channels: int, num_classes: int, dim: int = 3) -> None:
        super().__init__()
        self.conv_out = conv_transpose_cls(dim)(in_channels, num_classes, kernel_size=1)
        self.fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return speed.transposed_pointwise(x, self.conv_out) if self.fast else self.conv_out(x)
