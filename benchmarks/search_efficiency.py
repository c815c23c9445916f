"""Search efficiency: does a cheap search give the full search's answer, and at what share of the compute?

Three steps, on generated data and the spaces of ``SPACES`` (each a study file beside this script):

    python benchmarks/search_efficiency.py record --space NAME   # once per space (<= 45 min on 2 cores)
    python benchmarks/search_efficiency.py full --space demo     # the demo run with scheduler: full, its answer
    python benchmarks/search_efficiency.py replay                # seconds: every policy, many seeds and orders
    python benchmarks/search_efficiency.py real                  # the mixed space's study run for real too

``record`` trains every stage of a space exhaustively with the study's recipe, scoring the validation cases
after every epoch (the mean and each case): each kernel from scratch, each UpKern step (k5 from the trained k3,
k7 from that k5), and the continuation controls (the parent's kernel trained on for the same budget). The
curves go to ``benchmarks/data/``. ``replay`` drives scalekit's own chain search (the planner, the schedulers,
Optuna's queue) on every recorded space with simulated workers, judges each policy against the full chain (see
``benchmarks/_replay.py``) and writes the tables and a plotly figure (docs/search_efficiency.html) to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scalekit.study.engine.schedule import Schedule, synchronous_for  # noqa: E402

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Space:
    """A recorded space: its study file and its curves."""

    name: str
    study: Path
    curves: Path
    about: str


SPACES = {s.name: s for s in (
    Space("mixed", HERE / "search_efficiency.yaml", HERE / "data" / "search_curves.json",
          "eight small families (C 4/8, B 1/2, R 2/3)"),
    Space("capacity", HERE / "search_capacity.yaml", HERE / "data" / "search_curves_capacity.json",
          "three widths of one shallow family (C 4/8/12, B 1, R 2)"),
    Space("demo", HERE.parent / "studies" / "demo.yaml", HERE / "data" / "search_curves_demo.json",
          "the demo study's three families (tiny, deep, wide) on the demo's data"),
)}
STUDY = SPACES["mixed"].study
"""The space whose halving study ``real`` runs."""
REAL = HERE / "data" / "search_real_mixed.json"
"""What the last ``real`` run measured (``replay`` reports it beside the replays)."""


def record(space: Space, out_root: Path) -> None:
    """Train every stage variant of the space with a score after every epoch; write the curves."""
    from scalekit.mednext import MedNeXtConfig
    from scalekit.nnunet import StageRequest, make_demo_dataset, prepare_dataset, train_stage
    from scalekit.study.engine.planning import build_space, stage_planning
    from scalekit.studyfile import load_study_config

    config = load_study_config(space.study)
    t, d = config.training, config.dataset
    raw = make_demo_dataset(out_root / "raw", cases=d.demo.cases, size=d.demo.size, seed=d.demo.seed,
                            dataset_id=d.id, name=d.name.split("_", 1)[1])
    prepared = prepare_dataset(raw, out_root / "preprocessed", patch_size=d.patch_size)
    planning = stage_planning(config, prepared.num_input_channels, prepared.num_classes, None)
    search_space = build_space(config)
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
            "case_curve": {k: [round(v, 5) for v in cases] for k, cases in outcome.case_curve.items()},
            "gflops_train": round(profile.gflops_train, 4), "peak_memory_gb": profile.peak_memory_bytes / 2**30,
            "params": profile.params, "wall_s": round(outcome.wall_time_s, 1),
        }
        print(f"{name:<22} dice {outcome.mean_dice:.3f} in {outcome.wall_time_s:5.1f} s "
              f"(total {time.monotonic() - started:6.0f} s)", flush=True)
        return outcome.checkpoint

    families = []
    for family in search_space.families:
        k = list(search_space.kernels)
        configs = {kernel: family.config(kernel, planning.templates[MedNeXtConfig.arch]) for kernel in k}
        name = family.family_id
        for kernel in k:
            train(f"{name}-k{kernel}-scratch", configs[kernel], None)
        parent = out_root / "stages" / f"{name}-k{k[0]}-scratch" / "final.pt"
        for previous, kernel in zip(k, k[1:]):
            train(f"{name}-k{previous}-continue", configs[previous], parent)
            parent = train(f"{name}-k{kernel}-upkern", configs[kernel], parent)
        families.append({"family_id": name, "label": family.name, "n_channels": family.n_channels,
                         "block_counts": list(family.block_counts), "exp_r": list(family.exp_r)})
        write_curves(space, config, families, stages, time.monotonic() - started)


def write_curves(space: Space, config, families: list[dict], stages: dict[str, dict], seconds: float) -> None:
    from benchmarks._doc import machine_line

    t = config.training
    data = {
        "study": space.study.name, "machine": machine_line(), "record_seconds": round(seconds),
        "note": "record_seconds: the last recording session; each stage's own training time is its wall_s",
        "epochs": t.epochs, "iterations_per_epoch": t.iterations_per_epoch, "kernels": list(config.space.kernels),
        "families": families, "stages": stages,
        "keys": "<family>-k<kernel>-scratch | -upkern (k5 from the scratch k3, k7 from that k5) | "
                "-continue (that kernel trained on for the next UpKern step's budget)",
    }
    space.curves.parent.mkdir(parents=True, exist_ok=True)
    space.curves.write_text(json.dumps(data, indent=1) + "\n")


@dataclass(frozen=True)
class Policy:
    """A search policy replayed: the scheduler's settings, the workers and whether controls are trained."""

    name: str
    kind: str
    eta: int = 2
    min_epochs: int = 2
    workers: int = 1
    controls: bool = True
    synchronous: bool = True
    min_improvement: float | None = None


SHIPPED = "the study's own"
"""The policy a space's study file sets (for the demo: studies/demo.yaml as shipped), the one ``real`` runs."""


def policies(config) -> list[Policy]:
    """The study file's own policy and its variants: asynchronous with 4 workers, without controls, and every
    chain to the full budget without controls (the search before halving)."""
    s = config.search
    rungs = "-".join(map(str, Schedule("halving", config.training.epochs, s.eta, s.min_epochs).rungs))
    sync = synchronous_for(s.families, s.eta, config.ray.max_concurrent)
    own = Policy(f"{SHIPPED}: halving eta {s.eta}, rungs {rungs}, {'' if sync else 'a'}synchronous, "
                 f"{config.ray.max_concurrent} worker(s), controls", "halving", s.eta, s.min_epochs,
                 config.ray.max_concurrent, True, sync)
    return [
        own,
        dataclasses.replace(own, name=f"halving eta {s.eta}, rungs {rungs}, asynchronous, 4 workers, controls",
                            workers=4, synchronous=False),
        dataclasses.replace(own, name=f"halving eta {s.eta}, rungs {rungs}, synchronous, no controls",
                            controls=False, synchronous=True),
        Policy("every chain to the full budget, no controls", "full", controls=False),
    ]


def replay_space(space: Space, seeds: int) -> dict:
    """Every policy replayed on one recorded space, against its full chain and its grid."""
    from benchmarks._replay import Recording, full_chain, grid_from_scratch, reference_point, replay_search, summarise
    from scalekit.studyfile import load_study_config

    config = load_study_config(space.study)
    budget = config.constraints.max_memory_gb
    rec = Recording(json.loads(space.curves.read_text()))
    grid, chain, reference = grid_from_scratch(rec, budget), full_chain(rec, budget), reference_point(rec)
    results = {"full chain (every stage and control, the reference)": summarise([chain], reference, grid, chain),
               "exhaustive grid from scratch": summarise([grid], reference, grid, chain)}
    tried = policies(config)
    for policy in tried:
        schedule = Schedule(policy.kind, rec.epochs, policy.eta, policy.min_epochs, policy.synchronous)
        runs = 1 if policy.kind == "full" and policy.workers == 1 else seeds
        outcomes = [replay_search(rec, schedule, seed, policy.workers, policy.min_improvement, policy.controls,
                                  max_memory_gb=budget) for seed in range(runs)]
        results[policy.name] = summarise(outcomes, reference, grid, chain)
        print(f"{space.name}: replayed {policy.name}: {runs} run(s)", flush=True)
    return {"space": space, "rec": rec, "grid": grid, "chain": chain, "reference": reference, "results": results,
            "policies": [p.name for p in tried], "budget": budget}


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


def targets(r: dict) -> str:
    """Which of the issue's targets a policy meets: >= 95% of the full chain's hypervolume, median regret <=
    0.01 Dice, the full chain's family in >= 90% of replays, <= 1/3 of the grid's compute."""
    checks = [("hv", r["hv"] >= 0.95), ("regret", r["regret"] <= 0.01), ("family", r["same_family"] >= 0.9),
              ("compute", r["compute"] <= 1 / 3)]
    missed = [name for name, ok in checks if not ok]
    return "all met" if not missed else "missed: " + ", ".join(missed)


def space_lines(replayed: dict, real: dict | None) -> list[str]:
    space, rec, results, grid, chain = (replayed[k] for k in ("space", "rec", "results", "grid", "chain"))
    ref_dice, ref_memory = replayed["reference"]
    lines = [
        f"### {space.name}: {space.about}",
        "",
        f"`{space.study.relative_to(HERE.parent)}` ({rec.epochs} epochs x {rec.iterations} iterations per stage), "
        f"every stage recorded once with its Dice after every epoch ({rec.training_minutes:.0f} min of training, "
        f"{rec.data['machine'].strip('_')}; `{space.curves.relative_to(HERE.parent)}`). The full chain trains "
        f"{chain.stages} stages for {chain.tflops:,.1f} TFLOPs; its answer is {label(rec, chain.answer)}, Dice "
        f"{chain.answer_dice:.3f}. The grid trains {grid.stages} stages from scratch for {grid.tflops:,.1f} "
        f"TFLOPs. Hypervolume of the (mean Dice max, predicted peak memory min) front, reference point Dice "
        f"{ref_dice:g}, memory {ref_memory:.4f} GB (1.1 x the largest).",
        "",
        "| policy | runs | stages trained | compute / grid | hypervolume / full chain | answer regret (Dice) | "
        "full chain's family | targets |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['runs']} | {r['stages']:.0f} | {r['compute']:.3f} [{r['compute_lo']:.3f}, "
                     f"{r['compute_hi']:.3f}] | {r['hv']:.3f} [{r['hv_lo']:.3f}, {r['hv_hi']:.3f}] | "
                     f"{r['regret']:.3f} [{r['regret_lo']:.3f}, {r['regret_hi']:.3f}] | {r['same_family']:.0%} | "
                     f"{targets(r) if name in replayed['policies'] else '—'} |")
    if real is not None:
        r = results[replayed["policies"][0]]
        inside = r["regret_lo"] <= real["regret"] <= r["regret_hi"] and r["compute_lo"] <= real["compute"] <= \
            r["compute_hi"]
        lines += [f"| real run of the study's own policy | 1 | {real['stages']} | {real['compute']:.3f} | {real['hv']:.3f} | "
                  f"{real['regret']:.3f} | {'yes' if real['same_family'] else 'no'} | {targets_real(real)} |", "",
                  f"Real run ({real['minutes']:.1f} min, not replayed): answer {real['answer']}; "
                  + ("inside" if inside else "outside") + " the replays' range of regret and compute."]
    lines += ["", "UpKern steps on the recorded curves, each at the full stage budget (Dice):", "", *upkern_table(rec),
              ""]
    return lines


def targets_real(real: dict) -> str:
    return targets({"hv": real["hv"], "regret": real["regret"], "same_family": float(real["same_family"]),
                    "compute": real["compute"]})


def label(rec, key: str) -> str:
    """A recording key (``family-kK-variant``) as the family's label and the stage (``c8-b2-r2 k5c``)."""
    family, kernel, variant = key.split("-")
    name = next(f["label"] for f in rec.data["families"] if f["family_id"] == family)
    return f"{name} {kernel}{'c' if variant == 'continue' else ''}"


def write_doc(replayed: list[dict], real: dict | None) -> None:
    from benchmarks._doc import write_section

    lines = [
        "Each policy is scalekit's own chain search replayed on recorded curves (seeded arrival orders and "
        "measurement noise of each stage's standard error over its validation cases). Compute = training TFLOPs "
        "(epochs x iterations x the profiled FLOPs of a training step) relative to the exhaustive grid from "
        "scratch; hypervolume relative to the **full chain** (every family's UpKern chain and controls to the "
        "full budget); **answer regret** = the full chain's best full-budget Dice minus the recorded full-budget "
        "Dice of the stage the policy's answer names (no memory constraint in these studies, and every stage "
        "fits every GPU size the answer lists, so there is one budget); medians over replays with [min, max]. "
        "Targets for the shipped policy: hypervolume >= 0.95, median regret <= 0.01, the full chain's family "
        ">= 90%, compute <= 1/3.",
        "",
    ]
    for one in replayed:
        lines += space_lines(one, real if one["space"].name == "mixed" else None)
    lines += ["Figure: `docs/search_efficiency.html` (plotly; every replay as a point).", ""]
    write_section("search_efficiency", "## Search efficiency\n\n" + "\n".join(lines))
    figure(replayed, real)


def figure(replayed: list[dict], real: dict | None) -> None:
    """Every replay of every policy as a point of (compute / grid, answer regret), one panel per space."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(replayed), subplot_titles=[one["space"].name for one in replayed],
                        shared_yaxes=True)
    for column, one in enumerate(replayed, start=1):
        for index, (name, r) in enumerate(one["results"].items()):
            fig.add_trace(go.Scatter(x=r["compute_all"], y=r["regret_all"], mode="markers", name=name,
                                     legendgroup=name, showlegend=column == 1, opacity=0.6,
                                     marker={"color": f"hsl({index * 50}, 60%, 45%)"}), row=1, col=column)
        if real is not None and one["space"].name == "mixed":
            fig.add_trace(go.Scatter(x=[real["compute"]], y=[real["regret"]], mode="markers", name="real run",
                                     marker={"symbol": "star", "size": 16, "color": "black"}), row=1, col=column)
        fig.add_shape(type="rect", x0=0, x1=1 / 3, y0=-0.005, y1=0.01, line={"dash": "dot", "color": "green"},
                      fillcolor="rgba(0,160,0,0.05)", row=1, col=column)
        fig.update_xaxes(title_text="training compute / exhaustive grid", row=1, col=column)
    fig.update_yaxes(title_text="answer regret (Dice) vs the full chain", row=1, col=1)
    fig.update_layout(title="Search policies: answer regret against compute (target: the green box)",
                      template="plotly_white", width=1400, height=600)
    (HERE.parent / "docs" / "search_efficiency.html").write_text(fig.to_html(include_plotlyjs="cdn"))


def real_run(replayed: dict, work: Path) -> dict:
    """Run the shipped study of the mixed space for real and value it like the replays."""
    import yaml

    from benchmarks._replay import hypervolume
    from scalekit.records import read_results
    from scalekit.results.selection import max_dice_under
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
    rec, grid, chain = replayed["rec"], replayed["grid"], replayed["chain"]
    chosen = max_dice_under(records, float("inf"))
    recorded = rec.dice(chosen.family_id, chosen.kernel_size, chosen.init, rec.epochs)
    hv = hypervolume([(r.mean_dice, r.peak_memory_gb) for r in valid], replayed["reference"])
    return {"hv": hv / hypervolume(chain.points, replayed["reference"]),
            "compute": sum(r.train_tflops or 0.0 for r in records) / grid.tflops,
            "stages": sum(1 for r in records if r.epochs), "minutes": minutes,
            "regret": chain.answer_dice - recorded, "same_family": chosen.family_id == chain.answer_family,
            "answer": f"{chosen.name} (measured {chosen.mean_dice:.3f}, recorded {recorded:.3f})"}


def full_run(space: Space, work: Path) -> None:
    """Run the space's study with ``scheduler: full`` (every stage and control to the full budget) through the
    product, or read such a run already in ``work``, and write its answer to ``data/<space>_full_chain.json``."""
    import yaml

    from benchmarks._doc import machine_line
    from scalekit.records import GIB, read_results
    from scalekit.results.selection import max_dice_under
    from scalekit.study import run_study
    from scalekit.studyfile import load_study_config

    started = time.monotonic()
    if not (work / "results.csv").is_file():
        data = yaml.safe_load(space.study.read_text())
        data["output_dir"] = str(work)
        data["search"]["scheduler"] = "full"
        data["finish"] = {"report": False}
        study_file = work.parent / f"{space.name}-full.study.yaml"
        work.parent.mkdir(parents=True, exist_ok=True)
        study_file.write_text(yaml.safe_dump(data, sort_keys=False))
        run_study(study_file, show_progress=False)
    records = read_results(work)
    budget = load_study_config(space.study).constraints.max_memory_gb
    chosen = max_dice_under(records, float("inf") if budget is None else budget * GIB)

    def key(r) -> str:
        return f"{r.family_id}-k{r.kernel_size}-{r.init}"

    out = {"study": space.study.name, "machine": machine_line(), "run_seconds": round(time.monotonic() - started),
           "training_seconds": round(sum(r.wall_time_s or 0.0 for r in records)),
           "answer": key(chosen), "answer_name": chosen.name, "answer_dice": chosen.mean_dice,
           "stages": {key(r): {"dice": r.mean_dice, "case_dice": r.case_dice, "status": r.status}
                      for r in records}}
    (HERE / "data" / f"{space.name}_full_chain.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"{space.name} full chain: {chosen.name} Dice {chosen.mean_dice:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["record", "full", "replay", "real"])
    parser.add_argument("--work", type=Path, default=None, help="working folder (record: runs/search-record-SPACE, "
                                                                  "real: runs/search-efficiency)")
    parser.add_argument("--seeds", type=int, default=50, help="replays per policy")
    parser.add_argument("--space", choices=sorted(SPACES), default="mixed", help="record: the space to record")
    args = parser.parse_args()
    if args.step == "record":
        record(SPACES[args.space], (args.work or Path(f"runs/search-record-{args.space}")).resolve())
        return
    if args.step == "full":
        full_run(SPACES[args.space], (args.work or Path(f"runs/search-full-{args.space}")).resolve())
        return
    replayed = [replay_space(space, args.seeds) for space in SPACES.values() if space.curves.is_file()]
    from benchmarks._doc import machine_line

    real = json.loads(REAL.read_text()) if REAL.is_file() else None
    if args.step == "real":
        real = real_run(replayed[0], (args.work or Path("runs/search-efficiency")).resolve())
        REAL.write_text(json.dumps({**real, "machine": machine_line()}, indent=1) + "\n")
    write_doc(replayed, real)
    for one in replayed:
        for name, r in one["results"].items():
            print(f"{one['space'].name:<9} {name:<66} compute {r['compute']:.3f}  hypervolume {r['hv']:.3f}  "
                  f"regret {r['regret']:.3f}  family {r['same_family']:.0%}")
    if real is not None:
        print(f"real run: compute {real['compute']:.3f}  hypervolume {real['hv']:.3f}  regret {real['regret']:.3f}")


if __name__ == "__main__":
    main()
