"""Yin-Yang on the Xylo-like chip: float model vs the quantisation-aware model deployed on the bit-accurate
emulator (and, for contrast, the float model deployed by post-training quantisation), over several seeds.

For each seed, two runs of configs/yinyang-xylo.yaml: one in float (``quantise.target: null``) and one with
its quantisation-aware epochs. Each is deployed with ``spikeforge.cli.deploy.deploy`` to ``--target``.

    python bench/xylo_deploy.py --seeds 5 --json bench/results/xylo_deploy.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import environment, print_table, run_jobs, summarise, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--config", default="configs/yinyang-xylo.yaml")
    parser.add_argument("--target", default="xylo-audio2", choices=("xylo-audio2", "xylo-imu"))
    parser.add_argument("--epochs", type=int, help="override train.epochs (QAT starts at 2/3 of them)")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (default 2)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: CPUs / workers)")
    parser.add_argument("--out", default="runs/bench-xylo", help="folder for the runs")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()

    jobs = []
    for seed in range(args.seed, args.seed + args.seeds):
        for mode in ("float", "qat"):
            overrides = {"seed": seed, "output.dir": f"{args.out}/{mode}-seed{seed}", "output.progress": False,
                         "output.plots": False, "device": "cpu"}
            if args.epochs is not None:
                overrides["train.epochs"] = args.epochs
                overrides["quantise.start_epoch"] = (2 * args.epochs) // 3
            if mode == "float":
                overrides["quantise.target"] = None
            jobs.append({"config": args.config, "overrides": overrides, "tag": {"seed": seed, "mode": mode}})
    start = time.perf_counter()
    runs = run_jobs(jobs, args.workers, args.threads)

    from spikeforge.cli.deploy import deploy

    rows = []
    for seed in range(args.seed, args.seed + args.seeds):
        row = {"seed": seed}
        for mode in ("float", "qat"):
            run = next(r for r in runs if r["seed"] == seed and r["mode"] == mode)
            ckpt = Path(args.out) / f"{mode}-seed{seed}" / "last.pt"
            rep = deploy(ckpt, args.target, progress=False)
            row[f"{mode}_acc"] = rep["accuracy"]["float"]
            row[f"{mode}_chip_acc"] = rep["accuracy"]["chip_emulator"]
            row[f"{mode}_train_seconds"] = run["wall_seconds"]
            if mode == "qat":
                row["qat_quantised_acc"] = rep["accuracy"]["quantised_model"]
                row["chip_spikes_per_sample"] = rep["spikes_per_sample"]["chip_emulator"]
                row["dynamic_power_w"] = rep["cost"]["dynamic_power_w"]
                row["energy_per_sample_j"] = rep["cost"]["energy_per_sample_j"]
        row["loss_points"] = 100 * (row["float_acc"] - row["qat_chip_acc"])
        rows.append(row)
    wall = time.perf_counter() - start
    print_table(rows, [("seed", "seed", "d"), ("float_acc", "float", ".4f"),
                       ("float_chip_acc", "float->chip (PTQ)", ".4f"), ("qat_quantised_acc", "QAT model", ".4f"),
                       ("qat_chip_acc", "QAT->chip", ".4f"), ("loss_points", "loss (pts)", ".2f"),
                       ("dynamic_power_w", "dyn. power W", ".2e")])
    summary = {key: summarise([r[key] for r in rows]) for key in
               ("float_acc", "float_chip_acc", "qat_quantised_acc", "qat_chip_acc", "loss_points",
                "chip_spikes_per_sample", "dynamic_power_w", "energy_per_sample_j")}
    f, q = summary["float_acc"], summary["qat_chip_acc"]
    print(f"\nfloat model {100 * f['mean']:.2f} ± {100 * f['std']:.2f} %; QAT model on the {args.target} emulator "
          f"{100 * q['mean']:.2f} ± {100 * q['std']:.2f} %; loss {summary['loss_points']['mean']:.2f} points "
          f"(mean over {len(rows)} seeds); PTQ of the float model: {100 * summary['float_chip_acc']['mean']:.2f} %;"
          f" wall {wall:.0f} s")
    write_json(args.json, {"benchmark": "xylo_deploy", "config": args.config, "target": args.target,
                           "summary": summary, "rows": rows, "wall_seconds": wall, "environment": environment()})


if __name__ == "__main__":
    main()
