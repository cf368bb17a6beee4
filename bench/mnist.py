"""MNIST and Fashion-MNIST benchmark: train configs/mnist.yaml (a spiking MLP on Poisson rate-coded
pixels) and configs/fashion-mnist.yaml (the same MLP on latency-coded pixels); report test accuracy,
spikes per sample and wall time.

    python bench/mnist.py --json bench/results/mnist.json
    python bench/mnist.py --datasets mnist --epochs 2      # quick look

``--method eventprop`` trains configs/mnist-eventprop.yaml instead (latency-coded MNIST as spike times, one hidden
layer of event-driven LIF neurons trained with EventProp, a leaky-integrator read-out; MNIST only):

    python bench/mnist.py --method eventprop --datasets mnist --epochs 1 --limit-train 6000   # smoke run

``--time-budget SECONDS`` fits the number of epochs to a fixed amount of time (e.g. a short lease of a GPU machine):
a probe epoch on ``--probe-samples`` training samples (and a tenth as many test samples) measures the cost per
sample on the chosen device, and the run gets as many full epochs (training set plus the per-epoch test pass) as fit
in what is left; the learning-rate schedule then spans those epochs:

    python bench/mnist.py --method eventprop --datasets mnist --device cuda --time-budget 300
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import environment, print_table, run_jobs, summarise, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"],
                        choices=["mnist", "fashion-mnist"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per data set (default 1)")
    parser.add_argument("--method", choices=["surrogate", "eventprop"], default="surrogate",
                        help="surrogate (default: configs/<dataset>.yaml) or eventprop (configs/mnist-eventprop.yaml)")
    parser.add_argument("--config", help="one config for every data set (default: configs/<dataset>.yaml)")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (default 2)")
    parser.add_argument("--limit-train", type=int, help="use only the first N training samples (quick look)")
    parser.add_argument("--limit-test", type=int, help="use only the first N test samples (quick look)")
    parser.add_argument("--download", action="store_true", help="download missing data (checksummed)")
    parser.add_argument("--out", default="runs/bench-mnist")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: CPUs / workers)")
    parser.add_argument("--json", help="write results here")
    parser.add_argument("--time-budget", type=float,
                        help="seconds for the whole run: a probe epoch sets --epochs to what fits (one run only)")
    parser.add_argument("--probe-samples", type=int, default=4096, help="training samples of the probe epoch")
    args = parser.parse_args()
    if args.method == "eventprop" and args.datasets != ["mnist"]:
        if "--datasets" in sys.argv:
            parser.error("--method eventprop has a config for MNIST only; pass --datasets mnist.")
        args.datasets = ["mnist"]

    probe = None
    if args.time_budget is not None:
        if len(args.datasets) * args.seeds != 1 or args.epochs is not None:
            parser.error("--time-budget fits one run (one data set, one seed) and sets --epochs itself.")
        args.epochs, probe = fit_epochs(args)
    jobs = []
    for dataset in args.datasets:
        for seed in range(args.seed, args.seed + args.seeds):
            overrides = {"seed": seed, "data.dataset": dataset, "data.download": args.download,
                         "output.dir": f"{args.out}/{dataset}-seed{seed}", "output.progress": False,
                         "output.plots": False, "device": args.device}
            if args.epochs is not None:
                overrides["train.epochs"] = args.epochs
            if args.limit_train is not None:
                overrides["data.limit_train"] = args.limit_train
            if args.limit_test is not None:
                overrides["data.limit_test"] = args.limit_test
            config = _config_path(args, dataset)
            jobs.append({"config": config, "overrides": overrides, "tag": {"dataset": dataset, "seed": seed}})
    start = time.perf_counter()
    runs = run_jobs(jobs, 1 if args.device != "cpu" else args.workers, args.threads)
    wall = time.perf_counter() - start
    print_table(runs, [("dataset", "dataset", "s"), ("seed", "seed", "d"), ("test_acc", "test acc", ".4f"),
                       ("spikes_per_sample", "spikes/sample", ".1f"), ("epochs", "epochs", "d"),
                       ("epoch_seconds", "s/epoch", ".1f"), ("peak_memory_mib", "peak MiB", ".0f"),
                       ("wall_seconds", "wall s", ".0f")])
    results = {}
    for dataset in args.datasets:
        mine = [r for r in runs if r["dataset"] == dataset]
        results[dataset] = {"accuracy": summarise([r["test_acc"] for r in mine]),
                            "spikes_per_sample": summarise([r["spikes_per_sample"] for r in mine]),
                            "wall_seconds": sum(r["wall_seconds"] for r in mine)}
        a = results[dataset]["accuracy"]
        print(f"{dataset}: test accuracy {100 * a['mean']:.2f} ± {100 * a['std']:.2f} % over {len(mine)} seed(s)")
    write_json(args.json, {"benchmark": "mnist", "configs": sorted({job["config"] for job in jobs}),
                           "results": results, "runs": runs, "wall_seconds": wall, "probe": probe,
                           "environment": environment()})


def _config_path(args: argparse.Namespace, dataset: str) -> str:
    if args.config:
        return args.config
    return f"configs/{dataset}.yaml" if args.method == "surrogate" else "configs/mnist-eventprop.yaml"


def fit_epochs(args: argparse.Namespace) -> tuple[int, dict]:
    """Epochs that fit in ``args.time_budget`` seconds, from one probe epoch on ``args.probe_samples`` samples."""
    start = time.perf_counter()
    dataset = args.datasets[0]
    probe_test = max(100, args.probe_samples // 10)  # mostly training, so evaluation is costed as training (a margin)
    overrides = {"seed": args.seed, "data.dataset": dataset, "data.download": args.download,
                 "data.limit_train": args.probe_samples, "data.limit_test": probe_test, "train.epochs": 1,
                 "output.dir": f"{args.out}/probe", "output.progress": False, "output.plots": False,
                 "device": args.device}
    run = run_jobs([{"config": _config_path(args, dataset), "overrides": overrides, "tag": {}}], 1,
                   args.threads)[0]
    probe_wall = time.perf_counter() - start
    from spikeforge.train.config import load_config
    from spikeforge.train.datasets import load_splits

    cfg = load_config(_config_path(args, dataset), {"data.dataset": dataset})
    splits = load_splits(cfg.data)
    n_train = len(splits.train[1]) if args.limit_train is None else min(args.limit_train, len(splits.train[1]))
    n_eval = len(splits.test[1]) if args.limit_test is None else min(args.limit_test, len(splits.test[1]))
    if splits.validation is not None:
        n_eval += len(splits.validation[1])
    per_sample = run["epoch_seconds"] / (args.probe_samples + probe_test)
    epoch_s = per_sample * (n_train + n_eval)
    left = args.time_budget - probe_wall - per_sample * n_eval - 15  # the final test pass and start-up
    epochs = max(1, int(left // epoch_s))
    print(f"probe: {args.probe_samples} samples in {run['epoch_seconds']:.1f} s -> ~{epoch_s:.0f} s per epoch; "
          f"{epochs} epoch(s) fit in the {args.time_budget:.0f} s budget ({probe_wall:.0f} s spent on the probe)")
    return epochs, {"samples": args.probe_samples, "epoch_seconds": run["epoch_seconds"], "wall": probe_wall,
                    "estimated_epoch_seconds": epoch_s, "epochs": epochs}


if __name__ == "__main__":
    main()
