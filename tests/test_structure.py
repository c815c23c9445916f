"""The layout the code promises: tests mirror the package, no test imports another test file, and the top level
of scalekit holds only the cross-cutting modules and the contracts (results and the report live in packages)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = {"__init__", "__main__", "_atomic", "errors", "faults", "metrics", "paths", "records", "space", "stored"}


def test_scalekit_top_level_holds_only_cross_cutting_modules_and_contracts() -> None:
    assert {p.stem for p in (ROOT / "scalekit").glob("*.py")} == TOP_LEVEL


def test_every_test_folder_mirrors_a_package_of_scalekit() -> None:
    folders = {p.parent.relative_to(ROOT / "tests") for p in (ROOT / "tests").rglob("test_*.py")}
    for folder in folders - {Path(".")}:
        assert (ROOT / "scalekit" / folder).is_dir(), f"tests/{folder} mirrors no scalekit/{folder}"


def test_no_test_imports_another_test_file() -> None:
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.rsplit(".", 1)[-1].startswith("test_") for n in names), \
                f"{path.relative_to(ROOT)} imports a test file: {names}; share it through tests/helpers/"
