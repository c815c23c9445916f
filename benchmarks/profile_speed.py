"""Time to predict the 12-configuration grid (S/B/M/L x k3/5/7, 128^3, batch 2, fp16, checkpointing on) on CPU,
from a cold cache and again warm. Writes the table to docs/benchmarks.md (section ``profile-speed``).

    PYTHONPATH=. python3 benchmarks/profile_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from benchmarks._doc import machine_line, write_section
from scalekit.mednext.presets import preset_config
from scalekit.profiler import profile

GRID = [(p, k) for p in "SBML" for k in (3, 5, 7)]


def run_grid(cache_dir: str) -> float:
    start = time.perf_counter()
    for name, k in GRID:
        arch = preset_config(name, 1, 14, k, deep_supervision=True)
        profile(arch, 128, 2, amp="fp16", checkpointing=True, device="cpu", cache_dir=cache_dir)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm repetitions (median reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        cold = run_grid(cache_dir)
        warm = statistics.median(run_grid(cache_dir) for _ in range(args.repeats))
    body = (
        "## Profiler speed: predicting the 12-configuration grid on CPU\n\n"
        f"{machine_line()}\n\n"
        "S/B/M/L x k3/5/7 at 128^3, batch 2, fp16, checkpointing on, `device=\"cpu\"` (predicted), one process.\n\n"
        "| cache | seconds for 12 configurations | per configuration |\n|---|---:|---:|\n"
        f"| cold (empty directory) | {cold:.1f} | {cold / len(GRID):.2f} |\n"
        f"| warm (median of {args.repeats}) | {warm:.4f} | {warm / len(GRID):.5f} |\n\n"
        f"Cold / warm: {cold / warm:.0f}x.\n"
    )
    print(body)
    write_section("profile-speed", body)


if __name__ == "__main__":
    main()
