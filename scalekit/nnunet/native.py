"""nnU-Net's own trained-model folder for an exported network, which nnU-Net's predictor loads with the stock
trainer class: ``nnUNetPredictor().initialize_from_trained_model_folder(folder, use_folds=(fold,))``, or
``nnUNetv2_predict_from_modelfolder -m folder -f fold``; no scalekit code is needed to predict with it.

Layout, as ``nnUNetv2_train`` leaves a training under ``nnUNet_results``::

    <MODEL_ROOT>/<DatasetXXX_Name>/<trainer>__<plans>__<configuration>/
        plans.json  dataset.json  fold_<f>/checkpoint_final.pth

so ``nnUNetv2_predict -d XXX -tr nnUNetTrainer -p <plans> -c <configuration> -f <f>`` finds it too, with
``nnUNet_results`` set to the export's ``MODEL_ROOT`` folder. The checkpoint holds the entries nnU-Net's trainer
saves that its predictor reads: ``network_weights``, ``init_args`` (plans, configuration, fold, dataset_json),
``trainer_name`` and ``inference_allowed_mirroring_axes``; no optimizer state or training log (it is predicted
with, or started from with ``-pretrained_weights``, not continued). It holds only tensors, dicts, lists, strings
and numbers, so it reads with ``weights_only=True`` (scalekit reads every checkpoint so). Imports no nnunetv2.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from scalekit._atomic import Staging
from scalekit.errors import ScalekitError

from .plans import STOCK_TRAINER

MODEL_ROOT = "nnUNet_trained_model"
"""The export's folder that plays ``nnUNet_results`` for nnU-Net's predictor (apart from ``nnUNet_results`` of
``train.sh``, whose training would replace the exported checkpoint)."""
CHECKPOINT = "checkpoint_final.pth"


def nnunet_fold(fold: int | str) -> int | Literal["all"]:
    """A fold as nnU-Net's trainer keeps it: an integer >= 0, or ``"all"``."""
    if str(fold) == "all":
        return "all"
    if isinstance(fold, bool) or not str(fold).isdigit():
        raise ScalekitError(f"fold {fold!r} is not a fold of nnU-Net: use an integer >= 0 or 'all'")
    return int(fold)


def mirroring_axes(dim: int) -> tuple[int, ...]:
    """The axes nnU-Net's trainer allows test-time mirroring to flip (its
    ``configure_rotation_dummyDA_mirroring_and_inital_patch_size``): every spatial axis, (0, 1) in 2-D and
    (0, 1, 2) in 3-D."""
    if dim not in (2, 3):
        raise ScalekitError(f"nnU-Net trains 2-D and 3-D networks, not {dim}-D ones")
    return tuple(range(dim))


@dataclass(frozen=True)
class TrainedModelFolder:
    """Where the trained-model folder of an export lies (relative to the export folder) and what its checkpoint
    says about the training: the dataset, plans and configuration it belongs to, the fold and the trainer."""

    dataset_name: str
    plans_identifier: str
    configuration: str
    fold: int | Literal["all"]
    dim: int
    trainer_name: str = STOCK_TRAINER

    @property
    def folder(self) -> Path:
        """The model folder, as ``nnUNetv2_train`` names it under ``nnUNet_results``."""
        return (Path(MODEL_ROOT) / self.dataset_name
                / f"{self.trainer_name}__{self.plans_identifier}__{self.configuration}")

    @property
    def checkpoint(self) -> Path:
        return self.folder / f"fold_{self.fold}" / CHECKPOINT

    def checkpoint_data(self, weights: Mapping[str, torch.Tensor], plans: dict[str, Any],
                        dataset_json: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint's entries, in the layout of ``nnUNetTrainer.save_checkpoint``."""
        return {
            "network_weights": {k: v.detach().cpu().clone() for k, v in weights.items()},
            "init_args": {"plans": plans, "configuration": self.configuration, "fold": self.fold,
                          "dataset_json": dataset_json},
            "trainer_name": self.trainer_name,
            "inference_allowed_mirroring_axes": mirroring_axes(self.dim),
        }

    def write(self, staging: Staging, weights: Mapping[str, torch.Tensor], plans: dict[str, Any],
              dataset_json: dict[str, Any]) -> list[Path]:
        """Write plans.json, dataset.json and the fold's checkpoint into ``staging``; returns their final paths
        (the checkpoint first)."""
        with staging.file(self.checkpoint.as_posix()) as path:
            torch.save(self.checkpoint_data(weights, plans, dataset_json), path)
        return [staging.final / self.checkpoint,
                staging.write((self.folder / "plans.json").as_posix(), json.dumps(plans, indent=2) + "\n"),
                staging.write((self.folder / "dataset.json").as_posix(), json.dumps(dataset_json, indent=2) + "\n")]
