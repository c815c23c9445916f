"""Runs a study on a two-node Ray cluster and kills the worker node mid-stage, in a process of its own.

``python -m tests.helpers.cluster_run STUDY_FILE`` starts Ray's ``ray.cluster_utils.Cluster`` (a head and one worker
node, one CPU each), runs ``scalekit study run STUDY_FILE --address`` on it, kills the worker node once a k5
stage there is blocked after its first epoch (the fault point ``stage-epoch`` is set on the worker node
alone), waits for the study to end, shuts the cluster down and prints one JSON line: the node ids, the
stage whose node was killed, the study's exit status and output. A process of its own because the cluster's
client leaves gRPC threads behind, and a test process that forks later (nnU-Net's workers) would hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ray.cluster_utils import Cluster

from scalekit.faults import ENV_MARKER, ENV_POINT
from scalekit.study import read_results
from scalekit.study.monitor.events import PROGRESS_FILE, read_progress

from tests.helpers.faultkit import command

HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
"""A lost node is declared dead after about 1.5 s instead of Ray's default 15 s."""
MARKER = "worker-blocked"


def epoch_nodes(study: Path, stage_id: str) -> list[str]:
    """The node of each epoch in the stage's progress file."""
    return [e.node for e in read_progress(study / "stages" / stage_id / PROGRESS_FILE)[0]]


def _kill_worker_mid_stage(proc: subprocess.Popen, study: Path, cluster: Cluster, worker) -> str:
    marker = study.parent / MARKER
    deadline = time.monotonic() + 300
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("no k5 stage reached its first epoch on the worker node")
        time.sleep(0.1)
    victim = next(r.stage_id for r in read_results(study) if r.status == "running" and r.kernel_size == 5
                  and epoch_nodes(study, r.stage_id) == [worker.node_id])
    cluster.remove_node(worker, allow_graceful=False)
    return victim


def main(study_file: Path) -> dict:
    study = study_file.parent / "study"
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "_system_config": HEALTH_CHECKS})
    try:
        worker = cluster.add_node(num_cpus=1, env_vars={ENV_POINT: "stage-epoch:-k5",
                                                        ENV_MARKER: str(study.parent / MARKER)})
        cluster.wait_for_nodes()
        head = cluster.head_node.node_id
        proc = subprocess.Popen([*command(study_file), "--address", cluster.address], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
        try:
            victim = _kill_worker_mid_stage(proc, study, cluster, worker)
            output, _ = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        return {"head": head, "worker": worker.node_id, "victim": victim, "returncode": proc.returncode,
                "output": output[-3000:]}
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
