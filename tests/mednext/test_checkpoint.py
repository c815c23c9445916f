"""Loading reference (nnU-Net v1) checkpoints and scalekit checkpoints, safely."""

from __future__ import annotations

from pathlib import Path

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

from tests.helpers.reference_layout import random_reference_state, reference_shapes
from tests.helpers.checkpoints import write_v1_checkpoint


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


def test_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    """Whatever the bytes, the error is a CheckpointError (a ValueError) that names the file."""
    good = save_checkpoint(tmp_path / "good.pt", create_mednext("T", 1, 3, 3, True))
    legacy = tmp_path / "legacy.pt"
    state = {"stem.weight": torch.zeros(2, 1, 1, 1, 1)}
    torch.save({"state_dict": state}, legacy, _use_new_zipfile_serialization=False)
    cases = {
        "notes.txt": (b"hello, not a checkpoint\n", "is not a PyTorch checkpoint: it is neither torch.save's zip"),
        "empty.pt": (b"", "is empty"),
        "truncated.pt": (good.read_bytes()[:2000], "is not a readable PyTorch checkpoint (truncated or corrupted?)"),
        "legacy_cut.pt": (legacy.read_bytes()[:-10], "is not a readable PyTorch checkpoint (truncated or corrupted?)"),
    }
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError) as info:
            load_state(tmp_path / name)
        message = str(info.value)
        assert message.startswith(str(tmp_path / name)) or message.startswith(f"checkpoint file {tmp_path / name}")
        assert expected in message and "\n" not in message, message
    with pytest.raises(CheckpointError, match="is a folder"):
        load_state(tmp_path)


def test_weights_that_do_not_fit_the_architecture(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "k3.pt", create_mednext("T", 1, 3, 3, True))
    with pytest.raises(CheckpointError) as info:
        load_mednext(path, kernel_size=5)
    message = str(info.value)
    assert message.startswith(f"{path}: its weights do not fit the MedNeXt it describes with kernel_size=5: ")
    assert "enc_block_0.0.conv1.weight (" in message and "3, 3, 3) vs (" in message and "5, 5, 5)" in message
    assert " more" in message  # only the first few mismatching tensors are listed


def test_failed_save_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_mednext("T", 1, 3, 3, True)
    with pytest.raises(CheckpointError, match="is a folder; give the checkpoint's file name"):
        save_checkpoint(tmp_path, model)

    def full_disk(obj: object, path: Path) -> None:
        Path(path).write_bytes(b"PK\x03\x04partial")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path / "out" / "model.pt", model)
    assert list((tmp_path / "out").iterdir()) == []
