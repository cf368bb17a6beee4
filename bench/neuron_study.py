"""Neuron study: accuracy with voltage-domain vs time-domain neuron models (Yin-Yang, published test split).

Trains the Yin-Yang recipe (configs/yinyang.yaml) with its time-domain (linear) LIF hidden layer, then swaps
every hidden ``LIF`` of the trained network for a ``spikeforge.nn.AnalogLIF`` with the same tau_mem, v_th, reset,
dt and surrogate (the trained weights stay) and evaluates test accuracy with the trainer's own ``evaluate``:

  (a) time-domain LIF, trained and tested (baseline); AnalogLIF(curve=Linear()) without mismatch is asserted to
      reproduce it exactly;
  (b) the float-trained weights tested on voltage-domain neurons, AnalogLIF(curve=Rails(...)) at two rail
      settings, and with per-neuron gain mismatch (sigma 0.05 / 0.1 / 0.2) on the default rails and, to separate
      the two effects, on the linear curve;
  (c) trained with the voltage-domain neuron (default Rails, the layer swapped before training and the optimizer
      and schedule rebuilt) and tested on it, without and with mismatch (and on the plain LIF).

Each training runs for ``--train-seeds`` seeds; mismatch patterns are drawn for ``--chips`` chip seeds (layer i of
chip c uses seed 1000 * c + i). Accuracies are mean ± std pooled over training seeds x chips.

    python bench/neuron_study.py --json bench/results/neuron_study.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT, environment, evaluate_with, run_jobs, summarise, write_json

# name -> Rails keyword arguments (the default one is the library's assumed default)
RAILS = {"default": {"v_lo": -1.0, "v_hi": 1.5, "sharpness": 10.0},
         "tight": {"v_lo": -0.5, "v_hi": 1.25, "sharpness": 10.0}}
SIGMAS = [0.05, 0.1, 0.2]
QUICK_SIGMAS = [0.1]


def make_curve(name: str):
    from spikeforge.analog.neuron import Linear, Rails

    return Linear() if name == "linear" else Rails(**RAILS[name])


def analog_copy(model, cfg, curve: str, sigma: float = 0.0, chip: int = 0):
    """A deep copy of ``model`` with every ``LIF`` layer replaced by an ``AnalogLIF`` built from the same layer
    config (tau_mem, v_th, reset, ...), dt and surrogate, carrying the LIF's state (its neuron parameters)."""
    from spikeforge.nn import LIF, AnalogLIF

    net = copy.deepcopy(model)
    for i, layer in enumerate(net.layers):
        if type(layer) is not LIF:
            continue
        spec = {k: v for k, v in cfg.model.layers[i].items() if k not in ("type", "engine", "sparse_backward")}
        spec.setdefault("surrogate", cfg.model.surrogate)
        analog = AnalogLIF(**spec, dt=cfg.model.dt, size=layer.size, curve=make_curve(curve),
                           mismatch_sigma=sigma, seed=1000 * chip + i)
        state = analog.state_dict()
        state.update(layer.state_dict())  # same neuron parameters (a learned tau_mem / v_th included)
        analog.load_state_dict(state)
        net.layers[i] = analog.to(next(model.parameters()).device)
    return net


def _train(job: dict[str, Any]) -> dict[str, Any]:
    """Train one network; ``job["neuron"]`` is "lif" (time domain, the recipe as is) or a Rails name
    (the hidden LIF swapped for an AnalogLIF before training, optimizer and schedule rebuilt)."""
    import torch

    torch.set_num_threads(job["threads"])
    from spikeforge.train.config import load_config
    from spikeforge.train.trainer import Trainer

    path = Path(job["config"])
    cfg = load_config(path if path.is_file() else ROOT / path, job["overrides"])
    trainer = Trainer(cfg)
    if job["neuron"] != "lif":
        trainer.model = analog_copy(trainer.model, cfg, job["neuron"])
        trainer.optimizer = trainer._make_optimizer()
        trainer.scheduler = trainer._make_scheduler()
    final = trainer.fit()
    per_epoch = sum(r["seconds"] for r in trainer.history) / max(1, len(trainer.history))
    return {"neuron": job["neuron"], "seed": job["seed"], **final, "epoch_seconds": per_epoch}


def conditions(sigmas: list[float], quick: bool) -> list[dict[str, Any]]:
    """The evaluated conditions: (group, trained with, tested on curve, mismatch sigma)."""
    rails = ["default"] if quick else list(RAILS)
    out = [{"group": "a", "trained": "lif", "curve": "linear", "sigma": 0.0}]
    out += [{"group": "b", "trained": "lif", "curve": r, "sigma": 0.0} for r in rails]
    out += [{"group": "b", "trained": "lif", "curve": "default", "sigma": s} for s in sigmas]
    out += [{"group": "b", "trained": "lif", "curve": "linear", "sigma": s} for s in sigmas]
    out += [{"group": "c", "trained": "default", "curve": "default", "sigma": 0.0}]
    out += [{"group": "c", "trained": "default", "curve": "default", "sigma": s} for s in sigmas]
    out += [{"group": "c", "trained": "default", "curve": "linear", "sigma": 0.0}]
    for c in out:
        trained = "LIF (time domain)" if c["trained"] == "lif" else f"AnalogLIF Rails {c['trained']}"
        tested = "LIF-equivalent Linear" if c["curve"] == "linear" else f"Rails {c['curve']}"
        c["label"] = f"train {trained} | test {tested}" + (f", mismatch {c['sigma']:g}" if c["sigma"] else "")
    return out


def plot(path: Path, results: list[dict[str, Any]], baseline: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    ax = axes[0]
    for trained, curve, style in (("lif", "default", "o-"), ("lif", "linear", "s--"), ("default", "default", "^-")):
        rs = sorted((r for r in results if r["trained"] == trained and r["curve"] == curve), key=lambda r: r["sigma"])
        if not rs:
            continue
        name = "LIF-trained" if trained == "lif" else "Rails-trained"
        test = "Rails default" if curve == "default" else "Linear"
        ax.errorbar([r["sigma"] for r in rs], [100 * r["accuracy"]["mean"] for r in rs],
                    yerr=[100 * r["accuracy"]["std"] for r in rs], fmt=style, capsize=3,
                    label=f"{name}, tested on {test}")
    ax.axhline(100 * baseline["mean"], color="grey", lw=0.8, ls=":", label="LIF baseline")
    ax.set_xlabel("per-neuron gain mismatch sigma")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("mismatch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    rs = [r for r in results if r["sigma"] == 0.0]
    labels = [("LIF" if r["trained"] == "lif" else "Rails-" + r["trained"]) + "\n-> "
              + ("Linear" if r["curve"] == "linear" else "Rails-" + r["curve"]) for r in rs]
    ax.bar(range(len(rs)), [100 * r["accuracy"]["mean"] for r in rs],
           yerr=[100 * r["accuracy"]["std"] for r in rs], capsize=3,
           color=["C0" if r["trained"] == "lif" else "C2" for r in rs])
    lo = min(100 * (r["accuracy"]["mean"] - r["accuracy"]["std"]) for r in rs)
    ax.set_ylim(max(0.0, lo - 5), 100)
    ax.set_xticks(range(len(rs)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("no mismatch: trained on -> tested on")
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Yin-Yang: time-domain (linear) vs voltage-domain (Rails) neurons, mean ± std over seeds x chips")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/yinyang.yaml", help="training recipe (default: Yin-Yang)")
    parser.add_argument("--epochs", type=int, default=40,
                        help="train.epochs of every training (default 40: the analog neuron trains ~8x slower "
                             "than the fused LIF on the CPU)")
    parser.add_argument("--seed", type=int, default=0, help="first training seed (default 0)")
    parser.add_argument("--train-seeds", type=int, default=3,
                        help="networks trained per neuron model, seeds seed .. seed+N-1 (default 3)")
    parser.add_argument("--chips", type=int, default=5,
                        help="mismatch patterns (chip seeds 0 .. N-1) per mismatch condition (default 5)")
    parser.add_argument("--quick", action="store_true", help="one rail setting and one sigma (smoke tests)")
    parser.add_argument("--workers", type=int, default=2, help="trainings in parallel (default 2)")
    parser.add_argument("--threads", type=int, help="torch threads per training (default: CPUs / workers)")
    parser.add_argument("--out", default="runs/bench-neuron", help="folder for the trainings' outputs")
    parser.add_argument("--json", help="write results here (and the plot next to it, same name, .png)")
    args = parser.parse_args()
    if args.chips < 1 or args.train_seeds < 1 or args.epochs < 1:
        parser.error("--chips, --train-seeds and --epochs must be >= 1")

    seeds = list(range(args.seed, args.seed + args.train_seeds))
    start = time.perf_counter()
    jobs = []
    for neuron in ("default", "lif"):  # the slow analog trainings first, for the load balance
        for seed in seeds:
            overrides = {"seed": seed, "output.dir": f"{args.out}/{neuron}-seed{seed}", "output.progress": False,
                         "output.plots": False, "device": "cpu", "train.epochs": args.epochs}
            jobs.append({"config": args.config, "overrides": overrides, "neuron": neuron, "seed": seed})
    runs = run_jobs(jobs, args.workers, args.threads, run_one=_train)
    train_wall = time.perf_counter() - start
    for r in runs:
        print(f"trained {r['neuron']:>7} seed {r['seed']}: test acc {100 * r['test_acc']:.2f} %, "
              f"{r['spikes_per_sample']:.1f} spikes/sample, {r['epoch_seconds']:.2f} s/epoch")

    import torch

    from spikeforge.train.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    sigmas = QUICK_SIGMAS if args.quick else SIGMAS
    results = conditions(sigmas, args.quick)
    for res in results:
        res["per_seed"] = {}
        res["rails"] = None if res["curve"] == "linear" else RAILS[res["curve"]]
    linear_equal: dict[str, bool] = {}
    eval_start = time.perf_counter()
    for run in runs:
        trained, seed = run["neuron"], run["seed"]
        trainer = Trainer.from_checkpoint(Path(args.out) / f"{trained}-seed{seed}" / "last.pt")
        cfg = trainer.cfg
        if trained == "lif":
            lif_acc = trainer.evaluate("test")["acc"]
            assert lif_acc == run["test_acc"], (lif_acc, run["test_acc"])
            linear_acc = evaluate_with(trainer, analog_copy(trainer.model, cfg, "linear"))
            linear_equal[str(seed)] = linear_acc == lif_acc
            assert linear_acc == lif_acc, f"AnalogLIF(Linear) {linear_acc} != LIF {lif_acc} (seed {seed})"
        else:  # the checkpoint holds the weights trained through the analog neuron; test on that neuron
            acc = evaluate_with(trainer, analog_copy(trainer.model, cfg, trained))
            assert acc == run["test_acc"], (acc, run["test_acc"])
        for res in results:
            if res["trained"] != trained:
                continue
            chips = range(args.chips) if res["sigma"] > 0 else range(1)
            res["per_seed"][str(seed)] = [
                evaluate_with(trainer, analog_copy(trainer.model, cfg, res["curve"], res["sigma"], chip))
                for chip in chips]
    for res in results:  # pool over training seeds and chips
        res["accuracy"] = summarise([a for accs in res["per_seed"].values() for a in accs], keep=True)
    baseline = summarise([r["test_acc"] for r in runs if r["neuron"] == "lif"], keep=True)
    eval_wall = time.perf_counter() - eval_start
    wall = time.perf_counter() - start

    print(f"\n{'':2}{'condition':<75}  {'test acc % (mean ± std)':>24}  {'n':>3}")
    cell = f"{100 * baseline['mean']:.2f} ± {100 * baseline['std']:.2f}"
    print(f"{'a':<2}{'train LIF (time domain) | test LIF (time domain)':<75}  {cell:>24}  {baseline['n']:>3}")
    for res in results:
        acc = res["accuracy"]
        cell = f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}"
        print(f"{res['group']:<2}{res['label']:<75}  {cell:>24}  {acc['n']:>3}")
    print(f"\n(n = training seeds x chips; rails default {RAILS['default']}, tight {RAILS['tight']}; "
          f"{args.epochs} epochs; training {train_wall:.0f} s, evaluation {eval_wall:.0f} s, total {wall:.0f} s)")

    write_json(args.json, {
        "benchmark": "neuron_study", "command": [sys.executable, *sys.argv], "config": args.config,
        "epochs": args.epochs, "train_seeds": seeds, "chips": args.chips, "quick": args.quick,
        "rails": RAILS, "sigmas": sigmas,
        "chip_seeds": "the AnalogLIF in layer i on chip c draws its gain pattern with seed 1000 * c + i",
        "lif_accuracy": baseline, "linear_equals_lif": linear_equal, "training": runs, "results": results,
        "train_seconds": train_wall, "eval_seconds": eval_wall, "wall_seconds": wall,
        "environment": environment(),
    })
    if args.json:
        plot(Path(args.json).with_suffix(".png"), results, baseline)


if __name__ == "__main__":
    main()
