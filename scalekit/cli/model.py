"""``scalekit model ...`` and ``scalekit upkern``: inspect MedNeXt architectures and resample checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Inspect MedNeXt architectures.", no_args_is_help=True)


@app.command("summary")
def summary(
    preset: Annotated[str, typer.Option(help="S, B, M, L (paper) or T, T8 (tiny).")] = "S",
    kernel: Annotated[int, typer.Option(help="Odd depthwise kernel size.")] = 3,
    in_channels: Annotated[int, typer.Option(help="Input channels.")] = 1,
    num_classes: Annotated[int, typer.Option(help="Output classes, background included.")] = 14,
    dim: Annotated[int, typer.Option(help="Spatial dimensions, 2 or 3.")] = 3,
    deep_supervision: Annotated[bool, typer.Option(help="Build the deep-supervision heads.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Parameters per stage and in total of a MedNeXt preset."""
    import torch

    from scalekit.networks.mednext import MedNeXt, count_parameters, parameters_by_module, preset_config

    config = preset_config(preset, in_channels, num_classes, kernel, deep_supervision, dim)
    with torch.device("meta"):
        model = MedNeXt(config)
    per_module = parameters_by_module(model)
    total = count_parameters(model)
    if as_json:
        print(json.dumps({"preset": preset.upper(), "params": total, "stages": per_module,
                          "config": config.to_dict()}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"MedNeXt-{preset.upper()} k{kernel} ({dim}-D, {in_channels} in, {num_classes} classes)")
    table.add_column("module")
    table.add_column("parameters", justify="right")
    for name, count in per_module.items():
        table.add_row(name, f"{count:,}")
    table.add_row("total", f"{total:,}", style="bold")
    Console().print(table)


def upkern_command(
    src: Annotated[Path, typer.Argument(help="scalekit checkpoint or reference nnU-Net v1 checkpoint (*.model).")],
    kernel: Annotated[int, typer.Option(help="Target kernel size (encoder and decoder).")],
    out: Annotated[Path, typer.Option(help="Where to write the resampled scalekit checkpoint.")],
    allow_uninitialised: Annotated[
        bool, typer.Option(help="Leave tensors that do not correspond at their initialisation.")
    ] = False,
) -> None:
    """Initialise a MedNeXt with another kernel size from a checkpoint (UpKern) and save it."""
    from scalekit.networks import load_state, save_checkpoint
    from scalekit.networks.mednext import MedNeXt, upkern

    state, config, kind = load_state(src)
    target = MedNeXt(config.replace(kernel_size=kernel))
    report = upkern(target, state, allow_uninitialised=allow_uninitialised)
    save_checkpoint(out, target, upkern={"source": str(src), "source_kind": kind, **report.to_dict()})
    print(f"{src} (k{config.enc_kernel_size}/{config.dec_kernel_size}, {kind}) -> {out} (k{kernel}): "
          f"{report.summary()}")
