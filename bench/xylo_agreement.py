"""Agreement of the Xylo emulator with xylosim v2 (the simulator inside Rockpool's XyloSim).

Draws N random legal configurations from a seed (sizes, sparse int8 weights within the fan-in limit,
weight shifts, dashes, thresholds including some zero/negative ones, biases on or off; Xylo Audio 2 and
Xylo IMU alternately) and random event-count inputs, runs the emulator on the whole batch and xylosim on
each sample, and counts mismatching values: output spikes, hidden spikes, Vmem, Isyn (and Isyn2) of the
hidden and output neurons, at every step.

    python bench/xylo_agreement.py --configs 200 --seed 1 --json bench/results/xylo_agreement.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import environment, print_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=200, help="random configurations (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the configurations and inputs")
    parser.add_argument("--steps", type=int, default=50, help="time steps per sample (default 50)")
    parser.add_argument("--batch", type=int, default=4, help="samples per configuration (default 4)")
    parser.add_argument("--max-hidden", type=int, default=64, help="largest hidden layer drawn (default 64)")
    parser.add_argument("--device", default="cpu", help="torch device of the emulator (default cpu)")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()

    try:
        import xylosim.v2  # noqa: F401
    except ImportError as err:
        raise SystemExit(f"xylosim is not installed ({err}); pip install xylosim") from err
    from spikeforge.targets.xylo import XYLO_AUDIO2, XYLO_IMU, XyloEmulator
    from spikeforge.targets.xylo.reference import random_config, random_input, run_xylosim

    rng = np.random.default_rng(args.seed)
    rows = {spec.name: {"target": spec.name, "configs": 0, "samples": 0, "values": 0, "mismatches": 0,
                        "bad_configs": 0} for spec in (XYLO_AUDIO2, XYLO_IMU)}
    first_bad: list[dict] = []
    start = time.perf_counter()
    for i in range(args.configs):
        spec = XYLO_AUDIO2 if i % 2 == 0 else XYLO_IMU
        cfg = random_config(rng, spec, max_hidden=args.max_hidden)
        x = random_input(rng, args.steps, args.batch, cfg.n_in)
        out, rec = XyloEmulator(cfg, device=args.device).run(torch.as_tensor(x))
        out, rec = out.cpu().numpy(), {k: v.cpu().numpy() for k, v in rec.items()}
        bad = 0
        row = rows[spec.name]
        for b in range(args.batch):
            ref_out, ref = run_xylosim(cfg, x[:, b])
            pairs = [("out", out[:, b], ref_out)] + [(k, rec[k][:, b], v) for k, v in ref.items()]
            for key, mine, theirs in pairs:
                diff = int(np.count_nonzero(mine != theirs))
                row["values"] += theirs.size
                bad += diff
                if diff and len(first_bad) < 10:
                    t = int(np.argwhere(mine != theirs)[0][0])
                    first_bad.append({"config": i, "sample": b, "state": key, "first_step": t, "count": diff})
        row["configs"] += 1
        row["samples"] += args.batch
        row["mismatches"] += bad
        row["bad_configs"] += int(bad > 0)
    seconds = time.perf_counter() - start
    table = list(rows.values())
    total = {"target": "total", **{k: sum(r[k] for r in table) for k in table[0] if k != "target"}}
    print(f"Xylo emulator vs xylosim.v2: {args.configs} configurations, seed {args.seed}, {args.steps} steps, "
          f"{args.batch} samples each ({seconds:.1f} s)")
    print_table([*table, total], [("target", "target", ""), ("configs", "configs", "d"), ("samples", "samples", "d"),
                                  ("values", "values compared", "d"), ("mismatches", "mismatches", "d"),
                                  ("bad_configs", "bad configs", "d")])
    for item in first_bad:
        print("mismatch:", item)
    write_json(args.json, {"bench": "xylo_agreement", "seed": args.seed, "configs": args.configs,
                           "steps": args.steps, "batch": args.batch, "max_hidden": args.max_hidden,
                           "device": args.device, "rows": table, "total": total, "first_mismatches": first_bad,
                           "seconds": seconds, "environment": environment()})
    if total["mismatches"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
