"""Validation metrics of a trained network: nnU-Net's sliding-window prediction of the fold's validation cases,
then Dice and surface Dice per foreground class in the original image space (:mod:`scalekit.metrics`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scalekit import networks
from scalekit.errors import ScalekitError
from scalekit.metrics import case_metrics, mean_over_cases

from . import _env
from .inference import make_predictor
from .dataset import PreparedDataset
from .splits import SPLITS_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldMetrics:
    """Per-class means over the validation cases (foreground classes, in label order) and their means, and each
    case's mean foreground Dice (the spread between cases says how finely two networks can be told apart)."""

    cases: tuple[str, ...]
    per_class_dice: tuple[float, ...]
    per_class_nsd: tuple[float, ...]
    tolerance_mm: float
    case_dice: tuple[float, ...] = ()

    @property
    def mean_dice(self) -> float:
        return float(np.nanmean(self.per_class_dice)) if self.per_class_dice else float("nan")

    @property
    def mean_nsd(self) -> float:
        return float(np.nanmean(self.per_class_nsd)) if self.per_class_nsd else float("nan")


def validation_cases(prepared: PreparedDataset, fold: int) -> list[str]:
    """The validation case ids of ``fold`` from the dataset's ``splits_final.json``."""
    splits = json.loads((prepared.preprocessed_dir / SPLITS_FILE).read_text())
    if not 0 <= fold < len(splits):
        raise ScalekitError(f"fold {fold} does not exist; {prepared.dataset_name} has folds 0..{len(splits) - 1}")
    return sorted(splits[fold]["val"])


def evaluate_fold(
    prepared: PreparedDataset,
    plans: dict[str, Any],
    configuration: str,
    network: torch.nn.Module,
    fold: int,
    device: torch.device,
    tolerance_mm: float = 1.0,
    mirror: bool = False,
) -> FoldMetrics:
    """Predict the validation cases of ``fold`` with ``network`` and score them against the raw labels.

    ``mirror`` switches on nnU-Net's mirroring test-time augmentation (8 forward passes per window in 3-D).
    """
    _env.configure(preprocessed=prepared.preprocessed_root)
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(plans)
    dataset_json = prepared.load_dataset_json()
    ending = dataset_json["file_ending"]
    cases = validation_cases(prepared, fold)
    networks.set_deep_supervision(network, False)
    network.eval()
    image_lists = [
        [str(prepared.raw_dir / "imagesTr" / f"{case}_{channel:04d}{ending}")
         for channel in range(prepared.num_input_channels)]
        for case in cases
    ]
    predictor = make_predictor(network, plans, configuration, dataset_json, device, mirror)
    with _env.nnunet_output_to_log():
        predictions = predictor.predict_from_files_sequential(image_lists, None)
    reader = plans_manager.image_reader_writer_class()
    labels = range(1, prepared.num_classes)
    dices, nsds = [], []
    for case, prediction in zip(cases, predictions):
        reference, properties = reader.read_seg(str(prepared.raw_dir / "labelsTr" / f"{case}{ending}"))
        result = case_metrics(np.asarray(prediction), reference[0], labels, properties["spacing"], tolerance_mm)
        log.debug("%s: dice %s nsd %s", case, result.dice, result.nsd)
        dices.append(result.dice)
        nsds.append(result.nsd)
    case_dice = tuple(float(np.nanmean(d)) if np.isfinite(d).any() else float("nan") for d in map(np.asarray, dices))
    return FoldMetrics(tuple(cases), tuple(mean_over_cases(dices)), tuple(mean_over_cases(nsds)), tolerance_mm,
                       case_dice)
