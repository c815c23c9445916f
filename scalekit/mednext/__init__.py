"""MedNeXt for 2-D and 3-D segmentation, parameter-compatible with the reference implementation.

    from scalekit.mednext import create_mednext
    net = create_mednext("L", in_channels=1, num_classes=14, kernel_size=5, deep_supervision=True, dim=3)
"""

from .blocks import ChannelsFirstLayerNorm, MedNeXtBlock, MedNeXtDownBlock, MedNeXtUpBlock, OutBlock
from .checkpoint import (
    CheckpointError,
    infer_config,
    load_mednext,
    load_state,
    read_checkpoint,
    save_checkpoint,
    state_mismatch,
    translate_reference_state_dict,
)
from .config import STAGE_NAMES, MedNeXtConfig
from .model import MedNeXt, count_parameters, parameters_by_module
from .presets import PRESETS, create_mednext, preset_config
from .upkern import UpKernError, UpKernReport, resample_kernel, upkern

__all__ = [
    "PRESETS",
    "STAGE_NAMES",
    "ChannelsFirstLayerNorm",
    "CheckpointError",
    "MedNeXt",
    "MedNeXtBlock",
    "MedNeXtConfig",
    "MedNeXtDownBlock",
    "MedNeXtUpBlock",
    "OutBlock",
    "UpKernError",
    "UpKernReport",
    "count_parameters",
    "create_mednext",
    "infer_config",
    "load_mednext",
    "load_state",
    "parameters_by_module",
    "preset_config",
    "read_checkpoint",
    "resample_kernel",
    "save_checkpoint",
    "state_mismatch",
    "translate_reference_state_dict",
    "upkern",
]
