"""A study on a Ray cluster of two nodes: trials spread over the nodes, every node checked for the study's
storage before the first trial, and a stage whose node is lost resumed on another from its last checkpoint.

The cluster is Ray's own ``ray.cluster_utils.Cluster`` (a head and one worker node, one CPU each), started,
killed and stopped by ``tests/helpers/cluster_run.py`` in a process of its own; the study runs as ``scalekit study run
--address`` under it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalekit.study import read_results
from scalekit.study.engine.chain import MAX_RETRIES
from scalekit.study.backend.raytune import ChainSearcher, SharedStorageError, check_shared_storage

from tests.helpers.searches import searcher
from tests.helpers.cluster_run import epoch_nodes
from tests.helpers.study_run import ENV, by_kernel, study_file

CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled", "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": "1"}


class _Spec:
    def __init__(self, stage_id: str) -> None:
        self.stage_id = stage_id

    def to_dict(self) -> dict:
        return {"stage_id": self.stage_id}


def _searcher(folder: Path, gone: set[str]) -> ChainSearcher:
    """A searcher over a one-family search whose cluster has nodes h and w, of which ``gone`` are lost."""
    folder.mkdir(exist_ok=True)
    return ChainSearcher(searcher(folder, families=1), lambda planner, stage_id, seed: _Spec(stage_id),
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
    from scalekit.study.backend import raytune as tune

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


@pytest.mark.slow
def test_study_on_two_nodes_survives_losing_the_worker(tmp_path: Path, nnunet_dirs: dict) -> None:
    path = study_file(tmp_path, nnunet_dirs, training__epochs=2, training__iterations_per_epoch=1,
                      resources__max_concurrent=2)
    study = tmp_path / "study"
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "tests.helpers.cluster_run", str(path)], capture_output=True, text=True,
                         timeout=900, env={**ENV, **CLUSTER_ENV}, cwd=Path(__file__).resolve().parents[3])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ran = json.loads(run.stdout.splitlines()[-1])
    head, worker, victim = ran["head"], ran["worker"], ran["victim"]
    assert ran["returncode"] == 0, ran["output"]
    assert "checking that the 2 Ray node(s) that run trials see the study" in (study / "study.log").read_text()
    rows = read_results(study)
    stages = by_kernel(rows)
    assert {r.status for r in rows} == {"completed"}, [(r.stage_id, r.status, r.reason) for r in rows]
    for label in ("a", "b"):
        k3, k5 = stages[(label, 3)], stages[(label, 5)]
        assert (k3.init, k3.parent_stage, k5.init, k5.parent_stage) == ("scratch", "", "upkern", k3.stage_id)
    assert {r.node for r in rows} == {head, worker}, "stages ran on both nodes"
    assert epoch_nodes(study, victim) == [worker, head], "epoch 1 on the lost worker kept, epoch 2 on the head"
    victim_row = next(r for r in rows if r.stage_id == victim)
    assert victim_row.node == head and victim_row.epochs == 2 and victim_row.dice_curve.keys() == {"2"}
    print(f"nodes: head {head}, worker {worker}; {victim}: epoch 1 on the worker, epoch 2 on the head after the "
          f"kill; {time.monotonic() - started:.0f} s")
