"""What a study directory accepts: its own study only, hardware it can get, files others can read, one writer."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from scalekit.study import StudyConfig, StudyConfigError, write_results
from scalekit.study.lock import StudyLock, StudyLockedError
from scalekit.study.engine.planning import HardwareError, resolve_hardware
from scalekit.records import StudyDir
from scalekit.study.runner import check_same_study

BASE = {
    "name": "ident",
    "output_dir": "runs/ident",
    "dataset": {"id": 990, "name": "Dataset990_ScalekitDemo", "patch_size": [32, 32, 32],
                "demo": {"cases": 6, "size": 32}},
    "space": {"families": [{"n_channels": 4, "block_counts": 1, "exp_r": 2}], "kernels": [3, 5]},
}


def config(tmp_path: Path, **changes) -> StudyConfig:
    data = {**BASE, **changes}
    return StudyConfig.model_validate(data).resolve_paths(tmp_path)


def saved(tmp_path: Path, cfg: StudyConfig) -> Path:
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    StudyDir(cfg.output_dir).study_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return cfg.output_dir


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "renamed"}, "name"),
        ({"storage": "sqlite:////tmp/elsewhere.db"}, "storage"),
        ({"search": {"sampler": "random"}}, "search.sampler"),
        ({"space": {"families": [{"n_channels": 8, "block_counts": 1, "exp_r": 2}], "kernels": [3, 5]}},
         "space.families"),
        ({"training": {"epochs": 3}}, "training.epochs"),
    ],
)
def test_a_changed_study_is_refused_naming_the_field(tmp_path: Path, changes: dict, field: str) -> None:
    """Defect 4: only epochs was refused; a renamed study forked a second Optuna study in optuna.db."""
    study_dir = saved(tmp_path, config(tmp_path))
    with pytest.raises(StudyConfigError) as err:
        check_same_study(config(tmp_path, **changes), study_dir)
    assert field in str(err.value) and "new output_dir" in str(err.value)


def test_where_and_how_it_runs_may_change(tmp_path: Path) -> None:
    study_dir = saved(tmp_path, config(tmp_path))
    moved = config(tmp_path, ray={"max_concurrent": 2}, finish={"report": False})
    check_same_study(moved.model_copy(update={"output_dir": tmp_path / "moved"}), study_dir)


def test_auto_gpus_follow_the_cluster(tmp_path: Path) -> None:
    """Defect 12: `auto` asked for one GPU per trial on any cluster, and a CPU-only cluster waited forever.
    Issue 15: a trial's CPUs and GPUs must fit on one node, not on the cluster's total."""
    cfg = config(tmp_path, ray={"address": "auto"})
    cpu_nodes = [{"CPU": 4.0}, {"CPU": 2.0}]
    assert resolve_hardware(cfg, cpu_nodes) == (0.0, "cpu", None)
    assert resolve_hardware(cfg, [{"CPU": 4.0}, {"CPU": 4.0, "GPU": 2.0}]) == (1.0, "cuda", "fp16")
    with pytest.raises(HardwareError, match=r"asks for training.device: cuda, .*\(node 1: 4 CPU \+ 0 GPU; "
                                            r"node 2: 2 CPU \+ 0 GPU\)"):
        resolve_hardware(config(tmp_path, training={"device": "cuda"}), cpu_nodes)
    two_one_gpu_nodes = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]
    assert resolve_hardware(config(tmp_path, ray={"gpus_per_trial": 1}), two_one_gpu_nodes)[0] == 1.0
    with pytest.raises(HardwareError, match=r"gpus_per_trial=2 on one node, .*node 2: 4 CPU \+ 1 GPU\)"):
        resolve_hardware(config(tmp_path, ray={"gpus_per_trial": 2}), two_one_gpu_nodes)  # 2 GPUs in total
    with pytest.raises(HardwareError, match="cpus_per_trial=6 and"):
        resolve_hardware(config(tmp_path, ray={"cpus_per_trial": 6}), cpu_nodes)  # 6 CPUs in total
    with pytest.raises(HardwareError, match="no alive node"):
        resolve_hardware(cfg, [])


def test_results_table_is_readable_by_others(tmp_path: Path) -> None:
    """Defect 13: results.csv was created with mkstemp's mode 0600."""
    path = write_results(tmp_path, [])
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name != "results.csv"], "no temporary file left"


def test_lock_names_its_holder_and_frees_on_release(tmp_path: Path) -> None:
    with StudyLock(tmp_path):
        with pytest.raises(StudyLockedError) as err:
            StudyLock(tmp_path).acquire()
        assert f"PID {os.getpid()}" in str(err.value) and str(tmp_path) in str(err.value)
    with StudyLock(tmp_path):  # free again
        pass
