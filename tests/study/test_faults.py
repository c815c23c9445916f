"""Fault injection: a tiny study killed with SIGKILL at each risky moment, then rerun.

After every rerun: each stage exactly once, no completed stage retrained (checkpoint bytes and recorded wall
time unchanged), every stage's first-epoch training loss equal to the uninterrupted run's (CPU training is
deterministic here, so a resumed UpKern stage that lost its UpKern start would show), the Optuna storage
consistent with results.csv, and no process of the killed run left.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from scalekit.study import read_results
from scalekit.study.monitor.events import PROGRESS_FILE, read_progress

from tests.helpers.faultkit import (
    ENV,
    check_consistent,
    command,
    digest,
    first_losses,
    kill_at,
    run,
    snapshot,
    start_until,
    study_file,
    study_processes,
    wait_for_no_processes,
)

pytestmark = pytest.mark.slow

CHAIN = [3, 5]


def dirs(root: Path) -> dict[str, str]:
    return {"raw_dir": str(root / "raw"), "preprocessed_dir": str(root / "preprocessed")}


@pytest.fixture(scope="module")
def shared(nnunet_dirs: dict[str, str]) -> dict[str, str]:
    """nnU-Net folders prepared once (by the uninterrupted run, unless test_postgres.py ran first)."""
    return nnunet_dirs


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, shared: dict[str, str]) -> dict[int, float]:
    """First-epoch losses of the uninterrupted k3 -> k5 chain."""
    folder = tmp_path_factory.mktemp("baseline")
    run(study_file(folder, shared, CHAIN, epochs=2))
    check_consistent(folder / "study", CHAIN)
    return first_losses(folder / "study")


def _equal_losses(study_dir: Path, baseline: dict[int, float]) -> None:
    losses = first_losses(study_dir)
    assert losses == pytest.approx({k: baseline[k] for k in losses}, abs=1e-6), (losses, baseline)


@pytest.mark.parametrize("point", ["demo-data", "prepare"])
def test_kill_before_training(tmp_path: Path, baseline: dict[int, float], point: str) -> None:
    """Killed while the demo data is written or while nnU-Net preprocesses it: the rerun redoes that step."""
    path = study_file(tmp_path, dirs(tmp_path / "nnunet"), [3], epochs=1)
    study_dir = tmp_path / "study"
    kill_at(path, point, study_dir)
    assert not (study_dir / "results.csv").exists()
    run(path)
    check_consistent(study_dir, [3])
    _equal_losses(study_dir, baseline)


@pytest.mark.parametrize("point", ["stage-request:-k5", "stage-epoch:-k5"])
def test_kill_in_upkern_stage(tmp_path: Path, shared: dict, baseline: dict[int, float], point: str) -> None:
    """Killed after the k5 stage's request was written (before its first checkpoint), or mid-stage after
    an epoch checkpoint: the resumed k5 starts from UpKern of k3 (or its own checkpoint), k3 is untouched."""
    path = study_file(tmp_path, shared, CHAIN, epochs=2)
    study_dir = tmp_path / "study"
    kill_at(path, point, study_dir)
    before = snapshot(study_dir)
    assert len(before) == 1, before  # k3 completed, k5 killed
    run(path)
    check_consistent(study_dir, CHAIN)
    after = snapshot(study_dir)
    assert {k: after[k] for k in before} == before
    _equal_losses(study_dir, baseline)
    k5 = next(r for r in read_results(study_dir) if r.kernel_size == 5)
    epochs, _ = read_progress(study_dir / "stages" / k5.stage_id / PROGRESS_FILE)
    assert [e.epoch for e in epochs] == [1, 2], "each epoch once, across the killed session and the rerun"
    lines = (study_dir / "study.log").read_text().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S", line) for line in lines)
    assert lines[-1][20:].startswith("study finished: 2 completed")


def test_kill_while_results_are_rewritten(tmp_path: Path, shared: dict, baseline: dict[int, float]) -> None:
    """Killed while results.csv is rewritten after the stage completed: the table still says running; the
    rerun takes the completed stage from its folder without training it again."""
    path = study_file(tmp_path, shared, [3], epochs=1)
    study_dir = tmp_path / "study"
    kill_at(path, "results-write", study_dir)
    (row,) = read_results(study_dir)
    assert row.status == "running"
    final = study_dir / "stages" / row.stage_id / "final.pt"
    kept = digest(final), final.stat().st_mtime_ns
    run(path)
    check_consistent(study_dir, [3])
    assert (digest(final), final.stat().st_mtime_ns) == kept
    _equal_losses(study_dir, baseline)


def test_kill_during_report(tmp_path: Path, shared: dict, baseline: dict[int, float]) -> None:
    """Killed while the report is written: the rerun trains nothing and writes the whole report."""
    path = study_file(tmp_path, shared, [3], epochs=1)
    study_dir = tmp_path / "study"
    kill_at(path, "report", study_dir)
    before = snapshot(study_dir)
    assert len(before) == 1
    run(path)
    check_consistent(study_dir, [3])
    assert snapshot(study_dir) == before
    assert "</html>" in (study_dir / "report.html").read_text()


def test_second_writer_is_refused_and_other_studies_run(tmp_path: Path, shared: dict) -> None:
    """While a study runs, a second `study run` of its directory exits 2 at once naming the holder; a
    study in another directory runs to the end beside it."""
    first = study_file(tmp_path / "one", shared, [3], epochs=1)
    holder = start_until(command(first), "stage-request", tmp_path / "one", timeout_s=300)
    try:
        started = time.monotonic()
        second = run(first, expect=2)
        assert time.monotonic() - started < 10
        (line,) = second.stderr.strip().splitlines()
        assert f"PID {holder.pid}" in line and "in use" in line
        other = study_file(tmp_path / "two", shared, [3], epochs=1)
        run(other)
        check_consistent(tmp_path / "two" / "study", [3])
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
        holder.stderr.close()
    wait_for_no_processes(tmp_path / "one" / "study")


def test_ctrl_c_interrupts_and_the_rerun_resumes(tmp_path: Path, shared: dict) -> None:
    """Ctrl-C (SIGINT to the process group) mid-stage: exit 130, the stage back to pending, rerun finishes."""
    path = study_file(tmp_path, shared, [3], epochs=2)
    study_dir = tmp_path / "study"
    proc = start_until(command(path), "stage-epoch", tmp_path, timeout_s=300, stdout=subprocess.PIPE)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err[-3000:]
    assert "interrupted" in out and "Traceback" not in err
    (row,) = read_results(study_dir)
    assert row.status == "pending" and "interrupted" in row.reason
    wait_for_no_processes(study_dir)
    run(path)
    check_consistent(study_dir, [3])


@pytest.mark.xdist_group("ray")
def test_orphaned_stage_worker_ends_with_its_driver(tmp_path: Path, shared: dict) -> None:
    """Only the driver is killed (its terminal closed, say): the stage worker ends within seconds instead of
    training on beside a rerun (Ray would reap it much later)."""
    path = study_file(tmp_path, shared, [3], epochs=2, backend={"kind": "ray"})
    study_dir = tmp_path / "study"
    proc = start_until(command(path), "stage-epoch", tmp_path, timeout_s=300)
    worker = int((tmp_path / "fault-stage-epoch").read_text().split()[1])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    start = time.monotonic()
    while Path(f"/proc/{worker}").exists() and "Z" not in Path(f"/proc/{worker}/stat").read_text().split()[2]:
        assert time.monotonic() - start < 5, "the stage worker outlived its driver"
        time.sleep(0.1)
    for pid in study_processes(study_dir):  # Ray's own helpers end by themselves within a minute
        os.kill(pid, signal.SIGKILL)
    run(path)
    check_consistent(study_dir, [3])


def test_moved_study_resumes_and_deleted_weights_retrain(tmp_path: Path, shared: dict) -> None:
    """Defect 5: checkpoint paths are relative, so a moved study directory still finishes; a completed stage
    whose final.pt was deleted trains again instead of breaking the export."""
    path = study_file(tmp_path, shared, CHAIN, epochs=1)
    run(path)
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "study", moved)
    path = study_file(tmp_path, shared, CHAIN, epochs=1, output_dir=str(moved),
                      # two iterations an epoch teach nothing: export anyway (the selection says so)
                      finish={"report": True, "export": {"select": "best", "to": "config", "force": True}})
    before = snapshot(moved)
    run(path)
    assert snapshot(moved) == before, "nothing retrained after the move"
    k5 = next(r for r in read_results(moved) if r.kernel_size == 5)
    k5.checkpoint_path(moved).unlink()
    run(path)
    check_consistent(moved, CHAIN)
    after = snapshot(moved)
    assert after[k5.stage_id][1] != before[k5.stage_id][1], "k5 trained again"
    assert {k: v for k, v in after.items() if k != k5.stage_id} == {
        k: v for k, v in before.items() if k != k5.stage_id}
    assert (moved / "export" / "selection.json").is_file()


def test_tampered_preprocessed_file_stops_the_run(tmp_path: Path, shared: dict, baseline: dict) -> None:
    """Defect 14: a preprocessed pickle replaced after preparation is named, and nothing trains from it."""
    own = dirs(tmp_path / "nnunet")
    shutil.copytree(shared["raw_dir"], own["raw_dir"], symlinks=True)
    shutil.copytree(shared["preprocessed_dir"], own["preprocessed_dir"], symlinks=True)
    pickle_file = next(Path(own["preprocessed_dir"]).rglob("*.pkl"))
    pickle_file.write_bytes(pickle_file.read_bytes() + b"\0")
    result = run(study_file(tmp_path, own, [3], epochs=1), expect=2)
    (line,) = result.stderr.strip().splitlines()
    assert pickle_file.name in line and "changed" in line
    assert not (tmp_path / "study" / "stages").exists()


READ_ONLY = """
import errno, sys
import scalekit.records as results
original = results.write_results
def read_only(study_dir, records):
    records = list(records)
    if any(r.status == "completed" for r in records):
        raise OSError(errno.EROFS, "Read-only file system", str(results.Path(study_dir) / "results.csv"))
    return original(study_dir, records)
results.write_results = read_only
if __name__ == "__main__":
    from scalekit.cli import main
    main()
"""


def test_read_only_study_directory_mid_run(tmp_path: Path, shared: dict, baseline: dict) -> None:
    """Defect 7: the disk turning read-only while a stage's result is written is one line and exit 2, and
    the rerun (writable again) finishes without training the stage again."""
    path = study_file(tmp_path, shared, [3], epochs=1)
    script = tmp_path / "read_only.py"
    script.write_text(READ_ONLY)
    result = subprocess.run([*command(path)[:1], str(script), *command(path)[3:]], capture_output=True,
                            text=True, timeout=900, env=ENV)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot access ") and "results.csv: Read-only file system" in line
    wait_for_no_processes(tmp_path / "study")
    final = next((tmp_path / "study" / "stages").glob("*/final.pt"))
    kept = digest(final)
    run(path)
    check_consistent(tmp_path / "study", [3])
    assert digest(final) == kept


def test_kill_while_the_finalists_are_retrained_with_other_seeds(tmp_path: Path, shared: dict) -> None:
    """finish.confirm: killed after the first seed's run is recorded, the rerun keeps it (same weights), trains
    the second seed only, and the answer reports the finalist's Dice over three seeds."""
    path = study_file(tmp_path, shared, [3], epochs=1, finish={"report": False, "export": None,
                                                               "confirm": {"seeds": 2}})
    study_dir = tmp_path / "study"
    kill_at(path, "confirm", study_dir)
    (searched,) = read_results(study_dir)
    first = read_results(study_dir / "confirm" / "seed-1")
    assert [(r.stage_id, r.status) for r in first] == [(searched.stage_id, "completed")]
    weights = first[0].checkpoint_path(study_dir / "confirm" / "seed-1")
    kept = digest(weights), weights.stat().st_mtime_ns
    out = run(path).stdout
    check_consistent(study_dir, [3])
    assert (digest(weights), weights.stat().st_mtime_ns) == kept
    (second,) = read_results(study_dir / "confirm" / "seed-2")
    assert second.status == "completed" and second.mean_dice is not None
    assert f"confirmed over 3 seeds (0, 1, 2): {searched.stage_id}" in out and " ± " in out, out
    assert "confirmation compute: 2 training epochs" in out, out
