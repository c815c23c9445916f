"""A study on a Ray cluster of two nodes: trials spread over the nodes, every node checked for the study's
storage before the first trial, and a stage whose node is lost resumed on another from its last checkpoint.

The cluster is Ray's own ``ray.cluster_utils.Cluster`` (a head and one worker node, one CPU each, as processes
of this test); the study runs as ``scalekit study run --address`` in a subprocess.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scalekit.faults import ENV_MARKER, ENV_POINT
from scalekit.study import read_results
from scalekit.study.chain import MAX_RETRIES
from scalekit.study.events import PROGRESS_FILE, read_progress
from scalekit.study.tune import ChainSearcher, SharedStorageError, check_shared_storage

from . import test_searcher
from .test_study_run import ENV, by_kernel, command, study_file

HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
"""A lost node is declared dead after about 1.5 s instead of Ray's default 15 s."""
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled", "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": "1"}


class _Spec:
    def __init__(self, stage_id: str) -> None:
        self.stage_id = stage_id

    def to_dict(self) -> dict:
        return {"stage_id": self.stage_id}


def _searcher(folder: Path, gone: set[str]) -> ChainSearcher:
    """A searcher over a one-family search whose cluster has nodes h and w, of which ``gone`` are lost."""
    folder.mkdir(exist_ok=True)
    return ChainSearcher(test_searcher.searcher(folder, families=1), lambda planner, stage_id: _Spec(stage_id),
                         nodes=lambda: {"h": {}, "w": {}}, lost=lambda nodes: sorted(nodes & gone))


def test_lost_node_sends_the_stage_back_and_a_death_on_a_live_node_fails_it(tmp_path: Path) -> None:
    """A trial that died with its node is handed out again (MAX_RETRIES times); one whose node lives failed."""
    gone: set[str] = set()
    searcher = _searcher(tmp_path / "lost", gone)
    table = searcher.search.planner.table
    stage = searcher.suggest("t0")["stage_id"]
    searcher.on_trial_result("t0", {"epoch": 0, "node": "w"})
    gone.add("w")
    for attempt in range(1, MAX_RETRIES + 1):
        searcher.on_trial_complete(f"t{attempt - 1}", error=True)
        row = table[stage]
        assert row.status == "pending" and "node w was lost" in row.reason and f"retry {attempt} of" in row.reason
        assert searcher.suggest(f"t{attempt}")["stage_id"] == stage  # no report yet: any node lost since counts
    searcher.on_trial_complete(f"t{MAX_RETRIES}", error=True)
    assert table[stage].status == "failed"

    alive = _searcher(tmp_path / "alive", set())
    stage = alive.suggest("x")["stage_id"]
    alive.on_trial_result("x", {"node": "w"})
    alive.on_trial_complete("x", error=True)
    assert alive.search.planner.table[stage].status == "failed"


def test_a_node_without_the_study_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each node reads back the driver's token file and looks for the folders (here two fake nodes, run
    locally: one sees everything, the other sees another directory at the study's path and no raw folder)."""
    from scalekit.study import tune

    study, raw = tmp_path / "study", tmp_path / "raw"
    study.mkdir()
    raw.mkdir()

    def views(node_ids, token_file, token, folders):
        return {"n1": tune._what_is_missing(str(token_file), token, folders),
                "n2": tune._what_is_missing(str(token_file), "another token", [str(tmp_path / "elsewhere")])}

    monkeypatch.setattr(tune, "node_views", views)
    with pytest.raises(SharedStorageError, match=rf"^Ray node n2 on \S+ does not see {study} \(another directory "
                                                 rf"at that path\), {tmp_path / 'elsewhere'}; every node"):
        check_shared_storage(["n1", "n2"], study, [raw])
    assert not list(study.iterdir()), "the token file is removed"
    monkeypatch.setattr(tune, "node_views", lambda *args: {"n1": views(*args)["n1"]})
    check_shared_storage(["n1"], study, [raw])


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator:
    """A head and one worker node, one CPU each; shut down (every process of both) whatever happens. On the
    worker node only, the first k5 stage blocks after its first epoch (fault point ``stage-epoch``, marker
    ``tmp_path/worker-blocked``), so that the test kills the node at exactly that moment."""
    from ray.cluster_utils import Cluster

    for key, value in CLUSTER_ENV.items():
        monkeypatch.setenv(key, value)
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "_system_config": HEALTH_CHECKS})
    try:
        cluster.add_node(num_cpus=1, env_vars={ENV_POINT: "stage-epoch:-k5",
                                               ENV_MARKER: str(tmp_path / "worker-blocked")})
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def _progress(study: Path, stage_id: str) -> list:
    return read_progress(study / "stages" / stage_id / PROGRESS_FILE)[0]


@pytest.mark.slow
def test_study_on_two_nodes_survives_losing_the_worker(tmp_path: Path, nnunet_dirs: dict, cluster) -> None:
    worker_node = next(iter(cluster.worker_nodes))
    head, worker = cluster.head_node.node_id, worker_node.node_id
    path = study_file(tmp_path, nnunet_dirs, training__epochs=2, training__iterations_per_epoch=1,
                      ray__max_concurrent=2)
    study = tmp_path / "study"
    started = time.monotonic()
    proc = subprocess.Popen([*command(path), "--address", cluster.address], env={**ENV, **CLUSTER_ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        victim = _kill_worker_mid_stage(proc, study, cluster, worker_node)
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    assert "checking that the 2 Ray node(s) that run trials see the study" in (study / "study.log").read_text()
    rows = read_results(study)
    stages = by_kernel(rows)
    assert {r.status for r in rows} == {"completed"}, [(r.stage_id, r.status, r.reason) for r in rows]
    for label in ("a", "b"):
        k3, k5 = stages[(label, 3)], stages[(label, 5)]
        assert (k3.init, k3.parent_stage, k5.init, k5.parent_stage) == ("scratch", "", "upkern", k3.stage_id)
    assert {r.node for r in rows} == {head, worker}, "stages ran on both nodes"
    lost = [e for e in _progress(study, victim) if e.node == worker]
    resumed = [e for e in _progress(study, victim) if e.node == head]
    assert [e.epoch for e in lost] == [1] and [e.epoch for e in resumed] == [2], "epoch 1 kept, not retrained"
    victim_row = next(r for r in rows if r.stage_id == victim)
    assert victim_row.node == head and victim_row.epochs == 2 and victim_row.dice_curve.keys() == {"2"}
    print(f"nodes: head {head}, worker {worker}; {victim}: epoch 1 on the worker, epoch 2 on the head after the "
          f"kill; {time.monotonic() - started:.0f} s")


def _kill_worker_mid_stage(proc: subprocess.Popen, study: Path, cluster, worker_node) -> str:
    """Once a k5 stage on the worker node is blocked after its first epoch (the fault point's marker is
    there), kill that node with all its processes; returns that stage's id."""
    marker = study.parent / "worker-blocked"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, "the study ended before a k5 stage ran on the worker node"
        assert time.monotonic() < deadline, "no k5 stage reached its first epoch on the worker node"
        time.sleep(0.1)
    victim = next(r.stage_id for r in read_results(study) if r.status == "running" and r.kernel_size == 5
                  and [e.node for e in _progress(study, r.stage_id)] == [worker_node.node_id])
    cluster.remove_node(worker_node, allow_graceful=False)
    return victim
