"""UpKern vs scratch: first-epoch training loss of a k5 stage initialised from a trained k3 stage, on demo data.

Trains a k3 MedNeXt stage on the synthetic demo dataset, then k5 stages for one epoch, once initialised by UpKern
from the k3 checkpoint and once from scratch, with the same seeds, side by side. Prints a table and writes it to
docs/benchmarks.md (section ``upkern_start``).

    python benchmarks/upkern_start.py [--cases 12 --size 32 --preset T --k3-epochs 8 --iterations 10 --seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._doc import machine_line, write_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--preset", default="T")
    parser.add_argument("--k3-epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from scalekit.mednext import preset_config
    from scalekit.nnunet import DEMO_LABELS, StageRequest, make_demo_dataset, prepare_dataset, train_stage

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = make_demo_dataset(root / "raw", cases=args.cases, size=args.size, seed=0, dataset_id=995, name="Bench")
        prepared = prepare_dataset(raw, root / "pre")
        arch = preset_config(args.preset, 1, len(DEMO_LABELS), kernel_size=3)

        def stage(name: str, kernel: int, epochs: int, seed: int, init: Path | None = None):
            return train_stage(StageRequest(
                prepared=prepared, fold=0, arch=arch.replace(kernel_size=kernel), epochs=epochs,
                iterations_per_epoch=args.iterations, val_iterations=2, output_dir=root / name, init_from=init,
                device=args.device, seed=seed,
            ))

        k3 = stage("k3", 3, args.k3_epochs, seed=0)
        rows = []
        for seed in range(args.seeds):
            upkern = stage(f"k5_upkern_{seed}", 5, 1, seed, init=k3.checkpoint)
            scratch = stage(f"k5_scratch_{seed}", 5, 1, seed)
            rows.append((seed, upkern, scratch))

    up = [r[1].first_train_loss for r in rows]
    sc = [r[2].first_train_loss for r in rows]
    lines = [
        "## UpKern start: k5 from a trained k3 vs k5 from scratch (first-epoch training loss)",
        "",
        machine_line(),
        "",
        f"Demo data: {args.cases} cases of {args.size}^3, MedNeXt-{args.preset}; k3 stage: {args.k3_epochs} epochs x "
        f"{args.iterations} iterations (last train loss {k3.last_train_loss:.4f}, Dice {k3.mean_dice:.3f}); "
        f"k5 stages: 1 epoch x {args.iterations} iterations, same seeds. Total {time.monotonic() - started:.0f} s.",
        "",
        "| seed | k5 UpKern: first-epoch loss | k5 scratch: first-epoch loss | UpKern Dice | scratch Dice |",
        "|---|---|---|---|---|",
        *(f"| {s} | {u.first_train_loss:.4f} | {c.first_train_loss:.4f} | {u.mean_dice:.3f} | {c.mean_dice:.3f} |"
          for s, u, c in rows),
        f"| median | {statistics.median(up):.4f} | {statistics.median(sc):.4f} | "
        f"{statistics.median(r[1].mean_dice for r in rows):.3f} | {statistics.median(r[2].mean_dice for r in rows):.3f} |",
        "",
        f"Median ratio UpKern / scratch first-epoch loss: {statistics.median(u / c for u, c in zip(up, sc)):.3f}; "
        f"UpKern lower in {sum(u < c for u, c in zip(up, sc))} of {len(rows)} seeds.",
    ]
    table = "\n".join(lines)
    print(table)
    write_section("upkern_start", table)


if __name__ == "__main__":
    main()
