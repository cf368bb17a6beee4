"""Read-out layers on the CPU: closed forms against the step-by-step / pairwise references, forward + backward.

* ``LI`` (time-stepped leaky integrator): ``engine="auto"`` runs ``dynamics.li.run`` (chunked decay matrices),
  ``engine="reference"`` the Python step loop; loss = max over time.
* ``EventLI`` (read-out of spike times): ``membrane_on_grid`` (spikes binned, one decay matrix per exponential)
  against ``membrane_on_grid_direct`` (every spike at every grid point); loss = mean over the grid.

One thread, CPU time of the thread, medians of interleaved runs.

    python bench/readout_speed.py --json bench/results/readout_speed.json
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import environment, interleaved, print_table, write_json

from spikeforge.nn import LI
from spikeforge.nn.event_readout import membrane_on_grid, membrane_on_grid_direct


def _timed(fn) -> float:
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def _li_rows(repeats: int) -> list[dict]:
    rows = []
    for t, b, n in ((16, 64, 10), (100, 16, 10), (500, 16, 20)):
        x = torch.randn(t, b, n, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        fns = {}
        for engine in ("auto", "reference"):
            layer = LI(5e-3)
            layer.set_engine(engine)

            def step(layer=layer, x=x) -> None:
                out, _ = layer(x)
                out.amax(0).sum().backward()

            fns[engine] = lambda step=step: _timed(step)
        ms = interleaved(fns, repeats)
        rows.append({"layer": f"LI T={t} B={b} n={n}", "fast_ms": ms["auto"], "reference_ms": ms["reference"],
                     "speedup": ms["reference"] / ms["auto"]})
    return rows


def _event_li_rows(repeats: int) -> list[dict]:
    rows = []
    for b, n_in, k, n_out, steps in ((64, 350, 3, 10, 80), (150, 500, 2, 3, 80)):
        g = torch.Generator().manual_seed(1)
        t = (torch.rand(b, n_in, k, generator=g) * 40e-3).sort(-1).values
        t[torch.rand(b, n_in, k, generator=g) < 0.5] = float("inf")
        t = t.sort(-1).values.requires_grad_(True)
        w = torch.randn(n_out, n_in, generator=g).requires_grad_(True)
        grid = torch.linspace(40e-3 / steps, 40e-3, steps)
        fns = {}
        for name, fn in (("fast", membrane_on_grid), ("reference", membrane_on_grid_direct)):
            def step(fn=fn, t=t, w=w, grid=grid) -> None:
                fn(t, w, grid, tau_mem=20e-3, tau_syn=5e-3).mean(-1).sum().backward()

            fns[name] = lambda step=step: _timed(step)
        ms = interleaved(fns, repeats)
        rows.append({"layer": f"EventLI B={b} in={n_in} K={k} out={n_out} G={steps}", "fast_ms": ms["fast"],
                     "reference_ms": ms["reference"], "speedup": ms["reference"] / ms["fast"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9, help="timing repeats, median taken (default 9)")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = _li_rows(args.repeats) + _event_li_rows(args.repeats)
    print(f"read-out forward + backward, one thread (median of {args.repeats}, interleaved)")
    print_table(rows, [("layer", "layer", "s"), ("fast_ms", "closed form ms", ".2f"),
                       ("reference_ms", "reference ms", ".2f"), ("speedup", "speed-up", ".1f")])
    write_json(args.json, {"benchmark": "readout_speed", "threads": 1, "rows": rows, "environment": environment()})


if __name__ == "__main__":
    main()
