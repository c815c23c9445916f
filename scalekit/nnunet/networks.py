"""The networks a plans file may name: scalekit's allow-list, checked before nnU-Net resolves any name.

nnU-Net builds a configuration's network from its plans: it imports ``architecture["network_class_name"]``
and every ``arch_kwargs`` entry listed in ``_kw_requires_import`` with ``pydoc.locate``, then calls the class
with ``arch_kwargs``. A plans file therefore names code, and plans travel between people (an export is made to
be handed on; a study folder may come from a colleague). :func:`check_plans` is the one check that every path
handing plans to nnU-Net runs first (``scalekit train``, ``scalekit predict``, the predictor a stage is
validated with, an export, and :class:`~scalekit.nnunet.trainer.ScalekitMedNeXtTrainer` itself, so also the
stock ``nnUNetv2_train`` / ``nnUNetv2_predict``): the configuration must build a registered network kind, with
no name to import outside what that kind allows, and arguments the kind accepts. Anything else is refused with
one line naming the file and the field. This module imports no nnunetv2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalekit.errors import ScalekitError

from torch import nn

from scalekit.networks import NetworkConfig, ResEncConfig
from scalekit.networks.resenc import CLASS_NAME as RESENC_CLASS_NAME
from scalekit.networks.resenc import PLANS_IMPORTS as RESENC_IMPORTS
from scalekit.networks.resenc import build_resenc

from .adapter import NETWORK_CLASS_NAME, MedNeXtNetwork, architecture_entry, config_from_arch_kwargs


class PlansRefusedError(ScalekitError):
    """A plans file names code scalekit does not build, or arguments its network does not take."""


def _mednext_arguments(arch_kwargs: dict[str, Any]) -> None:
    strides = arch_kwargs.get("strides")
    config_from_arch_kwargs({k: v for k, v in arch_kwargs.items() if k != "strides"}, 1, 2, strides=strides)


def _resenc_network(input_channels: int, num_classes: int, deep_supervision: bool = False,
                    **arch_kwargs: Any) -> nn.Module:
    return build_resenc(ResEncConfig.from_arch_kwargs(arch_kwargs, input_channels, num_classes, deep_supervision))


def _resenc_arguments(arch_kwargs: dict[str, Any]) -> None:
    ResEncConfig.from_arch_kwargs(arch_kwargs, 1, 2)


def _resenc_entry(config: ResEncConfig) -> dict[str, Any]:
    return {"network_class_name": RESENC_CLASS_NAME, "arch_kwargs": config.arch_kwargs(),
            "_kw_requires_import": list(RESENC_IMPORTS)}


@dataclass(frozen=True)
class PlansNetwork:
    """A network nnU-Net may build from plans: the registered kind (:mod:`scalekit.networks`) it is, its class
    (called with nnU-Net's constructor arguments), the plans ``architecture`` entry of a config, the
    ``_kw_requires_import`` arguments it may name (each with the import paths allowed for it) and a check of
    its ``arch_kwargs`` (raises on bad ones)."""

    arch: str
    class_name: str
    build: Callable[..., nn.Module]
    entry: Callable[[Any], dict[str, Any]]
    check_arguments: Callable[[dict[str, Any]], None]
    imports: Mapping[str, frozenset[str]] = field(default_factory=dict)


KINDS: dict[str, PlansNetwork] = {
    NETWORK_CLASS_NAME: PlansNetwork("mednext", NETWORK_CLASS_NAME, MedNeXtNetwork, architecture_entry,
                                     _mednext_arguments),
    RESENC_CLASS_NAME: PlansNetwork("resenc", RESENC_CLASS_NAME, _resenc_network, _resenc_entry, _resenc_arguments,
                                    RESENC_IMPORTS),
}
"""The networks plans may build, by class name: the MedNeXt of :mod:`scalekit.nnunet.adapter`, and nnU-Net's own
ResEnc (``dynamic_network_architectures``) with the arguments nnU-Net's ResEnc planners write."""


def plans_architecture(config: NetworkConfig) -> dict[str, Any]:
    """The plans ``architecture`` entry that makes nnU-Net build ``config`` (channels and classes excepted:
    nnU-Net supplies those from the dataset), by its kind."""
    for kind in KINDS.values():
        if kind.arch == config.arch:
            return kind.entry(config)
    raise ScalekitError(f"no nnU-Net adapter builds arch={config.arch!r}; it cannot be trained or exported")


def effective_configuration(plans: Mapping[str, Any], name: str, source: str | Path) -> tuple[dict[str, Any], str]:
    """The configuration ``name`` as nnU-Net sees it (its ``inherits_from`` chain merged, the child's keys
    winning) and the name of the configuration its ``architecture`` comes from."""
    configurations = plans.get("configurations") if isinstance(plans, Mapping) else None
    if not isinstance(configurations, Mapping):
        raise PlansRefusedError(f"{source}: field 'configurations' is missing or not a mapping; "
                                "this is not an nnU-Net plans file")
    chain: list[str] = []
    current: Any = name
    while current is not None:
        if not isinstance(current, str) or current not in configurations:
            where = f"configurations.{chain[-1]}.inherits_from names" if chain else "has no"
            known = ", ".join(sorted(map(str, configurations)))
            raise PlansRefusedError(f"{source}: {where} configuration {current!r} (the plans have: {known})")
        if current in chain:
            raise PlansRefusedError(f"{source}: configurations.{chain[-1]}.inherits_from loops "
                                    f"({' -> '.join([*chain, current])}); remove the loop")
        if not isinstance(configurations[current], Mapping):
            raise PlansRefusedError(f"{source}: configurations.{current} is not a mapping")
        chain.append(current)
        current = configurations[current].get("inherits_from")
    merged: dict[str, Any] = {}
    for link in reversed(chain):
        merged.update(configurations[link])
    origin = next((link for link in chain if "architecture" in configurations[link]), chain[0])
    return merged, origin


def check_architecture(architecture: Any, where: str) -> PlansNetwork:
    """The registered kind that a plans ``architecture`` entry builds; :class:`PlansRefusedError` naming
    ``where`` (the file and the entry's field path) otherwise. Nothing is imported or called."""
    if not isinstance(architecture, Mapping):
        raise PlansRefusedError(f"{where} is missing or not a mapping; a scalekit plans file has "
                                "network_class_name, arch_kwargs and _kw_requires_import there")
    name = architecture.get("network_class_name")
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise PlansRefusedError(
            f"{where}.network_class_name is {name!r}, not a network scalekit builds ({', '.join(sorted(KINDS))}): "
            "a plans file that names other code is refused; export the stage again with scalekit"
        )
    arguments = architecture.get("arch_kwargs", {})
    if not isinstance(arguments, Mapping):
        raise PlansRefusedError(f"{where}.arch_kwargs is not a mapping of arguments")
    imports = architecture.get("_kw_requires_import", [])
    if not isinstance(imports, list) or not all(isinstance(entry, str) for entry in imports):
        raise PlansRefusedError(f"{where}._kw_requires_import must be a list of argument names, got {imports!r}")
    for entry in imports:
        allowed = kind.imports.get(entry)
        value = arguments.get(entry)
        if allowed is None or (value is not None and value not in allowed):
            raise PlansRefusedError(
                f"{where}._kw_requires_import lists {entry!r} (= {value!r}), which {name} does not import: "
                "a plans file that names other code is refused"
            )
    try:
        kind.check_arguments(dict(arguments))
    except (ScalekitError, TypeError) as err:
        raise PlansRefusedError(f"{where}.arch_kwargs: {err}") from None
    return kind


def check_plans(plans: Mapping[str, Any], configuration: str, source: str | Path) -> PlansNetwork:
    """Check the network that configuration ``configuration`` of ``plans`` (read from ``source``, a file or a
    description) makes nnU-Net build; returns its kind, or raises :class:`PlansRefusedError`."""
    merged, origin = effective_configuration(plans, configuration, source)
    return check_architecture(merged.get("architecture"), f"{source}: configurations.{origin}.architecture")
