"""UpKern: kernel resampling that follows the reference, bit-exact copies, and refusal of mismatches."""

from __future__ import annotations

import pytest
import torch

from scalekit.mednext import MedNeXt, UpKernError, create_mednext, preset_config, resample_kernel, upkern


def test_3_to_5_taps_per_axis() -> None:
    w = torch.tensor([1.0, 2.0, 7.0]).view(1, 1, 3)
    taps = resample_kernel(w, (5,)).flatten()
    w0, w1, w2 = 1.0, 2.0, 7.0
    expected = torch.tensor([w0, 0.6 * w0 + 0.4 * w1, w1, 0.4 * w1 + 0.6 * w2, w2])
    torch.testing.assert_close(taps, expected, rtol=0, atol=1e-6)
    # Trilinear is separable: a rank-one 3-D kernel resamples axis by axis.
    a, b, c = torch.randn(3), torch.randn(3), torch.randn(3)
    cube = torch.einsum("i,j,k->ijk", a, b, c).view(1, 1, 3, 3, 3)
    up = resample_kernel(cube, (5, 5, 5))[0, 0]
    ra, rb, rc = (resample_kernel(v.view(1, 1, 3), (5,)).flatten() for v in (a, b, c))
    torch.testing.assert_close(up, torch.einsum("i,j,k->ijk", ra, rb, rc), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("k_from", "k_to"), [(3, 5), (5, 7), (5, 3)])
def test_upkern_copies_equal_tensors_bit_for_bit(k_from: int, k_to: int) -> None:
    torch.manual_seed(0)
    source = create_mednext("T", 1, 3, k_from, True)
    target = create_mednext("T", 1, 3, k_to, True)
    report = upkern(target, source)
    src, dst = source.state_dict(), target.state_dict()
    assert set(report.copied) | {n for n, _, _ in report.resampled} == set(dst)
    assert not report.left_at_init and not report.unused_source
    for name in report.copied:
        assert torch.equal(src[name], dst[name]), name
    resampled = {n for n, _, _ in report.resampled}
    assert all(name.endswith("conv1.weight") for name in resampled)
    # every depthwise conv of every block, down and up block: 9 stages x 1 block + 4 down + 4 up (preset T)
    assert len(resampled) == 17
    for name in resampled:
        assert torch.equal(dst[name], resample_kernel(src[name], (k_to,) * 3))
        centre_src = src[name][..., k_from // 2, k_from // 2, k_from // 2]
        centre_dst = dst[name][..., k_to // 2, k_to // 2, k_to // 2]
        torch.testing.assert_close(centre_dst, centre_src, rtol=0, atol=1e-6)


def test_chain_3_5_7_and_2d() -> None:
    k3 = create_mednext("T", 1, 2, 3, dim=2)
    k5 = create_mednext("T", 1, 2, 5, dim=2)
    k7 = create_mednext("T", 1, 2, 7, dim=2)
    upkern(k5, k3)
    report = upkern(k7, k5.state_dict())
    w = k7.state_dict()["enc_block_0.0.conv1.weight"]
    assert w.shape[-2:] == (7, 7) and report.resampled
    assert torch.equal(k7.stem.weight, k3.stem.weight)
    assert k7(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_class_count_mismatch_refused_with_tensor_names() -> None:
    source = create_mednext("T", 1, 4, 3, True)
    target = create_mednext("T", 1, 3, 5, True)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(UpKernError) as info:
        upkern(target, source)
    message = str(info.value)
    for level in range(5):
        assert f"out_{level}.conv_out.weight: source (" in message
        assert f"out_{level}.conv_out.bias" in message
    assert "allow_uninitialised" in message
    for k, v in target.state_dict().items():  # nothing was changed
        assert torch.equal(v, before[k])
    report = upkern(target, source, allow_uninitialised=True)
    assert sorted(report.left_at_init) == sorted(
        f"out_{lvl}.conv_out.{p}" for lvl in range(5) for p in ("weight", "bias")
    )
    assert torch.equal(target.state_dict()["out_0.conv_out.bias"], before["out_0.conv_out.bias"])


def test_missing_heads_refused_unless_allowed() -> None:
    source = MedNeXt(preset_config("T", 1, 3, 3, deep_supervision=False))
    target = MedNeXt(preset_config("T", 1, 3, 5, deep_supervision=True))
    with pytest.raises(UpKernError, match=r"out_4.conv_out.weight: missing in source"):
        upkern(target, source)
    assert len(upkern(target, source, allow_uninitialised=True).left_at_init) == 8
