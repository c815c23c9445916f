"""Search efficiency: what each search policy's Pareto front is worth against the training compute it spent.

Three steps, on the generated data and eight-family space of ``benchmarks/search_efficiency.yaml``:

    python benchmarks/search_efficiency.py record   # once (~40 min on 2 cores): every stage's Dice curve
    python benchmarks/search_efficiency.py replay   # seconds: the policies replayed over many seeds and orders
    python benchmarks/search_efficiency.py real     # the halving study run for real, compared with the replay

``record`` trains every stage of the space exhaustively with the study's recipe, scoring the validation cases
after every epoch: each kernel from scratch, each UpKern step (k5 from the trained k3, k7 from that k5), and the
continuation controls (the parent's kernel trained on for the same budget). The curves go to
``benchmarks/data/search_curves.json``. ``replay`` drives scalekit's own chain search (the planner, the
schedulers, Optuna's queue) on those curves with simulated workers and writes the table and a plotly figure
(docs/search_efficiency.html) to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HERE = Path(__file__).resolve().parent
STUDY = HERE / "search_efficiency.yaml"
CURVES = HERE / "data" / "search_curves.json"


def record(out_root: Path) -> None:
    """Train every stage variant of the study's space with a score after every epoch; write the curves."""
    from scalekit.mednext import MedNeXtConfig
    from scalekit.nnunet import StageRequest, make_demo_dataset, prepare_dataset, train_stage
    from scalekit.study.planning import build_space, stage_planning
    from scalekit.studyfile import load_study_config

    config = load_study_config(STUDY)
    t, d = config.training, config.dataset
    raw = make_demo_dataset(out_root / "raw", cases=d.demo.cases, size=d.demo.size, seed=d.demo.seed,
                            dataset_id=d.id, name=d.name.split("_", 1)[1])
    prepared = prepare_dataset(raw, out_root / "preprocessed", patch_size=d.patch_size)
    planning = stage_planning(config, prepared.num_input_channels, prepared.num_classes, None)
    space = build_space(config)
    epochs = tuple(range(1, t.epochs + 1))
    stages: dict[str, dict] = {}
    started = time.monotonic()

    def train(name: str, arch: MedNeXtConfig, init_from: Path | None) -> Path:
        request = StageRequest(
            prepared=prepared, fold=d.fold, arch=arch, epochs=t.epochs, iterations_per_epoch=t.iterations_per_epoch,
            val_iterations=t.val_iterations, initial_lr=t.initial_lr, init_from=init_from,
            output_dir=out_root / "stages" / name, resume=True, amp=None, device="cpu", seed=t.seed,
            batch_size=d.batch_size, evaluate_at=epochs,
        )
        outcome = train_stage(request)
        profile = planning.profile(arch)
        stages[name] = {
            "curve": {int(k): round(v, 5) for k, v in outcome.dice_curve.items()},
            "case_dice": [round(v, 5) for v in outcome.case_dice],
            "gflops_train": round(profile.gflops_train, 4), "peak_memory_gb": profile.peak_memory_bytes / 2**30,
            "params": profile.params, "wall_s": round(outcome.wall_time_s, 1),
        }
        print(f"{name:<22} dice {outcome.mean_dice:.3f} in {outcome.wall_time_s:5.1f} s "
              f"(total {time.monotonic() - started:6.0f} s)", flush=True)
        return outcome.checkpoint

    families = []
    for family in space.families:
        k = list(space.kernels)
        configs = {kernel: family.config(kernel, planning.template) for kernel in k}
        name = family.family_id
        for kernel in k:
            train(f"{name}-k{kernel}-scratch", configs[kernel], None)
        parent = out_root / "stages" / f"{name}-k{k[0]}-scratch" / "final.pt"
        for previous, kernel in zip(k, k[1:]):
            train(f"{name}-k{previous}-continue", configs[previous], parent)
            parent = train(f"{name}-k{kernel}-upkern", configs[kernel], parent)
        families.append({"family_id": name, "label": family.name, "n_channels": family.n_channels,
                         "block_counts": list(family.block_counts), "exp_r": list(family.exp_r)})
        write_curves(config, families, stages, time.monotonic() - started)


def write_curves(config, families: list[dict], stages: dict[str, dict], seconds: float) -> None:
    from benchmarks._doc import machine_line

    t = config.training
    data = {
        "study": STUDY.name, "machine": machine_line(), "record_seconds": round(seconds),
        "epochs": t.epochs, "iterations_per_epoch": t.iterations_per_epoch, "kernels": list(config.space.kernels),
        "families": families, "stages": stages,
        "keys": "<family>-k<kernel>-scratch | -upkern (k5 from the scratch k3, k7 from that k5) | "
                "-continue (that kernel trained on for the next UpKern step's budget)",
    }
    CURVES.parent.mkdir(parents=True, exist_ok=True)
    CURVES.write_text(json.dumps(data, indent=1) + "\n")


POLICIES = [
    # name, schedule kind, eta, min epochs, workers, min_improvement, controls
    ("chains, no stopping", "full", 2, 1, 1, None, False),
    ("chains with saturation (0.002)", "full", 2, 1, 1, 0.002, False),
    ("halving eta 2, rungs 2-4-8 (1 worker)", "halving", 2, 2, 1, None, False),
    ("halving eta 2, rungs 2-4-8 (4 workers)", "halving", 2, 2, 4, None, False),
    ("halving eta 2, rungs 2-4-8 + continuation controls", "halving", 2, 2, 1, None, True),
    ("halving eta 2, rungs 1-2-4-8", "halving", 2, 1, 1, None, False),
    ("halving eta 3, rungs 1-3-8", "halving", 3, 1, 1, None, False),
    ("halving eta 3, rungs 2-6-8", "halving", 3, 2, 1, None, False),
]
SCHEDULER = "halving eta 2, rungs 2-4-8 (1 worker)"
"""The policy of benchmarks/search_efficiency.yaml, the one the real run repeats."""


def replay(seeds: int) -> dict:
    from benchmarks._replay import (
        Recording,
        grid_from_scratch,
        reference_point,
        replay_search,
        summarise,
    )
    from scalekit.study.schedule import Schedule

    rec = Recording(json.loads(CURVES.read_text()))
    grid, reference = grid_from_scratch(rec), reference_point(rec)
    results = {"exhaustive grid from scratch": summarise([grid], reference, grid)}
    for name, kind, eta, min_epochs, workers, margin, controls in POLICIES:
        schedule = Schedule(kind, rec.epochs, eta, min_epochs)
        runs = 1 if kind == "full" and workers == 1 else seeds
        outcomes = [replay_search(rec, schedule, seed, workers, margin, controls) for seed in range(runs)]
        results[name] = summarise(outcomes, reference, grid)
        print(f"replayed {name}: {runs} run(s)", flush=True)
    return {"rec": rec, "grid": grid, "reference": reference, "results": results}


def upkern_table(rec) -> list[str]:
    """Each UpKern step against the same kernel from scratch and the parent continued for the same budget."""
    rows = ["| family | step | UpKern | same kernel from scratch | parent continued (same budget) | UpKern − continued |",
            "|---|---|---:|---:|---:|---:|"]
    e = rec.epochs
    for family in rec.data["families"]:
        f = family["family_id"]
        for previous, kernel in zip(rec.data["kernels"], rec.data["kernels"][1:]):
            up, scratch = rec.dice(f, kernel, "upkern", e), rec.dice(f, kernel, "scratch", e)
            cont = rec.dice(f, previous, "continue", e)
            rows.append(f"| {family['label']} | k{previous} → k{kernel} | {up:.3f} | {scratch:.3f} | {cont:.3f} | "
                        f"{up - cont:+.3f} |")
    return rows


def write_doc(replayed: dict, real: dict | None) -> None:
    from benchmarks._doc import write_section

    rec, results, (ref_dice, ref_memory) = replayed["rec"], replayed["results"], replayed["reference"]
    grid = replayed["grid"]
    lines = [
        "Eight small families x k3/k5/k7 on the generated data of `benchmarks/search_efficiency.yaml` "
        f"({rec.epochs} epochs x {rec.iterations} iterations per stage), every stage recorded once with its Dice "
        f"after every epoch ({rec.data['record_seconds'] / 60:.0f} min, {rec.data['machine'].strip('_')}; "
        "`benchmarks/data/search_curves.json`). Each policy is scalekit's own chain search replayed on those "
        "curves (seeded arrival orders and measurement noise of each stage's standard error over its validation "
        "cases); a policy's front is its stages trained to the full budget, valued by their recorded Dice.",
        f"Hypervolume of the (mean Dice max, predicted peak memory min) front, reference point Dice {ref_dice:g}, "
        f"memory {ref_memory:.4f} GB (1.1 x the largest); compute = training TFLOPs (epochs x iterations x the "
        f"profiled FLOPs of a training step). The exhaustive grid trains {grid.stages} stages from scratch for "
        f"{grid.tflops:,.1f} TFLOPs.",
        "",
        "| policy | runs | stages trained | compute / grid (median [min, max]) | hypervolume / grid (median [min, max]) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['runs']} | {r['stages']:.0f} | {r['compute']:.3f} [{r['compute_lo']:.3f}, "
                     f"{r['compute_hi']:.3f}] | {r['hv']:.3f} [{r['hv_lo']:.3f}, {r['hv_hi']:.3f}] |")
    if real is not None:
        lines.append(f"| real run of {SCHEDULER} | 1 | {real['stages']} | {real['compute']:.3f} | {real['hv']:.3f} |")
    target = results[SCHEDULER]
    lines += ["", f"{SCHEDULER}: {target['hv']:.1%} of the grid's hypervolume for {target['compute']:.1%} of its "
                  "compute (median over replays); the target is >= 95% for <= 33.3%."]
    if real is not None:
        inside = target["hv_lo"] <= real["hv"] <= target["hv_hi"] and \
            target["compute_lo"] <= real["compute"] <= target["compute_hi"]
        lines.append(f"Real run ({real['minutes']:.1f} min, not replayed): hypervolume {real['hv']:.3f}, compute "
                     f"{real['compute']:.3f} of the grid's; " + ("inside" if inside else "outside")
                     + " the replays' range. Its stages: " + real["front"] + ".")
    lines += ["", "UpKern steps on the recorded curves, each at the full stage budget (Dice):", "", *upkern_table(rec),
              "", "Figure: `docs/search_efficiency.html` (plotly; every replay as a point).", ""]
    write_section("search_efficiency", "## Search efficiency\n\n" + "\n".join(lines))
    figure(results, real)


def figure(results: dict, real: dict | None) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, r in results.items():
        fig.add_trace(go.Scatter(x=r["compute_all"], y=r["hv_all"], mode="markers", name=name, opacity=0.6))
    if real is not None:
        fig.add_trace(go.Scatter(x=[real["compute"]], y=[real["hv"]], mode="markers", name="real run",
                                 marker={"symbol": "star", "size": 16, "color": "black"}))
    fig.add_shape(type="rect", x0=0, x1=1 / 3, y0=0.95, y1=max(max(r["hv_all"]) for r in results.values()) * 1.05,
                  line={"dash": "dot", "color": "green"}, fillcolor="rgba(0,160,0,0.05)")
    fig.update_layout(title="Search policies: hypervolume against compute (both relative to the exhaustive grid)",
                      xaxis_title="training compute / exhaustive grid", yaxis_title="hypervolume / exhaustive grid",
                      template="plotly_white", width=1000, height=600)
    (HERE.parent / "docs" / "search_efficiency.html").write_text(fig.to_html(include_plotlyjs="cdn"))


def real_run(replayed: dict, work: Path) -> dict:
    """Run the halving study for real and value its front like the replays."""
    import yaml

    from benchmarks._replay import hypervolume
    from scalekit.records import read_results
    from scalekit.study import run_study

    data = yaml.safe_load(STUDY.read_text())
    data["output_dir"] = str(work)
    study_file = work.parent / "search_efficiency.study.yaml"
    work.parent.mkdir(parents=True, exist_ok=True)
    study_file.write_text(yaml.safe_dump(data, sort_keys=False))
    started = time.monotonic()
    summary = run_study(study_file, show_progress=False)
    minutes = (time.monotonic() - started) / 60
    records = read_results(summary.study_dir)
    valid = [r for r in records if r.is_valid]
    grid = replayed["grid"]
    hv = hypervolume([(r.mean_dice, r.peak_memory_gb) for r in valid], replayed["reference"])
    return {"hv": hv / hypervolume(grid.points, replayed["reference"]),
            "compute": sum(r.train_tflops or 0.0 for r in records) / grid.tflops,
            "stages": sum(1 for r in records if r.epochs), "minutes": minutes,
            "front": ", ".join(f"{r.family_label} k{r.kernel_size}{' (' + r.init + ')' if r.init != 'scratch' else ''}"
                               f" {r.mean_dice:.3f}" for r in valid)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["record", "replay", "real"])
    parser.add_argument("--work", type=Path, default=None, help="working folder (record: runs/search-record, "
                                                                  "real: runs/search-efficiency)")
    parser.add_argument("--seeds", type=int, default=50, help="replays per policy")
    args = parser.parse_args()
    if args.step == "record":
        record((args.work or Path("runs/search-record")).resolve())
        return
    replayed = replay(args.seeds)
    real = real_run(replayed, (args.work or Path("runs/search-efficiency")).resolve()) if args.step == "real" else None
    write_doc(replayed, real)
    for name, r in replayed["results"].items():
        print(f"{name:<40} compute {r['compute']:.3f}  hypervolume {r['hv']:.3f}")
    if real is not None:
        print(f"{'real run':<40} compute {real['compute']:.3f}  hypervolume {real['hv']:.3f}")


if __name__ == "__main__":
    main()
