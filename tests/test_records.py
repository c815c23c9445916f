"""One field list from the worker to the table: a new measured objective declared in ``records.py`` alone (the
field, with :func:`scalekit.records.measured`, and its direction in ``OBJECTIVES``) travels in a stage report,
lands in ``results.csv`` and the DataFrame, and ranks stages on a Pareto front, with no other edit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SCALEKIT = Path(__file__).resolve().parents[1] / "scalekit"

DECLARATION = '''    dummy_score: float | None = measured(None)
    """A measured objective that only this test declares."""
'''

CHECK = '''
import json, sys
from pathlib import Path
import scalekit
from scalekit.records import MEASURED, Objective, ResultsTable, StageRecord, read_results
from scalekit.results import read
from scalekit.results.pareto import pareto_front
from scalekit.study.engine.messages import StageReport

study = Path(sys.argv[1])
table = ResultsTable(study)
for index, (dice, score) in enumerate([(0.8, 1.0), (0.7, 3.0), (0.6, 2.0)]):
    stage = f"f{index}-k3"
    table.upsert(StageRecord(stage, f"f{index}", 4, [1] * 9, [2] * 9, 3))
    carried = StageReport.from_dict(StageReport("completed", mean_dice=dice, dummy_score=score).to_dict())
    table.update(stage, status="completed", **carried.measured())
records = read_results(study)
objectives = [Objective("mean_dice"), Objective("dummy_score")]
print(json.dumps({
    "package": scalekit.__file__,
    "measured": "dummy_score" in MEASURED,
    "header": (study / "results.csv").read_text().splitlines()[0].split(","),
    "stored": [r.dummy_score for r in records],
    "frame": [float(v) for v in read(study)["dummy_score"]],
    "front": sorted(r.stage_id for r in pareto_front(records, objectives)),
    "dice_front": sorted(r.stage_id for r in pareto_front(records, objectives[:1])),
}))
'''


def test_a_measured_objective_declared_in_records_alone_reaches_the_table_and_the_fronts(tmp_path: Path) -> None:
    package = tmp_path / "src" / "scalekit"
    shutil.copytree(SCALEKIT, package, ignore=shutil.ignore_patterns("__pycache__"))
    records = package / "records.py"
    source = records.read_text()
    anchor = '    node: str = measured("")\n'
    assert source.count(anchor) == 1 and source.count('    "wall_time_s": "minimize",\n') == 1
    source = source.replace(anchor, anchor + DECLARATION)
    source = source.replace('    "wall_time_s": "minimize",\n', '    "wall_time_s": "minimize",\n    "dummy_score": "maximize",\n')
    records.write_text(source)
    study = tmp_path / "study"
    study.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    done = subprocess.run([sys.executable, "-c", CHECK, str(study)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["package"].startswith(str(tmp_path))
    assert seen["measured"] and "dummy_score" in seen["header"]
    assert seen["stored"] == seen["frame"] == [1.0, 3.0, 2.0]
    # f2 (0.6, 2.0) is dominated by f1 (0.7, 3.0); f1 is on the front only because of the new objective
    assert seen["front"] == ["f0-k3", "f1-k3"] and seen["dice_front"] == ["f0-k3"]
