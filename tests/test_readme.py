"""Every ```python block of README.md runs as written.

The blocks run in order, in one namespace, in a fresh working directory, each as its own script:

- the network-kinds block profiles a tiny nnU-Net ResEnc on the CPU (cached like the model block's);
- the model block makes what it needs itself (a tiny reference-format checkpoint, saved in the snippet);
  its profile is cached in a temporary ``$SCALEKIT_CACHE_DIR``;
- the results block reads ``runs/demo``, which this test writes with the hand-made fixture study
  (``tests/helpers/study_fixture.py``: the same ``results.csv`` and checkpoints a real study writes); running
  the demo itself is the README's first command, done by ``tests/study/test_demo_e2e.py``.

A block added later that needs anything else fails here until this docstring and the test say how it runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scalekit.results.selection import find_knee

from tests.helpers.study_fixture import make_study

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    """The contents of the ```python fenced blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def test_python_blocks_are_found() -> None:
    blocks = python_blocks("text\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = 2\n```\n")
    assert blocks == ["a = 1\n", "b = 2\n"]


def test_readme_python_blocks_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks(README.read_text())
    assert len(blocks) == 4, "a new README block: say in this module how it runs"
    records = make_study(tmp_path / "runs" / "demo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALEKIT_CACHE_DIR", str(tmp_path / "cache"))
    for index, block in enumerate(blocks, start=1):
        exec(compile(block, f"README.md python block {index}", "exec"), {"__name__": f"readme_block_{index}"})
    printed = capsys.readouterr().out.splitlines()
    params, gflops_fvcore, gflops_train, gib = printed[0].split()  # the ResEnc's profile
    assert int(params) > 0 and 0 < float(gflops_fvcore) < float(gflops_train) and 0 < float(gib) < 1
    assert "copied" in printed[2] and "resampled" in printed[2]  # the UpKern summary
    assert printed[3].startswith("B-k5 0.8")  # the fixture's highest Dice (tied with G-k3, listed later)
    assert printed[3].endswith(f"knee: {find_knee(records).stage.stage_id}")
    assert "stage_id" in printed[4] and printed[5].split()[1] == "B-k5"  # the results block: the DataFrame's top
