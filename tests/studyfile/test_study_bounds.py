"""Study files: values no real study reaches are refused with the field and its limit; a space lists each network
and each label once (scaling points may coincide by design)."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scalekit.study import StudyConfigError, build_space, load_study_config
from scalekit.studyfile import limits

from tests.helpers.study_files import VALID, write


def with_value(dotted: str, value: object) -> dict:
    """VALID with one field (``a.b.c``, list indices as numbers) set to ``value``."""
    data = copy.deepcopy(VALID)
    *parents, last = dotted.split(".")
    node: object = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


BOUNDED = [
    ("training.epochs", limits.MAX_EPOCHS),
    ("training.iterations_per_epoch", limits.MAX_ITERATIONS),
    ("training.val_iterations", limits.MAX_ITERATIONS),
    ("training.initial_lr", limits.MAX_LR),
    ("training.nsd_tolerance_mm", limits.MAX_TOLERANCE_MM),
    ("dataset.batch_size", limits.MAX_BATCH),
    ("space.preset_channels", limits.MAX_CHANNELS),
    ("search.families", limits.MAX_FAMILIES),
    ("search.eta", limits.MAX_ETA),
    ("search.budget_epochs", limits.MAX_BUDGET_EPOCHS),
    ("search.budget_gpu_hours", limits.MAX_GPU_HOURS),
    ("constraints.max_memory_gb", limits.MAX_MEMORY_GB),
    ("constraints.max_gflops", limits.MAX_GFLOPS),
    ("resources.cpus_per_trial", limits.MAX_CPUS),
    ("resources.gpus_per_trial", limits.MAX_GPUS),
    ("resources.max_concurrent", limits.MAX_CONCURRENT),
]


@pytest.mark.parametrize(("field", "limit"), BOUNDED, ids=[f for f, _ in BOUNDED])
def test_each_bound_admits_its_limit_and_refuses_above(tmp_path: Path, field: str, limit: float) -> None:
    whole = isinstance(limit, int)
    load_study_config(write(tmp_path, with_value(field, limit)))  # the limit itself is fine
    above = limit * 10 if whole else limit * 10.0
    with pytest.raises(StudyConfigError) as info:
        load_study_config(write(tmp_path, with_value(field, above)))
    message = str(info.value)
    shown = re.search(rf"{re.escape(field)}: Input should be less than or equal to (\S+?)(?: or '\w+')?, got (\S+) ", message)
    assert shown and float(shown[1]) == limit and float(shown[2]) == above, message
    assert "sanity limit" in message


@pytest.mark.parametrize(("field", "value", "limit"), [
    ("dataset.patch_size.0", 2048, limits.MAX_PATCH),
    ("dataset.spacing", [1.0, 1.0, 1000.0], limits.MAX_SPACING_MM),
    ("space.kernels", [3, 33], limits.MAX_KERNEL),
    ("space.scaling", {"base": "S", "depth": [1.0, 100.0], "n_channels": [8]}, limits.MAX_MULTIPLIER),
    ("space.scaling", {"base": "S", "n_channels": [8, 100000]}, limits.MAX_CHANNELS),
])
def test_sequence_entries_are_bounded(tmp_path: Path, field: str, value: object, limit: float) -> None:
    with pytest.raises(StudyConfigError) as info:
        load_study_config(write(tmp_path, with_value(field, value)))
    assert f"less than or equal to {limit:g}, got" in str(info.value)


def test_explicit_family_bounds(tmp_path: Path) -> None:
    data = with_value("space.families", [{"n_channels": 10**9, "block_counts": 2, "exp_r": [2] * 8 + [1000]}])
    with pytest.raises(StudyConfigError) as info:
        load_study_config(write(tmp_path, data))
    message = str(info.value)
    assert f"space.families.0.n_channels: Input should be less than or equal to {limits.MAX_CHANNELS}" in message
    assert f"space.families.0.exp_r: Every entry should be less than or equal to {limits.MAX_PER_STAGE}" in message


def test_demo_voxels_bounded_in_combination(tmp_path: Path) -> None:
    demo = {"name": "Dataset991_Demo", "patch_size": [32, 32, 32], "demo": {"cases": 24, "size": 64}}
    load_study_config(write(tmp_path, with_value("dataset", demo)))
    demo["demo"] = {"cases": 1000, "size": 256}  # each within its own bound, together 1.7e10 voxels
    with pytest.raises(StudyConfigError) as info:
        load_study_config(write(tmp_path, with_value("dataset", demo)))
    message = str(info.value)
    assert "dataset.demo" in message and "1000 x 256**3" in message and "at most 64 at size 256" in message
    demo["demo"] = {"cases": 24, "size": 100000}
    with pytest.raises(StudyConfigError) as info:
        load_study_config(write(tmp_path, with_value("dataset", demo)))
    assert f"dataset.demo.size: Input should be less than or equal to {limits.MAX_DEMO_SIZE}" in str(info.value)


def test_several_absurd_values_in_one_validate(tmp_path: Path) -> None:
    data = with_value("training.epochs", 10**30)
    data["dataset"]["batch_size"] = 10**6
    data["search"]["eta"] = 1000
    path = write(tmp_path, data)
    result = subprocess.run(
        [sys.executable, "-c", "from scalekit.cli import main; main()", "study", "validate", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "3 problem(s)" in result.stderr
    for line in (f"training.epochs: Input should be less than or equal to {limits.MAX_EPOCHS}",
                 f"dataset.batch_size: Input should be less than or equal to {limits.MAX_BATCH}",
                 f"search.eta: Input should be less than or equal to {limits.MAX_ETA}"):
        assert line in result.stdout
    assert "Traceback" not in result.stderr


def test_dataset_id_keeps_nnunet_hint(tmp_path: Path) -> None:
    with pytest.raises(StudyConfigError) as info:
        load_study_config(write(tmp_path, with_value("dataset.id", 1000)))
    assert "three digits" in str(info.value) and "sanity limit" not in str(info.value)


def test_duplicate_presets_refused(tmp_path: Path) -> None:
    with pytest.raises(StudyConfigError) as info:
        load_study_config(write(tmp_path, with_value("space.presets", ["S", "b", "s"])))
    assert "space.presets: S listed more than once" in str(info.value)


def test_duplicate_families_and_labels_refused(tmp_path: Path) -> None:
    families = [
        {"n_channels": 8, "block_counts": 2, "exp_r": 2, "label": "one"},
        {"n_channels": 8, "block_counts": [2] * 9, "exp_r": 2, "label": "two"},  # entry 0 written out
        {"n_channels": 16, "block_counts": 2, "exp_r": 2, "label": "ONE"},
        {"n_channels": 4, "block_counts": 2, "exp_r": 2, "label": "s"},  # preset S's name
    ]
    data = with_value("space.families", families)
    with pytest.raises(StudyConfigError) as info:
        load_study_config(write(tmp_path, data))
    message = str(info.value)
    assert "entries 0 and 1 are the same network (C8, B 2x9, R 2x9)" in message
    assert "entries 0 and 2 share the label 'ONE'" in message
    assert "entry 3's label 's' is the name of preset S" in message


def test_family_equal_to_listed_preset_refused(tmp_path: Path) -> None:
    from scalekit.mednext.presets import PRESETS

    s = PRESETS["S"]
    family = {"n_channels": 4, "block_counts": list(s.block_counts), "exp_r": list(s.exp_r)}
    with pytest.raises(StudyConfigError) as info:
        load_study_config(write(tmp_path, with_value("space.families", [family])))
    assert "entry 0 is the same network as preset S" in str(info.value)
    family["n_channels"] = 8  # not preset_channels 4: another network
    load_study_config(write(tmp_path, with_value("space.families", [family])))


def test_scaling_points_may_coincide(tmp_path: Path) -> None:
    scaling = {"base": "S", "depth": [1.0, 1.1], "expansion": [1.0], "n_channels": [4]}  # 1.1 rounds to 1
    data = with_value("space.scaling", scaling)
    config = load_study_config(write(tmp_path, data))
    space = build_space(config)
    networks = [(f.n_channels, f.block_counts, f.exp_r) for f in space.families]
    assert len(networks) == len(set(networks)) == 1


def test_shipped_studies_are_within_bounds() -> None:
    for path in sorted(Path("studies").glob("*.yaml")):
        load_study_config(path)
