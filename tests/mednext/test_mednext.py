"""MedNeXt architecture: parameter counts, outputs, checkpointing, options and argument errors."""

from __future__ import annotations

import pytest
import torch

from scalekit.mednext import MedNeXt, MedNeXtConfig, count_parameters, create_mednext, preset_config

# Reference parameter counts (in_channels=1, num_classes=14, deep supervision) from the reference code,
# minus its one-element dummy_tensor, which scalekit does not register.
REFERENCE_PARAMS = {
    ("S", 3): 5_564_807, ("S", 5): 5_994_439, ("S", 7): 6_950_151,
    ("B", 3): 10_540_199, ("B", 5): 10_969_831, ("B", 7): 11_925_543,
    ("M", 3): 17_562_855, ("M", 5): 18_274_727, ("M", 7): 19_858_279,
    ("L", 3): 61_793_159, ("L", 5): 63_006_791, ("L", 7): 65_706_503,
}
REFERENCE_PARAMS_NO_DS = {("S", 3): 5_551_311, ("L", 5): 62_993_295, ("M", 7): 19_844_783}


@pytest.mark.parametrize(("preset", "kernel"), sorted(REFERENCE_PARAMS))
def test_parameter_count_matches_reference(preset: str, kernel: int) -> None:
    with torch.device("meta"):
        model = create_mednext(preset, in_channels=1, num_classes=14, kernel_size=kernel, deep_supervision=True)
    assert count_parameters(model) == REFERENCE_PARAMS[(preset, kernel)] - 1


@pytest.mark.parametrize(("preset", "kernel"), sorted(REFERENCE_PARAMS_NO_DS))
def test_parameter_count_without_deep_supervision(preset: str, kernel: int) -> None:
    with torch.device("meta"):
        model = create_mednext(preset, 1, 14, kernel, deep_supervision=False)
    assert count_parameters(model) == REFERENCE_PARAMS_NO_DS[(preset, kernel)] - 1


def test_block_parameter_formula_with_grn() -> None:
    """Per block c*k^D + 2rc^2 + rc + 4c, plus 2rc with GRN (spec 1.1); GRN is skipped in down_0 (spec 5.3)."""
    plain = create_mednext("T", kernel_size=3)
    grn = create_mednext("T", kernel_size=3, grn=True)
    assert not hasattr(grn.down_0, "grn_gamma") and hasattr(grn.down_1, "grn_gamma")
    c, r = 4, 2
    block = grn.enc_block_0[0]
    assert count_parameters(block) == c * 27 + 2 * r * c * c + r * c + 4 * c + 2 * r * c
    assert block.grn_gamma.shape == (1, r * c, 1, 1, 1)
    blocks_with_grn = sum(1 for m in grn.modules() if hasattr(m, "grn_gamma"))
    extra = count_parameters(grn) - count_parameters(plain)
    assert extra == sum(2 * m.grn_gamma.numel() for m in grn.modules() if hasattr(m, "grn_gamma"))
    assert blocks_with_grn == 9 + 3 + 4  # nine single-block stages, down_1..3, up_0..3


@pytest.mark.parametrize("dim", [2, 3])
def test_deep_supervision_outputs_full_resolution_first(dim: int) -> None:
    torch.manual_seed(0)
    model = create_mednext("T", in_channels=2, num_classes=3, deep_supervision=True, dim=dim)
    spatial = (32, 64, 48)[:dim] if dim == 3 else (32, 64)
    x = torch.randn(2, 2, *spatial)
    outputs = model(x)
    assert isinstance(outputs, list) and len(outputs) == 5
    for level, out in enumerate(outputs):
        assert out.shape == (2, 3, *(s // 2**level for s in spatial))
    model.deep_supervision = False
    single = model(x)
    assert isinstance(single, torch.Tensor)
    assert torch.equal(single, outputs[0])


def test_deep_supervision_cannot_be_enabled_without_heads() -> None:
    model = create_mednext("T", deep_supervision=False)
    with pytest.raises(ValueError, match="without deep-supervision heads"):
        model.deep_supervision = True


@pytest.mark.parametrize("options", [{}, {"grn": True, "norm_type": "layer"}])
@pytest.mark.parametrize("dim", [2, 3])
def test_checkpointing_gives_same_outputs_and_gradients(dim: int, options: dict) -> None:
    torch.manual_seed(1)
    config = preset_config("T", 1, 3, 3, True, dim, **options)
    plain = MedNeXt(config).double()
    with torch.no_grad():  # make GRN active (it is the identity at initialisation)
        for name, p in plain.named_parameters():
            if "grn" in name:
                p.normal_()
    ckpt = MedNeXt(config.replace(checkpointing=True)).double()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, *(32,) * dim, dtype=torch.float64)
    outs_plain, outs_ckpt = plain(x), ckpt(x)
    loss_plain = sum(o.square().mean() for o in outs_plain)
    loss_ckpt = sum(o.square().mean() for o in outs_ckpt)
    loss_plain.backward()
    loss_ckpt.backward()
    for a, b in zip(outs_plain, outs_ckpt):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-5, msg=name)


def test_layer_norm_works_in_2d_and_normalises_channels() -> None:
    model = create_mednext("T", num_classes=2, dim=2, norm_type="layer")
    out = model(torch.randn(1, 1, 32, 32))
    assert out.shape == (1, 2, 32, 32)
    norm = model.enc_block_0[0].norm
    y = norm(torch.randn(2, 4, 5, 6) * 3 + 2)
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(2, 5, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=1, unbiased=False), torch.ones(2, 5, 6), atol=1e-3, rtol=0)


@pytest.mark.parametrize(("alignment", "offset"), [("reference", 1), ("aligned", 0)])
def test_up_block_alignment(alignment: str, offset: int) -> None:
    """Reference: coarse voxel i lands on fine index 2i+1 (spec 1.3); aligned: on 2i."""
    from scalekit.mednext import MedNeXtUpBlock

    block = MedNeXtUpBlock(1, 1, exp_r=1, kernel_size=3, do_res=True, dim=3, alignment=alignment)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
        block.res_conv.weight.fill_(1.0)
    x = torch.zeros(1, 1, 4, 4, 4)
    x[0, 0, 1, 2, 3] = 1.0
    y = block(x)
    assert y.shape == (1, 1, 8, 8, 8)
    hit = (y[0, 0] == 1.0).nonzero().tolist()
    assert hit == [[2 + offset, 4 + offset, 6 + offset]]


def test_config_round_trip_and_kernel_override() -> None:
    config = preset_config("B", 1, 14, kernel_size=5, deep_supervision=True)
    assert MedNeXtConfig.from_dict(config.to_dict()) == config
    assert config.replace(kernel_size=7).enc_kernel_size == 7
    mixed = config.replace(enc_kernel_size=3, dec_kernel_size=5)
    model = MedNeXt(mixed)
    assert model.enc_block_0[0].conv1.weight.shape[-1] == 3
    assert model.down_3.conv1.weight.shape[-1] == 3
    assert model.bottleneck[0].conv1.weight.shape[-1] == 5  # bottleneck uses the decoder kernel
    assert model.up_3.conv1.weight.shape[-1] == 5
    with pytest.raises(ValueError, match="unknown MedNeXt config field"):
        MedNeXtConfig.from_dict({"widht": 3})


# ---- argument errors: each names the value and the rule ------------------------------------------------------


@pytest.mark.parametrize("kernel", [2, 4, 6, 0])
def test_even_kernel_rejected(kernel: int) -> None:
    with pytest.raises(ValueError, match=rf"kernel_size={kernel} is not allowed.*odd"):
        create_mednext("S", kernel_size=kernel)


@pytest.mark.parametrize("spatial", [(40, 32, 32), (32, 33, 32), (100, 96, 96)])
def test_spatial_size_not_divisible_by_16(spatial: tuple[int, ...]) -> None:
    model = create_mednext("T")
    with pytest.raises(ValueError, match=r"divisible by 16") as info:
        model(torch.zeros(1, 1, *spatial))
    assert str(spatial) in str(info.value)


@pytest.mark.parametrize("training", [True, False])
def test_one_voxel_bottleneck_with_group_norm(training: bool) -> None:
    model = create_mednext("T").train(training)
    with pytest.raises(ValueError, match=r"\(16, 16, 16\).*one voxel.*GroupNorm"):
        model(torch.zeros(2, 1, 16, 16, 16))
    layer_norm = create_mednext("T", norm_type="layer").train(training)
    assert layer_norm(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


@pytest.mark.parametrize("field", ["block_counts", "exp_r"])
def test_stage_lists_of_wrong_length(field: str) -> None:
    with pytest.raises(ValueError, match=rf"{field} must have 9 entries.*got 8"):
        MedNeXtConfig(**{field: [2] * 8})


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match=r"unknown MedNeXt preset 'XL'.*S, B, M, L"):
        create_mednext("XL")


def test_wrong_input_channels() -> None:
    model = create_mednext("T", in_channels=2)
    with pytest.raises(ValueError, match=r"\(1, 1, 32, 32, 32\).*\(N, 2, S, S, S\)"):
        model(torch.zeros(1, 1, 32, 32, 32))
