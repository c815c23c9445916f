"""The study engine end to end on CPU: Ray trials chained by UpKern, constraints, failures, kill and resume.

Each test runs `scalekit study run` in a subprocess on a tiny generated dataset (prepared once per session).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalekit.study import read_results
from tests.helpers.study_run import ENV, FAMILIES, by_kernel, study_file

pytestmark = pytest.mark.slow


def command(path: Path, quiet: bool = True) -> list[str]:
    return [sys.executable, "-c", "from scalekit.cli import main; main()", "study", "run", str(path),
            *(["--quiet"] if quiet else [])]


def run(path: Path, expect: int = 0, quiet: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command(path, quiet), capture_output=True, text=True, timeout=900,
                            env={**ENV, **(env or {})})
    assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
    return result


STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "


def test_two_families_chain_3_to_5(tmp_path: Path, nnunet_dirs: dict) -> None:
    result = run(study_file(tmp_path, nnunet_dirs), quiet=False)  # stdout is a pipe: plain event lines
    rows = read_results(tmp_path / "study")
    assert len(rows) == 4
    stages = by_kernel(rows)
    for label in ("a", "b"):
        k3, k5 = stages[(label, 3)], stages[(label, 5)]
        assert k3.status == k5.status == "completed", (k3.reason, k5.reason)
        assert k3.init == "scratch" and k3.parent_stage == ""
        assert k5.init == "upkern" and k5.parent_stage == k3.stage_id
        assert 0.0 <= k5.mean_dice <= 1.0 and len(k5.per_class_dice) >= 4
        assert k5.checkpoint_path(tmp_path / "study").is_file() and k5.params > k3.params
    ray_runs = list((tmp_path / "study" / "ray").iterdir())
    assert ray_runs, "the study directory holds the Ray experiment"
    assert (tmp_path / "study" / "optuna.db").is_file()
    events = [line for line in result.stdout.splitlines() if re.match(STAMP, line)]
    assert (tmp_path / "study" / "study.log").read_text().splitlines() == events
    text = "\n".join(events)
    assert re.search(r"(checking the raw dataset|reusing the preparation)", text)
    for r in rows:
        assert f"stage {r.stage_id} started: {r.family_label} k{r.kernel_size}" in text
        assert re.search(rf"stage {r.stage_id} epoch 1/1 loss \d+\.\d{{3}} .*ETA 0 s", text)
        assert re.search(rf"stage {r.stage_id} completed: Dice {r.mean_dice:.4f} after 1 epochs in \d+ s", text)
    assert events[-1][20:].startswith("study finished: 4 completed; best Dice")
    assert "Traceback" not in result.stdout + result.stderr and "elapsed" not in result.stdout  # no panel
    assert result.stdout.splitlines()[len(events)].endswith("4 completed; finished")  # the result lines follow
    assert all((tmp_path / "study" / "stages" / r.stage_id / "stage.log").is_file() for r in rows)


def wait_for(proc: subprocess.Popen, study: Path, found, what: str, poll_s: float = 0.2):
    """Poll the study's results until a row satisfies ``found`` (then return it) while the run goes on."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        rows = read_results(study) if (study / "results.csv").exists() else []
        row = next((r for r in rows if found(r)), None)
        if row is not None:
            return row
        time.sleep(poll_s)
    raise AssertionError(what)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the whole run, then let Ray's reaper take down the orphaned cluster."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    time.sleep(3)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sigkill_during_second_stage_then_resume(tmp_path: Path, nnunet_dirs: dict) -> None:
    path = study_file(tmp_path, nnunet_dirs, training__epochs=2, search__families=1,
                      space={"families": FAMILIES[:1], "kernels": [3, 5]})
    study = tmp_path / "study"
    proc = subprocess.Popen(command(path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                            start_new_session=True)

    def second_stage_checkpointed(r) -> bool:
        return r.kernel_size == 5 and r.status == "running" and any((study / "stages" / r.stage_id).rglob("*.pt*"))

    wait_for(proc, study, second_stage_checkpointed, "the second stage never started")
    first = by_kernel(read_results(study))[("a", 3)]
    assert first.status == "completed"
    checkpoint = first.checkpoint_path(study)
    digest, mtime = _digest(checkpoint), checkpoint.stat().st_mtime_ns
    kill(proc)

    run(path)
    rows = read_results(study)
    assert sorted(r.stage_id for r in rows) == sorted({r.stage_id for r in rows}) and len(rows) == 2
    again = by_kernel(rows)
    assert again[("a", 5)].status == "completed"
    assert again[("a", 3)].wall_time_s == first.wall_time_s
    assert _digest(checkpoint) == digest and checkpoint.stat().st_mtime_ns == mtime


def test_memory_constraint_excludes_a_family(tmp_path: Path, nnunet_dirs: dict) -> None:
    from scalekit.mednext import MedNeXtConfig
    from scalekit.profiler import profile
    from scalekit.space import Family

    small = Family(4, 1, 2)
    big = Family(16, 1, 4, "big")
    template = MedNeXtConfig(num_classes=5, deep_supervision=True)
    peaks = [profile(f.config(3, template), 32, 2, amp=None, device="cpu").peak_memory_bytes for f in (small, big)]
    assert peaks[0] < peaks[1]
    budget_gb = (peaks[0] + peaks[1]) / 2 / 2**30
    families = [FAMILIES[0], {"label": "big", "n_channels": 16, "block_counts": 1, "exp_r": 4}]
    path = study_file(tmp_path, nnunet_dirs, space={"families": families, "kernels": [3]},
                      constraints={"max_memory_gb": budget_gb})
    run(path)
    stages = by_kernel(read_results(tmp_path / "study"))
    assert stages[("a", 3)].status == "completed"
    infeasible = stages[("big", 3)]
    assert infeasible.status == "infeasible" and "budget" in infeasible.reason
    assert infeasible.mean_dice is None and not infeasible.checkpoint
    assert not (tmp_path / "study" / "stages" / infeasible.stage_id).exists(), "an infeasible stage never trains"


def test_nan_loss_fails_the_stage_and_the_study_completes(tmp_path: Path, nnunet_dirs: dict) -> None:
    path = study_file(tmp_path, nnunet_dirs, training__iterations_per_epoch=4,
                      search__families=1, space={"families": FAMILIES[:1], "kernels": [3, 5]},
                      finish={"report": True, "export": {"select": "best", "to": "config"}})
    # defect 9: a study with no completed stage finished, but found nothing (the loss is made NaN by injection:
    # an absurd learning rate that would make it so is refused by the study file's bounds)
    result = run(path, expect=1, env={"SCALEKIT_FAULT": "nan-loss"})
    assert "finished" in result.stdout and (tmp_path / "study" / "report.html").is_file()
    assert "no stage completed" in result.stderr and "1 x failed: " in result.stderr
    assert not (tmp_path / "study" / "export").exists()
    stages = by_kernel(read_results(tmp_path / "study"))
    assert stages[("a", 3)].status == "failed"
    assert "loss became nan" in stages[("a", 3)].reason.lower()
    assert stages[("a", 5)].status == "stopped" and "failed" in stages[("a", 5)].reason


def test_halving_with_controls_killed_at_a_rung_resumes_there(tmp_path: Path, nnunet_dirs: dict) -> None:
    """Successive halving (rungs 1 and 2 epochs) with the continuation control, through Ray: SIGKILL while the
    k3 stage trains from its rung to the full budget; the rerun continues it from its checkpoint (one more
    epoch, not two) and keeps its rung's score, and the control trains beside the UpKern step."""
    path = study_file(tmp_path, nnunet_dirs, training__epochs=2, search__families=1,
                      search__scheduler="halving", search__eta=2, search__min_epochs=1,
                      chain={"min_improvement": None, "controls": ["continue"]},
                      space={"families": FAMILIES[:1], "kernels": [3, 5]})
    study = tmp_path / "study"
    proc = subprocess.Popen(command(path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                            start_new_session=True)
    promoted = wait_for(proc, study, lambda r: r.status == "running" and r.target_epochs == 2 and r.epochs == 1,
                        "no stage was promoted past its first rung")
    kill(proc)
    result = run(path)
    rows = {r.stage_id: r for r in read_results(study)}
    k3 = rows[promoted.stage_id]
    assert k3.status == "completed" and k3.epochs == 2 and k3.dice_curve["1"] == promoted.dice_curve["1"]
    import json

    outcome = json.loads((study / "stages" / k3.stage_id / "outcome.json").read_text())
    assert outcome["epochs_run"] == 1 and outcome["epochs_total"] == 2, "the rerun continued from the rung"
    control, step = rows[f"{k3.stage_id}c"], rows[k3.stage_id.replace("-k3", "-k5")]
    assert control.init == "continue" and control.status == step.status == "completed"
    assert control.epochs == step.epochs == 2 and control.cum_epochs == step.cum_epochs == 4
    assert control.config["enc_kernel_size"] == 3 and step.config["enc_kernel_size"] == 5
    assert all(r.cum_train_tflops and r.device_hours for r in rows.values())
    assert "compute:" in result.stdout and "training TFLOPs" in result.stdout
