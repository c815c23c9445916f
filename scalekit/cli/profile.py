"""``scalekit profile``: parameters, FLOPs and peak memory of MedNeXt presets (lists give a grid)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from scalekit.errors import ScalekitError

GIB = 1024**3


def _split(option: str, text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ScalekitError(f"--{option} {text!r} is empty; give a value or a comma-separated list")
    return items


def _ints(option: str, text: str) -> list[int]:
    values = []
    for item in _split(option, text):
        try:
            values.append(int(item))
        except ValueError:
            raise ScalekitError(f"--{option} {item!r} is not an integer") from None
    return values


def profile_command(
    preset: Annotated[str, typer.Option(help="Preset(s): S, B, M, L, T, T8; a comma-separated list.")] = "S",
    kernel: Annotated[str, typer.Option(help="Kernel size(s), odd; a comma-separated list.")] = "3",
    patch: Annotated[str, typer.Option(help="Patch: one size (cube) or sizes joined by 'x' (64x128x128).")] = "128",
    batch: Annotated[int, typer.Option(help="Batch size.")] = 2,
    amp: Annotated[str, typer.Option(help="fp16, bf16 or none.")] = "fp16",
    checkpoint: Annotated[
        bool | None, typer.Option("--checkpoint/--no-checkpoint", help="Gradient checkpointing (default: preset's).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto (measure on CUDA if present), cpu (predict) or cuda.")] = "auto",
    in_channels: Annotated[int, typer.Option(help="Input channels.")] = 1,
    num_classes: Annotated[int, typer.Option(help="Output classes, background included.")] = 14,
    dim: Annotated[int, typer.Option(help="Spatial dimensions, 2 or 3.")] = 3,
    deep_supervision: Annotated[bool, typer.Option(help="Deep supervision (five outputs and losses).")] = True,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the profile cache.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per configuration, one per line.")] = False,
) -> None:
    """Parameters, FLOPs and peak training memory of MedNeXt configurations (measured on CUDA, else predicted)."""
    from scalekit.networks.mednext import preset_config
    from scalekit.profiler import profile

    presets = [p.upper() for p in _split("preset", preset)]
    kernels = _ints("kernel", kernel)
    sizes = _ints("patch", patch.replace("x", ","))
    patch_size = sizes[0] if len(sizes) == 1 else tuple(sizes)
    if batch < 1:
        raise ScalekitError(f"--batch {batch} is not allowed; use a batch size >= 1")
    amp_value = None if amp.lower() in ("none", "fp32", "off") else amp.lower()
    configs = [
        (p, k, preset_config(p, in_channels, num_classes, k, deep_supervision, dim)) for p in presets for k in kernels
    ]
    for _, _, arch in configs:
        arch.check_input_shape(patch_size if isinstance(patch_size, tuple) else (patch_size,) * dim)
    rows = []
    from rich.progress import Progress

    with Progress(transient=True, disable=as_json) as progress:
        task = progress.add_task("profiling", total=len(configs))
        for name, k, arch in configs:
            result = profile(arch, patch_size, batch, amp_value, checkpoint, device, cache=not no_cache)
            rows.append({"preset": name, "kernel": k, **result.to_dict()})
            progress.advance(task)
            if as_json:
                print(json.dumps(rows[-1]), flush=True)
    if not as_json:
        _print_table(rows)


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    first = rows[0]
    table = Table(title=f"MedNeXt training step: patch {first['patch_size']}, batch {first['batch_size']}, "
                        f"amp {first['amp']}, {first['memory_method']} on {first['device']}")
    for column in ("preset", "k", "ckpt", "params (M)", "GFLOPs fvcore", "GFLOPs fwd", "GFLOPs train",
                   "peak (GiB)", "reserved (GiB)", "activations (GiB)", "step (s)"):
        table.add_column(column, justify="left" if column == "preset" else "right")
    for r in rows:
        table.add_row(
            r["preset"], str(r["kernel"]), "yes" if r["checkpointing"] else "no", f"{r['params'] / 1e6:.2f}",
            f"{r['gflops_fvcore']:.1f}", f"{r['gflops_forward']:.1f}", f"{r['gflops_train']:.1f}",
            f"{r['peak_memory_bytes'] / GIB:.2f}", f"{r['reserved_memory_bytes'] / GIB:.2f}",
            f"{r['activation_bytes'] / GIB:.2f}", "-" if r["step_time_s"] is None else f"{r['step_time_s']:.3f}",
        )
    Console().print(table)
