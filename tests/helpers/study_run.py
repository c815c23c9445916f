"""A tiny study file of three families and the environment its subprocess runs in."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


FAMILIES = [
    {"label": "a", "n_channels": 4, "block_counts": 1, "exp_r": 2},
    {"label": "b", "n_channels": 4, "block_counts": [1, 1, 1, 1, 2, 1, 1, 1, 1], "exp_r": 2},
]


def study_file(tmp_path: Path, nnunet_dirs: dict, **changes) -> Path:
    data = {
        "name": "tiny",
        "output_dir": str(tmp_path / "study"),
        "dataset": {"id": 993, "name": "Dataset993_Tiny", "patch_size": [32, 32, 32], "batch_size": 2,
                    "demo": {"cases": 6, "size": 32, "seed": 0}, **nnunet_dirs},
        "training": {"epochs": 1, "iterations_per_epoch": 2, "val_iterations": 1},
        "space": {"families": FAMILIES, "kernels": [3, 5]},
        "chain": {"min_improvement": None},
        "search": {"sampler": "grid", "families": 2},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 1},
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


ENV = {**os.environ, "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1", "OMP_NUM_THREADS": "1"}


def by_kernel(rows) -> dict:
    return {(r.family_label, r.kernel_size): r for r in rows}
