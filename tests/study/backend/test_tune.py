"""The Ray adapter against what else runs on the machine, and what it leaves behind."""

from __future__ import annotations

import pytest

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """
import os, stat, sys
from pathlib import Path
import ray
from ray._private import ray_constants
from scalekit.study.backend.raytune import RaySettings, ray_cluster
token = Path(sys.argv[1])
with ray_cluster(RaySettings(None, {}, token_file=token)) as nodes:
    print("nodes", len(nodes), "CPU", sum(node["CPU"] for node in nodes.values()))
    print("gcs", ray.get_runtime_context().gcs_address.rsplit(":", 1)[0], "token", oct(stat.S_IMODE(token.stat().st_mode)))
print("after", token.exists(), ray_constants.ENABLE_RAY_CLUSTER,
      [k for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") if k in os.environ])
"""


@pytest.mark.slow
def test_a_local_study_ignores_a_cluster_that_ray_start_left() -> None:
    """`ray start` records its cluster in <ray temp dir>/ray_current_cluster, and a plain ray.init() joins it
    (here a dead one): a study without an address must start its own Ray on this machine instead."""
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths live below it
    try:
        (root / "ray").mkdir()
        (root / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        result = subprocess.run([sys.executable, "-c", PROBE, str(root / "token")], capture_output=True, text=True,
                                timeout=300, env={**env, "RAY_TMPDIR": str(root)})
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"nodes 1 CPU {float(os.cpu_count() or 1)}" in result.stdout  # its own one-node Ray
        # on loopback, with a token only its owner reads; afterwards the process is as before and the token gone
        assert "gcs 127.0.0.1 token 0o600" in result.stdout
        assert "after False True []" in result.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)
