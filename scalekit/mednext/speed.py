"""The fast training path of MedNeXt: memory-format choice per device and a few exact re-formulations.

Every block has a plain path (contiguous NCDHW tensors, the modules called as built, as the reference does)
and a fast path (the default). Both use the same parameters and compute the same function up to float
rounding; the fast path differs only in how the work reaches the kernels:

- **Memory format.** The input is converted to ``channels_last_3d`` (``channels_last`` in 2-D) on the devices
  where that is faster (:data:`CHANNELS_LAST_DEVICES`): on CPU oneDNN's depthwise and 1x1 convolutions run
  2-4x faster on channels-last tensors (stack notes: a MedNeXt-S step 1.5x (k3) to 2.6x (k5)); on CUDA a
  channels-last depthwise 3-D convolution goes to cuDNN, while a contiguous one takes PyTorch's own
  depthwise-3-D kernel, whose backward is slow; CUDA's GroupNorm has no channels-last kernel and returns a
  contiguous tensor, which :func:`keep_format` turns back (one copy) so the next convolution stays on cuDNN.
  The CUDA choice follows these kernel paths; its measurement is the job of ``benchmarks/gpu_checks.sh``.
  Parameters keep their own layout (kernels reorder weights themselves), so state dicts are unaffected.
- **Depthwise backward.** The input gradient of a stride-1 depthwise convolution is the depthwise convolution
  of the output gradient with the spatially flipped kernel; computed so it costs about a forward pass, a
  third to a half of what the generic backward takes on CPU (:func:`depthwise_conv`).
- **No slow fallbacks.** Kernel-1 transposed convolutions (heads, up-block residuals) and the strided 1x1
  down-block residual have no channels-last CPU kernel and fall back to slow, contiguous implementations;
  they are computed as ordinary 1x1 convolutions of (sub-sampled) inputs instead, and the up block adds its
  residual into the padded output in place rather than through two more full-size temporaries.
- **Contiguous transposed depthwise convolution on CPU.** oneDNN's channels-last kernel for the up blocks'
  stride-2 depthwise transposed convolution is slower than the contiguous one, and in torch 2.13 its weight
  gradient is wrong for some shapes (k=7, 8 channels, 4^3 input: ~1e38). :func:`transposed_depthwise_conv`
  runs it on a contiguous copy made inside forward and backward, saving the input as given, so no second copy
  of the activation is kept for backward.
- **cuDNN autotuning.** On the first CUDA forward the fast path sets ``torch.backends.cudnn.benchmark = True``
  (MedNeXt trains on fixed patch sizes, where autotuning pays off); see :func:`prepare_device`.

``MedNeXt.fast_path = False`` selects the plain path (the baseline of ``benchmarks/step_time.py``); either
path works under ``torch.compile`` (opt-in: compilation takes minutes).
"""

from __future__ import annotations

import logging
from typing import TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

CHANNELS_LAST_DEVICES = frozenset({"cpu", "cuda"})
"""Device types whose fast path runs in channels-last memory format (see the module docstring)."""

ConvNd: TypeAlias = nn.Conv2d | nn.Conv3d
ConvTransposeNd: TypeAlias = nn.ConvTranspose2d | nn.ConvTranspose3d

_CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}
_CONV = {2: F.conv2d, 3: F.conv3d}
_CONV_T = {2: F.conv_transpose2d, 3: F.conv_transpose3d}
_autotune_set = False


def memory_format_for(device: torch.device, dim: int) -> torch.memory_format:
    """The memory format of the fast path for ``dim``-D tensors (2 or 3) on ``device``."""
    if device.type in CHANNELS_LAST_DEVICES:
        return _CHANNELS_LAST[dim]
    return torch.contiguous_format


def prepare_device(device: torch.device) -> None:
    """Switch on cuDNN autotuning the first time the fast path runs on a CUDA device (logged once)."""
    global _autotune_set
    if device.type == "cuda" and not _autotune_set:
        _autotune_set = True
        if not torch.backends.cudnn.benchmark:
            torch.backends.cudnn.benchmark = True
            log.info("MedNeXt fast path: enabled torch.backends.cudnn.benchmark for fixed-size patches")


def keep_format(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``y`` in channels-last format if ``like`` is channels-last and ``y`` is not (else ``y`` itself).

    CUDA's GroupNorm returns contiguous tensors whatever its input; one copy back keeps the next depthwise
    convolution on cuDNN instead of PyTorch's slow contiguous depthwise-3-D kernel. On CPU it is a no-op.
    """
    memory_format = _CHANNELS_LAST.get(like.ndim - 2)
    if memory_format is None or like.is_contiguous() or not like.is_contiguous(memory_format=memory_format):
        return y
    return y.contiguous(memory_format=memory_format)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


class _DepthwiseConv(torch.autograd.Function):
    """Stride-1 depthwise convolution with 'same' padding whose input gradient is a flipped-kernel conv.

    Autocast is applied here explicitly (inputs cast to the autocast dtype, as ``conv`` would be), so the
    backward sees tensors of one dtype; gradients are returned in the dtypes of the original arguments.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int):
        dtype = _autocast_dtype(x.device.type)
        xc, wc = (x.to(dtype), weight.to(dtype)) if dtype is not None else (x, weight)
        bc = bias.to(wc.dtype) if bias is not None else None
        with torch.autocast(x.device.type, enabled=False):
            y = _CONV[x.ndim - 2](xc, wc, bc, padding=padding, groups=x.shape[1])
        ctx.save_for_backward(xc, wc)
        ctx.padding = padding
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        dim, channels, p = x.ndim - 2, x.shape[1], ctx.padding
        grad = grad.to(x.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            flipped = weight.flip(tuple(range(2, weight.ndim)))
            grad_x = _CONV[dim](grad, flipped, None, padding=p, groups=channels).to(x_dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [channels], [1] * dim, [p] * dim, [1] * dim, False, [0] * dim, channels,
                [False, ctx.needs_input_grad[1], ctx.needs_input_grad[2]],
            )
            grad_w = grad_w.to(w_dtype) if grad_w is not None else None
            grad_b = grad_b.to(b_dtype) if grad_b is not None else None
        return grad_x, grad_w, grad_b, None


def depthwise_conv(x: torch.Tensor, conv: ConvNd) -> torch.Tensor:
    """Apply a stride-1, 'same'-padded depthwise ``nn.Conv2d``/``nn.Conv3d`` (N, C, *S) -> (N, C, *S)."""
    return _DepthwiseConv.apply(x, conv.weight, conv.bias, conv.padding[0])


class _TransposedDepthwiseConv(torch.autograd.Function):
    """Depthwise transposed convolution computed on contiguous copies that live only inside forward/backward.

    Autocast is applied explicitly, as in :class:`_DepthwiseConv`; gradients come back in the arguments' dtypes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int):
        dtype = _autocast_dtype(x.device.type)
        xc, wc = (x.to(dtype), weight.to(dtype)) if dtype is not None else (x, weight)
        bc = bias.to(wc.dtype) if bias is not None else None
        with torch.autocast(x.device.type, enabled=False):
            y = _CONV_T[x.ndim - 2](xc.contiguous(), wc, bc, stride=stride, padding=padding, groups=x.shape[1])
        ctx.save_for_backward(xc, wc)
        ctx.geometry = (stride, padding)
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        (stride, padding), dtypes = ctx.geometry, ctx.dtypes
        dim, channels = x.ndim - 2, x.shape[1]
        grads = torch.ops.aten.convolution_backward(
            grad.to(x.dtype).contiguous(), x.contiguous(), weight, [channels], [stride] * dim, [padding] * dim,
            [1] * dim, True, [0] * dim, channels, list(ctx.needs_input_grad[:3]),
        )
        grads = [g.to(d) if g is not None else None for g, d in zip(grads, dtypes)]
        return (*grads, None, None)


def transposed_depthwise_conv(x: torch.Tensor, conv: ConvTransposeNd) -> torch.Tensor:
    """Apply a depthwise ``nn.ConvTranspose2d``/``3d`` (stride s, padding p) on contiguous copies of its input."""
    return _TransposedDepthwiseConv.apply(x, conv.weight, conv.bias, conv.stride[0], conv.padding[0])


def strided_pointwise(x: torch.Tensor, conv: ConvNd) -> torch.Tensor:
    """A 1x1 stride-2 convolution as a 1x1 convolution of every second voxel: (N, C, *S) -> (N, C', *ceil(S/2))."""
    sub = x[(slice(None), slice(None)) + (slice(None, None, 2),) * (x.ndim - 2)]
    return _CONV[x.ndim - 2](sub, conv.weight, conv.bias)


def transposed_pointwise(x: torch.Tensor, conv: ConvTransposeNd, bias: bool = True) -> torch.Tensor:
    """A kernel-1 transposed convolution (weight (in, out, 1...)) at stride 1, as a 1x1 convolution."""
    return _CONV[x.ndim - 2](x, conv.weight.transpose(0, 1), conv.bias if bias else None)
