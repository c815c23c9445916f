"""Loading reference (nnU-Net v1) checkpoints and scalekit checkpoints, safely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scalekit.mednext import (
    CheckpointError,
    MedNeXt,
    create_mednext,
    infer_config,
    load_mednext,
    load_state,
    save_checkpoint,
    translate_reference_state_dict,
)

from .reference_layout import random_reference_state, reference_shapes


def write_v1_checkpoint(path: Path, state: dict) -> Path:
    """A file shaped like nnU-Net v1's ``*.model``: weights plus optimizer state and numpy training curves."""
    torch.save(
        {
            "epoch": 12,
            "state_dict": state,
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
            "amp_grad_scaler": {"scale": 65536.0, "growth_factor": 2.0},
            "plot_stuff": ([np.float64(0.5), np.float32(0.4)], [0.6], [], [np.float64(0.1)]),
            "best_stuff": (3, np.float64(0.7), np.float64(0.71)),
        },
        path,
    )
    return path


def test_reference_layout_matches_scalekit_names_and_shapes() -> None:
    ref = reference_shapes()  # MedNeXt-S k3, 1 -> 14, deep supervision
    ours = {k: tuple(v.shape) for k, v in create_mednext("S", 1, 14, 3, True).state_dict().items()}
    ref.pop("dummy_tensor")
    assert ours == ref


@pytest.mark.parametrize("prefix", ["", "module."])
def test_v1_checkpoint_loads_strictly_with_same_outputs(tmp_path: Path, prefix: str) -> None:
    layout = dict(n_channels=4, num_classes=3, exp_r=(2, 3, 4, 4, 4, 4, 4, 3, 2),
                  block_counts=(1, 2, 1, 1, 2, 1, 1, 2, 1), kernel_size=5)
    state = random_reference_state(seed=3, prefix=prefix, **layout)
    path = write_v1_checkpoint(tmp_path / "model_final_checkpoint.model", state)
    model = load_mednext(path)
    config = model.config
    assert (config.n_channels, config.num_classes, config.enc_kernel_size) == (4, 3, 5)
    assert config.exp_r == layout["exp_r"] and config.block_counts == layout["block_counts"]
    assert config.deep_supervision and config.do_res_up_down
    loaded = model.state_dict()
    for key, value in state.items():
        key = key.removeprefix(prefix)
        if key != "dummy_tensor":
            assert torch.equal(loaded[key], value), key
    # A network built independently and given the translated weights computes the same outputs.
    twin = MedNeXt(config)
    twin.load_state_dict(translate_reference_state_dict(state), strict=True)
    x = torch.randn(1, 1, 32, 32, 32)
    model.eval(), twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], twin(x)[0], rtol=0, atol=0)


def test_infer_config_2d_without_deep_supervision() -> None:
    state = translate_reference_state_dict(
        random_reference_state(n_channels=8, num_classes=5, deep_supervision=False, dim=2, kernel_size=7)
    )
    config = infer_config(state)
    assert (config.dim, config.num_classes, config.deep_supervision, config.enc_kernel_size) == (2, 5, False, 7)
    MedNeXt(config).load_state_dict(state, strict=True)


def test_scalekit_checkpoint_round_trip(tmp_path: Path) -> None:
    model = create_mednext("T", 1, 3, 5, True, up_alignment="aligned")
    path = save_checkpoint(tmp_path / "a" / "ckpt.pt", model, epoch=3)
    state, config, kind = load_state(path)
    assert kind == "scalekit" and config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value)


class Payload:
    """Any class: unpickling it would run arbitrary code paths."""


def test_unsafe_checkpoint_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.model"
    torch.save({"state_dict": {}, "trainer": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.model holds Python objects that scalekit will not unpickle"):
        load_state(path)


def test_missing_and_non_mednext_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state(tmp_path / "nope.pt")
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not a MedNeXt state dict: missing 'stem.weight'"):
        load_state(tmp_path / "other.pt")
