"""Outputs under faults: atomic files, a report over an old one, exports that fail or move with their study.

The nnU-Net exports run on a hand-written prepared-dataset record, plans file and dataset.json
(:func:`add_prepared_dataset`), with the fixture's networks re-saved with deep supervision.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NoReturn

import pytest
import torch

from scalekit.report import output as report
from scalekit._atomic import atomic_path, staged_dir, write_atomic
from scalekit.nnunet import PreparedDataset
from scalekit.records import read_results, write_results
from scalekit.results.export import export_stage

from tests.helpers.faultkit import kill_command_at, scalekit


TARGETS = ("config", "nnunet")
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


class NotWeights:
    """Any class outside torch's allow-list: ``weights_only`` loading refuses to rebuild it."""


@pytest.fixture
def study(exportable_study: Path) -> Path:
    return exportable_study


def _shared_plans(study: Path, stage: str) -> Path:
    """The plans file an nnU-Net export of ``stage`` writes into the preprocessed folder."""
    prepared = PreparedDataset.from_dict(json.loads((study / "prepared.json").read_text()))
    return prepared.preprocessed_dir / f"scalekitPlans_{stage}.json"


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> content)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(folder: Path) -> list[str]:
    """Temporary files or folders left in ``folder`` (the atomic writers' ``.NAME.<random>.tmp`` siblings)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _disk_full(*_args: object, **_kwargs: object) -> NoReturn:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _write_half_then_fail(self: Path, data: bytes) -> NoReturn:
    """``Path.write_bytes`` on a disk that fills up halfway through."""
    with open(self, "wb") as handle:
        handle.write(data[: len(data) // 2])
    _disk_full()


def _broken_render(*_args: object) -> NoReturn:
    raise RuntimeError("render bug")


def test_atomic_write_failing_midway_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "page.html"
    assert write_atomic(page, "old content") == page
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert page.stat().st_mode == plain.stat().st_mode  # the umask's modes, not mkstemp's 0600
    plain.unlink()
    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_bytes", _write_half_then_fail)
        with pytest.raises(OSError, match=f"cannot write {page}: No space left on device") as failure:
            write_atomic(page, "new content, only half of it reaches the disk")
    assert failure.value.errno == errno.ENOSPC
    assert page.read_text() == "old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]
    with pytest.raises(RuntimeError, match="writer crashed"), atomic_path(page) as tmp:  # a writer taking a path
        tmp.write_bytes(b"partial")
        raise RuntimeError("writer crashed")
    assert page.read_text() == "old content" and _hidden(tmp_path) == []
    write_atomic(page, b"\x00new bytes")
    assert page.read_bytes() == b"\x00new bytes" and _hidden(tmp_path) == []


@pytest.mark.parametrize("fault", ["render raises", "disk full while writing"])
def test_report_over_an_old_report_survives_a_failure(
    deep_supervised_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    out = tmp_path / "report.html"
    report.write_report(deep_supervised_study, out, images=False)
    old = out.read_bytes()
    assert b"scalekit study report" in old
    with monkeypatch.context() as patch:
        if fault == "render raises":
            patch.setattr(report, "render_html", _broken_render)
        else:
            patch.setattr(Path, "write_bytes", _write_half_then_fail)
        with pytest.raises((RuntimeError, OSError)):
            report.write_report(deep_supervised_study, out, images=False)
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_images_replace_old_ones_only_when_all_are_written(
    deep_supervised_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kaleido

    figures = report.build_figures(report.build_report_data(deep_supervised_study))
    folder = tmp_path / "report_figures"
    paths_given: list[Path] = []

    def render(jobs: list[dict], **_kwargs: object) -> None:
        for job in jobs:
            paths_given.append(Path(job["path"]))
            Path(job["path"]).write_bytes(f"new {job['opts']['format']}".encode())

    monkeypatch.setattr(kaleido, "write_fig_from_object_sync", render)
    images, note = report.write_images(figures, folder)
    assert note is None and len(images) == 14 and (folder / "dice_vs_memory.png").read_bytes() == b"new png"
    assert all(p.parent == folder and p.name.startswith(".") and p.suffix in (".png", ".svg") for p in paths_given)
    old = _snapshot(folder)

    def render_then_crash(jobs: list[dict], **kwargs: object) -> None:
        render(jobs[:3], **kwargs)
        raise RuntimeError("browser crashed")

    monkeypatch.setattr(kaleido, "write_fig_from_object_sync", render_then_crash)
    images, note = report.write_images(figures, folder)
    assert images == [] and note and "browser crashed" in note
    assert _snapshot(folder) == old and _hidden(folder) == []


@pytest.mark.parametrize("to", TARGETS)
def test_unsafe_checkpoint_is_refused_before_anything_is_written(study: Path, tmp_path: Path, to: str) -> None:
    previous = tmp_path / "previous"
    export_stage(study, "A-k3", to, previous)
    before = _snapshot(previous)
    plans = _shared_plans(study, "A-k3")
    plans_before = plans.read_bytes() if to == "nnunet" else None
    torch.save({"state_dict": {}, "x": NotWeights()}, study / "checkpoints" / "A-k5.pt")
    for out in (previous, tmp_path / "fresh"):
        with pytest.raises(ValueError, match="will not unpickle"):
            export_stage(study, "A-k5", to, out)
    assert not (tmp_path / "fresh").exists()
    assert _snapshot(previous) == before and json.loads((previous / "selection.json").read_text())["stage_id"] == "A-k3"
    assert (plans.read_bytes() if plans.exists() else None) == plans_before
    assert not _shared_plans(study, "A-k5").exists()
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize(("to", "module", "writer", "file"), [
    ("nnunet", torch, "save", "mednext_A_k5_init.pth"),
    ("config", shutil, "copyfile", "weights.pt"),
])
def test_full_disk_leaves_no_partial_export(
    study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, to: str, module: object, writer: str, file: str
) -> None:
    previous = tmp_path / "previous"
    export_stage(study, "A-k3", to, previous)
    before = _snapshot(previous)
    plans = _shared_plans(study, "A-k3")
    plans_before = plans.read_bytes() if to == "nnunet" else None
    with monkeypatch.context() as patch:
        patch.setattr(module, writer, _disk_full)
        for out in (previous, tmp_path / "fresh"):
            with pytest.raises(OSError, match=f"cannot write {out.resolve() / file}: No space left") as failure:
                export_stage(study, "A-k5", to, out.resolve())
            assert failure.value.errno == errno.ENOSPC
    assert not (tmp_path / "fresh").exists()
    assert _snapshot(previous) == before
    assert (plans.read_bytes() if plans.exists() else None) == plans_before
    assert not _shared_plans(study, "A-k5").exists()
    assert _hidden(tmp_path) == []


def test_a_new_export_replaces_an_old_one_whole_and_spares_other_folders(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    export_stage(study, "A-k3", "config", out)
    _, files = export_stage(study, "A-k5", "nnunet", out)
    names = sorted(_snapshot(out))
    assert "weights.pt" not in names and "mednext_A_k5_init.pth" in names and "train.sh" in names
    assert all(p.exists() for p in files) and _shared_plans(study, "A-k5") in files
    train = (out / "train.sh").read_text()
    assert str(out.resolve() / "mednext_A_k5_init.pth") in train and ".tmp" not in train
    assert "mednext_A_k5" in json.loads(_shared_plans(study, "A-k5").read_text())["configurations"]
    assert os.access(out / "train.sh", os.X_OK)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not an earlier export"):
        export_stage(study, "A-k5", "config", other)
    assert _snapshot(other) == {"keep.txt": b"mine"}
    with pytest.raises(ValueError, match="is not an earlier export"), staged_dir(other, "selection.json"):
        pytest.fail("the block must not run")


@pytest.mark.parametrize("to", TARGETS)
def test_relative_checkpoints_follow_a_moved_study(study: Path, tmp_path: Path, to: str) -> None:
    # Lay the checkpoints out as the engine now stores them: stages/<id>/final.pt, relative to the study.
    records = []
    for record in read_results(study):
        if record.checkpoint:
            assert not Path(record.checkpoint).is_absolute()
            final = Path("stages") / record.stage_id / "final.pt"
            (study / final).parent.mkdir(parents=True)
            (study / record.checkpoint).rename(study / final)
            record = dataclasses.replace(record, checkpoint=str(final))
        records.append(record)
    write_results(study, records)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(study, moved)
    _, files = export_stage(moved, "A-k5", to, tmp_path / "out")
    assert all(p.exists() for p in files)
    if to == "config":
        assert (tmp_path / "out" / "weights.pt").read_bytes() == (moved / "stages" / "A-k5" / "final.pt").read_bytes()
    # Studies written before relative paths keep absolute ones.
    write_results(moved, [dataclasses.replace(r, checkpoint=str(moved / r.checkpoint)) if r.checkpoint else r
                          for r in records])
    export_stage(moved, "A-k5", to, tmp_path / "out")
    (moved / "stages" / "A-k5" / "final.pt").unlink()
    with pytest.raises(ValueError, match=r"stage A-k5: checkpoint .*stages/A-k5/final.pt does not exist; "
                                         r"rerun `scalekit study run` on the study file"):
        export_stage(moved, "A-k5", to, tmp_path / "out")


@pytest.mark.parametrize("earlier", [None, "B-k3"], ids=["first export", "over an earlier export"])
def test_export_killed_midway_leaves_no_partial_export(study: Path, tmp_path: Path, earlier: str | None) -> None:
    """SIGKILL while the export folder is being written (a fault point: the window is shorter than any poll):
    the earlier export (or nothing) stays under --out, nnU-Net's shared plans file is not written, and the
    rerun exports completely."""
    out = tmp_path / "export"
    if earlier is not None:
        export_stage(study, earlier, "nnunet", out)
    before = _snapshot(out) if earlier else None
    plans = _shared_plans(study, "A-k3")
    args = scalekit("study", "export", str(study), "--select", "A-k3", "--to", "nnunet", "--out", str(out))
    kill_command_at(args, "export", tmp_path, timeout_s=120)
    assert (_snapshot(out) == before) if earlier else not out.exists()
    assert not plans.exists()
    assert _hidden(tmp_path), "the killed run's staging folder, hidden"
    _, files = export_stage(study, "A-k3", "nnunet", out)
    assert all(path.exists() for path in files) and plans in files
    assert json.loads((out / "selection.json").read_text())["stage_id"] == "A-k3"


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (CI installs it in .ci/run; locally: "
                                             "apt-get install -y chromium)")
def test_a_full_disk_under_the_report_is_one_line_without_the_browsers_traceback(deep_supervised_study: Path,
                                                                                tmp_path: Path) -> None:
    """The disk fills while the browser writes the images and then the page: scalekit's one-line error is the
    whole of stderr (kaleido's unfinished tasks used to print their tracebacks after it)."""
    out = tmp_path / "report.html"
    script = textwrap.dedent(f"""
        import errno, os, pathlib, sys
        def full(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        pathlib.Path.write_bytes = full
        sys.argv = ["scalekit", "study", "report", {str(deep_supervised_study)!r}, "--out", {str(out)!r}]
        from scalekit.cli import main
        main()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr == f"error: cannot write {out}: No space left on device (free some space on the disk of " \
                            "the output folder)\n", result.stderr[-3000:]
    assert not out.exists() and _hidden(tmp_path) == []
