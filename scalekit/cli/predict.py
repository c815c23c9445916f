"""``scalekit predict``: segment images with a trained stage of a study or an exported nnU-Net training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scalekit.errors import ScalekitError

_ONE_SOURCE = "give a study directory with --stage ID, or --export DIR (one of them)"


def _source(study_dir: Path | None, stage: str | None, export: Path | None) -> Path | tuple[Path, str]:
    """The network to segment with: the export folder, or the study directory and the stage id."""
    if export is not None:
        if study_dir is not None:
            raise ScalekitError(_ONE_SOURCE)
        if stage is not None:
            raise ScalekitError("--stage belongs to a study directory; an export holds one network already")
        return export
    if study_dir is None:
        raise ScalekitError(_ONE_SOURCE)
    if stage is None:
        raise ScalekitError(f"--stage is missing: which stage of {study_dir}? (see `scalekit study show {study_dir}`)")
    return study_dir, stage


def predict_command(
    input_dir: Annotated[Path, typer.Option("--input", "-i", help="Images named CASE_0000<ending>, ...")],
    output_dir: Annotated[Path, typer.Option("--output", "-o", help="Folder for the segmentations (nnU-Net's "
                                                                  "layout); an earlier prediction is replaced.")],
    study_dir: Annotated[Path | None, typer.Argument(help="The study directory (with --stage).")] = None,
    stage: Annotated[str | None, typer.Option(help="Stage id of the study (see `scalekit study show`).")] = None,
    export: Annotated[Path | None, typer.Option(help="An nnU-Net export folder (`study export --to nnunet`).")] = None,
    weights: Annotated[Path | None, typer.Option(help="Other weights: e.g. the checkpoint_final.pth of training "
                                                      "an export with its train.sh.")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA if available, else CPU), cpu or cuda.")] = "auto",
    mirror: Annotated[bool, typer.Option(help="Mirroring test-time augmentation (stages are validated without).")]
    = False,
) -> None:
    """Segment every case of --input with a trained stage or export (MedNeXt or ResEnc), as nnUNetv2_predict would (no trainer lookup)."""
    source = _source(study_dir, stage, export)
    from scalekit.nnunet.predict import export_model, predict, stage_model

    model = export_model(source, weights) if isinstance(source, Path) else stage_model(*source, weights)
    files = predict(model, input_dir, output_dir, device=device, mirror=mirror,
                    on_case=lambda case, done, total: print(f"segmented {case} ({done}/{total})", flush=True))
    print(f"{model.source}: {len(files)} segmentation(s) in {output_dir}")
