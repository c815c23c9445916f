"""`scalekit model summary` and `scalekit upkern` through the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from scalekit.mednext import load_state

from .reference_layout import random_reference_state
from .test_checkpoint import write_v1_checkpoint


def scalekit(*args: str) -> subprocess.CompletedProcess:
    code = "from scalekit.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_summary_json_params_of_s_k3() -> None:
    result = scalekit("model", "summary", "--preset", "S", "--kernel", "3", "--in-channels", "1",
                      "--num-classes", "14", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["params"] == 5564806
    assert sum(data["stages"].values()) == data["params"]


def test_even_kernel_is_a_one_line_error() -> None:
    result = scalekit("model", "summary", "--preset", "S", "--kernel", "4")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "kernel_size=4" in lines[0] and "odd" in lines[0]
    assert "Traceback" not in result.stderr


def test_upkern_cli_from_reference_checkpoint(tmp_path: Path) -> None:
    state = random_reference_state(prefix="module.", n_channels=4, num_classes=3, block_counts=(1,) * 9)
    src = write_v1_checkpoint(tmp_path / "k3.model", state)
    out = tmp_path / "k5.pt"
    result = scalekit("upkern", str(src), "--kernel", "5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "resampled" in result.stdout
    new_state, config, kind = load_state(out)
    assert kind == "scalekit" and config.enc_kernel_size == 5 and config.dec_kernel_size == 5
    assert new_state["enc_block_0.0.conv1.weight"].shape[-3:] == (5, 5, 5)
    assert torch.equal(new_state["stem.weight"], state["module.stem.weight"])
