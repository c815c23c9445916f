"""``scalekit nnunet ...``: export MedNeXt networks to stock nnU-Net v2 training, resample nnU-Net checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Export MedNeXt networks to nnU-Net v2 training.", no_args_is_help=True)

OUTSIDE_NOTE = "outside --out: nnU-Net reads plans from the preprocessed folder"


def print_written(paths: list[Path], out: Path) -> None:
    """One ``wrote PATH`` line per file; a file outside ``out`` (the plans nnU-Net reads from the shared
    preprocessed folder) says so."""
    folder = out.resolve()
    for path in paths:
        inside = Path(path).resolve().is_relative_to(folder)
        print(f"wrote {path}" + ("" if inside else f" ({OUTSIDE_NOTE})"))


@app.command("export")
def export_command(
    dataset: Annotated[Path, typer.Argument(help="Preprocessed dataset folder (with scalekit_prepared.json).")],
    out: Annotated[Path, typer.Option(help="Folder for the trainer module, weights, plans copy and train.sh.")],
    preset: Annotated[str, typer.Option(help="MedNeXt preset: S, B, M, L, T, T8.")] = "S",
    kernel: Annotated[int, typer.Option(help="Kernel size of the network to train.")] = 3,
    weights: Annotated[Path | None, typer.Option(help="scalekit checkpoint to start from (UpKern if needed).")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 1000,
    iterations: Annotated[int, typer.Option(help="Training iterations per epoch.")] = 250,
    lr: Annotated[float, typer.Option(help="Initial learning rate (AdamW).")] = 1e-3,
    plans: Annotated[str, typer.Option(help="Plans identifier to write.")] = "scalekitPlans",
    name: Annotated[str, typer.Option(help="Configuration name prefix.")] = "mednext",
    fold: Annotated[str, typer.Option(help="Fold in the printed commands.")] = "0",
) -> None:
    """Write plans and trainer so stock nnUNetv2_train trains a MedNeXt; print the commands."""
    from scalekit.networks.mednext import preset_config
    from scalekit.nnunet import PreparedDataset, TrainerSettings, export_to_nnunet

    prepared = PreparedDataset.load(dataset)
    arch = preset_config(preset, prepared.num_input_channels, prepared.num_classes, kernel, True,
                         len(prepared.patch_size))
    settings = TrainerSettings(num_epochs=epochs, iterations_per_epoch=iterations, initial_lr=lr)
    result = export_to_nnunet(prepared, arch, out, weights=weights, settings=settings, plans_name=plans,
                              name=name, fold=fold)
    print_written([result.plans_file, result.script], out)
    print(f"# {result.configuration}: {result.parameter_count:,} parameters; plans {result.plans_identifier}")
    print("\n".join(result.commands))


@app.command("upkern-weights")
def upkern_weights_command(
    checkpoint: Annotated[Path, typer.Argument(help="nnU-Net checkpoint of a trained scalekit MedNeXt.")],
    kernel: Annotated[int, typer.Option(help="Target kernel size.")],
    out: Annotated[Path, typer.Option(help="Starting-weights file for -pretrained_weights.")],
) -> None:
    """Resample a trained nnU-Net MedNeXt checkpoint to another kernel size (UpKern)."""
    from scalekit.nnunet.checkpoints import upkern_nnunet_checkpoint

    report = upkern_nnunet_checkpoint(checkpoint, kernel, out)
    print(f"{checkpoint} -> {out} (k{kernel}): {report.summary()}")
