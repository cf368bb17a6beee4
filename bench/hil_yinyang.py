"""Hardware-in-the-loop training on the BrainScaleS-2-like target: Yin-Yang (published test split) over several
emulated chip instances.

1. Train in software (``configs/yinyang-bss2.yaml``; one float model for all chips: LIF hidden layer with
   ``reset="value"`` as the chip needs, LI read-out, inputs as event counts per step, which the chip receives
   as spikes through its synapses).
2. Deploy it to each of ``--chips`` emulated chip instances (``BSS2Chip(instance=...)``, calibrated, with the
   default mismatch and temporal noise); test accuracy on the chip.
3. Train in the loop on each instance, *fine-tuning from the software-trained weights* (``--hil-epochs`` epochs at
   ``--hil-lr``; the training config gains one section, ``hil: {target: bss2, instance: i}``); test accuracy on
   the same chip.

The LI read-out's float range mapped onto the CADC (``readout_range``) is calibrated once from the software model
(the largest |membrane - v_leak| on the training set, times 1.1) and used for both deployment and HIL.
Recovered fraction per chip: ``(HIL - deployed) / (software - deployed)``.

    python bench/hil_yinyang.py --chips 5 --seed 0 --json bench/results/hil_yinyang.json
    python bench/hil_yinyang.py --chips 5 --seed 0 --workers 5 --json OUT.json   # one chip per process
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import yaml
from _common import ROOT, environment, print_table, run_jobs, summarise, write_json

CONFIG = "configs/yinyang-bss2.yaml"


def base_config(args: argparse.Namespace, out: str) -> dict[str, Any]:
    """The software run's config: ``configs/yinyang-bss2.yaml`` with the command line's overrides."""
    cfg = yaml.safe_load((ROOT / CONFIG).read_text())
    cfg["seed"] = args.seed
    if args.limit_train:
        cfg["data"]["limit_train"] = args.limit_train
    if args.limit_test:
        cfg["data"]["limit_test"] = args.limit_test
    cfg["encoding"].update(steps=args.steps, gain=args.gain)
    cfg["model"]["layers"][0]["out"] = args.hidden
    cfg["train"]["epochs"] = args.sw_epochs
    cfg["output"] = {"dir": out, "plots": False, "progress": False}
    return cfg


def train_software(args: argparse.Namespace) -> dict[str, Any]:
    """Train the float model; return its state, test accuracy and the read-out range for deployment."""
    import torch

    from spikeforge.train.config import config_from_dict
    from spikeforge.train.datasets import encode_batch
    from spikeforge.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    trainer = Trainer(config_from_dict(base_config(args, f"{args.out}/software")))
    final = trainer.fit()
    x, _ = trainer.splits.train
    with torch.no_grad():
        out, _ = trainer.model(encode_batch(x, trainer.cfg.encoding, None))
    v_leak = float(trainer.model.layers[-1].v_leak.max())
    readout_range = 1.1 * float((out - v_leak).abs().max())
    return {"state": {k: v.clone() for k, v in trainer.model.state_dict().items()}, "test_acc": final["test_acc"],
            "epoch_seconds": sum(r["seconds"] for r in trainer.history) / max(1, len(trainer.history)),
            "readout_range": readout_range}


def run_chip(job: dict[str, Any]) -> dict[str, Any]:
    """Deploy the software model to one chip instance, then fine-tune it in the loop there (one worker)."""
    import torch

    torch.set_num_threads(job["threads"])
    from spikeforge.train.config import config_from_dict
    from spikeforge.train.trainer import Trainer

    start = time.perf_counter()
    cfg = copy.deepcopy(job["config"])
    cfg["train"].update(epochs=job["hil_epochs"], optimizer={"name": "adam", "lr": job["hil_lr"]},
                        schedule={"name": "cosine", "min_lr": job["hil_lr"] / 10})
    # the one-argument switch: the same config, plus where to run
    cfg["hil"] = {"target": "bss2", "instance": job["instance"],
                  "options": {"seed": job["instance"], "readout_range": job["readout_range"]}}
    trainer = Trainer(config_from_dict(cfg))
    trainer.model.load_state_dict(job["state"])
    built = time.perf_counter() - start
    deployed = trainer.evaluate("test")["acc"]
    final = trainer.fit()
    epoch_seconds = [r["seconds"] for r in trainer.history]
    hil = final["test_acc"]
    gap = job["software_acc"] - deployed
    return {"instance": job["instance"], "software_acc": job["software_acc"], "deployed_acc": deployed,
            "hil_acc": hil, "recovered": (hil - deployed) / gap if gap > 0 else float("nan"),
            "val_acc_per_epoch": [r.get("val_acc") for r in trainer.history],
            "hil_epoch_seconds": sum(epoch_seconds) / max(1, len(epoch_seconds)), "chip_build_seconds": built,
            "wall_seconds": time.perf_counter() - start}


def plot(path: Path, runs: list[dict[str, Any]], software: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    xs = range(len(runs))
    ax.bar([x - 0.2 for x in xs], [100 * r["deployed_acc"] for r in runs], width=0.4,
           label="deployed (software-trained)")
    ax.bar([x + 0.2 for x in xs], [100 * r["hil_acc"] for r in runs], width=0.4, label="trained in the loop")
    ax.axhline(100 * software, color="k", ls="--", lw=1, label="software")
    ax.set_xticks(list(xs), [f"chip {r['instance']}" for r in runs])
    lo = min(100 * min(r["deployed_acc"] for r in runs), 100 * software) - 5
    ax.set_ylim(max(0.0, lo), 100)
    ax.set_ylabel("Yin-Yang test accuracy (%)")
    ax.set_title("BrainScaleS-2-like chips: deployed vs trained in the loop", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chips", type=int, default=5, help="emulated chip instances (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="training seed; chip instances are 100*seed + 0..chips-1")
    parser.add_argument("--sw-epochs", type=int, default=150, help="software training epochs (default 150)")
    parser.add_argument("--hil-epochs", type=int, default=12, help="in-the-loop fine-tuning epochs (default 12)")
    parser.add_argument("--hil-lr", type=float, default=1e-3, help="in-the-loop learning rate (default 1e-3)")
    parser.add_argument("--hidden", type=int, default=100, help="hidden LIF neurons (default 100)")
    parser.add_argument("--steps", type=int, default=30, help="time steps per sample (default 30)")
    parser.add_argument("--gain", type=float, default=3.0, help="input events per step at value 1 (default 3)")
    parser.add_argument("--limit-train", type=int, help="use only the first N training samples (quick runs)")
    parser.add_argument("--limit-test", type=int, help="use only the first N test samples (quick runs)")
    parser.add_argument("--workers", type=int, default=1, help="chips in parallel (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--out", default="runs/bench-hil-yinyang", help="folder for the runs' outputs")
    parser.add_argument("--json", help="write results here")
    parser.add_argument("--plot", help="save the plot here (default: next to --json, .png)")
    args = parser.parse_args()

    start = time.perf_counter()
    sw = train_software(args)
    print(f"software: test accuracy {100 * sw['test_acc']:.2f} % ({args.sw_epochs} epochs, "
          f"{sw['epoch_seconds']:.2f} s/epoch); read-out range {sw['readout_range']:.3f}")
    config = base_config(args, "")
    instances = [100 * args.seed + k for k in range(args.chips)]
    jobs = []
    for inst in instances:
        cfg = copy.deepcopy(config)
        cfg["output"]["dir"] = f"{args.out}/chip{inst}"
        jobs.append({"config": cfg, "instance": inst, "state": sw["state"], "software_acc": sw["test_acc"],
                     "readout_range": sw["readout_range"], "hil_epochs": args.hil_epochs, "hil_lr": args.hil_lr})
    runs = run_jobs(jobs, args.workers, args.threads, run_one=run_chip)
    wall = time.perf_counter() - start
    print_table(runs, [("instance", "chip", "d"), ("software_acc", "software", ".4f"),
                       ("deployed_acc", "deployed", ".4f"), ("hil_acc", "HIL", ".4f"),
                       ("recovered", "recovered", ".2f"),
                       ("hil_epoch_seconds", "s/HIL epoch", ".1f"), ("wall_seconds", "chip wall s", ".0f")])
    dep = summarise([r["deployed_acc"] for r in runs], keep=True)
    hil = summarise([r["hil_acc"] for r in runs], keep=True)
    gap = sw["test_acc"] - dep["mean"]
    recovered = (hil["mean"] - dep["mean"]) / gap if gap > 0 else float("nan")
    print(f"\nsoftware {100 * sw['test_acc']:.2f} %;  deployed {100 * dep['mean']:.2f} ± {100 * dep['std']:.2f} %;  "
          f"HIL {100 * hil['mean']:.2f} ± {100 * hil['std']:.2f} %  over {len(runs)} chips;  recovered fraction "
          f"(HIL - deployed) / (software - deployed) = {recovered:.2f};  wall {wall:.0f} s")
    goal = {"hil_mean_at_least_0.96": hil["mean"] >= 0.96, "recovers_at_least_half": recovered >= 0.5}
    print(f"goal: HIL mean >= 96 %: {goal['hil_mean_at_least_0.96']};  "
          f"recovers >= half: {goal['recovers_at_least_half']}")
    plot_path = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if plot_path:
        plot(Path(plot_path), runs, sw["test_acc"])
    write_json(args.json, {
        "benchmark": "hil_yinyang", "config": CONFIG, "target": "bss2 (BSS2Chip, calibrated, default NoiseModel)",
        "hil": "fine-tuned in the loop from the software-trained weights",
        "seed": args.seed, "instances": instances,
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "plot")},
        "software": {"test_acc": sw["test_acc"], "epoch_seconds": sw["epoch_seconds"],
                     "readout_range": sw["readout_range"]},
        "deployed": dep, "hil_acc": hil, "recovered_fraction": recovered, "goal": goal,
        "runs": runs, "wall_seconds": wall, "environment": environment()})


if __name__ == "__main__":
    main()
