"""Wall time of the demo study from a fresh output directory (data generation and preparation included).

    python benchmarks/demo_time.py --runs 2

Each run copies studies/demo.yaml with its own output_dir under a temporary folder, runs
`scalekit study run` as a user would, and checks what the run left (stage rows, report, export). Prints a table
and writes it to docs/benchmarks.md (section demo-time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import machine_line, write_section  # noqa: E402

from scalekit.study import read_results  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "studies" / "demo.yaml"


def one_run(workdir: Path) -> tuple[float, int, int, bool, bool]:
    data = yaml.safe_load(DEMO.read_text())
    data["output_dir"] = str(workdir / "demo")
    study = workdir / "demo.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scalekit", "study", "run", str(study), "--quiet"], check=True,
                   cwd=workdir, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    rows = read_results(workdir / "demo")
    completed = sum(r.status == "completed" for r in rows)
    return seconds, len(rows), completed, (workdir / "demo" / "report.html").is_file(), (
        workdir / "demo" / "export" / "selection.json").is_file()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for index in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            result = one_run(Path(tmp))
        rows.append(result)
        print(f"run {index + 1}: {result[0]:.0f} s, {result[1]} stage rows ({result[2]} completed), "
              f"report {result[3]}, export {result[4]}", flush=True)
    median = statistics.median(r[0] for r in rows)
    load = os.getloadavg()[0]
    table = ["| run | wall time (s) | stage rows | completed | report | export |", "|---|---:|---:|---:|---|---|"]
    table += [f"| {i + 1} | {r[0]:.0f} | {r[1]} | {r[2]} | {'yes' if r[3] else 'no'} | {'yes' if r[4] else 'no'} |"
              for i, r in enumerate(rows)]
    body = "\n".join([
        "## Demo study: wall time from a fresh output directory",
        "",
        machine_line() + f", load average {load:.1f} at the end",
        "",
        "`scalekit study run studies/demo.yaml` after set-up: generating and preparing the data, 9 stages "
        "(3 families x k3/k5/k7), the report and the nnU-Net export. Target: under 10 minutes.",
        "",
        *table,
        "",
        f"Median: **{median:.0f} s ({median / 60:.1f} min)** over {len(rows)} run(s).",
    ])
    print(body)
    write_section("demo-time", body)


if __name__ == "__main__":
    main()
