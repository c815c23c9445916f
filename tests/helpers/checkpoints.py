"""Checkpoint files shaped like other tools' (nnU-Net v1), for the loading tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def write_v1_checkpoint(path: Path, state: dict) -> Path:
    """A file shaped like nnU-Net v1's ``*.model``: weights plus optimizer state and numpy training curves."""
    torch.save(
        {
            "epoch": 12,
            "state_dict": state,
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
            "amp_grad_scaler": {"scale": 65536.0, "growth_factor": 2.0},
            "plot_stuff": ([np.float64(0.5), np.float32(0.4)], [0.6], [], [np.float64(0.1)]),
            "best_stuff": (3, np.float64(0.7), np.float64(0.71)),
        },
        path,
    )
    return path
