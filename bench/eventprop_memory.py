"""Peak memory of one training step: EventProp (event-driven) against surrogate-gradient BPTT (time-stepped), for
trials of 1x and 10x the base duration with the same input spikes (a fixed spike count: every input fires once in
the first 80 % of the base trial; a longer trial only adds time, so the hidden spike count stays the same).

    python bench/eventprop_memory.py --json bench/results/eventprop_memory.json

Network: n_in inputs firing once each -> hidden current-based LIF -> classes. EventProp: EventLIF hidden layer
(``max_spikes`` per neuron) -> EventLIF output with the time-to-first-spike loss; its state lives at spikes, so its
memory should not grow with the duration. BPTT: Linear -> CubaLIF -> Linear -> LI read-out with the max-membrane
loss, stepped at ``dt``; it keeps every step for the backward pass, so its memory grows with the number of steps.

What is measured (each case in a fresh process, so one case's peak cannot hide another's):
* CPU: ``peak RSS during the step - RSS just before it`` (``ru_maxrss`` and ``/proc/self/statm``): every byte the
  step touched, torch's allocations included (``tracemalloc`` does not see them). Resolution is a page; small
  steps that reuse already-mapped memory can read as ~0.
* CUDA (``--device cuda``): ``torch.cuda.max_memory_allocated()`` during the step minus the allocation before it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import environment, print_table, write_json

HERE = Path(__file__).resolve()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _one(case: dict) -> dict:
    """Run one training step of one case in this process; return the memory and time it took."""
    import torch

    torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    device = torch.device(case["device"])
    b, n_in, hidden, classes = case["batch"], case["n_in"], case["hidden"], case["classes"]
    duration = case["duration"]
    tau_mem, tau_syn = case["tau_mem"], case["tau_syn"]
    gen = torch.Generator().manual_seed(1)
    # the same input spikes at every duration (one per input, in the first 80 % of the base trial), so the spike
    # count is the same and only the trial gets longer
    t_in = torch.rand(b, n_in, 1, generator=gen) * 0.8 * case["base_duration"]
    labels = torch.randint(0, classes, (b,), generator=gen)
    if case["method"] == "eventprop":
        from spikeforge.nn.events import EventLIF
        from spikeforge.train.time_losses import ttfs_cross_entropy

        layers = torch.nn.ModuleList([
            EventLIF(n_in, hidden, tau_mem=tau_mem, tau_syn=tau_syn, max_spikes=case["max_spikes"], t_max=duration,
                     gradient="eventprop", generator=gen),
            EventLIF(hidden, classes, tau_mem=tau_mem, tau_syn=tau_syn, max_spikes=1, t_max=duration,
                     gradient="eventprop", generator=gen)]).to(device)
        x = t_in.to(device)

        def step():
            h = layers[0](x)
            out = layers[1](h)
            loss = ttfs_cross_entropy(out, labels.to(device), tau_0=duration / 10, t_max=duration).mean()
            loss.backward()
            return int(torch.isfinite(h).sum())
    else:
        from spikeforge import nn as snn
        from spikeforge.train.losses import cross_entropy

        dt = case["dt"]
        steps = int(round(duration / dt))
        idx = (t_in / dt).long().clamp(max=steps - 1)
        seq = torch.zeros(steps, b, n_in).scatter_(0, idx.permute(2, 0, 1), 1.0)
        model = snn.Sequential(snn.Linear(n_in, hidden),
                               snn.CubaLIF(tau_mem, tau_syn, dt=dt, size=(hidden,), surrogate="fast_sigmoid"),
                               snn.Linear(hidden, classes), snn.LI(tau_mem, dt=dt, size=(classes,))).to(device)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.Linear):
                    m.weight.mul_(case["bptt_gain"])
        x = seq.to(device)

        def step():
            out, _, outs = model.layer_outputs(x)
            loss = cross_entropy(out, labels.to(device), "max_membrane").mean()
            loss.backward()
            return int(outs[1].sum())

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    before_rss = _rss_bytes()
    t0 = time.perf_counter()
    n_hidden_spikes = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        what = "cuda max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before_rss
        what = "peak RSS - RSS before"
    return {"method": case["method"], "duration": duration, "factor": case["factor"],
            "steps": int(round(duration / case["dt"])) if case["method"] != "eventprop" else 0,
            "peak_mib": max(peak, 0) / 2**20, "seconds": time.perf_counter() - t0,
            "hidden_spikes_per_sample": n_hidden_spikes / b, "measure": what}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=50e-3, help="base trial duration in seconds (1x)")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 10], help="durations as multiples of the base")
    parser.add_argument("--dt", type=float, default=1e-3, help="BPTT time step (s)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n-in", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--max-spikes", type=int, default=4, help="EventLIF spikes per hidden neuron")
    parser.add_argument("--bptt-gain", type=float, default=100.0,
                        help="BPTT initial weights times this (so that its hidden layer spikes about as often)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(json.loads(args.one))))
        return
    rows = []
    for method in ("eventprop", "bptt"):
        for factor in args.factors:
            case = {"method": method, "factor": factor, "duration": args.duration * factor, "dt": args.dt,
                    "base_duration": args.duration,
                    "batch": args.batch, "n_in": args.n_in, "hidden": args.hidden, "classes": args.classes,
                    "max_spikes": args.max_spikes, "tau_mem": 20e-3, "tau_syn": 5e-3, "device": args.device,
                    "threads": args.threads, "bptt_gain": args.bptt_gain}
            res = subprocess.run([sys.executable, str(HERE), "--one", json.dumps(case)], capture_output=True,
                                 text=True, cwd=HERE.parent)
            if res.returncode != 0:
                raise SystemExit(f"case {case} failed:\n{res.stderr}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print_table(rows, [("method", "method", "s"), ("factor", "duration x", "d"), ("steps", "BPTT steps", "d"),
                       ("hidden_spikes_per_sample", "hid spikes", ".1f"), ("peak_mib", "peak MiB", ".1f"),
                       ("seconds", "step s", ".3f")])
    print(f"memory measured as: {rows[0]['measure']} (one step, fresh process per case)")
    write_json(args.json, {"benchmark": "eventprop_memory", "rows": rows, "args": vars(args),
                           "environment": environment()})


if __name__ == "__main__":
    main()
