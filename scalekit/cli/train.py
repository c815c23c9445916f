"""``scalekit train``: train an exported MedNeXt configuration with nnU-Net v2 (see ``scalekit nnunet export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scalekit import paths
from scalekit.errors import ScalekitError
from scalekit.paths import nnunet_folder


def _folder(option: Path | None, variable: str, flag: str) -> Path:
    folder = nnunet_folder(variable, option)
    if folder is None:
        raise ScalekitError(f"no {variable} folder: pass {flag} DIR or set {variable}")
    return folder


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
        dataset, configuration, fold, plans, _folder(preprocessed, paths.PREPROCESSED, "--preprocessed"),
        _folder(results, paths.RESULTS, "--results"), pretrained_weights=pretrained_weights,
        continue_training=continue_training, validate=validate, device=device,
    )
    print(output)
