"""Training-step time and peak memory of scalekit's MedNeXt: fast (default) path against the plain baseline.

    PYTHONPATH=. python3 benchmarks/step_time.py --preset S --kernel 3 5 --patch 64 --repeats 5
    PYTHONPATH=. python3 benchmarks/step_time.py --device cuda --preset L --kernel 5 --patch 128 --batch 2 \\
        --amp fp16 --checkpointing on --repeats 3

Variants, built with identical weights and fed the same batch:
- ``plain``: contiguous NC(D)HW tensors, every module called as built (``model.fast_path = False``);
- ``fast``: the default path (``scalekit.mednext.speed``);
- ``compiled`` (with ``--compile``): the fast path under ``torch.compile``.

One step is forward + loss + backward + SGD step (nnU-Net's optimiser). Each repeat times every variant once, in
turn, so that machine load hits them alike; the table shows medians and the ratio plain / variant. Outputs of
the first step are compared with the plain ones (largest difference relative to the largest plain value).
Peak memory comes from one extra step per variant: ``torch.cuda.max_memory_allocated`` on CUDA, torch's
``MemTracker`` (every tensor allocation during the step, parameters and optimiser state included) on CPU.

Imports only torch, the standard library and scalekit.mednext: it runs on a GPU machine that has only torch.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._doc import machine_line, write_section  # noqa: E402
from scalekit.mednext import MedNeXt, preset_config  # noqa: E402

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}
MIB = 2**20


@dataclass
class Case:
    """One network and batch to time."""

    preset: str
    kernel: int
    patch: tuple[int, ...]
    batch: int
    amp: str
    checkpointing: str
    device: torch.device


@dataclass
class Row:
    case: Case
    variant: str
    step_s: float
    fwd_bwd_s: float
    peak_mib: float
    max_rel_diff: float


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", nargs="+", default=["S"], help="MedNeXt presets (S B M L T T8)")
    p.add_argument("--kernel", nargs="+", type=int, default=[3, 5], help="kernel sizes")
    p.add_argument("--patch", default="64", help="patch size: one int (cube) or DxHxW / HxW")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--amp", choices=sorted(AMP_DTYPES), default="off", help="autocast dtype")
    p.add_argument("--checkpointing", choices=["preset", "on", "off"], default="preset")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per variant (after one warm-up)")
    p.add_argument("--compile", action="store_true", help="also time the fast path under torch.compile")
    p.add_argument("--no-doc", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = p.parse_args(argv)
    try:
        args.patch = tuple(int(s) for s in args.patch.lower().split("x"))
    except ValueError:
        p.error(f"--patch {args.patch!r} is not an int or a DxHxW size like 64x64x64")
    if len(args.patch) == 1:
        args.patch = args.patch * 3
    if len(args.patch) not in (2, 3) or args.batch < 1 or args.repeats < 1:
        p.error("--patch needs 1, 2 or 3 sizes; --batch and --repeats must be >= 1")
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda was asked for, but this torch sees no CUDA device")
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(case: Case) -> tuple[dict[str, MedNeXt], torch.Tensor]:
    overrides = {} if case.checkpointing == "preset" else {"checkpointing": case.checkpointing == "on"}
    config = preset_config(case.preset, 1, 2, case.kernel, deep_supervision=True, dim=len(case.patch), **overrides)
    torch.manual_seed(0)
    plain = MedNeXt(config).to(case.device)
    plain.fast_path = False
    fast = copy.deepcopy(plain)
    fast.fast_path = True
    x = torch.randn(case.batch, 1, *case.patch, device=case.device)
    return {"plain": plain, "fast": fast}, x


class _Stepper:
    """Forward + deep-supervision loss + backward + optimiser step of one model, with its own optimiser."""

    def __init__(self, model: torch.nn.Module, case: Case) -> None:
        self.model = model
        self.case = case
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.99, nesterov=True)
        amp = case.amp != "off"
        self.scaler = torch.amp.GradScaler(case.device.type, enabled=amp and case.amp == "fp16")
        self.autocast = torch.autocast(case.device.type, dtype=AMP_DTYPES[case.amp], enabled=amp)

    def __call__(self, x: torch.Tensor) -> tuple[float, float, list[torch.Tensor]]:
        device = self.case.device
        _sync(device)
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with self.autocast:
            outputs = self.model(x)
            loss = sum(o.float().square().mean() / 2**i for i, o in enumerate(outputs))
        self.scaler.scale(loss).backward()
        _sync(device)
        t1 = time.perf_counter()
        self.scaler.step(self.opt)
        self.scaler.update()
        _sync(device)
        return time.perf_counter() - t0, t1 - t0, [o.detach() for o in outputs]


def _peak_mib(step: _Stepper, x: torch.Tensor) -> float:
    if x.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(x.device)
        step(x)
        return torch.cuda.max_memory_allocated(x.device) / MIB
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(step.model, step.opt, x)
    with tracker:
        step(x)
    return tracker.get_tracker_snapshot("peak")[x.device]["Total"] / MIB


def run_case(case: Case, repeats: int, with_compile: bool) -> list[Row]:
    """Time the variants of one case, interleaved; return one row per variant."""
    models, x = _build(case)
    if with_compile:
        models["compiled"] = torch.compile(copy.deepcopy(models["fast"]))
    steppers = {name: _Stepper(model, case) for name, model in models.items()}
    warm = {name: step(x) for name, step in steppers.items()}
    reference = warm["plain"][2]
    diffs = {
        name: max(((o - r).abs().max() / r.abs().max()).item() for o, r in zip(outs, reference))
        for name, (_, _, outs) in warm.items()
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steppers}
    for _ in range(repeats):
        for name, step in steppers.items():
            total, fwd_bwd, _ = step(x)
            times[name].append((total, fwd_bwd))
    peaks = {name: _peak_mib(step, x) for name, step in steppers.items()}
    return [
        Row(
            case, name,
            statistics.median(t for t, _ in times[name]),
            statistics.median(f for _, f in times[name]),
            peaks[name], diffs[name],
        )
        for name in steppers
    ]


def table(rows: list[Row]) -> str:
    """Markdown table: one line per case and variant, ratios against the plain variant of the same case."""
    head = (
        "| preset | k | patch | batch | amp | ckpt | variant | step s (median) | fwd+bwd s | speed-up "
        "| peak MiB | out. diff |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    plain = {id(r.case): r for r in rows if r.variant == "plain"}
    for r in rows:
        base = plain[id(r.case)]
        c = r.case
        lines.append(
            f"| {c.preset} | {c.kernel} | {'x'.join(map(str, c.patch))} | {c.batch} | {c.amp} | "
            f"{c.checkpointing} | {r.variant} | {r.step_s:.3f} | {r.fwd_bwd_s:.3f} | "
            f"{base.fwd_bwd_s / r.fwd_bwd_s:.2f}x fwd+bwd, {base.step_s / r.step_s:.2f}x step | "
            f"{r.peak_mib:.1f} | {r.max_rel_diff:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    args = _parse_args(argv)
    rows: list[Row] = []
    for preset in args.preset:
        for kernel in args.kernel:
            case = Case(preset, kernel, args.patch, args.batch, args.amp, args.checkpointing, args.device)
            print(f"timing {preset} k{kernel} ...", file=sys.stderr, flush=True)
            case_rows = run_case(case, args.repeats, args.compile)
            print(table(case_rows), file=sys.stderr, flush=True)
            rows += case_rows
    body = "\n\n".join([
        f"## Training-step time, {args.device.type}",
        machine_line() + f", {args.repeats} interleaved repeats after one warm-up step"
        + (f", load average {os.getloadavg()[0]:.1f} at the end" if hasattr(os, "getloadavg") else ""),
        "`PYTHONPATH=. python3 benchmarks/step_time.py " + " ".join(sys.argv[1:] if argv is None else argv) + "`",
        table(rows),
        "plain: contiguous tensors, modules as built (`model.fast_path = False`); fast: the default path. "
        "Speed-up = plain median / variant median. Peak: "
        + ("`torch.cuda.max_memory_allocated`." if args.device.type == "cuda"
           else "MemTracker, all tensors of one step (parameters, gradients, optimiser state, activations)."),
    ])
    print(body)
    if not args.no_doc:
        write_section(f"step_time-{args.device.type}", body)
    return body


if __name__ == "__main__":
    main()
