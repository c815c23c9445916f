"""MedNeXt, the first registered network kind, and the MedNeXt names the rest of scalekit uses.

Every module outside :mod:`scalekit.mednext` and this package reaches MedNeXt through here: the generic paths
(build, configs read back, profile, train, export) through :mod:`scalekit.networks`' dispatch, and the parts
that are MedNeXt's by nature (its search space of widths, block counts and ratios, its presets, UpKern kernel
growth) by the names below.
"""

from __future__ import annotations

from scalekit.mednext import (
    PRESETS,
    CheckpointError,
    MedNeXt,
    MedNeXtConfig,
    UpKernReport,
    count_parameters,
    infer_config,
    parameters_by_module,
    preset_config,
    upkern,
)
from scalekit.mednext.checkpoint import state_of
from scalekit.mednext.config import DIVISOR, NUM_LEVELS, per_stage

from . import recipe
from .registry import NetworkKind, register


def mednext_output_strides(config: MedNeXtConfig) -> list[tuple[int, ...]]:
    """Full resolution, then each of the four halvings when the deep-supervision heads are built."""
    levels = NUM_LEVELS if config.deep_supervision else 1
    return [(2**level,) * config.dim for level in range(levels)]


def _set_deep_supervision(model: MedNeXt, enabled: bool) -> None:
    model.deep_supervision = enabled


def _plain_path(model: MedNeXt) -> None:
    model.fast_path = False


MEDNEXT = register(NetworkKind(
    name=MedNeXtConfig.arch,
    label="MedNeXt",
    config_type=MedNeXtConfig,
    build=MedNeXt,
    output_strides=mednext_output_strides,
    loss_weights=recipe.deep_supervision_weights,
    make_optimizer=recipe.make_optimizer,
    initialise=upkern,
    set_deep_supervision=_set_deep_supervision,
    plain_path=_plain_path,
    load_foreign=state_of,
    columns=lambda config: (config.n_channels, list(config.block_counts), list(config.exp_r)),
))

__all__ = [
    "DIVISOR",
    "MEDNEXT",
    "NUM_LEVELS",
    "PRESETS",
    "CheckpointError",
    "MedNeXt",
    "MedNeXtConfig",
    "UpKernReport",
    "count_parameters",
    "infer_config",
    "parameters_by_module",
    "per_stage",
    "preset_config",
    "upkern",
]
