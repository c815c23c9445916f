"""The MedNeXt as nnU-Net v2 builds networks from plans: an importable class with nnU-Net's constructor.

nnU-Net's ``get_network_from_plans`` locates ``architecture["network_class_name"]`` with ``pydoc.locate`` and
calls ``cls(input_channels=..., num_classes=..., **arch_kwargs, deep_supervision=...)``. This module imports
only torch and :mod:`scalekit.networks`, so nnU-Net can build the network on any machine with scalekit. It is
MedNeXt's entry in :mod:`scalekit.nnunet.networks`, the registry of what plans may build.
"""

from __future__ import annotations

from typing import Any

from scalekit.errors import ScalekitError
from scalekit.networks.mednext import NUM_LEVELS, MedNeXt, MedNeXtConfig

NETWORK_CLASS_NAME = "scalekit.nnunet.adapter.MedNeXtNetwork"
_SET_BY_NNUNET = ("arch", "in_channels", "num_classes", "deep_supervision")
"""Config keys that are not ``arch_kwargs``: the class names the kind, nnU-Net supplies the rest."""


def mednext_strides(dim: int) -> list[list[int]]:
    """Per-level strides of every MedNeXt (stem at 1, then four halvings), as nnU-Net's plans write them."""
    return [[1] * dim] + [[2] * dim for _ in range(NUM_LEVELS - 1)]


class MedNeXtNetwork(MedNeXt):
    """A :class:`MedNeXt` built from nnU-Net's arguments; its state dict equals the plain MedNeXt's.

    Args:
        input_channels: image channels (nnU-Net's name for ``in_channels``).
        num_classes: segmentation outputs.
        deep_supervision: build and return the five deep-supervision outputs.
        strides: accepted because nnU-Net's tools read ``arch_kwargs["strides"]`` as the pooling pattern; must
            be MedNeXt's fixed pattern (:func:`mednext_strides`).
        **arch_kwargs: every other :class:`MedNeXtConfig` field (``n_channels``, ``exp_r``, ``block_counts``,
            ``enc_kernel_size``, ``dec_kernel_size``, ...).
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        deep_supervision: bool = False,
        strides: list[list[int]] | None = None,
        **arch_kwargs: Any,
    ) -> None:
        super().__init__(config_from_arch_kwargs(arch_kwargs, input_channels, num_classes, deep_supervision, strides))


def config_from_arch_kwargs(arch_kwargs: dict[str, Any], input_channels: int, num_classes: int,
                            deep_supervision: bool = False, strides: list[list[int]] | None = None) -> MedNeXtConfig:
    """The :class:`MedNeXtConfig` that a plans entry's ``arch_kwargs`` describe, checked field by field (unknown
    fields, wrong types, strides other than MedNeXt's fixed pattern are an error)."""
    config = MedNeXtConfig.from_dict(
        {**arch_kwargs, "in_channels": input_channels, "num_classes": num_classes,
         "deep_supervision": bool(deep_supervision)}
    )
    try:
        given = None if strides is None else [list(s) for s in strides]
    except TypeError:
        given = strides
    if given is not None and given != mednext_strides(config.dim):
        raise ScalekitError(
            f"strides {strides} do not describe a MedNeXt; it always uses {mednext_strides(config.dim)}"
        )
    return config


def architecture_entry(config: MedNeXtConfig) -> dict[str, Any]:
    """The plans ``architecture`` entry that makes nnU-Net build ``config`` (channels and classes excepted:
    nnU-Net supplies those from the dataset)."""
    kwargs = {k: v for k, v in config.to_dict().items() if k not in _SET_BY_NNUNET}
    kwargs["strides"] = mednext_strides(config.dim)
    return {"network_class_name": NETWORK_CLASS_NAME, "arch_kwargs": kwargs, "_kw_requires_import": []}
