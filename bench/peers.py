"""Speed and memory of one spiking workload in spikeforge and in the peer libraries, in one run.

Workload (fp32): input spikes ``x`` ``[T, B, n_in]`` at 10 % density (no gradient), ``Linear(n_in -> n_out)`` and
a LIF layer with ``alpha = exp(-dt/tau_mem)``, threshold 1, reset by subtraction; loss = sum of output spikes.
Every library gets the same weights and the same dynamics ``v = alpha v + (1 - alpha) W x`` (peers whose update
is ``v = beta v + x`` get the ``(1 - beta)`` factor folded into their weights), so the spikes per neuron per step
agree; any library that cannot express the update exactly says so in its ``note``.

Each library runs in a fresh subprocess (``--worker``): warm-up, then the median of ``--rounds`` timings of the
forward pass (no autograd graph) and of forward + backward, then the memory added by one forward + backward.
On CUDA that is ``torch.cuda.max_memory_allocated`` minus the allocation before the call. On CPU (torch's CPU
allocator keeps no statistics) it is the growth of the peak resident set over the resident set just before the
call, in a second fresh subprocess (``--memory``) whose glibc malloc returns every block of 64 KiB or more to
the system when freed (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``), so memory freed by the warm-up is
not silently reused; the kernel's peak counter (VmHWM) is reset through ``/proc/self/clear_refs``.

A library that fails is recorded with its error. ``floor`` is the ``torch.nn.Linear`` layer alone (forward, and
forward + weight gradient): the dense work every dense peer must do at least once. ``spikeforge_unfused`` is the
same spikeforge model with ``Sequential(fuse=False)`` (Linear and LIF one after the other, as before the fused,
time-chunked path), for a before/after comparison in one run. Ratios are to the fastest peer
(every library but spikeforge's and the floor, the plain PyTorch loop included) and to the floor.

Usage::

    python bench/peers.py --size medium --device cpu --rounds 3 --json bench/results/peers-cpu-medium.json
    python bench/peers.py --size large --device cuda --rounds 5 --json bench/results/peers-cuda-large.json
    python bench/peers.py --smoke           # tiny size, spikeforge + plain loop + floor (the test uses this)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

SIZES: dict[str, dict[str, int]] = {
    "smoke": {"T": 20, "B": 2, "n_in": 32, "n_out": 32},
    "small": {"T": 100, "B": 16, "n_in": 512, "n_out": 512},
    "medium": {"T": 500, "B": 16, "n_in": 1024, "n_out": 1024},
    "long": {"T": 2000, "B": 8, "n_in": 256, "n_out": 256},
    "large": {"T": 500, "B": 128, "n_in": 4096, "n_out": 4096},
    "recurrent": {"T": 500, "B": 16, "n_in": 512, "n_out": 512},
}
FEEDFORWARD = ["floor", "spikeforge", "spikeforge_unfused", "spikeforge_graphed", "plain", "snntorch", "norse",
               "spikingjelly", "sinabs", "rockpool"]
RECURRENT = ["floor", "spikeforge", "spikeforge_graphed", "plain", "snntorch"]
CUDA_ONLY = {"spikeforge_graphed"}
# everything else is a peer (the plain loop included)
NOT_PEERS = {"floor", "spikeforge", "spikeforge_unfused", "spikeforge_graphed"}
DENSITY = 0.1
DT, TAU_MEM = 1e-3, 10e-3
ALPHA = math.exp(-DT / TAU_MEM)


# ----------------------------------------------------------------------------------------------- workload
def make_data(size: dict[str, int], device: str, recurrent: bool) -> dict[str, Any]:
    """Input spikes and weights shared by every library (seeded)."""
    import torch

    g = torch.Generator().manual_seed(0)
    t, b, n_in, n_out = size["T"], size["B"], size["n_in"], size["n_out"]
    x = (torch.rand(t, b, n_in, generator=g) < DENSITY).float()
    # Input current std ~3 with a small positive mean: a few percent of neurons spike per step.
    w = torch.randn(n_out, n_in, generator=g) * (3.0 / math.sqrt(DENSITY * n_in))
    bias = torch.full((n_out,), 0.3)
    w_rec = torch.randn(n_out, n_out, generator=g) * (1.0 / math.sqrt(n_out)) if recurrent else None
    return {"x": x.to(device), "w": w.to(device), "b": bias.to(device),
            "w_rec": None if w_rec is None else w_rec.to(device)}


def _linear(w, b, scale: float = 1.0):
    import torch

    lin = torch.nn.Linear(w.shape[1], w.shape[0]).to(w.device)
    with torch.no_grad():
        lin.weight.copy_(w * scale)
        lin.bias.copy_(b * scale)
    return lin


class _Heaviside:
    """Spike function of the plain loop: Heaviside forward, fast-sigmoid surrogate backward."""

    @staticmethod
    def make():
        import torch

        class Spike(torch.autograd.Function):
            @staticmethod
            def forward(ctx, v):
                ctx.save_for_backward(v)
                return (v > 0).to(v.dtype)

            @staticmethod
            def backward(ctx, g):
                (v,) = ctx.saved_tensors
                return g / (1.0 + 10.0 * v.abs()) ** 2

        return Spike.apply


# Each builder returns (run, params, info): run() -> output spikes [T, B, n] (time-major) or [B, T, n]
# (``info["layout"] == "BT"``); params: the trainable tensors; info: version, backend, note.
def build_floor(d):
    lin = _linear(d["w"], d["b"])
    x = d["x"]
    return (lambda: lin(x)), list(lin.parameters()), {"version": _version("torch"), "note": "torch.nn.Linear alone"}


def _spikeforge_model(d):
    """The workload as a spikeforge model on the input's device (the public API, default engine)."""
    from spikeforge import nn as snn

    n_in, n_out = d["w"].shape[1], d["w"].shape[0]
    if d["w_rec"] is None:
        lin = snn.Linear(n_in, n_out)
        with _no_grad():
            lin.weight.copy_(d["w"])
            lin.bias.copy_(d["b"])
        return snn.Sequential(lin, snn.LIF(TAU_MEM, dt=DT, v_th=1.0, reset="subtract")).to(d["x"].device)
    model = snn.Recurrent(n_in, snn.LIF(TAU_MEM, dt=DT, v_th=1.0, reset="subtract", size=n_out),
                          self_connections=True).to(d["x"].device)
    with _no_grad():
        model.input.weight.copy_(d["w"])
        model.input.bias.copy_(d["b"])
        model.recurrent.weight.copy_(d["w_rec"])
    return model


def build_spikeforge(d):
    import spikeforge

    model = _spikeforge_model(d)
    x = d["x"]
    return (lambda: model(x)[0]), list(model.parameters()), {
        "version": getattr(spikeforge, "__version__", "?"), "note": "public API, default engine"}


def build_spikeforge_unfused(d):
    """The same model with the Linear -> LIF fusion switched off (``Sequential(fuse=False)``): the path before it."""
    import spikeforge

    model = _spikeforge_model(d)
    model.set_fuse(False)
    x = d["x"]
    return (lambda: model(x)[0]), list(model.parameters()), {
        "version": getattr(spikeforge, "__version__", "?"), "note": "public API, fuse=False (Linear and LIF unfused)"}


def build_spikeforge_graphed(d):
    """The same model, its forward and backward captured once into CUDA graphs (spikeforge.kernels.graphed)."""
    from spikeforge.kernels.graphs import graphed

    if not d["x"].is_cuda:
        raise RuntimeError("spikeforge_graphed needs CUDA (CUDA graphs)")
    import spikeforge

    model = _spikeforge_model(d)
    f = graphed(model, d["x"])
    x = d["x"]
    return (lambda: f(x)), list(model.parameters()), {
        "version": getattr(spikeforge, "__version__", "?"),
        "note": "public API, default engine, forward and backward as CUDA graphs (spikeforge.kernels.graphed)"}


def build_plain(d):
    import torch

    spike = _Heaviside.make()
    lin = _linear(d["w"], d["b"], 1.0 - ALPHA)
    w_rec = None
    params = list(lin.parameters())
    if d["w_rec"] is not None:
        w_rec = (d["w_rec"] * (1.0 - ALPHA)).clone().requires_grad_(True)
        params.append(w_rec)
    x = d["x"]

    def run():
        cur = lin(x)
        v = torch.zeros_like(cur[0])
        z = torch.zeros_like(cur[0])
        out = []
        for t in range(cur.shape[0]):
            i_t = cur[t] if w_rec is None else cur[t] + z @ w_rec.t()
            v = ALPHA * v + i_t
            z = spike(v - 1.0)
            v = v - z.detach()
            out.append(z)
        return torch.stack(out)

    return run, params, {"version": _version("torch"), "note": "Python loop over time, fast-sigmoid surrogate"}


def build_snntorch(d):
    import snntorch
    import torch

    lin = _linear(d["w"], d["b"], 1.0 - ALPHA)
    if d["w_rec"] is None:
        lif = snntorch.Leaky(beta=ALPHA, threshold=1.0, reset_mechanism="subtract", reset_delay=False)
    else:
        n = d["w"].shape[0]
        lif = snntorch.RLeaky(beta=ALPHA, threshold=1.0, linear_features=n, all_to_all=True,
                              reset_mechanism="subtract", reset_delay=False)
        with torch.no_grad():
            lif.recurrent.weight.copy_(d["w_rec"] * (1.0 - ALPHA))
            lif.recurrent.bias.zero_()
    lif = lif.to(d["x"].device)
    x = d["x"]
    recurrent = d["w_rec"] is not None

    def run():
        cur = lin(x)
        out = []
        if recurrent:
            spk, mem = lif.init_rleaky()
            for t in range(cur.shape[0]):
                spk, mem = lif(cur[t], spk, mem)
                out.append(spk)
        else:
            mem = lif.init_leaky()
            for t in range(cur.shape[0]):
                spk, mem = lif(cur[t], mem)
                out.append(spk)
        return torch.stack(out)

    return run, [*lin.parameters(), *lif.parameters()], {
        "version": snntorch.__version__, "note": ("RLeaky" if recurrent else "Leaky") + ", reset_delay=False"}


def build_norse(d):
    import norse
    import torch
    from norse.torch import LIFBoxCell, LIFBoxParameters
    from norse.torch.functional.reset import reset_subtract

    lin = _linear(d["w"], d["b"])
    # Norse integrates with Euler: v += dt/tau (x - v); tau_mem_inv = (1 - alpha)/dt gives the same update.
    dev = d["x"].device
    p = LIFBoxParameters(tau_mem_inv=torch.tensor((1.0 - ALPHA) / DT, device=dev), v_th=torch.tensor(1.0, device=dev),
                         v_leak=torch.tensor(0.0, device=dev), v_reset=torch.tensor(0.0, device=dev),
                         reset_method=reset_subtract)
    cell = LIFBoxCell(p, dt=DT).to(d["x"].device)
    x = d["x"]

    def run():
        cur = lin(x)
        state, out = None, []
        for t in range(cur.shape[0]):
            z, state = cell(cur[t], state)
            out.append(z)
        return torch.stack(out)

    return run, list(lin.parameters()), {"version": getattr(norse, "__version__", _version("norse")),
                                         "note": "LIFBoxCell loop, reset_subtract"}


def build_spikingjelly(d):
    from spikingjelly.activation_based import functional, neuron, surrogate

    lin = _linear(d["w"], d["b"])
    # decay_input=True: H = V + (X - V)/tau, i.e. alpha = 1 - 1/tau; v_reset=None is reset by subtraction.
    node = neuron.LIFNode(tau=1.0 / (1.0 - ALPHA), decay_input=True, v_threshold=1.0, v_reset=None,
                          surrogate_function=surrogate.Sigmoid(), detach_reset=True, step_mode="m").to(d["x"].device)
    x = d["x"]

    def run():
        functional.reset_net(node)
        return node(lin(x))

    return run, list(lin.parameters()), {"version": _version("spikingjelly"),
                                         "note": "LIFNode multi-step, kernel chosen by SpikingJelly per device"}


def build_sinabs(d):
    import sinabs
    from sinabs.activation import MembraneSubtract, SingleSpike
    from sinabs.layers import LIF

    lin = _linear(d["w"], d["b"])
    lif = LIF(tau_mem=TAU_MEM / DT, spike_fn=SingleSpike, reset_fn=MembraneSubtract(),
              norm_input=True).to(d["x"].device)
    xbt = d["x"].transpose(0, 1).contiguous()  # sinabs is batch-major [B, T, n]

    def run():
        lif.reset_states()
        return lif(lin(xbt))

    return run, list(lin.parameters()), {"version": sinabs.__version__, "layout": "BT",
                                         "note": "LIF(norm_input=True, SingleSpike, MembraneSubtract), [B, T, n]"}


def build_rockpool(d):
    import rockpool
    import torch
    from rockpool.nn.modules import LIFTorch

    n = d["w"].shape[0]
    beta = 1e-6  # LIFTorch always filters through a synaptic current: make its decay negligible
    lin = _linear(d["w"], d["b"], (1.0 - ALPHA) / beta)
    lif = LIFTorch(shape=(n,), leak_mode="decays", alpha=torch.full((n,), ALPHA), beta=torch.full((n,), beta),
                   threshold=torch.ones(n), max_spikes_per_dt=torch.tensor(1.0), dt=DT).to(d["x"].device)
    xbt = d["x"].transpose(0, 1).contiguous()

    def run():
        lif.reset_state()
        out = lif(lin(xbt))
        return out[0] if isinstance(out, tuple) else out

    return run, list(lin.parameters()), {"version": rockpool.__version__, "layout": "BT",
                                         "note": "LIFTorch, synaptic decay 1e-6 (input scaled back), [B, T, n]"}


BUILDERS: dict[str, Callable] = {name: globals()[f"build_{name}"] for name in FEEDFORWARD}


def _no_grad():
    import torch

    return torch.no_grad()


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# ------------------------------------------------------------------------------------------------ measuring
def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(lib: str, size_name: str, device: str, rounds: int, *, memory_only: bool = False) -> dict[str, Any]:
    """Build one library's workload and time it; returns the record (runs inside the worker process)."""
    import torch

    size = SIZES[size_name]
    d = make_data(size, device, recurrent=size_name == "recurrent")
    run, params, info = BUILDERS[lib](d)
    layout = info.pop("layout", "TB")

    def fwd():
        with torch.no_grad():
            out = run()
        _sync(device)
        return out

    def fwd_bwd():
        for p in params:
            p.grad = None
        out = run()
        out.sum().backward()
        _sync(device)
        return out

    def timed(fn):
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return times

    out = fwd()  # warm-up (kernel compilation, caches)
    fwd_bwd()
    if memory_only:
        return {"library": lib, "mem_mb": _memory(fwd_bwd, device)}
    fwd_times = timed(fwd)
    bwd_times = timed(fwd_bwd)
    spikes = out.float().mean().item()
    if layout == "BT":
        out = out.transpose(0, 1)
    per_step = out.float().mean(dim=(1, 2)) if lib != "floor" else None
    # CPU: measured in its own process unless this one runs with the memory-measuring malloc settings.
    measurable = device == "cuda" or "MALLOC_MMAP_THRESHOLD_" in os.environ
    if lib in CUDA_ONLY:  # a replayed graph allocates from its private pool, which the allocator stats miss
        measurable = False
        info = {**info, "mem_note": "not measured: CUDA graph memory lives in the graph's private pool"}
    memory = _memory(fwd_bwd, device) if measurable else None
    rec = {"library": lib, **info, "size": size_name, **size, "device": device, "rounds": rounds,
           "fwd_ms": 1e3 * statistics.median(fwd_times), "fwd_bwd_ms": 1e3 * statistics.median(bwd_times),
           "fwd_ms_all": [1e3 * t for t in fwd_times], "fwd_bwd_ms_all": [1e3 * t for t in bwd_times],
           "mem_mb": memory, "spikes_per_neuron_step": None if lib == "floor" else spikes}
    if per_step is not None:
        rec["spikes_first_steps"] = [round(v, 5) for v in per_step[:5].tolist()]
    return rec


def _memory(fwd_bwd: Callable, device: str) -> float:
    """Memory added by one forward + backward, in MB (see the module doc for the method per device)."""
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fwd_bwd()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    before = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
    fwd_bwd()
    return (_rss_kib("VmHWM") - before) / 1024


def run_worker(lib: str, size: str, device: str, rounds: int, memory_only: bool) -> None:
    """Entry of a worker subprocess: prints one JSON record on its last line."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA requested but not available")
    try:
        rec = measure(lib, size, device, rounds, memory_only=memory_only)
    except Exception as err:  # a failing peer is a result, not a crash
        rec = {"library": lib, "size": size, "device": device, "error": f"{type(err).__name__}: {err}"[:500]}
    print(json.dumps(rec))


def run_library(lib: str, size: str, device: str, rounds: int, timeout: float, *,
                one_process: bool = False) -> dict[str, Any]:
    """Run one library in fresh subprocesses (timing; on CPU memory too) and return its record (or the error)."""
    if one_process:  # timing and memory in one process with the memory-measuring malloc (quicker, less fair)
        return _subprocess(lib, size, device, rounds, timeout, memory=True, timing=True)
    rec = _subprocess(lib, size, device, rounds, timeout, memory=False)
    if device == "cpu" and "error" not in rec:
        mem = _subprocess(lib, size, device, rounds, timeout, memory=True)
        rec["mem_mb"] = mem.get("mem_mb")
        if "error" in mem:
            rec["mem_error"] = mem["error"]
    return rec


def _subprocess(lib: str, size: str, device: str, rounds: int, timeout: float, *, memory: bool,
                timing: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", lib, "--size", size, "--device", device,
           "--rounds", str(rounds)] + (["--memory"] if memory and not timing else [])
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if memory:
        env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"library": lib, "size": size, "device": device, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"library": lib, "size": size, "device": device,
                "error": f"exit {proc.returncode}: {' | '.join(tail)}"[:500]}
    return json.loads(lines[-1])


def add_ratios(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios of each time to the fastest peer's and to the floor's (a ratio < 1 is faster)."""
    ok = [r for r in records if "error" not in r]
    summary: dict[str, Any] = {}
    for key in ("fwd_ms", "fwd_bwd_ms"):
        peers = [r for r in ok if r["library"] not in NOT_PEERS]
        floor = next((r for r in ok if r["library"] == "floor"), None)
        fastest = min(peers, key=lambda r: r[key]) if peers else None
        if fastest:
            summary[f"fastest_peer_{key}"] = fastest["library"]
        for r in ok:
            r[f"{key}_vs_fastest_peer"] = r[key] / fastest[key] if fastest else None
            r[f"{key}_vs_floor"] = r[key] / floor[key] if floor else None
    peers = [r for r in ok if r["library"] not in NOT_PEERS]
    if peers:
        fastest = min(peers, key=lambda r: r["fwd_bwd_ms"])
        base = fastest.get("mem_mb")
        for r in ok:
            mem = r.get("mem_mb")
            r["mem_vs_fastest_peer"] = mem / base if mem is not None and base else None
    return summary


def print_table(records: list[dict[str, Any]]) -> None:
    cols = [("library", "library", "s"), ("fwd_ms", "fwd ms", ".1f"), ("fwd_bwd_ms", "fwd+bwd ms", ".1f"),
            ("mem_mb", "mem MB", ".1f"), ("spikes_per_neuron_step", "spikes/n/step", ".4f"),
            ("fwd_bwd_ms_vs_fastest_peer", "fb/peer", ".2f"), ("fwd_bwd_ms_vs_floor", "fb/floor", ".2f"),
            ("fwd_ms_vs_fastest_peer", "f/peer", ".2f"), ("mem_vs_fastest_peer", "mem/peer", ".2f")]
    print("  ".join(h.rjust(13) for _, h, _ in cols))
    for r in records:
        if "error" in r:
            print(f"{r['library']:>13}  ERROR {r['error']}")
            continue
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            cells.append((format(v, fmt) if isinstance(v, (int, float)) else str(v if v is not None else "-"))
                         .rjust(13))
        print("  ".join(cells))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="medium", choices=sorted(SIZES))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--libs", default=None, help="comma-separated subset (default: all for the size)")
    ap.add_argument("--json", default=None, help="write the records here")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per library")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny size, spikeforge + plain loop + floor, 1 round, one process per library")
    ap.add_argument("--one-process", action="store_true",
                    help="time and measure memory in one process per library (quicker; timings use the malloc "
                         "settings of the memory measurement)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.size, args.device, args.rounds, args.memory)
        return 0
    if args.smoke:
        args.size, args.rounds, args.one_process, libs = "smoke", 1, True, ["floor", "spikeforge", "plain"]
    else:
        libs = RECURRENT if args.size == "recurrent" else FEEDFORWARD
        if args.device != "cuda":
            libs = [lib for lib in libs if lib not in CUDA_ONLY]
    if args.libs:
        wanted = args.libs.split(",")
        unknown = sorted(set(wanted) - set(libs))
        if unknown:
            ap.error(f"--libs: unknown or not run at this size: {unknown}; choose from {libs}")
        libs = [lib for lib in libs if lib in wanted]
    records = []
    for lib in libs:
        t0 = time.perf_counter()
        rec = run_library(lib, args.size, args.device, args.rounds, args.timeout, one_process=args.one_process)
        records.append(rec)
        status = rec.get("error", f"fwd+bwd {rec.get('fwd_bwd_ms', 0):.1f} ms")
        print(f"[{lib}] {status} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    summary = add_ratios(records)
    print_table(records)
    from _common import environment

    data = {"benchmark": "peers", "size": args.size, "device": args.device, "rounds": args.rounds,
            "density": DENSITY, "dt": DT, "tau_mem": TAU_MEM, **summary, "environment": environment(),
            "records": records}
    if args.device == "cuda":
        import torch

        data["environment"]["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
