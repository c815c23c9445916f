"""Predicted (CPU, fake tensors) vs measured (CUDA) peak memory of a MedNeXt training step.

Grid: S/B/M/L x k3/5/7 at 128^3, batch 2, fp16, with and without checkpointing (24 rows). Writes the table to
docs/benchmarks.md (section ``profile-accuracy``). Needs a CUDA GPU and only torch; run from the repository root:

    PYTHONPATH=. python3 benchmarks/profile_accuracy.py [--budget-s 420]
    PYTHONPATH=. python3 benchmarks/profile_accuracy.py --dry-run     # CPU: tiny grid, predictions only, no doc

Error % = (predicted - measured) / measured. Rows not reached within the time budget are listed as skipped.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from benchmarks._doc import machine_line, write_section
from scalekit.mednext.presets import preset_config
from scalekit.profiler import profile

GIB = 1024**3


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def _err(predicted: int, measured: int | None) -> str:
    return "-" if not measured else f"{100 * (predicted - measured) / measured:+.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU check: T/T8 x k3/5 at 32^3, no measurement")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop measuring after this many seconds")
    args = parser.parse_args()
    if args.dry_run:
        presets, kernels, patch = ("T", "T8"), (3, 5), 32
    else:
        if not torch.cuda.is_available():
            raise SystemExit("profile_accuracy.py needs a CUDA GPU (use --dry-run to check it on CPU)")
        presets, kernels, patch = ("S", "B", "M", "L"), (3, 5, 7), 128
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for name in presets:
            for k in kernels:
                for ckpt in (False, True):
                    arch = preset_config(name, 1, 14, k, deep_supervision=True)
                    pred = profile(arch, patch, 2, "fp16", ckpt, device="cpu", cache_dir=cache_dir)
                    meas = None
                    if not args.dry_run and time.perf_counter() - start < args.budget_s:
                        try:
                            meas = profile(arch, patch, 2, "fp16", ckpt, device="cuda", cache=False)
                        except torch.cuda.OutOfMemoryError:
                            meas = "OOM"
                    rows.append((name, k, ckpt, pred, meas))
                    print(name, k, ckpt, _gib(pred.peak_memory_bytes),
                          meas if meas in (None, "OOM") else _gib(meas.peak_memory_bytes), flush=True)
    lines = [
        "| preset | k | ckpt | peak pred (GiB) | peak meas (GiB) | err % | reserved pred | reserved meas | err % "
        "| activations pred | context meas (GiB) | step (s) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, k, ckpt, pred, meas in rows:
        m = meas if meas not in (None, "OOM") else None
        lines.append(
            f"| {name} | {k} | {'on' if ckpt else 'off'} | {_gib(pred.peak_memory_bytes)} | "
            f"{'OOM' if meas == 'OOM' else _gib(m and m.peak_memory_bytes)} | "
            f"{_err(pred.peak_memory_bytes, m and m.peak_memory_bytes)} | {_gib(pred.reserved_memory_bytes)} | "
            f"{_gib(m and m.reserved_memory_bytes)} | {_err(pred.reserved_memory_bytes, m and m.reserved_memory_bytes)} | "
            f"{_gib(pred.activation_bytes)} | {_gib(m and m.cuda_context_bytes)} | "
            f"{'-' if m is None else f'{m.step_time_s:.3f}'} |"
        )
    measured = [(p, m) for *_, p, m in rows if m not in (None, "OOM")]
    errors = sorted(abs(p.peak_memory_bytes - m.peak_memory_bytes) / m.peak_memory_bytes for p, m in measured)
    summary = (f"Median |error| of the allocated peak: {100 * errors[len(errors) // 2]:.1f} %, "
               f"max {100 * errors[-1]:.1f} % over {len(errors)} measured rows.") if errors else "Nothing measured."
    body = (
        "## Profiler accuracy: predicted vs measured peak memory of a training step\n\n"
        f"{machine_line()}\n\n"
        f"MedNeXt with deep supervision, 1 input channel, 14 classes, patch {patch}^3, batch 2, fp16 autocast + "
        "GradScaler, AdamW (foreach), clipping at 12. Predicted: `profile(device=\"cpu\")` (fake tensors, "
        "modelled allocator and a 64 MiB cuDNN allowance). Measured: `max_memory_allocated` / "
        "`max_memory_reserved` over 3 steps after 2 warm-up steps; step time is their median.\n\n"
        + "\n".join(lines) + f"\n\n{summary}\n"
    )
    print(body)
    if not args.dry_run:
        write_section("profile-accuracy", body)


if __name__ == "__main__":
    main()
