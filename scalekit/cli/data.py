"""``scalekit data ...``: the synthetic demo dataset and preparation of nnU-Net v2 raw datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from scalekit.errors import ScalekitError

app = typer.Typer(help="Create and prepare nnU-Net v2 datasets.", no_args_is_help=True)


def _sizes(option: str, text: str | None, cast: type, dims: int) -> list | None:
    """``"128"`` -> [128] * dims; ``"96x128x128"`` -> [96, 128, 128]."""
    if text is None:
        return None
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [cast(p) for p in parts if p.strip()]
    except ValueError:
        raise ScalekitError(f"--{option} {text!r} must be numbers joined by 'x' or ',' (e.g. 128x128x128)") from None
    return values * dims if len(values) == 1 else values


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="Parent folder (e.g. $nnUNet_raw); the dataset is a folder inside.")],
    cases: Annotated[int, typer.Option(help="Number of cases.")] = 24,
    size: Annotated[int, typer.Option(help="Edge length of the cubic volumes in voxels.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed; equal seeds give identical datasets.")] = 0,
    dataset_id: Annotated[int, typer.Option(help="nnU-Net dataset id (1-999).")] = 990,
    name: Annotated[str, typer.Option(help="Dataset name.")] = "ScalekitDemo",
) -> None:
    """Write the synthetic multi-organ demo dataset in nnU-Net v2 raw format."""
    from scalekit.nnunet import make_demo_dataset

    folder = make_demo_dataset(out, cases=cases, size=size, seed=seed, dataset_id=dataset_id, name=name)
    print(folder)


@app.command("prepare")
def prepare(
    dataset: Annotated[str, typer.Argument(help="Raw dataset folder, or its id / name under --raw-root.")],
    preprocessed: Annotated[
        Path | None, typer.Option(help="nnUNet_preprocessed folder (default: $nnUNet_preprocessed).")
    ] = None,
    raw_root: Annotated[Path | None, typer.Option(help="Folder of raw datasets (default: $nnUNet_raw).")] = None,
    configuration: Annotated[str, typer.Option(help="3d_fullres or 2d.")] = "3d_fullres",
    patch: Annotated[str | None, typer.Option(help="Training patch, multiples of 16, e.g. 128 or 96x128x128.")] = None,
    spacing: Annotated[str | None, typer.Option(help="Target spacing in mm, e.g. 1 or 1x0.8x0.8.")] = None,
    processes: Annotated[int | None, typer.Option(help="Worker processes (default: half the cores).")] = None,
    splits: Annotated[
        Path | None, typer.Option(help="A splits_final.json of your own (a list of {train, val} case ids).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the prepared dataset as JSON.")] = False,
) -> None:
    """Validate a raw dataset (all bad cases in one error), then fingerprint, plan and preprocess it.

    Folders: --preprocessed, else $nnUNet_preprocessed (a study finds the preparation there and reuses it);
    --raw-root, else $nnUNet_raw. Splits: --splits, else the dataset's own splits_final.json, else random.
    """
    from scalekit import paths
    from scalekit.nnunet import prepare_dataset

    root = paths.nnunet_root(paths.PREPROCESSED, preprocessed, "--preprocessed")
    if root is None:
        raise ScalekitError("no preprocessed folder: pass --preprocessed DIR or set nnUNet_preprocessed")
    dims = 2 if configuration == "2d" else 3
    patch_size = _sizes("patch", patch, int, dims)
    target = _sizes("spacing", spacing, float, 3)
    prepared = prepare_dataset(dataset, root.path, configuration=configuration, patch_size=patch_size,
                               spacing=target, num_processes=processes, raw_root=raw_root, splits=splits)
    if as_json:
        print(json.dumps(prepared.to_dict()))
        return
    print(f"{prepared.dataset_name}: {configuration}, patch {list(prepared.patch_size)}, spacing "
          f"{list(prepared.spacing)}, classes {', '.join(prepared.label_names)} -> {prepared.preprocessed_dir} "
          f"(root from {root.origin})")
