"""MedNeXt S/B/M/L (k3, k5) beside nnU-Net's ResEnc presets at the AMOS setting (1 CT channel, 16 classes,
128^3, fp16): parameters, training GFLOPs per step and scalekit's peak-memory prediction (measured instead when
CUDA is there), and for ResEnc what nnU-Net's planners assume. Writes docs/benchmarks.md (section
``network-kinds``).

    PYTHONPATH=. python3 benchmarks/network_kinds.py

At a 128^3 patch nnU-Net's M, L and XL planners build the same ResEnc (six stages down to 4^3); the presets
differ in the memory they plan for: each planner grows the batch (or, on larger images, the patch) until its
estimate (feature-map elements, ``static_estimate_VRAM_usage``) reaches its budget, ``UNet_reference_val_3d``
(the batch-2 value for its memory target). The rows give the batch each preset's planner takes at 128^3
(``round(2 x budget / estimate)``, at least 2, as the planners round) and the profiler's peak at that batch,
next to the memory target the planner aims at.
"""

from __future__ import annotations

import argparse

from benchmarks._doc import machine_line, write_section
from scalekit.mednext.presets import preset_config
from scalekit.nnunet.resenc import MEMORY_TARGET_GB, REFERENCE_3D, resenc_for_patch, vram_estimate
from scalekit.profiler import profile

IN_CHANNELS, NUM_CLASSES, PATCH, SPACING = 1, 16, (128, 128, 128), (1.0, 1.0, 1.0)
GIB = 2**30


def mednext_rows(device: str, batch: int) -> list[str]:
    rows = []
    for name in "SBML":
        for kernel in (3, 5):
            arch = preset_config(name, IN_CHANNELS, NUM_CLASSES, kernel, deep_supervision=True)
            p = profile(arch, PATCH, batch, amp="fp16", device=device)
            rows.append(f"| MedNeXt {name} k{kernel} | {batch} | {'on' if arch.checkpointing else 'off'} | "
                        f"{p.params / 1e6:.2f} | {p.gflops_train:,.0f} | {p.peak_memory_bytes / GIB:.2f} "
                        f"({p.memory_method}) | | |")
    return rows


def resenc_rows(device: str) -> list[str]:
    config = resenc_for_patch(PATCH, SPACING, IN_CHANNELS, NUM_CLASSES)
    estimate = vram_estimate(config, PATCH)
    rows = []
    for preset, budget in REFERENCE_3D.items():
        batch = max(2, round(2 * budget / estimate))
        p = profile(config, PATCH, batch, amp="fp16", device=device)
        rows.append(f"| ResEnc {preset} | {batch} | off | {p.params / 1e6:.2f} | {p.gflops_train:,.0f} | "
                    f"{p.peak_memory_bytes / GIB:.2f} ({p.memory_method}) | {MEMORY_TARGET_GB[preset]} | "
                    f"{estimate / 1e6:.0f}M of {budget / 1e6:.0f}M per 2 |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto: measure on CUDA when present, else predict")
    args = parser.parse_args()
    header = ("| network | batch | checkpointing | params (M) | GFLOPs train | peak GB | nnU-Net target GB | "
              "nnU-Net estimate (feature-map elements) |\n|---|---:|---|---:|---:|---:|---:|---|")
    body = (
        "## Network kinds: MedNeXt and nnU-Net's ResEnc at the AMOS setting\n\n"
        f"{machine_line()}\n\n"
        f"1 input channel, {NUM_CLASSES} classes, patch {PATCH[0]}^3 at 1 mm, fp16, deep supervision; MedNeXt at "
        "batch 2 with its presets' checkpointing (on for M and L), ResEnc with nnU-Net's topology for that patch "
        "at the batch each preset's planner takes there. Peak = one training step's allocated memory "
        "(GB = 2^30 bytes), predicted by scalekit's profiler on a CPU, measured on a GPU "
        "(`benchmarks/gpu_checks.sh`). `benchmarks/network_kinds.py`.\n\n"
        + header + "\n" + "\n".join(mednext_rows(args.device, 2) + resenc_rows(args.device)) + "\n"
    )
    print(body)
    write_section("network-kinds", body)


if __name__ == "__main__":
    main()
