"""Running `scalekit study validate` in-process on a copy of the demo study, for the preflight tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scalekit.cli import main


STUDIES = Path(__file__).resolve().parents[2] / "studies"


def demo_study(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """studies/demo.yaml with its output under ``tmp_path`` and ``changes`` (``"section.field": value``)."""
    data = yaml.safe_load((STUDIES / "demo.yaml").read_text())
    data["output_dir"] = str(tmp_path / "out")
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        section = data
        for parent in parents:
            section = section.setdefault(parent, {})
        section[key] = value
    return data


def validate(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``scalekit study validate PATH``."""
    monkeypatch.setattr(sys, "argv", ["scalekit", "study", "validate", str(path)])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], path: Path) -> list[str]:
    """The problem lines of a study that validate must refuse (exit 2, one error line, no traceback)."""
    code, out, err = validate(monkeypatch, capsys, path)
    assert code == 2, out + err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in out + err
    return [line.removeprefix(f"{path}: ") for line in out.strip().splitlines()]
