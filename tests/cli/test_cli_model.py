"""`scalekit model summary` and `scalekit upkern` through the installed console script."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from scalekit.cli import main
from scalekit.mednext import create_mednext, load_state, save_checkpoint

from tests.helpers.reference_layout import random_reference_state
from tests.helpers.checkpoints import write_v1_checkpoint


def scalekit(*args: str) -> subprocess.CompletedProcess:
    code = "from scalekit.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_summary_json_params_of_s_k3() -> None:
    result = scalekit("model", "summary", "--preset", "S", "--kernel", "3", "--in-channels", "1",
                      "--num-classes", "14", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["params"] == 5564806
    assert sum(data["stages"].values()) == data["params"]


def test_even_kernel_is_a_one_line_error() -> None:
    result = scalekit("model", "summary", "--preset", "S", "--kernel", "4")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "kernel_size=4" in lines[0] and "odd" in lines[0]
    assert "Traceback" not in result.stderr


def test_upkern_cli_from_reference_checkpoint(tmp_path: Path) -> None:
    state = random_reference_state(prefix="module.", n_channels=4, num_classes=3, block_counts=(1,) * 9)
    src = write_v1_checkpoint(tmp_path / "k3.model", state)
    out = tmp_path / "k5.pt"
    result = scalekit("upkern", str(src), "--kernel", "5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "resampled" in result.stdout
    new_state, config, kind = load_state(out)
    assert kind == "scalekit" and config.enc_kernel_size == 5 and config.dec_kernel_size == 5
    assert new_state["enc_block_0.0.conv1.weight"].shape[-3:] == (5, 5, 5)
    assert torch.equal(new_state["stem.weight"], state["module.stem.weight"])


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_upkern_of_a_text_file_is_a_one_line_error(tmp_path: Path) -> None:
    text = tmp_path / "some_text_file.txt"
    text.write_text("not weights\n")
    line = one_line_error(scalekit("upkern", str(text), "--kernel", "5", "--out", str(tmp_path / "x.pt")))
    assert line.startswith(f"error: {text} is not a PyTorch checkpoint")


def test_unwritable_output_is_a_one_line_error(tmp_path: Path) -> None:
    model = create_mednext("T", 1, 3, 3, True)
    src = save_checkpoint(tmp_path / "k3.pt", model)
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "x.pt"  # a file stands where the output folder should be
    line = one_line_error(scalekit("upkern", str(src), "--kernel", "5", "--out", str(out)))
    assert line.startswith(f"error: cannot access {tmp_path / 'a_file'}: ")


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["scalekit", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code


@pytest.mark.parametrize(("code", "hint"), [
    (errno.ENOSPC, "(free some space on the disk of {folder})"),
    (errno.EACCES, "(check the permissions of {folder})"),
    (errno.EROFS, "({folder} is on a read-only file system; choose another folder)"),
])
def test_os_errors_name_the_file(monkeypatch, capsys, tmp_path: Path, code: int, hint: str) -> None:
    """A full disk, a missing permission or a read-only disk while writing: one line, exit 2."""
    src = save_checkpoint(tmp_path / "k3.pt", create_mednext("T", 1, 3, 3, True))

    def failing_save(obj: object, path: Path) -> None:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(torch, "save", failing_save)
    assert run_main(monkeypatch, "upkern", str(src), "--kernel", "5", "--out", str(tmp_path / "out" / "x.pt")) == 2
    err = capsys.readouterr().err
    tmp = tmp_path / "out" / "x.pt.tmp"
    assert err == f"error: cannot access {tmp}: {os.strerror(code)} {hint.format(folder=tmp.parent)}\n"


def test_other_exceptions_keep_their_traceback(monkeypatch, tmp_path: Path) -> None:
    src = save_checkpoint(tmp_path / "k3.pt", create_mednext("T", 1, 3, 3, True))

    def broken_save(obj: object, path: Path) -> None:
        raise RuntimeError("a bug deep in torch")

    monkeypatch.setattr(torch, "save", broken_save)
    monkeypatch.setattr(sys, "argv", ["scalekit", "upkern", str(src), "--kernel", "5", "--out", str(tmp_path / "x.pt")])
    with pytest.raises(RuntimeError, match="a bug deep in torch"):
        main()


def test_version() -> None:
    import scalekit
    from scalekit.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"scalekit {scalekit.__version__}"
    assert scalekit.__version__[0].isdigit()
