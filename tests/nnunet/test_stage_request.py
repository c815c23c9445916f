"""A stage's request.json decides whether a rerun continues the stage: one written before stored configs
carried their ``arch`` still continues; a changed architecture is refused, naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalekit.mednext import preset_config
from scalekit.nnunet import PreparedDataset, StageMismatchError, StageRequest
from scalekit.nnunet.stage import _prepare_output


def _request(tmp_path: Path, kernel: int = 3) -> StageRequest:
    prepared = PreparedDataset(dataset_id=991, dataset_name="Dataset991_Tiny", raw_dir=tmp_path / "raw",
                               preprocessed_root=tmp_path / "pre", plans_identifier="nnUNetPlans",
                               configuration="3d_fullres", label_names=("background", "organ"),
                               patch_size=(32, 32, 32), spacing=(1.0, 1.0, 1.0), num_input_channels=1)
    return StageRequest(prepared=prepared, fold=0, arch=preset_config("T", 1, 2, kernel), epochs=1,
                        iterations_per_epoch=1, output_dir=tmp_path / "stage", resume=True)


def test_a_request_written_before_configs_carried_arch_still_continues(tmp_path: Path) -> None:
    request = _request(tmp_path)
    assert _prepare_output(request) is False  # a new stage
    saved = tmp_path / "stage" / "request.json"
    old = json.loads(saved.read_text())
    assert old["arch"]["arch"] == "mednext"
    del old["arch"]["arch"]
    saved.write_text(json.dumps(old))
    assert _prepare_output(request) is True
    with pytest.raises(StageMismatchError, match=r"different \['arch'\]"):
        _prepare_output(_request(tmp_path, kernel=5))
