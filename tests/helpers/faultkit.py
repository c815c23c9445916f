"""Helpers of the fault-injection tests: tiny study files, running `scalekit study run` in its own process
group, killing it at a named fault point (scalekit.faults), and checking what a rerun left.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import yaml

from scalekit.study import read_results
from scalekit.study.runner import STUDY_DIR_ENV

FAMILY = {"label": "a", "n_channels": 4, "block_counts": 1, "exp_r": 2}
# One augmentation process at most is not enough for a deterministic run: nnU-Net's worker processes seed
# themselves at random. With none (0) the batches come from the seeded main process, so two runs of one
# stage have equal losses and the UpKern start of a resumed stage can be compared with an uninterrupted run.
ENV = {**os.environ, "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0", "OMP_NUM_THREADS": "1"}
ENV = {k: v for k, v in ENV.items() if not k.startswith("SCALEKIT_FAULT")}


def study_file(folder: Path, nnunet_dirs: dict[str, str], kernels: list[int], epochs: int, **changes) -> Path:
    """A one-family study in ``folder/study`` on a 6-case demo dataset; ``changes`` replace top-level sections.
    It trains on the local backend (no Ray to start per run: what these tests check is the same on every backend,
    `tests/study/backend/test_backends.py`); tests of Ray itself pass ``backend={"kind": "ray"}``."""
    data = {
        "name": "faults",
        "output_dir": str(folder / "study"),
        "dataset": {"id": 994, "name": "Dataset994_Faults", "patch_size": [32, 32, 32], "batch_size": 2,
                    "demo": {"cases": 6, "size": 32, "seed": 0}, **nnunet_dirs},
        "training": {"epochs": epochs, "iterations_per_epoch": 2, "val_iterations": 1},
        "space": {"families": [FAMILY], "kernels": kernels},
        "chain": {"min_improvement": None},
        "search": {"sampler": "grid", "families": 1},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 1},
        "finish": {"report": True, "export": None},
        "backend": {"kind": "local"},
        **changes,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def command(path: Path) -> list[str]:
    return scalekit("study", "run", str(path), "--quiet")


def run(path: Path, expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(command(path), capture_output=True, text=True, timeout=900, env=ENV)
    assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def study_processes(study_dir: Path) -> list[int]:
    """PIDs of live processes started for this study (the driver's environment marks them all, Ray's too)."""
    mark = f"{STUDY_DIR_ENV}={study_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split(") ", 1)[1].split()[0]
        except OSError:
            continue
        if mark in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def wait_for_no_processes(study_dir: Path, timeout_s: float = 10.0) -> float:
    """Seconds until no process of the study is left; fails the test after ``timeout_s``."""
    start = time.monotonic()
    while study_processes(study_dir):
        assert time.monotonic() - start < timeout_s, f"processes left: {study_processes(study_dir)}"
        time.sleep(0.25)
    return time.monotonic() - start


def kill_at(path: Path, point: str, study_dir: Path, timeout_s: float = 600,
            while_waiting: Callable[[], None] = lambda: None) -> None:
    """Run the study until it reaches fault ``point`` (``name`` or ``name:stage``), then SIGKILL its group;
    ``while_waiting`` is called every 0.1 s until then."""
    kill_command_at(command(path), point, path.parent, timeout_s, while_waiting)
    wait_for_no_processes(study_dir)


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT back to its default in the child, so its Python raises KeyboardInterrupt on it as in a terminal: a
    process started in the background of a non-interactive shell (a CI job, ``cmd &``), or by pytest-xdist,
    inherits SIGINT ignored, and a Python started with it ignored never installs its handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_until(args: list[str], point: str, folder: Path, timeout_s: float = 600,
                while_waiting: Callable[[], None] = lambda: None, stdout: int = subprocess.DEVNULL) -> subprocess.Popen:
    """Start ``args`` (any scalekit command) in a process group of its own and return once it blocks at fault
    ``point`` (its marker file lives in ``folder``); stderr is a text pipe."""
    marker = folder / f"fault-{point.replace(':', '-')}"
    marker.unlink(missing_ok=True)
    env = {**ENV, "SCALEKIT_FAULT": point, "SCALEKIT_FAULT_MARKER": str(marker)}
    proc = subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE, env=env, start_new_session=True, text=True,
                            preexec_fn=_ctrl_c_as_in_a_terminal)
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the command ended (rc {proc.returncode}) before fault point {point}: "
                                 + proc.stderr.read()[-2000:])
        assert time.monotonic() < deadline, f"fault point {point} not reached in {timeout_s} s"
        while_waiting()
        time.sleep(0.1)
    return proc


def kill_command_at(args: list[str], point: str, folder: Path, timeout_s: float = 600,
                    while_waiting: Callable[[], None] = lambda: None) -> None:
    """Run ``args`` until it reaches fault ``point`` (see :func:`start_until`), then SIGKILL its group."""
    proc = start_until(args, point, folder, timeout_s, while_waiting)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()


def scalekit(*args: str) -> list[str]:
    """The command line of ``scalekit ARGS`` with this interpreter."""
    return [sys.executable, "-c", "from scalekit.cli import main; main()", *args]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(study_dir: Path) -> dict[str, tuple[str, float | None]]:
    """Checkpoint digest and recorded wall time of every completed stage."""
    if not (study_dir / "results.csv").exists():
        return {}
    return {r.stage_id: (digest(r.checkpoint_path(study_dir)), r.wall_time_s)
            for r in read_results(study_dir) if r.status == "completed"}


def first_losses(study_dir: Path) -> dict[int, float]:
    """First-epoch training loss of each completed stage, by kernel size."""
    out = {}
    for r in read_results(study_dir):
        if r.status == "completed":
            outcome = json.loads((study_dir / "stages" / r.stage_id / "outcome.json").read_text())
            out[r.kernel_size] = outcome["first_train_loss"]
    return out


def check_consistent(study_dir: Path, kernels: list[int], storage: str | None = None, name: str = "faults") -> None:
    """Every stage once and completed, UpKern parents right, the Optuna study ``name`` in ``storage`` (default:
    the study directory's SQLite) agreeing with results.csv."""
    rows = read_results(study_dir)
    assert sorted(r.kernel_size for r in rows) == sorted(kernels), [r.stage_id for r in rows]
    assert len({r.stage_id for r in rows}) == len(rows)
    by_kernel = {r.kernel_size: r for r in rows}
    for index, kernel in enumerate(kernels):
        row = by_kernel[kernel]
        assert row.status == "completed", (row.stage_id, row.status, row.reason)
        assert not Path(row.checkpoint).is_absolute() and row.checkpoint_path(study_dir).is_file()
        parent = by_kernel[kernels[index - 1]].stage_id if index else ""
        assert row.parent_stage == parent and row.init == ("upkern" if parent else "scratch")
        if parent:
            upkern = json.loads((study_dir / "stages" / row.stage_id / "upkern.json").read_text())
            assert upkern["source_config"]["enc_kernel_size"] == kernels[index - 1]
    study = optuna.load_study(study_name=name, storage=storage or f"sqlite:///{study_dir / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE], states
    trial = study.trials[0]
    assert trial.user_attrs["family_id"] == rows[0].family_id
    best = max(rows, key=lambda r: r.mean_dice)
    assert trial.values[0] == best.mean_dice
