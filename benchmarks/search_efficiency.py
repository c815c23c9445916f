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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["record", "replay", "real"])
    parser.add_argument("--work", type=Path, default=Path("runs/search-efficiency-record"))
    args = parser.parse_args()
    if args.step == "record":
        record(args.work.resolve())


if __name__ == "__main__":
    main()
