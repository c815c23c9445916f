"""A small finished-and-running study directory with real tiny MedNeXt checkpoints (preset T family, C=4/8).

``python tests/helpers/study_fixture.py DIR`` writes it to DIR (to look at a report by hand); tests call
:func:`make_study`. Measurements are hand-made so that the fronts are known:

- Dice-memory front: A-k3, A-k5 and E-k3 (an exact tie: both on the front), A-k7, B-k3, B-k5.
  F-k3 equals A-k5 in memory with a lower Dice (dominated); G-k3 equals B-k5 in Dice with more memory.
- Front of the study's three objectives (Dice up, memory down, training GFLOPs down): A-k3, F-k3, E-k3, A-k7,
  B-k3, B-k5 (E-k3 now dominates its tie A-k5 by fewer GFLOPs).
- Invalid rows: B-k7 stopped, C-k5 infeasible (with a predicted memory), D-k3 failed, D-k5 pending,
  H-k3 running.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import yaml

from scalekit.mednext import MedNeXt, MedNeXtConfig, count_parameters, preset_config, save_checkpoint
from scalekit.nnunet import PreparedDataset
from scalekit.records import StageRecord, read_results, write_results

PLANS = {"plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
         "configurations": {"3d_fullres": {"patch_size": [32, 32, 32]}}}
DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "numTraining": 2,
                "file_ending": ".nii.gz"}

STUDY_YAML = {
    "name": "fixture",
    "output_dir": "fixture",
    "dataset": {"id": 990, "name": "Dataset990_ScalekitDemo", "patch_size": [32, 32, 32],
                "demo": {"cases": 6, "size": 32}},
    "training": {"epochs": 2, "iterations_per_epoch": 250},  # EPOCHS, ITERATIONS
    "space": {"families": [{"label": "A", "n_channels": 4, "block_counts": 1, "exp_r": 2}], "kernels": [3, 5, 7]},
    "objectives": [
        {"metric": "mean_dice", "direction": "maximize"},
        {"metric": "peak_memory_gb", "direction": "minimize"},
        {"metric": "gflops_train"},  # natural direction: minimise
    ],
    "constraints": {"max_memory_gb": 24, "max_gflops": None},
}

# family: (n_channels, block_counts, exp_r)
FAMILIES = {"A": (4, 1, 2), "B": (8, 1, 2), "C": (4, 2, 2), "D": (4, 1, 3), "E": (4, 1, 4), "F": (4, 1, 3),
            "G": (8, 2, 2), "H": (4, 2, 3)}

# stage id, kernel, parent, status, mean Dice, NSD, peak memory GB, training GFLOPs, reason
STAGES = [
    ("A-k3", 3, "", "completed", 0.70, 0.80, 2.0, 10.0, ""),
    ("A-k5", 5, "A-k3", "completed", 0.74, 0.83, 3.0, 14.0, ""),
    ("A-k7", 7, "A-k5", "completed", 0.75, 0.84, 4.5, 20.0, ""),
    ("B-k3", 3, "", "completed", 0.76, 0.85, 6.0, 30.0, ""),
    ("B-k5", 5, "B-k3", "completed", 0.80, 0.88, 9.0, 45.0, ""),
    ("B-k7", 7, "B-k5", "stopped", None, None, None, 70.0, "chain stopped: B-k5 gained < 0.005 Dice"),
    ("C-k3", 3, "", "completed", 0.72, 0.81, 5.0, 18.0, ""),
    ("C-k5", 5, "C-k3", "infeasible", None, None, 30.0, 40.0, "predicted peak memory 30.0 GB > budget 24 GB"),
    ("D-k3", 3, "", "failed", None, None, None, None, "RuntimeError: CUDA out of memory"),
    ("D-k5", 5, "D-k3", "pending", None, None, None, None, ""),
    ("E-k3", 3, "", "completed", 0.74, 0.82, 3.0, 12.0, ""),
    ("F-k3", 3, "", "completed", 0.73, 0.80, 3.0, 11.0, ""),
    ("G-k3", 3, "", "completed", 0.80, 0.87, 10.0, 60.0, ""),
    ("H-k3", 3, "", "running", None, None, None, None, ""),
]

CLASSES = ("liver", "kidney", "spleen")
"""The fixture's organ classes: each completed stage's per-class Dice is its mean plus CLASS_OFFSETS (mean kept)."""
CLASS_OFFSETS = (0.1, 0.05, -0.15)
ITERATIONS = 250
EPOCHS = 2
"""Every trained stage trained the full budget of the study (``training.epochs``)."""

DICE_MEMORY_FRONT = {"A-k3", "A-k5", "E-k3", "A-k7", "B-k3", "B-k5"}
STUDY_FRONT = {"A-k3", "F-k3", "E-k3", "A-k7", "B-k3", "B-k5"}


def _chain(stage_id: str) -> list[str]:
    """The stage and its ancestors (the stages its training continued from)."""
    parent = {s[0]: s[2] for s in STAGES}
    chain = [stage_id]
    while parent[chain[-1]]:
        chain.append(parent[chain[-1]])
    return chain


def _tflops(stage_id: str) -> float:
    """Training TFLOPs of a trained stage: epochs x iterations x its training GFLOPs per step."""
    gflops = next(s[7] for s in STAGES if s[0] == stage_id)
    return EPOCHS * ITERATIONS * gflops / 1000


def make_study(study_dir: str | Path) -> list[StageRecord]:
    """Write study.yaml, results.csv and a checkpoint per valid stage; returns the records."""
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "study.yaml").write_text(yaml.safe_dump(STUDY_YAML, sort_keys=False))
    records = []
    for stage_id, k, parent, status, dice, nsd, memory, gflops, reason in STAGES:
        family = stage_id.split("-")[0]
        channels, blocks, ratio = FAMILIES[family]
        config = preset_config("T", kernel_size=k, n_channels=channels, block_counts=blocks, exp_r=ratio)
        model = MedNeXt(config)
        checkpoint = ""
        if status == "completed":
            checkpoint = f"checkpoints/{stage_id}.pt"
            save_checkpoint(study_dir / checkpoint, model)
        epochs = EPOCHS if dice is not None else None
        chain = _chain(stage_id) if epochs else []
        records.append(StageRecord(
            stage_id=stage_id, family_id=family, family_label=f"C{channels} B{blocks} R{ratio}",
            n_channels=channels, block_counts=list(config.block_counts), exp_r=list(config.exp_r),
            kernel_size=k, parent_stage=parent, init="upkern" if parent else "scratch", status=status,
            reason=reason, mean_dice=dice, per_class_dice=[] if dice is None else [round(dice + o, 4) for o in CLASS_OFFSETS],
            mean_nsd=nsd, per_class_nsd=[] if nsd is None else [round(nsd + o / 2, 4) for o in CLASS_OFFSETS],
            params=count_parameters(model),
            gflops_fvcore=None if gflops is None else gflops / 3, gflops_train=gflops,
            peak_memory_bytes=None if memory is None else int(memory * 2**30),
            memory_method="" if memory is None else "measured", wall_time_s=None if dice is None else 60.0,
            epochs=epochs, checkpoint=checkpoint, config=config.to_dict(), target_epochs=epochs,
            dice_curve={} if dice is None else {str(EPOCHS): dice},
            cum_epochs=EPOCHS * len(chain) if epochs else None,
            train_tflops=_tflops(stage_id) if epochs else None,
            cum_train_tflops=sum(_tflops(s) for s in chain) if epochs else None,
        ))
    write_results(study_dir, records)
    return records


def with_deep_supervision(study_dir: str | Path) -> list[StageRecord]:
    """Re-save the study's checkpoints with deep supervision, as nnU-Net trains them (nnU-Net's starting
    weights need every head); returns the records, their configs updated."""
    study_dir = Path(study_dir)
    records = []
    for record in read_results(study_dir):
        if record.checkpoint:
            config = MedNeXtConfig.from_dict(record.config).replace(deep_supervision=True)
            save_checkpoint(study_dir / record.checkpoint, MedNeXt(config))
            record = dataclasses.replace(record, config=config.to_dict())
        records.append(record)
    write_results(study_dir, records)
    return records


def add_prepared_dataset(study_dir: str | Path, root: str | Path) -> PreparedDataset:
    """A hand-written prepared-dataset record, plans file and dataset.json under ``root`` (what ``scalekit study
    run`` leaves in a study): an nnU-Net export reads only those, so no preprocessing is needed."""
    root = Path(root)
    prepared = PreparedDataset(
        dataset_id=990, dataset_name="Dataset990_Faults", raw_dir=root / "raw" / "Dataset990_Faults",
        preprocessed_root=root / "preprocessed", plans_identifier="nnUNetPlans", configuration="3d_fullres",
        label_names=("background", "organ"), patch_size=(32, 32, 32), spacing=(1.0, 1.0, 1.0),
        num_input_channels=1,
    )
    prepared.preprocessed_dir.mkdir(parents=True)
    prepared.plans_file.write_text(json.dumps(PLANS))
    (prepared.preprocessed_dir / "dataset.json").write_text(json.dumps(DATASET_JSON))
    (Path(study_dir) / "prepared.json").write_text(json.dumps(prepared.to_dict()))
    return prepared


if __name__ == "__main__":
    make_study(sys.argv[1])
