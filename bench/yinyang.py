"""Yin-Yang benchmark: train a config with several seeds; report test accuracy (published test split), spikes per
sample, seconds per epoch and peak memory as mean ± std.

``--method`` picks the config: ``surrogate`` (default, configs/yinyang.yaml: time-stepped surrogate-gradient BPTT),
``ttfs`` (configs/yinyang-ttfs.yaml: Fast & Deep, exact first-spike-time gradients) or ``eventprop``
(configs/yinyang-eventprop.yaml: multi-spike hidden layer trained with EventProp).

    python bench/yinyang.py --seeds 5 --json bench/results/yinyang.json
    python bench/yinyang.py --method ttfs --seeds 5 --json bench/results/yinyang-ttfs.json
"""

from __future__ import annotations

import argparse
import time

from _common import environment, print_table, run_jobs, summarise, write_json

METHOD_CONFIGS = {"surrogate": "configs/yinyang.yaml", "ttfs": "configs/yinyang-ttfs.yaml",
                  "eventprop": "configs/yinyang-eventprop.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (seeds are seed .. seed+seeds-1)")
    parser.add_argument("--method", choices=sorted(METHOD_CONFIGS), default="surrogate",
                        help="training method, picks the config (default surrogate)")
    parser.add_argument("--config", help="a config file (default: the method's one in the repository)")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (default 2)")
    parser.add_argument("--out", default="runs/bench-yinyang", help="folder for the runs' outputs")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: CPUs / workers)")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    config = args.config or METHOD_CONFIGS[args.method]

    jobs = []
    for seed in range(args.seed, args.seed + args.seeds):
        overrides = {"seed": seed, "output.dir": f"{args.out}/seed{seed}", "output.progress": False,
                     "output.plots": False, "device": "cpu"}
        if args.epochs is not None:
            overrides["train.epochs"] = args.epochs
        jobs.append({"config": config, "overrides": overrides, "tag": {"seed": seed}})
    start = time.perf_counter()
    runs = run_jobs(jobs, args.workers, args.threads)
    wall = time.perf_counter() - start
    print_table(runs, [("seed", "seed", "d"), ("test_acc", "test acc", ".4f"),
                       ("spikes_per_sample", "spikes/sample", ".1f"), ("epochs", "epochs", "d"),
                       ("epoch_seconds", "s/epoch", ".2f"), ("peak_memory_mib", "peak MiB", ".0f"),
                       ("wall_seconds", "wall s", ".1f")])
    acc = summarise([r["test_acc"] for r in runs])
    spikes = summarise([r["spikes_per_sample"] for r in runs])
    print(f"\nYin-Yang test accuracy over {len(runs)} seeds: {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} %"
          f"  (min {100 * acc['min']:.1f}, max {100 * acc['max']:.1f});"
          f"  spikes/sample {spikes['mean']:.1f} ± {spikes['std']:.1f};  wall {wall:.0f} s")
    write_json(args.json, {"benchmark": "yinyang", "method": args.method, "config": config,
                           "seeds": [r["seed"] for r in runs],
                           "accuracy": acc, "spikes_per_sample": spikes, "wall_seconds": wall,
                           "runs": runs, "environment": environment()})


if __name__ == "__main__":
    main()
