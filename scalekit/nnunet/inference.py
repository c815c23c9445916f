"""nnU-Net v2's predictor set up directly with a network: how stages are validated and how ``scalekit predict``
segments, with the same sliding-window settings, so a prediction repeats a stage's validation exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


from . import _env
from .networks import check_plans
from .plans import TRAINER_NAME


def make_predictor(network: torch.nn.Module, plans: dict[str, Any], configuration: str, dataset_json: dict[str, Any],
                   device: torch.device, mirror: bool = False, source: str | Path = "the plans to predict with") -> Any:
    """An ``nnUNetPredictor`` for ``network`` (in eval mode, deep supervision off): sliding windows with
    half-patch steps and Gaussian weighting, mirroring test-time augmentation only if ``mirror``. No trainer is
    looked up by name; the plans (read from ``source``) must build a network scalekit registers."""
    check_plans(plans, configuration, source)
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    network.to(device)
    with _env.nnunet_output_to_log():
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror,
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    verbose=False, allow_tqdm=False)
        predictor.manual_initialization(network, plans_manager, configuration_manager, [network.state_dict()],
                                        dataset_json, TRAINER_NAME, tuple(range(len(configuration_manager.patch_size))))
    return predictor
