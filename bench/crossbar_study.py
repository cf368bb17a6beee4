"""Crossbar robustness study: accuracy vs number of time steps and vs each crossbar non-ideality.

Trains the Yin-Yang recipe (configs/yinyang.yaml, ordinary float training) with few and with many time steps,
then copies each trained network onto simulated memristive crossbars (every ``spikeforge.nn.Linear`` replaced
by a ``CrossbarLinear`` holding the same weights and bias) and evaluates test accuracy on the published test
split with the trainer's own ``evaluate`` (same encoding, eval mode): the ideal crossbar (asserted to reproduce
the float accuracy exactly), each non-ideality alone at a few strengths, and the aihwkit-like PCM preset.
Each step count is trained with ``--train-seeds`` seeds; stochastic effects (programming noise, stuck-at faults,
drift exponents, read noise) are evaluated on ``--chips`` programmings (chip seeds) of every trained network.
Accuracies are reported as mean ± std pooled over training seeds x chips (x 1 for deterministic effects).

    python bench/crossbar_study.py --json bench/results/crossbar_study.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

from _common import environment, evaluate_with, run_jobs, summarise, write_json

HOUR, DAY = 3600.0, 86400.0

# (effect, label, CrossbarConfig keyword arguments or "preset", stochastic, strength value for the plot)
EFFECTS: list[tuple[str, str, Any, bool, float]] = [
    ("levels", "16", {"levels": 16}, False, 16),
    ("levels", "8", {"levels": 8}, False, 8),
    ("levels", "4", {"levels": 4}, False, 4),
    ("prog_noise", "0.5", {"prog_noise": 0.5}, True, 0.5),
    ("prog_noise", "1", {"prog_noise": 1.0}, True, 1.0),
    ("prog_noise", "2", {"prog_noise": 2.0}, True, 2.0),
    ("stuck_at", "p=0.01", {"p_sa0": 0.01, "p_sa1": 0.01}, True, 0.01),
    ("stuck_at", "p=0.05", {"p_sa0": 0.05, "p_sa1": 0.05}, True, 0.05),
    ("drift", "1 h", {"drift_t": HOUR}, True, HOUR),
    ("drift", "1 day", {"drift_t": DAY}, True, DAY),
    ("read_noise", "0.02", {"read_noise": 0.02}, True, 0.02),
    ("read_noise", "0.05", {"read_noise": 0.05}, True, 0.05),
    ("read_noise", "0.1", {"read_noise": 0.1}, True, 0.1),
    ("adc_bits", "8", {"adc_bits": 8}, False, 8),
    ("adc_bits", "6", {"adc_bits": 6}, False, 6),
    ("adc_bits", "4", {"adc_bits": 4}, False, 4),
    ("dac_bits", "6", {"dac_bits": 6}, False, 6),
    ("dac_bits", "4", {"dac_bits": 4}, False, 4),
    ("ir_drop", "0.1", {"ir_drop": 0.1}, False, 0.1),
    ("ir_drop", "0.5", {"ir_drop": 0.5}, False, 0.5),
    ("aihwkit_pcm", "1 h", "preset", True, HOUR),
]
QUICK = {("levels", "8"), ("prog_noise", "1"), ("read_noise", "0.05"), ("aihwkit_pcm", "1 h")}


def crossbar_copy(model, cfg, chip: int):
    """A deep copy of ``model`` with every ``spikeforge.nn.Linear`` replaced by a ``CrossbarLinear`` holding the
    same weight and bias, programmed with seed ``1000 * chip + layer index``."""
    import torch

    from spikeforge.nn import CrossbarLinear, Linear

    net = copy.deepcopy(model)
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Linear):
            cb = CrossbarLinear(layer.weight.shape[1], layer.weight.shape[0], cfg, bias=layer.bias is not None,
                                seed=1000 * chip + i)
            with torch.no_grad():
                cb.weight.copy_(layer.weight)
                if layer.bias is not None:
                    cb.bias.copy_(layer.bias)
            cb.to(layer.weight.device)
            cb.program()
            net.layers[i] = cb
    return net


def plot(path: Path, results: list[dict[str, Any]], steps: list[int], floats: dict[int, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    effects = list(dict.fromkeys(r["effect"] for r in results if r["effect"] != "ideal"))
    cols = 4
    rows = (len(effects) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, effect in zip(axes.flat, effects, strict=False):
        rs = [r for r in results if r["effect"] == effect]
        labels = ["off"] + [r["label"] for r in rs]
        for t in steps:
            means = [floats[t]["mean"]] + [r["accuracy"][str(t)]["mean"] for r in rs]
            stds = [floats[t]["std"]] + [r["accuracy"][str(t)]["std"] for r in rs]
            ax.errorbar(range(len(labels)), [100 * m for m in means], yerr=[100 * s for s in stds],
                        marker="o", capsize=3, label=f"T = {t}")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
        ax.set_title(effect)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(effects):]:
        ax.axis("off")
    axes.flat[0].legend()
    fig.suptitle("Yin-Yang on a simulated crossbar: accuracy vs non-ideality strength (mean ± std over seeds x chips)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/yinyang.yaml", help="training recipe (default: Yin-Yang)")
    parser.add_argument("--epochs", type=int, help="override train.epochs (default: the recipe's)")
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 30],
                        help="encoding.steps of the trained networks (default 8 30)")
    parser.add_argument("--seed", type=int, default=0, help="first training seed (default 0)")
    parser.add_argument("--train-seeds", type=int, default=3,
                        help="networks trained per step count, seeds seed .. seed+N-1 (default 3)")
    parser.add_argument("--chips", type=int, default=5,
                        help="programmings (chip seeds 0 .. N-1) per stochastic effect (default 5)")
    parser.add_argument("--quick", action="store_true", help="a reduced effect list (smoke tests)")
    parser.add_argument("--workers", type=int, default=2, help="trainings in parallel (default 2)")
    parser.add_argument("--threads", type=int, help="torch threads per training (default: CPUs / workers)")
    parser.add_argument("--out", default="runs/bench-crossbar", help="folder for the trainings' outputs")
    parser.add_argument("--json", help="write results here (and the plot next to it, same name, .png)")
    args = parser.parse_args()
    if args.chips < 1 or args.train_seeds < 1:
        parser.error("--chips and --train-seeds must be >= 1")
    steps = list(dict.fromkeys(args.steps))

    seeds = list(range(args.seed, args.seed + args.train_seeds))
    start = time.perf_counter()
    jobs = []
    for t in steps:
        for seed in seeds:
            overrides = {"seed": seed, "output.dir": f"{args.out}/steps{t}-seed{seed}", "output.progress": False,
                         "output.plots": False, "device": "cpu", "encoding.steps": t}
            if args.epochs is not None:
                overrides["train.epochs"] = args.epochs
            jobs.append({"config": args.config, "overrides": overrides, "tag": {"steps": t, "seed": seed}})
    runs = run_jobs(jobs, args.workers, args.threads)
    train_wall = time.perf_counter() - start
    for r in runs:
        print(f"trained T={r['steps']} seed {r['seed']}: float test acc {100 * r['test_acc']:.2f} %, "
              f"{r['spikes_per_sample']:.1f} spikes/sample, {r['wall_seconds']:.0f} s")

    import torch

    from spikeforge.analog.crossbar import CrossbarConfig
    from spikeforge.train.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    effects = [e for e in EFFECTS if not args.quick or (e[0], e[1]) in QUICK]
    configs = [CrossbarConfig()] + [CrossbarConfig.aihwkit_pcm(HOUR) if kw == "preset" else CrossbarConfig(**kw)
                                    for _, _, kw, _, _ in effects]
    results: list[dict[str, Any]] = [{"effect": "ideal", "label": "all off", "stochastic": False, "strength": 0.0}]
    results += [{"effect": e, "label": lab, "stochastic": sto, "strength": val} for e, lab, _, sto, val in effects]
    for res, cfg in zip(results, configs, strict=True):
        res.update(config=cfg.describe(), accuracy={}, per_seed={})
    per_seed_float: dict[int, list[float]] = {t: [] for t in steps}
    eval_start = time.perf_counter()
    for run in runs:
        t, seed = run["steps"], run["seed"]
        trainer = Trainer.from_checkpoint(Path(args.out) / f"steps{t}-seed{seed}" / "last.pt")
        float_acc = trainer.evaluate("test")["acc"]
        assert float_acc == run["test_acc"], (float_acc, run["test_acc"])
        per_seed_float[t].append(float_acc)
        for res, cfg in zip(results, configs, strict=True):
            chips = range(args.chips) if res["stochastic"] else range(1)
            accs = [evaluate_with(trainer, crossbar_copy(trainer.model, cfg, chip)) for chip in chips]
            res["per_seed"].setdefault(str(t), {})[str(seed)] = accs
            if res["effect"] == "ideal":
                assert accs[0] == float_acc, f"ideal crossbar {accs[0]} != float {float_acc} (T={t}, seed {seed})"
    for res in results:  # pool over training seeds and chips
        for t in steps:
            pooled = [a for accs in res["per_seed"][str(t)].values() for a in accs]
            res["accuracy"][str(t)] = summarise(pooled, keep=True)
    floats = {t: summarise(per_seed_float[t], keep=True) for t in steps}
    eval_wall = time.perf_counter() - eval_start
    wall = time.perf_counter() - start

    head = f"{'effect':>12}  {'strength':>9}" + "".join(f"  {f'T={t} acc %':>15}" for t in steps)
    print("\n" + head)
    cells = [f"{100 * floats[t]['mean']:.2f} ± {100 * floats[t]['std']:.2f}" for t in steps]
    print(f"{'float':>12}  {'':>9}" + "".join(f"  {c:>15}" for c in cells))
    for res in results:
        cells = [f"{100 * res['accuracy'][str(t)]['mean']:.2f} ± {100 * res['accuracy'][str(t)]['std']:.2f}"
                 for t in steps]
        print(f"{res['effect']:>12}  {res['label']:>9}" + "".join(f"  {c:>15}" for c in cells))
    print(f"\n(mean ± std over {len(seeds)} training seeds x {args.chips} chips for stochastic effects, "
          f"x 1 for deterministic ones; training {train_wall:.0f} s, crossbar evaluation {eval_wall:.0f} s, "
          f"total {wall:.0f} s)")

    write_json(args.json, {
        "benchmark": "crossbar_study", "command": [sys.executable, *sys.argv], "config": args.config,
        "epochs": runs[0]["epochs"], "steps": steps, "train_seeds": seeds, "chips": args.chips, "quick": args.quick,
        "chip_seeds": "layer i of chip c is programmed with seed 1000 * c + i",
        "float_accuracy": {str(t): floats[t] for t in steps}, "training": runs, "results": results,
        "train_seconds": train_wall, "eval_seconds": eval_wall, "wall_seconds": wall,
        "environment": environment(),
    })
    if args.json:
        plot(Path(args.json).with_suffix(".png"), results, steps, floats)


if __name__ == "__main__":
    main()
