"""The MedNeXt network: a 5-level ConvNeXt U-Net with additive skips and optional deep supervision."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from scalekit.errors import ScalekitError

from . import speed
from .blocks import MedNeXtBlock, MedNeXtDownBlock, MedNeXtUpBlock, OutBlock, conv_cls
from .config import NUM_LEVELS, MedNeXtConfig

NUM_DOWN = NUM_LEVELS - 1


class MedNeXt(nn.Module):
    """MedNeXt (Roy et al., MICCAI 2023), parameter-compatible with the reference ``mednextv1.MedNeXt``.

    Build it from a :class:`MedNeXtConfig` or from the config's fields as keyword arguments::

        MedNeXt(MedNeXtConfig(in_channels=1, num_classes=14, n_channels=32, enc_kernel_size=5, ...))
        MedNeXt(in_channels=1, num_classes=14, kernel_size=5)

    Input: (N, in_channels, *S) with every spatial size divisible by 16. Output: (N, num_classes, *S), or with
    deep supervision the list ``[S, S/2, S/4, S/8, S/16]`` (full resolution first). Deep supervision can be
    switched off after construction (``model.deep_supervision = False``); the extra heads stay, as in the
    reference. ``model.checkpointing`` switches gradient checkpointing of each block and head.
    ``model.fast_path`` (default True) runs the fast path of :mod:`scalekit.mednext.speed` (channels-last
    tensors where faster, cheaper kernels, same parameters and results within float rounding); its outputs
    are then channels-last tensors. ``model.fast_path = False`` is the plain path (contiguous tensors).

    Module names: ``stem``, ``enc_block_{0..3}``, ``down_{0..3}``, ``bottleneck``, ``up_{3..0}``,
    ``dec_block_{3..0}``, ``out_{0..4}`` (the reference's, without its ``dummy_tensor``).
    """

    out_0: OutBlock
    """The full-resolution head (set in ``__init__`` with the others, by name)."""

    def __init__(self, config: MedNeXtConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = MedNeXtConfig().replace(**kwargs)
        elif kwargs:
            raise ScalekitError("pass either a MedNeXtConfig or keyword arguments, not both")
        self.config = config
        c = config
        ch = [c.n_channels * 2**level for level in range(NUM_LEVELS)]

        def stage(channels: int, index: int, kernel: int) -> nn.Sequential:
            r = c.exp_r[index]
            return nn.Sequential(*(
                MedNeXtBlock(channels, channels, r, kernel, do_res=c.do_res, norm_type=c.norm_type, dim=c.dim,
                             grn=c.grn)
                for _ in range(c.block_counts[index])
            ))

        self.stem = conv_cls(c.dim)(c.in_channels, ch[0], kernel_size=1)
        for level in range(NUM_DOWN):
            setattr(self, f"enc_block_{level}", stage(ch[level], level, c.enc_kernel_size))
            setattr(
                self,
                f"down_{level}",
                MedNeXtDownBlock(
                    ch[level], ch[level + 1], c.exp_r[level + 1], c.enc_kernel_size, do_res=c.do_res_up_down,
                    norm_type=c.norm_type, dim=c.dim, grn=c.grn and level > 0,
                ),
            )
        self.bottleneck = stage(ch[NUM_DOWN], NUM_DOWN, c.dec_kernel_size)
        for level in reversed(range(NUM_DOWN)):
            index = 2 * NUM_DOWN - level
            setattr(
                self,
                f"up_{level}",
                MedNeXtUpBlock(
                    ch[level + 1], ch[level], c.exp_r[index], c.dec_kernel_size, do_res=c.do_res_up_down,
                    norm_type=c.norm_type, dim=c.dim, grn=c.grn, alignment=c.up_alignment,
                ),
            )
            setattr(self, f"dec_block_{level}", stage(ch[level], index, c.dec_kernel_size))
        heads = range(NUM_LEVELS) if c.deep_supervision else range(1)
        for level in heads:
            setattr(self, f"out_{level}", OutBlock(ch[level], c.num_classes, c.dim))
        self._deep_supervision = c.deep_supervision
        self.checkpointing = c.checkpointing
        self._fast_path = True

    @property
    def deep_supervision(self) -> bool:
        """Whether the forward returns all five outputs (needs the heads built with ``deep_supervision``)."""
        return self._deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool) -> None:
        if enabled and not self.config.deep_supervision:
            raise ScalekitError(
                "this MedNeXt was built without deep-supervision heads; build it with deep_supervision=True"
            )
        self._deep_supervision = bool(enabled)

    @property
    def fast_path(self) -> bool:
        """Whether the forward takes the fast path (True by default) or the plain one (the baseline)."""
        return self._fast_path

    @fast_path.setter
    def fast_path(self, enabled: bool) -> None:
        self._fast_path = bool(enabled)
        for module in self.modules():
            if isinstance(module, (MedNeXtBlock, OutBlock)):
                module.fast = self._fast_path

    def _apply_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def _apply_stage(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        for block in stage:
            x = self._apply_block(block, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim != self.config.dim + 2 or x.shape[1] != self.config.in_channels:
            raise ScalekitError(
                f"input tensor of shape {tuple(x.shape)} does not fit this MedNeXt: expected "
                f"(N, {self.config.in_channels}, {', '.join('S' * self.config.dim)})"
            )
        self.config.check_input_shape(tuple(x.shape[2:]))
        if self._fast_path:
            speed.prepare_device(x.device)
            memory_format = speed.memory_format_for(x.device, self.config.dim)
            x = self.stem(x.contiguous(memory_format=memory_format)).contiguous(memory_format=memory_format)
        else:
            x = self.stem(x)
        skips = []
        for level in range(NUM_DOWN):
            x = self._apply_stage(getattr(self, f"enc_block_{level}"), x)
            skips.append(x)
            x = self._apply_block(getattr(self, f"down_{level}"), x)
        x = self._apply_stage(self.bottleneck, x)
        coarse_outputs = []
        if self._deep_supervision:
            coarse_outputs.append(self._apply_block(getattr(self, f"out_{NUM_DOWN}"), x))
        for level in reversed(range(NUM_DOWN)):
            x = skips[level] + self._apply_block(getattr(self, f"up_{level}"), x)
            x = self._apply_stage(getattr(self, f"dec_block_{level}"), x)
            if self._deep_supervision and level > 0:
                coarse_outputs.append(self._apply_block(getattr(self, f"out_{level}"), x))
        out = self._apply_block(self.out_0, x)
        if not self._deep_supervision:
            return out
        return [out, *reversed(coarse_outputs)]


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements."""
    return sum(p.numel() for p in model.parameters())


def parameters_by_module(model: MedNeXt) -> dict[str, int]:
    """Parameter counts per top-level module, in forward order (stem, encoder, bottleneck, decoder, heads)."""
    return {name: count_parameters(module) for name, module in model.named_children()}
