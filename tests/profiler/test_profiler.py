"""The profiler: counts against the reference and fvcore, predicted memory against a real CPU step, the
allocator model, the CUDA cast policy, the cache and input errors."""

from __future__ import annotations

import bisect
import contextlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile

from scalekit.mednext import MedNeXt, preset_config
from scalekit import networks
from scalekit.networks import ResEncConfig
from scalekit.networks.recipe import deep_supervision_weights
from scalekit.profiler import ProfileResult, profile
from scalekit.profiler import api as profiler_api
from scalekit.profiler.allocator import CachingAllocatorModel, round_size, segment_size
from scalekit.profiler.counting import CostCounter, count
from scalekit.profiler.cuda_policy import cuda_autocast_policy
from scalekit.profiler.predict import replay_exact, trace_step
from scalekit.profiler.step import (
    ScalerStandIn,
    autocast_context,
    fill_optimizer_state,
    make_batch,
    make_optimizer,
    training_step,
)

MIB = 1 << 20

# mednext-v1.md section 6 (reference parameter counts include its dummy_tensor: minus one here) and the README
REFERENCE = {
    ("S", 3): (5_564_806, 130), ("S", 5): (5_994_438, 169), ("B", 3): (10_540_198, 170),
    ("B", 5): (10_969_830, 208), ("M", 3): (17_562_854, 248), ("M", 5): (18_274_726, 308),
    ("L", 3): (61_793_158, 500), ("L", 5): (63_006_790, 564),
}


@pytest.mark.parametrize(("name", "k"), sorted(REFERENCE))
def test_counts_match_reference_readme(name: str, k: int) -> None:
    params, gflops = REFERENCE[(name, k)]
    counts = count(preset_config(name, 1, 14, k, deep_supervision=True), (128, 128, 128), 1, False)
    assert abs(counts.params - params) < 100_000
    assert counts.gflops_fvcore == pytest.approx(gflops, rel=0.01)
    assert counts.gflops_forward == pytest.approx(2 * counts.gmacs_forward)


def test_fvcore_count_matches_at_small_size() -> None:
    import fvcore.nn as fvcore  # a test dependency (the dev extra): scalekit counts without it
    arch = preset_config("T8", 1, 3, 5, deep_supervision=True)
    model = MedNeXt(arch).train()
    model.fast_path = False  # fvcore's JIT trace cannot look inside the fast path's autograd.Function
    x = torch.randn(1, 1, 32, 32, 32)
    analysis = fvcore.FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    expected = analysis.total() / 1e9
    assert count(arch, (32, 32, 32), 1, False).gflops_fvcore == pytest.approx(expected, rel=1e-6)


def test_forward_matches_torch_flop_counter_and_is_shape_symmetric() -> None:
    arch = preset_config("T", 2, 3, 3, deep_supervision=True)
    with FakeTensorMode():
        model = MedNeXt(arch).train()
        model.fast_path = False
        counter = torch.utils.flop_counter.FlopCounterMode(display=False)
        with counter:
            model(torch.empty(1, 2, 32, 64, 48))
    counts = count(arch, (32, 64, 48), 1, False)
    assert counts.gflops_forward * 1e9 == counter.get_total_flops()
    assert count(arch, (64, 48, 32), 1, False).macs_forward == counts.macs_forward


def test_depthwise_training_flops_are_three_forwards() -> None:
    with FakeTensorMode():
        conv = nn.Conv3d(16, 16, 5, padding=2, groups=16)
        x = torch.empty(2, 16, 24, 24, 24, requires_grad=True)
        counter = CostCounter()
        with counter:
            y = conv(x)
            counter.phase = counter.backward
            y.sum().backward()
    counts = counter.counts(0)
    assert counts.macs_forward == 2 * 16 * 125 * 24**3
    assert counts.macs_train == pytest.approx(3 * counts.macs_forward, rel=0.01)
    torch_counter = torch.utils.flop_counter.FlopCounterMode(display=False)
    with FakeTensorMode(), torch_counter:
        conv = nn.Conv3d(16, 16, 5, padding=2, groups=16)
        conv(torch.empty(2, 16, 24, 24, 24, requires_grad=True)).sum().backward()
    assert torch_counter.get_total_flops() > 4 * 2 * counts.macs_forward  # why the custom count exists


def test_checkpointing_counts_the_recomputed_forward() -> None:
    arch = preset_config("T", 1, 3, 3, deep_supervision=True)
    plain, ckpt = count(arch, (32,) * 3, 1, False), count(arch, (32,) * 3, 1, True)
    assert ckpt.macs_forward == plain.macs_forward
    assert plain.macs_train < ckpt.macs_train < plain.macs_train + plain.macs_forward + 1


def _peak_from_profiler(prof) -> int:
    """Peak of the summed allocation events of torch.profiler, read between aten ops, not inside them.

    CPU kernels (oneDNN convolutions above all) allocate scratch that no tensor holds and that is freed
    before they return; on CUDA the like is cuDNN's workspace, which the profiler models separately, so it
    is left out of this comparison. Everything an op returns is counted once it has returned."""
    events = prof.profiler.kineto_results.events()
    spans = sorted((e.start_ns(), e.end_ns()) for e in events if e.name().startswith("aten::"))
    outer: list[tuple[int, int]] = []
    for start, end in spans:
        if outer and start <= outer[-1][1]:
            outer[-1] = (outer[-1][0], max(outer[-1][1], end))
        else:
            outer.append((start, end))
    starts = [a for a, _ in outer]
    keyed = []
    for e in events:
        if e.name() == "[memory]":
            t, i = e.start_ns(), bisect.bisect_right(starts, e.start_ns()) - 1
            keyed.append((outer[i][1] if i >= 0 and t <= outer[i][1] else t, t, e.nbytes()))
    keyed.sort()
    level = peak = 0
    for index, (key, _, nbytes) in enumerate(keyed):
        level += nbytes
        if index + 1 == len(keyed) or keyed[index + 1][0] != key:
            peak = max(peak, level)
    return peak


def _measured_cpu_peak(arch, patch, batch, amp, checkpointing) -> int:
    """Bytes at the peak of a real CPU step: what lives before it plus torch.profiler's allocation events."""
    torch.manual_seed(0)
    model = networks.build(arch.replace(checkpointing=checkpointing)).train()
    optimizer = make_optimizer(model, arch)
    fill_optimizer_state(optimizer)
    x, targets = make_batch(arch, patch, batch, "cpu")
    tensors = [*model.parameters(), x, *targets] + [v for s in optimizer.state.values() for v in s.values()]
    baseline = sum(t.numel() * t.element_size() for t in tensors)
    policy = cuda_autocast_policy() if amp else contextlib.nullcontext()
    with torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, policy:
        training_step(model, optimizer, x, targets, autocast_context("cpu", amp), ScalerStandIn(False))
    return baseline + _peak_from_profiler(prof)


TINY_RESENC = ResEncConfig(num_classes=3, features_per_stage=(4, 8, 16, 32), kernel_sizes=((3, 3, 3),) * 4,
                           strides=((1, 1, 1),) + ((2, 2, 2),) * 3, n_blocks_per_stage=(1, 3, 4, 6),
                           n_conv_per_stage_decoder=(1, 1, 1), deep_supervision=True)


@pytest.mark.parametrize(("kind", "amp", "checkpointing"), [
    ("mednext", None, False), ("mednext", None, True), ("mednext", "bf16", False), ("mednext", "bf16", True),
    ("resenc", None, False), ("resenc", "bf16", False),  # SGD with momentum, InstanceNorm, a zero-weight output
])
def test_predicted_peak_equals_real_cpu_step(kind, amp, checkpointing) -> None:
    arch = preset_config("T", 1, 3, 3, deep_supervision=True) if kind == "mednext" else TINY_RESENC
    events = trace_step(arch, (32, 32, 32), 2, amp, checkpointing)
    predicted = replay_exact(events).peak_bytes
    measured = _measured_cpu_peak(arch, (32, 32, 32), 2, amp, checkpointing)
    assert predicted == pytest.approx(measured, rel=0.05)


def test_checkpointing_and_amp_lower_predicted_activations() -> None:
    arch = preset_config("T8", 1, 3, 3, deep_supervision=True)
    plain = replay_exact(trace_step(arch, (32, 32, 32), 2, None, False))
    ckpt = replay_exact(trace_step(arch, (32, 32, 32), 2, None, True))
    half = replay_exact(trace_step(arch, (32, 32, 32), 2, "fp16", False))
    assert ckpt.activation_bytes < 0.7 * plain.activation_bytes
    assert half.activation_bytes < 0.8 * plain.activation_bytes
    assert ckpt.state_bytes == pytest.approx(plain.state_bytes, rel=0.01)  # grads made before the peak differ


def test_allocator_model_rounds_splits_reuses_and_merges() -> None:
    assert (round_size(1), round_size(512), round_size(513)) == (512, 512, 1024)
    assert segment_size(100) == 2 * MIB and segment_size(5 * MIB) == 20 * MIB
    assert segment_size(11 * MIB + 1) == 12 * MIB
    alloc = CachingAllocatorModel()
    a, b = alloc.malloc(700 * 1024), alloc.malloc(700 * 1024)
    assert alloc.reserved == 2 * MIB and alloc.allocated == 1400 * 1024
    c = alloc.malloc(700 * 1024)
    assert alloc.reserved == 4 * MIB
    alloc.free(a)
    alloc.free(b)
    alloc.malloc(1 * MIB)  # the merged 1400 KiB block serves it: no new segment
    assert alloc.reserved == 4 * MIB
    alloc.free(c)
    big = alloc.malloc(30 * MIB)
    assert alloc.reserved == 34 * MIB and big.size == 30 * MIB
    alloc.free(big)
    alloc.malloc(25 * MIB)
    assert alloc.reserved == 34 * MIB and alloc.peak_allocated == 30 * MIB + 1 * MIB


def test_cuda_policy_is_installed_only_inside_the_block() -> None:
    x = torch.randn(1, 4, 8, 8, 8)
    with cuda_autocast_policy(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.nn.functional.group_norm(x.bfloat16(), 4).dtype == torch.float32
        assert torch.softmax(x.bfloat16(), 1).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.nn.functional.group_norm(x.bfloat16(), 4).dtype == torch.bfloat16


def test_deep_supervision_weights() -> None:
    assert list(deep_supervision_weights(5)) == pytest.approx([16 / 31, 8 / 31, 4 / 31, 2 / 31, 1 / 31])


def test_profile_predicts_caches_and_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_CACHE_DIR", str(tmp_path))
    arch = preset_config("T", 1, 3, 3, deep_supervision=True)
    first = profile(arch, (32, 32, 48), 1, amp="fp16", device="cpu")
    assert isinstance(first, ProfileResult) and first.memory_method == "predicted"
    assert first.step_time_s is None and first.patch_size == (32, 32, 48)
    assert first.peak_memory_bytes == first.state_bytes + first.activation_bytes + first.other_bytes
    assert first.reserved_memory_bytes >= first.peak_memory_bytes
    assert json.loads(json.dumps(first.to_dict()))["device_bytes"] == first.device_bytes
    files = sorted(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"

    def fail(*args, **kwargs):
        raise AssertionError("cache miss")

    monkeypatch.setattr(profiler_api, "_compute", fail)
    assert profile(arch, (32, 32, 48), 1, amp="fp16", device="cpu") == first
    with pytest.raises(AssertionError, match="cache miss"):
        profile(arch, (32, 32, 48), 2, amp="fp16", device="cpu")
    with pytest.raises(AssertionError, match="cache miss"):
        profile(arch, (32, 32, 48), 1, amp="fp16", checkpointing=True, device="cpu")
    # another revision of the profiler or the model code never reads this one's numbers
    monkeypatch.setattr(profiler_api, "code_revision", lambda: "another-revision")
    with pytest.raises(AssertionError, match="cache miss"):
        profile(arch, (32, 32, 48), 1, amp="fp16", device="cpu")


def test_profile_two_dimensional(tmp_path: Path) -> None:
    arch = preset_config("T", 1, 3, 3, deep_supervision=True, dim=2)
    result = profile(arch, 64, 2, amp=None, device="cpu", cache_dir=tmp_path)
    assert result.patch_size == (64, 64) and result.params == sum(p.numel() for p in MedNeXt(arch).parameters())
    assert result.activation_bytes > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"patch_size": 100}, "100"), ({"batch_size": 0}, "batch_size=0"), ({"amp": "fp8"}, "fp8"),
     ({"device": "tpu"}, "tpu"), ({"patch_size": (32, 32)}, "spatial")],
)
def test_profile_rejects_bad_input(kwargs, message, tmp_path: Path) -> None:
    args = {"arch": preset_config("T"), "patch_size": 32, "batch_size": 1, "cache_dir": tmp_path, **kwargs}
    with pytest.raises(ValueError, match=message):
        profile(**args)
