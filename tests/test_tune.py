"""The Ray adapter against what else runs on the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """
from scalekit.study.tune import RaySettings, ray_cluster
with ray_cluster(RaySettings(None, {})) as nodes:
    print("nodes", len(nodes), "CPU", sum(node["CPU"] for node in nodes.values()))
"""


def test_a_local_study_ignores_a_cluster_that_ray_start_left() -> None:
    """`ray start` records its cluster in <ray temp dir>/ray_current_cluster, and a plain ray.init() joins it
    (here a dead one): a study without an address must start its own Ray on this machine instead."""
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths live below it
    try:
        (root / "ray").mkdir()
        (root / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                                env={**env, "RAY_TMPDIR": str(root)})
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"nodes 1 CPU {float(os.cpu_count() or 1)}" in result.stdout  # its own one-node Ray
    finally:
        shutil.rmtree(root, ignore_errors=True)
