"""The training recipe has one home: the trial trainer and the profiler's step read the same module."""

from __future__ import annotations

import pytest
import torch

from scalekit.mednext import MedNeXtConfig
from scalekit.networks import recipe


def test_trainer_and_profiler_step_share_the_recipe() -> None:
    from scalekit.nnunet import trainer
    from scalekit.profiler import step

    assert trainer.recipe is recipe and step.recipe is recipe
    optimizer = step.make_optimizer(torch.nn.Linear(2, 2), MedNeXtConfig())
    assert optimizer.defaults["lr"] == recipe.INITIAL_LR
    assert optimizer.defaults["weight_decay"] == recipe.WEIGHT_DECAY and optimizer.defaults["eps"] == recipe.ADAM_EPS


def test_amp_and_device_settings() -> None:
    cpu = torch.device("cpu")
    assert recipe.resolve_amp("auto", cpu) is None and recipe.resolve_amp("none", cpu) is None
    assert recipe.resolve_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="needs a CUDA device"):
        recipe.resolve_amp("fp16", cpu)
    with pytest.raises(ValueError, match="unknown"):
        recipe.resolve_amp("fp8", cpu)
    assert recipe.resolve_device("cpu") == cpu
    with pytest.raises(ValueError, match="unknown"):
        recipe.resolve_device("tpu")
