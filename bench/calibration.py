"""Calibration of emulated BrainScaleS-2-like chip instances: spread of the effective neuron parameters before and
after.

For each of N chip instances (instances seed, seed+1, ...; default mismatch and noise, docs/targets/bss2.md) the
effective parameters of all 512 neurons programmed for the calibration targets (leak 80, reset 80, threshold 125
CADC; tau_mem = tau_syn = 10 us) are taken from the emulator's hidden truth twice: through the nominal CapMem maps
(an uncalibrated chip) and through the maps the calibration measured by probing only (:mod:`spikeforge.targets.bss2.
calibrate`). Prints mean and std across neurons (pooled over instances) per parameter and the std ratio, times the
emulator on a Yin-Yang-sized network (5-120-3, T = 30, batch 100, 1 thread), writes JSON and a histogram PNG next to
it.

    python bench/calibration.py --json bench/results/bss2_calibration.json --instances 3 --seed 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import environment, print_table, write_json


def _emulator_ms(repeats: int = 5) -> float:
    from spikeforge.graph import extract_graph
    from spikeforge.nn import LI, LIF, Linear, Sequential
    from spikeforge.targets.bss2 import BSS2Chip, NoiseModel

    torch.manual_seed(0)
    model = Sequential(Linear(5, 120, bias=False), LIF(10e-3, dt=1e-3, size=120, reset="value"),
                       Linear(120, 3, bias=False), LI(10e-3, dt=1e-3, size=3))
    with torch.no_grad():
        model[0].weight.mul_(6.0)
    graph = extract_graph(model, 5)
    x = (torch.rand(30, 100, 5) < 0.3).float()
    chip = BSS2Chip(instance=0, noise=NoiseModel(), calibrated=False, seed=0)
    chip.observe(graph, x)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        chip.observe(graph, x)
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=3, help="chip instances (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="first instance number (default 0)")
    parser.add_argument("--json", help="write results here (and a histogram PNG next to it)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from spikeforge.targets.bss2 import BSS2Chip, Calibration, calibrate, effective_spread

    before: dict[str, list[torch.Tensor]] = {}
    after: dict[str, list[torch.Tensor]] = {}
    runs, seconds = [], []
    for instance in range(args.seed, args.seed + args.instances):
        chip = BSS2Chip(instance=instance, calibrated=False, seed=instance)
        for k, v in effective_spread(chip, Calibration.nominal(chip.spec)).items():
            before.setdefault(k, []).append(v)
        report = calibrate(chip)
        runs.append(report.runs)
        seconds.append(report.seconds)
        for k, v in effective_spread(chip).items():
            after.setdefault(k, []).append(v)
    rows = []
    for name in before:
        b, a = torch.cat(before[name]), torch.cat(after[name])
        rows.append({"parameter": name, "mean_before": float(b.mean()), "std_before": float(b.std()),
                     "mean_after": float(a.mean()), "std_after": float(a.std()),
                     "std_ratio": float(b.std() / a.std())})
    print(f"{args.instances} instance(s) x 512 neurons; {sum(runs) / len(runs):.0f} probe runs and "
          f"{sum(seconds) / len(seconds):.1f} s per calibration")
    print_table(rows, [("parameter", "parameter", "s"), ("mean_before", "mean before", ".3f"),
                       ("std_before", "std before", ".4f"), ("mean_after", "mean after", ".3f"),
                       ("std_after", "std after", ".4f"), ("std_ratio", "std ratio", ".1f")])
    ms = _emulator_ms()
    print(f"emulator: {ms:.1f} ms per batch of 100 (Yin-Yang 5-120-3, T=30, h=0.25 us, CADC, noise on, 1 thread)")
    write_json(args.json, {"environment": environment(), "instances": args.instances, "seed": args.seed,
                           "probe_runs": runs, "calibration_seconds": seconds, "rows": rows,
                           "emulator_ms_per_batch100": ms})
    if args.json:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 4, figsize=(14, 6))
        for ax, name in zip(axes.flat, before, strict=False):
            b, a = torch.cat(before[name]).numpy(), torch.cat(after[name]).numpy()
            lo, hi = min(b.min(), a.min()), max(b.max(), a.max())
            ax.hist(b, bins=40, range=(lo, hi), alpha=0.6, label="before")
            ax.hist(a, bins=40, range=(lo, hi), alpha=0.6, label="after")
            ax.set_title(name)
        axes.flat[0].legend()
        fig.tight_layout()
        png = Path(args.json).with_suffix(".png")
        fig.savefig(png, dpi=90)
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
