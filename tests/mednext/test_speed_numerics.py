"""The fast path of MedNeXt computes what the plain path computes, with the same parameters and state dicts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from scalekit.mednext import MedNeXt, MedNeXtUpBlock, create_mednext, upkern
from scalekit.mednext.speed import (
    depthwise_conv,
    keep_format,
    memory_format_for,
    strided_pointwise,
    transposed_pointwise,
)

CL = {2: torch.channels_last, 3: torch.channels_last_3d}


def _pair(**config) -> tuple[MedNeXt, MedNeXt]:
    torch.manual_seed(0)
    fast = create_mednext("T", **config)
    plain = copy.deepcopy(fast)
    plain.fast_path = False
    return fast, plain


def _loss(outputs) -> torch.Tensor:
    outputs = outputs if isinstance(outputs, list) else [outputs]
    return sum(o.float().square().mean() / 2**i for i, o in enumerate(outputs))


def _assert_same_training_step(fast: MedNeXt, plain: MedNeXt, x: torch.Tensor) -> None:
    out_fast, out_plain = fast(x), plain(x)
    out_fast = out_fast if isinstance(out_fast, list) else [out_fast]
    out_plain = out_plain if isinstance(out_plain, list) else [out_plain]
    assert [o.shape for o in out_fast] == [o.shape for o in out_plain]
    for a, b in zip(out_fast, out_plain):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()
    _loss(out_fast).backward()
    _loss(out_plain).backward()
    scale = max(p.grad.abs().max() for p in plain.parameters())
    for (name, a), b in zip(fast.named_parameters(), plain.parameters()):
        # a conv1 bias in front of a per-channel GroupNorm has a true gradient of 0 (rounding noise only),
        # so gradients are compared against the largest gradient of the network
        assert (a.grad - b.grad).abs().max() <= 1e-4 * b.grad.abs().max() + 1e-5 * scale, name


@pytest.mark.parametrize(
    "dim, config",
    [
        (3, dict(kernel_size=3, deep_supervision=True)),
        (3, dict(kernel_size=5, up_alignment="aligned", grn=True)),
        (3, dict(kernel_size=3, norm_type="layer", checkpointing=True, deep_supervision=True)),
        (2, dict(kernel_size=5, deep_supervision=True, checkpointing=True)),
        (2, dict(kernel_size=3, do_res=False, do_res_up_down=False)),
    ],
)
def test_fast_path_matches_plain_path(dim, config):
    fast, plain = _pair(in_channels=2, num_classes=3, dim=dim, **config)
    x = torch.randn(2, 2, *(32,) * dim)
    _assert_same_training_step(fast, plain, x)
    memory_format = memory_format_for(x.device, dim)
    assert fast(x)[0 if config.get("deep_supervision") else slice(None)].is_contiguous(memory_format=memory_format)
    assert plain.fast_path is False and all(not m.fast for m in plain.modules() if hasattr(m, "fast"))


def test_fast_path_is_the_default_and_switchable():
    model = create_mednext("T", 1, 2)
    assert model.fast_path is True
    model.fast_path = False
    assert not model.out_0.fast and not model.enc_block_0[0].fast
    model.fast_path = True
    assert model.up_0.fast and model.down_0.fast


def test_fast_path_under_cpu_autocast_matches_plain():
    fast, plain = _pair(in_channels=1, num_classes=2, kernel_size=3)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_fast, out_plain = fast(x), plain(x)
        assert out_fast.dtype == out_plain.dtype == torch.bfloat16
    # bf16 has 8 bits of mantissa; both paths round differently, but far below the signal
    assert (out_fast.float() - out_plain.float()).abs().max() <= 0.05 * out_plain.float().abs().max()
    _loss(out_fast).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in fast.parameters())


def test_state_dicts_cross_load_between_memory_formats_and_paths():
    torch.manual_seed(1)
    cl_model = create_mednext("T", 1, 2, kernel_size=3, deep_supervision=True).to(memory_format=CL[3])
    plain = create_mednext("T", 1, 2, kernel_size=3, deep_supervision=True)
    plain.fast_path = False
    plain.load_state_dict(cl_model.state_dict(), strict=True)
    x = torch.randn(1, 1, 32, 32, 32)
    cl_model.eval(), plain.eval()
    with torch.no_grad():
        for a, b in zip(cl_model(x), plain(x)):
            assert (a - b).abs().max() <= 1e-4 * b.abs().max()
    back = create_mednext("T", 1, 2, kernel_size=3, deep_supervision=True).to(memory_format=CL[3])
    back.load_state_dict(plain.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), plain.state_dict().values()))
    assert list(back.state_dict()) == list(plain.state_dict())


def test_upkern_into_fast_model_matches_plain():
    torch.manual_seed(2)
    k3 = create_mednext("T", 1, 2, kernel_size=3)
    fast = create_mednext("T", 1, 2, kernel_size=5)
    plain = create_mednext("T", 1, 2, kernel_size=5)
    plain.fast_path = False
    upkern(fast, k3)
    upkern(plain, k3)
    _assert_same_training_step(fast, plain, torch.randn(1, 1, 32, 32, 32))


@pytest.mark.parametrize("dim", [2, 3])
def test_rewritten_ops_equal_the_modules(dim):
    torch.manual_seed(3)
    conv = (nn.Conv2d, nn.Conv3d)[dim - 2]
    tconv = (nn.ConvTranspose2d, nn.ConvTranspose3d)[dim - 2]
    x = torch.randn(2, 6, *(9,) * dim, dtype=torch.float64).contiguous(memory_format=CL[dim])
    dw = conv(6, 6, 5, padding=2, groups=6).double()
    strided = conv(6, 4, 1, stride=2).double()
    head = tconv(6, 4, 1).double()
    for fn, module in ((depthwise_conv, dw), (strided_pointwise, strided), (transposed_pointwise, head)):
        xa = x.detach().requires_grad_()
        xb = x.detach().contiguous().requires_grad_()
        module.zero_grad()
        fn(xa, module).square().sum().backward()
        grads = [p.grad.clone() for p in module.parameters()]
        module.zero_grad()
        module(xb).square().sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad)
        for ga, p in zip(grads, module.parameters()):
            torch.testing.assert_close(ga, p.grad)


def test_keep_format_restores_channels_last_only_where_the_input_had_it():
    like = torch.randn(1, 4, 3, 5, 6).contiguous(memory_format=CL[3])
    y = torch.randn(1, 4, 3, 5, 6)
    kept = keep_format(y, like)
    assert kept.is_contiguous(memory_format=CL[3]) and not kept.is_contiguous() and torch.equal(kept, y)
    assert keep_format(y, like.contiguous()) is y
    assert keep_format(like, like) is like


def test_depthwise_gradcheck():
    torch.manual_seed(4)
    conv = nn.Conv3d(3, 3, 3, padding=1, groups=3).double()
    x = torch.randn(1, 3, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda inp, w, b: depthwise_conv(inp, _Params(w, b, conv.padding)), (x, conv.weight, conv.bias)
    )


class _Params:
    """Just the attributes of a conv module that ``depthwise_conv`` reads."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, padding: tuple[int, ...]) -> None:
        self.weight, self.bias, self.padding = weight, bias, padding


def test_benchmark_runs_a_tiny_case_and_reports_both_paths(tmp_path, monkeypatch):
    from benchmarks import step_time

    monkeypatch.setattr(step_time, "write_section", lambda name, body: tmp_path / name)
    body = step_time.main(
        ["--preset", "T", "--kernel", "3", "--patch", "32", "--repeats", "1", "--amp", "bf16",
         "--checkpointing", "on"]
    )
    lines = [line for line in body.splitlines() if line.startswith("| T |")]
    assert [line.split("|")[7].strip() for line in lines] == ["plain", "fast"]
    peaks = [float(line.split("|")[11]) for line in lines]
    assert all(p > 0 for p in peaks)


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize(("channels", "size"), [(8, 4), (32, 4), (16, 8)])
def test_up_block_gradients_match_plain_path(kernel, channels, size):
    """Regression: oneDNN's channels-last depthwise transposed conv gave ~1e38 weight gradients (k7, 8 ch, 4^3)."""
    torch.manual_seed(0)
    block = MedNeXtUpBlock(channels, channels // 2, exp_r=2, kernel_size=kernel, do_res=True)
    x = torch.randn(2, channels, size, size, size)
    grads = []
    for fast in (False, True):
        block.zero_grad()
        block.fast = fast
        xi = x.contiguous(memory_format=CL[3]) if fast else x
        block(xi).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in block.named_parameters()})
    scale = max(g.abs().max().item() for g in grads[0].values())  # conv1.bias has a zero gradient (GroupNorm)
    for name, plain in grads[0].items():
        torch.testing.assert_close(grads[1][name], plain, rtol=1e-4, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("dim", [2, 3])
def test_transposed_depthwise_gradcheck(dim):
    from scalekit.mednext.speed import transposed_depthwise_conv

    torch.manual_seed(0)
    conv = (nn.ConvTranspose2d if dim == 2 else nn.ConvTranspose3d)(3, 3, 5, stride=2, padding=2, groups=3).double()
    x = torch.randn(1, 3, *(3,) * dim, dtype=torch.float64, requires_grad=True)
    x_cl = x.contiguous(memory_format=CL[dim])
    torch.autograd.gradcheck(lambda a, w, b: transposed_depthwise_conv(a, _Conv(w, b, conv)), (x_cl, conv.weight, conv.bias))
    torch.testing.assert_close(transposed_depthwise_conv(x, conv), conv(x))


class _Conv:
    """Stand-in module carrying the tensors gradcheck varies and the geometry of ``conv``."""

    def __init__(self, weight, bias, conv):
        self.weight, self.bias, self.stride, self.padding = weight, bias, conv.stride, conv.padding
