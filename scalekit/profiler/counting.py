"""Parameters and FLOPs of a network (any registered kind), counted on the ``meta`` device (shapes only: no
memory, no arithmetic).

Counts describe the architecture, so they are taken on the model's plain path (:func:`scalekit.networks.plain_path`;
MedNeXt's ``fast_path = False``: the modules called as built, as in the reference), whatever re-formulations the
fast training path uses.
One forward and one backward pass run on meta tensors under a :class:`TorchDispatchMode` that sees every aten
call and its shapes. Conventions:

* MACs: multiply-accumulates of convolutions and transposed convolutions (biases ignored); a transposed
  convolution is counted per *input* voxel, as torch's ``FlopCounterMode`` and fvcore do. This is the reference
  MedNeXt's convention (mednext-v1.md, section 2.2).
* ``gflops_fvcore``: MACs plus 5 per element entering an affine GroupNorm or InstanceNorm, which is what
  ``fvcore.FlopCountAnalysis`` reports for a MedNeXt or a ResEnc (GELU, LeakyReLU, additions and padding are not
  counted by fvcore) and what the MedNeXt README calls "GFlops".
* ``gflops_forward`` = 2 x MACs; ``gflops_train`` = 2 x the MACs of every convolution run in the step: the
  forward, the recomputed forward of checkpointed blocks, and ``convolution_backward`` with the gradients it
  actually computes (input gradient: the forward's MACs; weight gradient: the forward's MACs). torch's
  ``FlopCounterMode`` ignores ``groups`` in its backward formula and overcounts depthwise convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from scalekit import networks
from scalekit.networks import NetworkConfig

aten = torch.ops.aten
NORM_FVCORE_FLOPS_PER_ELEMENT = 5


def conv_macs(input_shape: tuple[int, ...], weight_shape: tuple[int, ...], output_shape: tuple[int, ...],
              transposed: bool) -> int:
    """MACs of one (transposed) convolution: batch x prod(weight) x voxels of the non-transposed output side.

    The weight is (C_out, C_in/groups, *k) for a convolution and (C_in, C_out/groups, *k) for a transposed
    one, so ``groups`` is accounted for by the weight's shape.
    """
    spatial = input_shape[2:] if transposed else output_shape[2:]
    return input_shape[0] * prod(weight_shape) * prod(spatial)


@dataclass
class OpCounts:
    """Running totals of one phase (forward or backward)."""

    conv_macs: int = 0
    norm_elements: int = 0


@dataclass(frozen=True)
class Counts:
    """Parameters and operation counts of one network at one input size (see the module docstring)."""

    params: int
    macs_forward: int
    norm_elements: int
    macs_train: int

    @property
    def gmacs_forward(self) -> float:
        return self.macs_forward / 1e9

    @property
    def gflops_fvcore(self) -> float:
        return (self.macs_forward + NORM_FVCORE_FLOPS_PER_ELEMENT * self.norm_elements) / 1e9

    @property
    def gflops_forward(self) -> float:
        return 2 * self.macs_forward / 1e9

    @property
    def gflops_train(self) -> float:
        return 2 * self.macs_train / 1e9


class CostCounter(TorchDispatchMode):
    """Counts convolution MACs and the input elements of affine normalisations (GroupNorm; InstanceNorm, which runs
    as a batch norm), separately for the forward and backward phase."""

    def __init__(self) -> None:
        super().__init__()
        self.forward = OpCounts()
        self.backward = OpCounts()
        self.phase = self.forward

    def counts(self, params: int) -> Counts:
        """The totals so far, for a model of ``params`` parameters."""
        return Counts(
            params=params,
            macs_forward=self.forward.conv_macs,
            norm_elements=self.forward.norm_elements,
            macs_train=self.forward.conv_macs + self.backward.conv_macs,
        )

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if packet is aten.convolution:
            x, w = args[0], args[1]
            self.phase.conv_macs += conv_macs(tuple(x.shape), tuple(w.shape), tuple(out.shape), bool(args[6]))
        elif packet is aten.convolution_backward:
            grad_out, x, w = args[0], args[1], args[2]
            transposed, mask = bool(args[7]), args[10]
            macs = conv_macs(tuple(x.shape), tuple(w.shape), tuple(grad_out.shape), transposed)
            self.phase.conv_macs += macs * (int(mask[0]) + int(mask[1]))
        elif packet in (aten.native_group_norm, aten.native_batch_norm):  # InstanceNorm runs as batch norm
            self.phase.norm_elements += args[0].numel()
        return out


def count(arch: NetworkConfig, patch: tuple[int, ...], batch_size: int, checkpointing: bool) -> Counts:
    """Count parameters and FLOPs of a training forward+backward of ``arch`` on (batch, C_in, *patch) inputs.

    The forward runs in training mode with the network's deep-supervision setting; the backward starts from
    the sum of all outputs (the loss adds no convolutions). Takes well under a second.
    """
    with torch.device("meta"):
        model = networks.build(arch.replace(checkpointing=checkpointing))
        x = torch.empty((batch_size, arch.in_channels, *patch))
    model.train()
    networks.plain_path(model)
    counter = CostCounter()
    with counter:
        outputs = model(x)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        loss = sum(o.sum() for o in outputs)
        counter.phase = counter.backward
        loss.backward()
    return counter.counts(sum(p.numel() for p in model.parameters()))
