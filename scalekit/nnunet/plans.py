"""nnU-Net plans entries for scalekit: the trainer's settings and the configurations an export or a stage adds,
inheriting the preprocessed one (for scalekit's trainer, or for nnU-Net's stock one). Plain data; nothing here
imports nnunetv2."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from scalekit.errors import ScalekitError
from scalekit.networks import NetworkConfig, recipe
from scalekit.networks.mednext import MedNeXtConfig

from .dataset import PreparedDataset
from .networks import plans_architecture

SETTINGS_KEY = "scalekit_trainer"
"""Key of the trainer settings inside a plans configuration (nnU-Net keeps unknown keys)."""
TRAINER_NAME = "ScalekitMedNeXtTrainer"
STOCK_TRAINER = "nnUNetTrainer"
"""nnU-Net's own trainer, which trains networks of nnU-Net's own kinds (ResEnc) with its recipe and schedule."""


@dataclass(frozen=True)
class TrainerSettings:
    """How :class:`~scalekit.nnunet.trainer.ScalekitMedNeXtTrainer` trains (defaults: the MedNeXt paper).

    Attributes:
        num_epochs: epochs (paper: 1000).
        iterations_per_epoch: training batches per epoch (paper: 250).
        val_iterations: validation batches per epoch for nnU-Net's pseudo Dice (paper: 50).
        initial_lr: AdamW learning rate at epoch 0, decayed by the poly schedule (paper: 1e-3).
        amp: ``"auto"`` (fp16 autocast with a gradient scaler on CUDA, fp32 on CPU), ``"fp16"``, ``"bf16"``,
            or ``None`` / ``"none"`` (fp32).
        checkpoint_every: write ``checkpoint_latest.pth`` every this many epochs (trials: 1).
        plot_progress: draw nnU-Net's ``progress.png`` after every epoch (about a second each; off in trials).
    """

    num_epochs: int = recipe.EPOCHS
    iterations_per_epoch: int = recipe.ITERATIONS_PER_EPOCH
    val_iterations: int = recipe.VAL_ITERATIONS
    initial_lr: float = recipe.INITIAL_LR
    amp: str | None = "auto"
    checkpoint_every: int = 50
    plot_progress: bool = True

    def __post_init__(self) -> None:
        for name in ("num_epochs", "iterations_per_epoch", "val_iterations", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ScalekitError(f"trainer setting {name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.initial_lr, (int, float)) and self.initial_lr > 0):
            raise ScalekitError(f"initial_lr must be a positive number, got {self.initial_lr!r}")
        if self.amp not in recipe.AMP_SETTINGS:
            raise ScalekitError(f"amp={self.amp!r} is unknown; use one of {recipe.AMP_SETTINGS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ScalekitError(f"unknown {SETTINGS_KEY} setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; a missing file, invalid JSON or another JSON value is one line naming the
    file (``what`` says what the file should have been, or why it is needed)."""
    if not path.is_file():
        raise ScalekitError(f"{path} does not exist: {what}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        detail = f"{err.msg}, line {err.lineno}" if isinstance(err, json.JSONDecodeError) else err.reason
        raise ScalekitError(f"{path} is not valid JSON ({detail}): {what}") from None
    if not isinstance(data, dict):
        raise ScalekitError(f"{path} holds a JSON {type(data).__name__}, not an object: {what}")
    return data


def check_architecture(prepared: PreparedDataset, arch: NetworkConfig) -> None:
    """Raise a ValueError if ``arch`` cannot train on ``prepared`` (channels, classes, dimension, patch)."""
    problems = []
    if arch.in_channels != prepared.num_input_channels:
        problems.append(f"in_channels={arch.in_channels} but the dataset has {prepared.num_input_channels} channel(s)")
    if arch.num_classes != prepared.num_classes:
        problems.append(
            f"num_classes={arch.num_classes} but the dataset has {prepared.num_classes} classes "
            f"({', '.join(prepared.label_names)})"
        )
    if arch.dim != len(prepared.patch_size):
        problems.append(f"dim={arch.dim} but the patch {list(prepared.patch_size)} has {len(prepared.patch_size)} axes")
    if problems:
        raise ScalekitError(f"architecture does not fit dataset {prepared.dataset_name}: " + "; ".join(problems))
    arch.check_input_shape(prepared.patch_size)


def mednext_configuration(
    prepared: PreparedDataset, arch: NetworkConfig, settings: TrainerSettings, batch_size: int | None = None
) -> dict[str, Any]:
    """A plans configuration that inherits the preprocessed one and trains ``arch`` on scalekit's patch with
    scalekit's trainer (``settings`` under :data:`SETTINGS_KEY`).

    ``batch_size`` overrides nnU-Net's planned batch size (the paper keeps nnU-Net's, normally 2).
    """
    return _configuration(prepared, arch, batch_size, {SETTINGS_KEY: settings.to_dict()})


def native_configuration(prepared: PreparedDataset, arch: NetworkConfig,
                         batch_size: int | None = None) -> dict[str, Any]:
    """A plans configuration that inherits the preprocessed one and makes nnU-Net's stock trainer train ``arch``
    on scalekit's patch, as nnU-Net's planners write one: the patch, the batch size (``None``: the planned one)
    and the network's ``architecture``, no scalekit settings (the stock trainer trains its own schedule)."""
    return _configuration(prepared, arch, batch_size, {})


def _configuration(prepared: PreparedDataset, arch: NetworkConfig, batch_size: int | None,
                   extra: dict[str, Any]) -> dict[str, Any]:
    check_architecture(prepared, arch)
    if batch_size is not None and batch_size < 1:
        raise ScalekitError(f"batch_size must be >= 1, got {batch_size}")
    configuration: dict[str, Any] = {
        "inherits_from": prepared.configuration,
        "patch_size": list(prepared.patch_size),
        "architecture": plans_architecture(arch),
        **extra,
    }
    if batch_size is not None:
        configuration["batch_size"] = batch_size
    return configuration


def plans_with(
    prepared: PreparedDataset, configurations: dict[str, dict[str, Any]], plans_name: str | None = None,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The prepared plans (or ``base``) plus ``configurations``, optionally renamed to ``plans_name``."""
    plans = copy.deepcopy(base) if base is not None else prepared.load_plans()
    clash = sorted(set(configurations) & {prepared.configuration})
    if clash:
        raise ScalekitError(f"configuration name(s) {clash} would replace nnU-Net's own; choose another name")
    plans["configurations"].update(configurations)
    if plans_name is not None:
        plans["plans_name"] = plans_name
    return plans


def _mednext_name(prefix: str, arch: NetworkConfig) -> str:
    if not isinstance(arch, MedNeXtConfig):
        return prefix
    enc, dec = arch.enc_kernel_size, arch.dec_kernel_size
    return f"{prefix}_k{enc}" if enc == dec else f"{prefix}_k{enc}x{dec}"


def _mednext_chain(arch: NetworkConfig, from_weights: bool) -> list[NetworkConfig]:
    """A MedNeXt with a kernel above 3 and no starting weights trains k3 first and grows it with UpKern."""
    if (not from_weights and isinstance(arch, MedNeXtConfig) and arch.enc_kernel_size == arch.dec_kernel_size
            and arch.enc_kernel_size > 3):
        return [arch.replace(kernel_size=3), arch]
    return [arch]


@dataclass(frozen=True)
class KindExport:
    """How nnU-Net trains an exported network of one kind.

    Attributes:
        trainer_name: scalekit's trainer (found through ``nnUNet_extTrainer``; its settings in the plans) or
            nnU-Net's stock ``nnUNetTrainer`` (its own recipe and schedule; no scalekit code at all).
        chain: what ``train.sh`` trains, in order (the target last), given the target and whether it starts
            from weights.
        configuration_name: a configuration's name, from the prefix and its network.
    """

    trainer_name: str
    chain: Callable[[NetworkConfig, bool], list[NetworkConfig]] = lambda arch, from_weights: [arch]
    configuration_name: Callable[[str, NetworkConfig], str] = lambda prefix, arch: prefix

    @property
    def native(self) -> bool:
        """nnU-Net's own trainer: nnU-Net's plans entry, no trainer module, and a trained-model folder."""
        return self.trainer_name == STOCK_TRAINER

    def configuration(self, prepared: PreparedDataset, arch: NetworkConfig, settings: TrainerSettings,
                      batch_size: int | None) -> dict[str, Any]:
        if self.native:
            return native_configuration(prepared, arch, batch_size)
        return mednext_configuration(prepared, arch, settings, batch_size)


KIND_EXPORTS: dict[str, KindExport] = {
    "mednext": KindExport(TRAINER_NAME, _mednext_chain, _mednext_name),
    "resenc": KindExport(STOCK_TRAINER),
}
"""The kinds an export trains with nnU-Net, by registry name (:mod:`scalekit.networks`)."""


def kind_export(arch: str) -> KindExport:
    """How nnU-Net trains networks of the kind ``arch``; a one-line error for a kind it cannot train."""
    export = KIND_EXPORTS.get(arch)
    if export is None:
        raise ScalekitError(f"arch={arch!r} cannot be exported to nnU-Net; exportable kinds: "
                            f"{', '.join(sorted(KIND_EXPORTS))}")
    return export
