"""Study files: validation reports every problem with its field path; spaces build the right families."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scalekit.space import Family, SearchSpace, scale_family
from scalekit.study import StudyConfigError, build_space, load_study_config
from scalekit.studyfile import read_yaml

from tests.helpers.study_files import VALID, write


def test_valid_study_resolves_paths(tmp_path: Path) -> None:
    config = load_study_config(write(tmp_path, VALID), base=tmp_path)
    assert config.output_dir == (tmp_path / "runs" / "tiny").resolve()
    assert config.objectives[0].metric == "mean_dice" and config.objectives[1].resolved_direction == "minimize"


def test_three_mistakes_reported_with_field_paths(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    data["dataset"]["patch_size"] = [40, 32, 32]
    data["search"]["sampler"] = "cmaes"
    data["space"]["kernels"] = [3, 4]
    path = write(tmp_path, data)
    with pytest.raises(StudyConfigError) as info:
        load_study_config(path)
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "dataset.patch_size: [40, 32, 32]: every size must be a multiple of 16" in message
    assert "search.sampler:" in message and "'nsga2'" in message
    assert "space.kernels: [3, 4]: kernel sizes must be odd" in message
    result = subprocess.run(
        [sys.executable, "-c", "from scalekit.cli import main; main()", "study", "validate", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    for field in ("dataset.patch_size", "search.sampler", "space.kernels"):
        assert field in result.stdout
    assert "Traceback" not in result.stderr


def test_unknown_field_and_missing_section(tmp_path: Path) -> None:
    data = {k: v for k, v in VALID.items() if k != "space"}
    data["trainig"] = {}
    with pytest.raises(StudyConfigError) as info:
        load_study_config(write(tmp_path, data))
    assert "space: Field required" in str(info.value)
    assert "trainig: Extra inputs are not permitted (unknown field" in str(info.value)


def test_yaml_syntax_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(StudyConfigError, match=r"bad\.yaml is not valid YAML: line 2, column 1: expected ','") as info:
        load_study_config(path)
    assert "\n" not in str(info.value)


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    """A key that overrides a merged one (``<<: *base``) is no duplicate; two explicit keys are."""
    path = tmp_path / "merge.yaml"
    path.write_text("base: &base {x: 1, y: 2}\nother:\n  <<: *base\n  x: 3\nlr: 2e-3\n")
    assert read_yaml(path) == {"base": {"x": 1, "y": 2}, "other": {"x": 3, "y": 2}, "lr": 0.002}
    path.write_text("a: 1\nb:\n  c: 2\n  c: 3\n")
    with pytest.raises(StudyConfigError, match=r"merge\.yaml, line 4: key 'c' appears twice .* \(first on line 3\)"):
        read_yaml(path)


def test_compound_scaling_and_presets() -> None:
    fam = scale_family("S", depth=2.0, expansion=1.5, n_channels=16)
    assert fam.block_counts == (4,) * 9 and fam.exp_r == (3,) * 9 and fam.n_channels == 16
    assert fam.checkpointing  # 36 blocks >= MedNeXt-M's 35
    assert not scale_family("S", 1.0, 1.0, 32).checkpointing
    assert scale_family("S", 1.0, 1.0, 32).family_id == Family.from_preset("S").family_id
    space = SearchSpace.build(presets=["S", "B"], scaling=("S", [1.0, 2.0], [1.0], [32]))
    assert len(space) == 3  # S appears twice (preset and scaling d1 e1) and is kept once
    assert space.seeds == (Family.from_preset("S").family_id, Family.from_preset("B").family_id)
    from scalekit.mednext import MedNeXtConfig, count_parameters

    net = Family.from_preset("S").build(3, MedNeXtConfig(in_channels=1, num_classes=14, deep_supervision=True))
    assert count_parameters(net) == 5_564_806  # the published MedNeXt-S k3, minus the reference's dummy
    assert space.axis_choices() == {"source": ["listed", "scaling"], "family_index": [0, 1], "depth": [2.0],
                                    "expansion": [1.0], "n_channels": [32]}
    assert dict(space.families[2].axes) == {"depth": 2.0, "expansion": 1.0, "n_channels": 32}
    assert space.family_at({"source": "scaling", **dict(space.families[2].axes)}) == space.families[2]
    assert space.family_at({"source": "listed", "family_index": 1}) == Family.from_preset("B")
    # the scaling point d1 e1 C32 is MedNeXt-S itself: it gives the listed family
    assert space.family_at({"source": "scaling", "depth": 1.0, "expansion": 1.0, "n_channels": 32}) == space.families[0]


def test_build_space_from_study(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    data["space"]["families"] = [{"n_channels": 8, "block_counts": 1, "exp_r": [2, 2, 2, 2, 3, 2, 2, 2, 2]}]
    space = build_space(load_study_config(write(tmp_path, data)))
    assert [f.n_channels for f in space.families] == [4, 8]
    assert space.families[1].exp_r[4] == 3 and space.kernels == (3, 5)


@pytest.mark.slow
def test_study_profile_lists_which_stages_fit(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    data["output_dir"] = str(tmp_path / "out")
    data["space"]["families"] = [{"label": "wide", "n_channels": 8, "block_counts": 1, "exp_r": 2}]
    env = {**__import__("os").environ, "SCALEKIT_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("nnUNet_raw", None)
    outputs = {}
    for budget in (24, 0.001):
        data["constraints"]["max_memory_gb"] = budget
        path = write(tmp_path, data)
        result = subprocess.run(
            [sys.executable, "-m", "scalekit", "study", "profile", str(path), "--in-channels", "1",
             "--num-classes", "3"], capture_output=True, text=True, timeout=300, env=env,
        )
        assert result.returncode == 0, result.stderr
        outputs[budget] = result.stdout
    assert "4 of 4 stages fit (predicted memory)" in outputs[24]
    assert "0 of 4 stages fit" in outputs[0.001] and "budget 0.001 GB" in outputs[0.001]
    missing = subprocess.run([sys.executable, "-m", "scalekit", "study", "profile", str(path)],
                             capture_output=True, text=True, timeout=300, env=env)
    assert missing.returncode == 2 and "--in-channels and --num-classes" in missing.stderr
    assert f"dataset.id: Dataset991_* not found: looked in {tmp_path / 'out' / 'nnunet' / 'raw'}" in missing.stderr
    assert "AMOS" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def test_halving_settings_are_checked(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    data["training"]["epochs"] = 9
    data["search"].update(scheduler="halving", eta=1, min_epochs=12, budget_gpu_hours=0)
    data["chain"] = {"controls": ["repeat"]}
    with pytest.raises(StudyConfigError) as info:
        load_study_config(write(tmp_path, data))
    message = str(info.value)
    for field in ("search.eta", "search.budget_gpu_hours", "chain.controls"):
        assert field in message, message
    data["search"].update(eta=3, budget_gpu_hours=10)
    data["chain"] = {"controls": ["continue"]}
    with pytest.raises(StudyConfigError, match="min_epochs=12 is more than training.epochs=9"):
        load_study_config(write(tmp_path, data))
    data["search"]["min_epochs"] = 1
    config = load_study_config(write(tmp_path, data))
    assert (config.search.scheduler, config.chain.controls) == ("halving", ("continue",))
