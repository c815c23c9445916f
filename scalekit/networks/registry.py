"""The network registry: every kind of network scalekit builds, profiles, trains and exports, by name.

A kind (:class:`NetworkKind`) is registered once, under the name that every stored config carries as its
``arch`` key (``"mednext"``); everything outside the kind's own package reaches it through here: a config read
back from a results table, a stage spec, a checkpoint or an export (:func:`config_from_dict`), the network it
describes (:func:`build`), the outputs its deep supervision trains (:func:`output_strides`), its optimizer and
its checkpoints. A second kind is one module that registers itself, as :mod:`scalekit.networks.mednext` does.
Imports only torch (the profiler runs on a bare GPU machine).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from scalekit.errors import ScalekitError
from scalekit.records import DEFAULT_ARCH


class NetworkConfig(Protocol):
    """What every kind's config offers: a frozen record of one architecture that round-trips through
    ``to_dict`` / ``from_dict`` with its ``arch`` key."""

    arch: ClassVar[str]

    @property
    def in_channels(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def deep_supervision(self) -> bool: ...

    @property
    def dim(self) -> int: ...

    @property
    def checkpointing(self) -> bool: ...

    def to_dict(self) -> dict[str, Any]: ...

    def replace(self, **changes: Any) -> Any: ...

    def check_input_shape(self, spatial: Sequence[int]) -> None: ...


@dataclass(frozen=True)
class NetworkKind:
    """One registered kind of network.

    Attributes:
        name: the registry name, the ``arch`` key of its stored configs.
        label: how people name it (``"MedNeXt"``).
        config_type: its config class (``from_dict`` reads a stored config back).
        build: the network of a config (an ``nn.Module`` whose ``config`` is that config).
        output_strides: each output's downsampling per axis, full resolution first (one entry without deep
            supervision): what the targets of a training step and the deep-supervision scales follow.
        loss_weights: the weight of each output's loss, given the number of outputs (full resolution first).
        make_optimizer: the optimizer its recipe trains with (``parameters, lr=..., foreach=...``).
        initialise: start a network from another network's weights (a parent stage, a checkpoint): equal
            tensors copied, the rest as the kind does it (MedNeXt: UpKern resamples kernels); returns a report
            with ``summary()`` and ``to_dict()``.
        set_deep_supervision: switch a built network's extra outputs on or off (nnU-Net switches them off to
            validate and predict; the heads stay).
        plain_path: put a built network on its plain path (no fast path with another memory layout), so the
            profiler's counts describe the architecture.
        load_foreign: weights, config and source (the format's name) of what a checkpoint file in a format
            other than scalekit's holds (given what was read and the path, for messages) (MedNeXt: the reference implementation's files); scalekit's own format holds the
            config with its ``arch`` and needs no kind to read (:func:`scalekit.networks.load_state`).
        columns: the readable columns of a config in a results table: its width (channels of the first
            stage), blocks per stage and expansion ratio per stage (empty for a kind without one).
    """

    name: str
    label: str
    config_type: type
    build: Callable[[Any], nn.Module]
    output_strides: Callable[[Any], list[tuple[int, ...]]]
    loss_weights: Callable[[int], tuple[float, ...]]
    make_optimizer: Callable[..., torch.optim.Optimizer]
    initialise: Callable[[nn.Module, Mapping[str, torch.Tensor]], Any]
    set_deep_supervision: Callable[[Any, bool], None]
    plain_path: Callable[[Any], None]
    load_foreign: Callable[[Any, Any], tuple[dict[str, torch.Tensor], Any, str]]
    columns: Callable[[Any], tuple[int, list[int], list[int]]]

    def from_dict(self, data: Mapping[str, Any]) -> Any:
        from_dict: Callable[[Mapping[str, Any]], Any] = getattr(self.config_type, "from_dict")
        return from_dict(data)


_KINDS: dict[str, NetworkKind] = {}


def register(kind: NetworkKind) -> NetworkKind:
    """Add ``kind`` under its name (once: a second kind of the same name is an error)."""
    if kind.name in _KINDS and _KINDS[kind.name] is not kind:
        raise ScalekitError(f"a network kind named {kind.name!r} is registered already")
    if getattr(kind.config_type, "arch", None) != kind.name:
        raise ScalekitError(f"{kind.config_type.__name__}.arch must be {kind.name!r}, the kind's name")
    _KINDS[kind.name] = kind
    return kind


def kinds() -> tuple[str, ...]:
    """The registered kinds' names, sorted."""
    return tuple(sorted(_KINDS))


def get_kind(name: str) -> NetworkKind:
    """The kind registered as ``name``; an error listing the registered ones otherwise."""
    kind = _KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ScalekitError(f"arch={name!r} is not a registered network kind; known: {', '.join(kinds())}")
    return kind


def kind_of(config: object) -> NetworkKind:
    """The kind a config belongs to (by its ``arch``); an error for anything that is not a registered kind's
    config."""
    arch = getattr(config, "arch", None)
    kind = _KINDS.get(arch) if isinstance(arch, str) else None
    if kind is None or not isinstance(config, kind.config_type):
        raise ScalekitError(f"a {type(config).__name__} is not the config of a registered network kind "
                            f"({', '.join(kinds())})")
    return kind


def config_from_dict(data: Mapping[str, Any]) -> Any:
    """The config a stored dict describes, of the kind its ``arch`` key names (``"mednext"`` when absent)."""
    if not isinstance(data, Mapping):
        raise ScalekitError(f"a stored network config must be a mapping, got {type(data).__name__}")
    return get_kind(data.get("arch", DEFAULT_ARCH)).from_dict(data)


def columns(config: NetworkConfig) -> dict[str, Any]:
    """``n_channels``, ``block_counts`` and ``exp_r`` of ``config``: the results table's readable columns."""
    width, blocks, ratios = kind_of(config).columns(config)
    return {"n_channels": width, "block_counts": blocks, "exp_r": ratios}


def build(config: NetworkConfig) -> nn.Module:
    """The network ``config`` describes."""
    return kind_of(config).build(config)


def output_strides(config: NetworkConfig) -> list[tuple[int, ...]]:
    """Each output's downsampling per axis (full resolution first): one entry without deep supervision."""
    return kind_of(config).output_strides(config)


def loss_weights(config: NetworkConfig) -> tuple[float, ...]:
    """The weight of each output's loss in a training step of ``config`` (full resolution first)."""
    kind = kind_of(config)
    return kind.loss_weights(len(kind.output_strides(config)))


def initialise(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Any:
    """Start ``model`` (a registered kind's network) from the weights ``state`` as its kind does (MedNeXt:
    UpKern); returns the kind's report of what was copied and changed."""
    return kind_of(config_of(model)).initialise(model, state)


def set_deep_supervision(model: nn.Module, enabled: bool) -> None:
    """Switch the extra outputs of ``model`` (a registered kind's network) on or off."""
    kind_of(config_of(model)).set_deep_supervision(model, enabled)


def plain_path(model: nn.Module) -> nn.Module:
    """``model`` on its plain path (see :class:`NetworkKind`); returns it."""
    kind_of(config_of(model)).plain_path(model)
    return model


def make_optimizer(config: NetworkConfig, parameters: Iterable[nn.Parameter], **options: Any) -> torch.optim.Optimizer:
    """The optimizer ``config``'s kind trains with."""
    return kind_of(config).make_optimizer(parameters, **options)


def config_of(model: nn.Module) -> Any:
    """The config of a network that a registered kind built; an error for any other module."""
    config = getattr(model, "config", None)
    try:
        kind_of(config)
    except ScalekitError:
        raise ScalekitError(f"a {type(model).__name__} is not a network of a registered kind "
                            f"({', '.join(kinds())})") from None
    return config
