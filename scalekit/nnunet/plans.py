"""nnU-Net plans entries for scalekit: the trainer's settings and a MedNeXt configuration inheriting the
preprocessed one. Plain data; nothing here imports nnunetv2."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from scalekit.errors import ScalekitError
from scalekit.networks import NetworkConfig, recipe

from .dataset import PreparedDataset
from .networks import plans_architecture

SETTINGS_KEY = "scalekit_trainer"
"""Key of the trainer settings inside a plans configuration (nnU-Net keeps unknown keys)."""
TRAINER_NAME = "ScalekitMedNeXtTrainer"


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
    """A plans configuration that inherits the preprocessed one and trains ``arch`` on scalekit's patch.

    ``batch_size`` overrides nnU-Net's planned batch size (the paper keeps nnU-Net's, normally 2).
    """
    check_architecture(prepared, arch)
    if batch_size is not None and batch_size < 1:
        raise ScalekitError(f"batch_size must be >= 1, got {batch_size}")
    configuration: dict[str, Any] = {
        "inherits_from": prepared.configuration,
        "patch_size": list(prepared.patch_size),
        "architecture": plans_architecture(arch),
        SETTINGS_KEY: settings.to_dict(),
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
