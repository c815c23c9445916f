"""The network registry (timm's ``create_model`` idea): the kinds of network scalekit builds, by the ``arch``
key of every stored config, and the one dispatch for building, reading configs back, profiling, training and
checkpoints. MedNeXt (:mod:`scalekit.networks.mednext`) is the first registered kind, nnU-Net's residual-encoder
U-Net (:mod:`scalekit.networks.resenc`) the second.

    from scalekit import networks
    config = networks.config_from_dict(stage.config)      # {"arch": "mednext", ...}
    model = networks.build(config)
"""

from . import recipe
from .checkpoints import load_state, read_checkpoint, save_checkpoint, state_mismatch
from .mednext import MEDNEXT, count_parameters
from .resenc import RESENC, ResEncConfig
from .registry import (
    DEFAULT_ARCH,
    NetworkConfig,
    NetworkKind,
    build,
    columns,
    config_from_dict,
    config_of,
    get_kind,
    initialise,
    kind_of,
    kinds,
    loss_weights,
    make_optimizer,
    output_strides,
    plain_path,
    register,
    set_deep_supervision,
)

__all__ = [
    "DEFAULT_ARCH",
    "MEDNEXT",
    "RESENC",
    "ResEncConfig",
    "NetworkConfig",
    "NetworkKind",
    "build",
    "columns",
    "config_from_dict",
    "config_of",
    "count_parameters",
    "get_kind",
    "initialise",
    "kind_of",
    "kinds",
    "loss_weights",
    "load_state",
    "make_optimizer",
    "output_strides",
    "plain_path",
    "read_checkpoint",
    "recipe",
    "register",
    "save_checkpoint",
    "set_deep_supervision",
    "state_mismatch",
]
