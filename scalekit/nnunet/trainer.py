"""``ScalekitMedNeXtTrainer``: an nnU-Net v2 trainer with the MedNeXt recipe (Roy et al. 2023, section 4).

AdamW (lr 1e-3, weight decay 3e-5, eps 1e-4), poly learning-rate schedule, gradient clipping at 12, Dice + CE
with deep-supervision weights 16:8:4:2:1 over MedNeXt's five outputs, AMP on CUDA. The network comes from the
plans' ``architecture`` entry (:mod:`scalekit.nnunet.adapter`); epochs, iterations, learning rate, AMP and the
checkpoint interval come from the configuration's ``scalekit_trainer`` entry (:class:`TrainerSettings`), so the
stock ``nnUNetv2_train -tr ScalekitMedNeXtTrainer`` trains exactly what the plans say.

Checkpoints are read with ``torch.load(weights_only=True)`` (nnU-Net's own loader unpickles anything), and the
network is built by scalekit after :func:`~scalekit.nnunet.networks.check_architecture` (nnU-Net's own builder
imports and calls whatever class the plans name), in training and in nnU-Net's own inference alike.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch._dynamo import OptimizedModule

from scalekit.errors import ScalekitError
from scalekit.faults import injected
from scalekit import networks
from scalekit.networks import recipe

from .checkpoints import read_nnunet_checkpoint
from .errors import NonFiniteLossError
from .networks import check_architecture
from .plans import SETTINGS_KEY, TrainerSettings


class ScalekitMedNeXtTrainer(nnUNetTrainer):
    """nnU-Net v2 trainer for scalekit MedNeXt networks (see the module docstring for the recipe).

    ``epoch_callback``, if set, is called after every epoch with :meth:`epoch_metrics`.
    """

    inference_allowed_mirroring_axes: tuple[int, ...] | None
    """nnU-Net's: the axes test-time mirroring may flip (set when the trainer configures its augmentation)."""

    def __init__(self, plans: dict, configuration: str, fold: int | Literal["all"], dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.settings = TrainerSettings.from_dict(self.configuration_manager.configuration.get(SETTINGS_KEY, {}))
        self.num_epochs = self.settings.num_epochs
        self.num_iterations_per_epoch = self.settings.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.settings.val_iterations
        self.initial_lr = self.settings.initial_lr
        self.weight_decay = recipe.WEIGHT_DECAY
        self.save_every = self.settings.checkpoint_every
        self.amp_dtype = recipe.resolve_amp(self.settings.amp, self.device)
        if self.amp_dtype != torch.float16:
            self.grad_scaler = None
        if not self.settings.plot_progress:
            self.logger.plot_progress_png = lambda output_folder: None
        self.epoch_callback: Callable[[dict[str, Any]], None] | None = None
        self._train_started = time.monotonic()

    @staticmethod
    def build_network_architecture(plans_manager: Any, configuration_manager: Any, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> torch.nn.Module:
        """The configuration's network (nnU-Net calls this to build the network for training and inference),
        of the registered kind the plans name, refused before anything is built if they name another network."""
        architecture = configuration_manager.configuration.get("architecture")
        kind = check_architecture(architecture, f"plans {plans_manager.plans_name}: the configuration's architecture")
        return kind.build(num_input_channels, num_output_channels, enable_deep_supervision,
                          **architecture.get("arch_kwargs", {}))

    def bare_network(self) -> torch.nn.Module:
        """The network being trained, without its DDP and ``torch.compile`` wrappers."""
        module = self.network.module if self.is_ddp else self.network
        if isinstance(module, OptimizedModule):
            module = module._orig_mod
        networks.config_of(module)
        return module

    def configure_optimizers(self):
        optimizer = networks.make_optimizer(networks.config_of(self.bare_network()), self.network.parameters(), lr=self.initial_lr)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        return [[1.0 / f for f in strides] for strides in networks.output_strides(networks.config_of(self.bare_network()))]

    def _build_loss(self):
        if self.label_manager.has_regions:
            raise ScalekitError("ScalekitMedNeXtTrainer trains label maps; region-based datasets are not supported")
        loss = DC_and_CE_loss(
            {"batch_dice": self.configuration_manager.batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": self.is_ddp},
            {}, weight_ce=1, weight_dice=1, ignore_label=self.label_manager.ignore_label,
            dice_class=MemoryEfficientSoftDiceLoss,
        )
        if not self.enable_deep_supervision:
            return loss
        return DeepSupervisionWrapper(loss, networks.loss_weights(networks.config_of(self.bare_network())))

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        networks.set_deep_supervision(self.bare_network(), enabled)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        if isinstance(target, list):
            target = [t.to(self.device, non_blocking=True) for t in target]
        else:
            target = target.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.loss(self.network(data), target)
        value = float("nan") if injected("nan-loss", self.output_folder) else float(loss.detach())
        if not np.isfinite(value):
            raise NonFiniteLossError(self.current_epoch, value)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), recipe.GRAD_CLIP)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), recipe.GRAD_CLIP)
            self.optimizer.step()
        return {"loss": np.array(value)}

    def on_train_start(self):
        self._train_started = time.monotonic()
        super().on_train_start()

    def epoch_metrics(self) -> dict[str, Any]:
        """Metrics of the last finished epoch: epoch, train_loss, val_loss, ema_fg_dice, mean_fg_dice, lr,
        epoch_seconds, elapsed_seconds (since this process started training)."""
        value = self.logger.get_value
        return {
            "epoch": self.current_epoch - 1,
            "train_loss": float(value("train_losses", step=-1)),
            "val_loss": float(value("val_losses", step=-1)),
            "ema_fg_dice": float(value("ema_fg_dice", step=-1)),
            "mean_fg_dice": float(value("mean_fg_dice", step=-1)),
            "lr": float(value("lrs", step=-1)),
            "epoch_seconds": float(value("epoch_end_timestamps", step=-1) - value("epoch_start_timestamps", step=-1)),
            "elapsed_seconds": time.monotonic() - self._train_started,
        }

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.epoch_callback is not None:
            self.epoch_callback(self.epoch_metrics())

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temporary file that replaces the old one: a kill mid-save leaves
        the previous checkpoint intact instead of a truncated file that could not be resumed from."""
        partial = f"{filename}.partial"
        super().save_checkpoint(partial)
        if os.path.exists(partial):
            os.replace(partial, filename)

    def load_checkpoint(self, filename_or_checkpoint: dict | str | Path) -> None:
        """Continue from an nnU-Net checkpoint of this trainer, read without unpickling code."""
        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        if not isinstance(checkpoint, dict):
            checkpoint = read_nnunet_checkpoint(Path(checkpoint))
        weights = {k.removeprefix("module."): v for k, v in checkpoint["network_weights"].items()}
        self.bare_network().load_state_dict(weights)
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get(
            "inference_allowed_mirroring_axes", self.inference_allowed_mirroring_axes
        )
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint.get("grad_scaler_state") is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])

    def shutdown_dataloaders(self) -> None:
        """Stop augmentation worker processes (after an error; ``on_train_end`` does it after success)."""
        for loader in (self.dataloader_train, self.dataloader_val):
            finish = getattr(loader, "_finish", None)
            if finish is not None:
                finish()
