"""``scalekit train`` and ``scalekit nnunet ...``: train exported MedNeXt configurations with nnU-Net v2."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from scalekit.errors import ScalekitError

nnunet_app = typer.Typer(help="Export MedNeXt networks to nnU-Net v2 training.", no_args_is_help=True)


def _folder(option: Path | None, variable: str, flag: str) -> Path:
    if option is not None:
        return option
    if os.environ.get(variable):
        return Path(os.environ[variable])
    raise ScalekitError(f"no {variable} folder: pass {flag} DIR or set {variable}")


def train_command(
    dataset: Annotated[str, typer.Argument(help="Dataset id or name (DatasetXXX_Name).")],
    configuration: Annotated[str, typer.Argument(help="Exported configuration, e.g. mednext_k5.")],
    fold: Annotated[str, typer.Argument(help="Fold (0-4) or 'all'.")],
    plans: Annotated[str, typer.Option(help="Plans identifier written by `scalekit nnunet export`.")] = "scalekitPlans",
    preprocessed: Annotated[Path | None, typer.Option(help="Default: $nnUNet_preprocessed.")] = None,
    results: Annotated[Path | None, typer.Option(help="Default: $nnUNet_results.")] = None,
    pretrained_weights: Annotated[Path | None, typer.Option(help="Starting weights (e.g. UpKern output).")] = None,
    continue_training: Annotated[bool, typer.Option("--continue", help="Continue from the latest checkpoint.")] = False,
    validate: Annotated[bool, typer.Option(help="Run nnU-Net's final validation.")] = True,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Train an exported configuration like nnUNetv2_train, without nnU-Net's trainer lookup by name."""
    from scalekit.nnunet import run_exported_training

    output = run_exported_training(
        dataset, configuration, fold, plans, _folder(preprocessed, "nnUNet_preprocessed", "--preprocessed"),
        _folder(results, "nnUNet_results", "--results"), pretrained_weights=pretrained_weights,
        continue_training=continue_training, validate=validate, device=device,
    )
    print(output)


@nnunet_app.command("export")
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
    from scalekit.mednext import preset_config
    from scalekit.nnunet import PreparedDataset, TrainerSettings, export_to_nnunet

    prepared = PreparedDataset.load(dataset)
    arch = preset_config(preset, prepared.num_input_channels, prepared.num_classes, kernel, True,
                         len(prepared.patch_size))
    settings = TrainerSettings(num_epochs=epochs, iterations_per_epoch=iterations, initial_lr=lr)
    result = export_to_nnunet(prepared, arch, out, weights=weights, settings=settings, plans_name=plans,
                              name=name, fold=fold)
    print(f"# {result.configuration}: {result.parameter_count:,} parameters; plans {result.plans_file}")
    print("\n".join(result.commands))


@nnunet_app.command("upkern-weights")
def upkern_weights_command(
    checkpoint: Annotated[Path, typer.Argument(help="nnU-Net checkpoint of a trained scalekit MedNeXt.")],
    kernel: Annotated[int, typer.Option(help="Target kernel size.")],
    out: Annotated[Path, typer.Option(help="Starting-weights file for -pretrained_weights.")],
) -> None:
    """Resample a trained nnU-Net MedNeXt checkpoint to another kernel size (UpKern)."""
    from scalekit.nnunet.checkpoints import upkern_nnunet_checkpoint

    report = upkern_nnunet_checkpoint(checkpoint, kernel, out)
    print(f"{checkpoint} -> {out} (k{kernel}): {report.summary()}")
