"""``scalekit profile``: JSON lines with the reference counts, and one-line errors for bad values."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-c", "from scalekit.cli import main; main()", "profile"]


def run(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCALEKIT_CACHE_DIR": str(tmp_path)}
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_json_lines_give_reference_counts(tmp_path) -> None:
    done = run(["--preset", "S,B", "--kernel", "3,5", "--patch", "128", "--batch", "1", "--in-channels", "1",
                "--num-classes", "14", "--device", "cpu", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["preset"], r["kernel"]) for r in rows] == [("S", 3), ("S", 5), ("B", 3), ("B", 5)]
    for row, (params, gflops) in zip(rows, [(5.56e6, 130), (5.99e6, 169), (10.54e6, 170), (10.97e6, 208)]):
        assert abs(row["params"] - params) < 0.1e6
        assert row["gflops_fvcore"] == pytest.approx(gflops, rel=0.01)
        assert row["memory_method"] == "predicted" and row["peak_memory_bytes"] > 1e9
        assert {"gflops_forward", "gflops_train"} <= row.keys()


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--preset", "X"], "'X'"), (["--patch", "100"], "(100, 100, 100)"), (["--batch", "0"], "--batch 0"),
     (["--kernel", "3,x"], "'x'")],
)
def test_bad_values_give_one_line_errors(args, needle, tmp_path) -> None:
    done = run([*args, "--json"], tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
    assert done.stdout == ""
