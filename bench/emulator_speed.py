"""Throughput of the Xylo emulator against xylosim v2 (the simulator inside Rockpool's XyloSim).

One network the size of Xylo Audio 2 (16 inputs, 1000 hidden neurons with two synapses, fan-in <= 63,
8 outputs; random weights scaled for moderate activity) and a batch of 64 random spike sequences. The
emulator runs the batch at once; xylosim runs the 64 sequences one after another. Both are timed with
their recordings (xylosim's Vmem/Isyn/spike recordings read back into arrays, as XyloSim does with
``record=True``) and without (xylosim: ``evolve`` and its output spikes only). Outputs are checked equal.

    python bench/emulator_speed.py --json bench/results/emulator_speed.json
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from _common import environment, print_table, write_json


def _config(rng: np.random.Generator, n_in: int, n: int, k: int):
    from spikeforge.targets.xylo import XYLO_AUDIO2, XyloConfig

    def sparse(pre: int, post: int, syn: int, per_post: int, amp: int) -> np.ndarray:
        w = np.zeros((pre, post, syn), dtype=np.int64)
        for j in range(post):
            idx = rng.choice(pre, size=min(per_post, pre), replace=False)
            w[idx, j, rng.integers(0, syn)] = rng.integers(-amp, amp + 1, size=idx.size)
        return w

    return XyloConfig(
        spec=XYLO_AUDIO2, w_in=sparse(n_in, n, 2, 8, 100), w_rec=sparse(n, n, 2, 40, 60),
        w_out=sparse(n, k, 1, 200, 60), weight_shift_in=4, weight_shift_rec=2, weight_shift_out=3,
        dash_mem=rng.integers(3, 6, n), dash_syn=rng.integers(2, 5, (n, 2)), threshold=rng.integers(8000, 16000, n),
        bias=np.zeros(n), dash_mem_out=np.full(k, 4), dash_syn_out=np.full((k, 1), 3),
        threshold_out=np.full(k, 4000), bias_out=np.zeros(k), has_bias=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of the network and inputs")
    parser.add_argument("--batch", type=int, default=64, help="sequences (default 64)")
    parser.add_argument("--steps", type=int, default=100, help="time steps per sequence (default 100)")
    parser.add_argument("--hidden", type=int, default=1000, help="hidden neurons (default 1000)")
    parser.add_argument("--rate", type=float, default=0.2, help="input events per channel and step (default 0.2)")
    parser.add_argument("--device", default="cpu", help="torch device of the emulator (default cpu)")
    parser.add_argument("--eager", action="store_true", help="skip the torch.compile'd emulator")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings (default 3)")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()

    from spikeforge.targets.xylo import XyloEmulator
    from spikeforge.targets.xylo.reference import run_xylosim, xylosim_layer

    rng = np.random.default_rng(args.seed)
    cfg = _config(rng, 16, args.hidden, 8)
    x = (rng.random((args.steps, args.batch, 16)) < args.rate).astype(np.int64)
    xt = torch.as_tensor(x, device=args.device)
    emu = XyloEmulator(cfg, device=args.device)
    emu.run(xt[:3])  # warm-up

    def sync():
        if torch.device(args.device).type == "cuda":
            torch.cuda.synchronize()

    def best(fn) -> float:
        times = []
        for _ in range(args.repeats):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        return min(times)

    result: dict = {}
    t_emu_rec = best(lambda: result.update(rec=emu.run(xt)))
    t_emu = best(lambda: emu.run(xt, record=False))
    times = {"eager": (t_emu_rec, t_emu)}
    if not args.eager:
        fast = XyloEmulator(cfg, device=args.device, compiled=True)
        t = time.perf_counter()
        fast.run(xt[:3])
        compile_s = time.perf_counter() - t
        result["compiled"] = fast.run(xt)
        times["compiled"] = (best(lambda: fast.run(xt)), best(lambda: fast.run(xt, record=False)))
    layer = xylosim_layer(cfg)

    def xylosim_plain():
        outs = []
        for b in range(args.batch):
            layer.reset_all()
            outs.append(layer.evolve(np.minimum(x[:, b], 255).astype(np.uint8).tolist()))
        result["xs_out"] = np.asarray(outs).transpose(1, 0, 2)

    def xylosim_rec():
        for b in range(args.batch):
            run_xylosim(cfg, x[:, b], layer)

    t_xs = best(xylosim_plain)
    t_xs_rec = best(xylosim_rec)
    out, rec = result["rec"]
    equal = bool(np.array_equal(out.cpu().numpy(), result["xs_out"]))
    if "compiled" in result:
        c_out, c_rec = result["compiled"]
        equal = equal and bool(np.array_equal(c_out.cpu().numpy(), result["xs_out"]))
        equal = equal and all(torch.equal(c_rec[k], rec[k]) for k in rec)
    rows = []
    for mode, (t_rec, t_plain) in times.items():
        rows.append({"what": f"{mode}, with recordings", "emulator_s": t_rec, "xylosim_s": t_xs_rec,
                     "ratio": t_xs_rec / t_rec})
        rows.append({"what": f"{mode}, spikes only", "emulator_s": t_plain, "xylosim_s": t_xs, "ratio": t_xs / t_plain})
    hidden_rate = float(rec["spikes"].float().mean())
    threads = torch.get_num_threads()
    print(f"Xylo emulator ({args.device}, {threads} torch threads) vs xylosim.v2 one sequence after another: "
          f"batch {args.batch}, {args.steps} steps, 16-{args.hidden}-8 network, hidden spikes/neuron/step "
          f"{hidden_rate:.3f}, outputs equal: {equal}")
    if "compiled" in times:
        print(f"(torch.compile of the neuron update took {compile_s:.1f} s once, not included)")
    print_table(rows, [("what", "timed", ""), ("emulator_s", "emulator s", ".4f"), ("xylosim_s", "xylosim s", ".4f"),
                       ("ratio", "speed-up", ".1f")])
    write_json(args.json, {"bench": "emulator_speed", "seed": args.seed, "batch": args.batch, "steps": args.steps,
                           "hidden": args.hidden, "device": args.device, "torch_threads": threads,
                           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "hidden_rate": hidden_rate,
                           "compile_seconds": compile_s if "compiled" in times else None,
                           "outputs_equal": equal, "rows": rows, "environment": environment()})
    if not equal:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
