"""GPU fused scans (Triton): speed, peak memory and equivalence in one run.

Linear(n -> n) + LIF at four sizes (input spikes of 10% density, input needs no grad), each timed forward
(no grad) and forward + backward with CUDA events (warm-up, median of N):

* ``dense``: the floor, ``nn.Linear`` alone;
* ``loop``: Linear + the reference loop over ``lif.step`` (plain PyTorch, autograd through every step);
* ``triton``: Linear + :func:`spikeforge.kernels.triton_scan.triton_scan` called directly;
* ``triton_inplace``: the same with ``inplace=True`` (membrane and input gradient reuse the Linear's output);
* ``layers``: ``spikeforge.nn.Sequential(Linear, LIF(engine="fused"))`` (the public dispatch);
* ``layers_graphed``: the same model with forward and backward captured as CUDA graphs
  (:func:`spikeforge.kernels.graphs.graphed`);
* ``spikingjelly``: Linear + SpikingJelly's multi-step ``LIFNode`` (cupy kernel when cupy is installed), for
  the peak-memory comparison; recorded as an error when SpikingJelly is not installed.

Then the recurrent layer (T=500, B=16, H=1024): a plain loop against
:func:`~spikeforge.kernels.triton_scan.triton_recurrent`, and the public ``Recurrent`` layer. Peak memory is
``torch.cuda.max_memory_allocated`` during one forward + backward minus what was allocated before it. Finally the
equivalence checks: every model x reset x refractory x detach against the reference scan on the device (spikes
identical, gradient relative error ``max|g - g_ref| / max|g_ref|``) in float64 and float32, and the recurrent
kernel against a plain loop. A failing case records its error and traceback and the run goes on.

    python bench/gpu_kernels.py --json bench/results/gpu_kernels.json
    TRITON_INTERPRET=1 python bench/gpu_kernels.py --smoke     # tiny sizes on CPU through Triton's interpreter
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
from _common import environment, print_table, write_json

SIZES = [(100, 16, 512), (500, 16, 1024), (2000, 8, 256), (500, 128, 4096)]
SMOKE_SIZES = [(5, 2, 16), (7, 3, 8)]
RECURRENT = (500, 16, 1024)
SMOKE_RECURRENT = (5, 2, 8)


class Clock:
    """Median wall time of a callable: CUDA events on the GPU, perf_counter on the CPU (smoke runs)."""

    def __init__(self, device: torch.device, warmup: int, reps: int) -> None:
        self.device, self.warmup, self.reps = device, warmup, reps

    def __call__(self, fn: Callable[[], None], reps: int | None = None) -> float:
        reps = reps or self.reps
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(reps):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append(1e3 * (time.perf_counter() - t0))
        return statistics.median(times)


def peak_memory_mb(device: torch.device, fn: Callable[[], None]) -> float | None:
    """Peak extra memory (MiB) of one call of ``fn`` over what was allocated before it (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def guarded(record: dict[str, Any], fn: Callable[[], Any]) -> Any:
    """Run ``fn``; on failure store the error and traceback in ``record`` instead of raising."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one failing case must not end the run
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None


# ------------------------------------------------------------------------------------------------ Linear + LIF


def _lif_setup(T: int, B: int, n: int, device: torch.device):
    from spikeforge.dynamics import lif
    from spikeforge.dynamics.common import FireSpec

    g = torch.Generator(device="cpu").manual_seed(0)
    spikes = (torch.rand(T, B, n, generator=g) < 0.1).float().to(device)
    lin = torch.nn.Linear(n, n).to(device)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, n, generator=g) * (3.0 / (0.1 * n) ** 0.5))
        lin.bias.fill_(0.5)
    p = lif.make_params(tau_mem=2e-3, v_th=1.0, v_leak=0.0, v_reset=0.0, dt=1e-3)
    p = type(p)(*[f.to(device=device, dtype=torch.float32) for f in p])
    gz = torch.randn(T, B, n, generator=g).to(device)
    return spikes, lin, p, FireSpec(), gz


def _variants(T: int, B: int, n: int, device: torch.device, smoke: bool) -> dict[str, Callable[[bool], Any]]:
    """name -> run(backward) for the Linear + LIF variants (each returns its output spikes)."""
    from spikeforge import nn as snn
    from spikeforge.dynamics import lif
    from spikeforge.kernels.triton_scan import triton_scan
    from spikeforge.sim import scan

    spikes, lin, p, spec, gz = _lif_setup(T, B, n, device)
    layers = snn.Sequential(snn.Linear(n, n), snn.LIF(2e-3, dt=1e-3, engine="reference" if smoke else "fused"))
    layers = layers.to(device)
    with torch.no_grad():  # same weights as the other variants, so the same spikes
        for q, q_ref in zip(layers[0].parameters(), lin.parameters(), strict=True):
            q.copy_(q_ref)
    params = list(lin.parameters()) + list(layers.parameters())

    def finish(out: torch.Tensor, backward: bool) -> torch.Tensor:
        if backward:
            out.backward(gz)
        return out

    def run(body: Callable[[], torch.Tensor]) -> Callable[[bool], torch.Tensor]:
        def go(backward: bool) -> torch.Tensor:
            for q in params:
                q.grad = None
            with torch.set_grad_enabled(backward):
                return finish(body(), backward)
        return go

    def triton_body(inplace: bool = False) -> torch.Tensor:
        x = lin(spikes)
        out = triton_scan("lif", spec, p, lif.init_state(p, x[0].detach(), refractory=False), x, inplace=inplace)
        if out is None:
            raise RuntimeError("triton_scan declined the case (returned None)")
        return out[0]

    def loop_body() -> torch.Tensor:
        x = lin(spikes)
        return scan.run(lif.step, spec, p, lif.init_state(p, x[0].detach(), refractory=False), x)[0]

    variants = {
        "dense": run(lambda: lin(spikes)),
        "loop": run(loop_body),
        "triton": run(triton_body),
        "triton_inplace": run(lambda: triton_body(inplace=True)),
        "layers": run(lambda: layers(spikes)[0]),
    }
    if device.type == "cuda":  # forward and backward captured as CUDA graphs (kernels.graphed)
        def graphed_variant() -> Callable[[bool], torch.Tensor]:
            from spikeforge.kernels.graphs import graphed

            f = graphed(layers, spikes)
            return run(lambda: f(spikes))

        try:
            variants["layers_graphed"] = graphed_variant()
        except Exception as err:  # noqa: BLE001 - recorded as this variant's error
            message = f"{type(err).__name__}: {err}"

            def graph_failed(grad: bool, message: str = message) -> torch.Tensor:
                raise RuntimeError(f"CUDA graph capture failed: {message}")

            variants["layers_graphed"] = graph_failed
    if not smoke:
        try:  # a peer that fails to build (missing, or an API change) is recorded, not fatal to the case
            variants["spikingjelly"] = run(_spikingjelly_body(lin, spikes, float(p.alpha)))
        except Exception as err:  # noqa: BLE001
            message = f"{type(err).__name__}: {err}"

            def failed(grad: bool, message: str = message) -> torch.Tensor:
                raise RuntimeError(f"SpikingJelly could not be built: {message}")

            variants["spikingjelly"] = failed
    return variants


def _spikingjelly_body(lin: torch.nn.Linear, spikes: torch.Tensor, alpha: float) -> Callable[[], torch.Tensor]:
    """Linear + SpikingJelly LIFNode (same decay, subtract reset); raises ImportError when not installed."""
    from spikingjelly.activation_based import functional, neuron, surrogate

    # decay_input=True: H = V + (X - V)/tau, i.e. alpha = 1 - 1/tau; v_reset=None resets by subtraction.
    # SpikingJelly 2.0 picks its kernel per device itself (no `backend` argument any more; 0.0.0.14 had one).
    kwargs = dict(tau=1.0 / (1.0 - alpha), decay_input=True, v_threshold=1.0, v_reset=None,
                  surrogate_function=surrogate.Sigmoid(), detach_reset=True, step_mode="m")
    try:
        node = neuron.LIFNode(**kwargs, backend="cupy" if spikes.is_cuda else "torch")
    except TypeError:
        node = neuron.LIFNode(**kwargs)
    node = node.to(spikes.device)

    def body() -> torch.Tensor:
        functional.reset_net(node)
        return node(lin(spikes))

    return body


def _same_spikes(reference: dict[str, torch.Tensor], name: str, go: Callable[[bool], Any],
                 row: dict[str, Any]) -> None:
    """Record whether this variant's spikes equal the plain loop's (kept in ``reference``)."""
    with torch.no_grad():
        out = go(False)
    if name == "loop":
        reference["loop"] = out
        row["spike_rate"] = float(out.mean())
    elif "loop" in reference:
        row["spikes_equal_loop"] = bool(torch.equal(out, reference["loop"]))


def bench_linear_lif(sizes, device: torch.device, clock: Clock, smoke: bool) -> list[dict[str, Any]]:
    rows = []
    for T, B, n in sizes:
        setup = {"case": "linear+lif", "T": T, "B": B, "n": n}
        variants = guarded(setup, lambda T=T, B=B, n=n: _variants(T, B, n, device, smoke)) or {}
        if "error" in setup:
            rows.append(setup)
            continue
        reference: dict[str, torch.Tensor] = {}
        for name, go in variants.items():
            row: dict[str, Any] = {"case": "linear+lif", "T": T, "B": B, "n": n, "variant": name}
            if name in ("loop", "triton", "triton_inplace", "layers", "layers_graphed"):
                guarded(row, lambda go=go, row=row, name=name, ref=reference: _same_spikes(ref, name, go, row))
            reps = clock.reps if not (name == "loop" and T * B * n > 2e7) else max(3, clock.reps // 3)

            def measure(go=go, row=row, reps=reps) -> None:
                with torch.no_grad():
                    row["fwd_ms"] = clock(lambda: go(False), reps)
                row["fwd_bwd_ms"] = clock(lambda: go(True), reps)
                row["peak_mb"] = peak_memory_mb(device, lambda: go(True))

            guarded(row, measure)
            rows.append(row)
            print(f"  linear+lif T={T} B={B} n={n} {name}: {row.get('fwd_bwd_ms', row.get('error'))}", flush=True)
        floor = next((r for r in rows[-len(variants):] if r.get("variant") == "dense" and "fwd_bwd_ms" in r), None)
        group = rows[-len(variants):]
        sj = next((r for r in group if r.get("variant") == "spikingjelly" and r.get("peak_mb")), None)
        for r in group:
            if floor and "fwd_bwd_ms" in r:
                r["x_floor"] = r["fwd_bwd_ms"] / floor["fwd_bwd_ms"]
            if floor and floor.get("peak_mb") and r.get("peak_mb") is not None:
                r["mem_x_floor"] = r["peak_mb"] / floor["peak_mb"]
            if sj and r.get("peak_mb") is not None:
                r["mem_x_spikingjelly"] = r["peak_mb"] / sj["peak_mb"]
        del variants
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------------------ recurrent


def bench_recurrent(size, device: torch.device, clock: Clock, smoke: bool) -> list[dict[str, Any]]:
    from spikeforge import nn as snn
    from spikeforge.dynamics import lif
    from spikeforge.dynamics.common import FireSpec
    from spikeforge.kernels.triton_scan import triton_recurrent

    T, B, H = size
    g = torch.Generator(device="cpu").manual_seed(1)
    x_ff = (torch.randn(T, B, H, generator=g) * 2.0 + 0.5).to(device).requires_grad_()
    w = (torch.randn(H, H, generator=g) * (1.0 / H**0.5)).to(device).requires_grad_()
    p = lif.make_params(tau_mem=2e-3, v_th=1.0, v_leak=0.0, v_reset=0.0, dt=1e-3)
    p = type(p)(*[f.to(device=device, dtype=torch.float32) for f in p])
    spec = FireSpec()
    gz = torch.randn(T, B, H, generator=g).to(device)
    layer = snn.Recurrent(H, snn.LIF(2e-3, dt=1e-3, size=H, engine="reference" if smoke else "fused")).to(device)
    u = (torch.rand(T, B, H, generator=g) < 0.1).float().to(device)

    def loop() -> torch.Tensor:
        s, z, outs = lif.init_state(p, x_ff[0].detach(), refractory=False), torch.zeros(B, H, device=device), []
        for t in range(T):
            z, s = lif.step(spec, p, s, x_ff[t] + z @ w.t())
            outs.append(z)
        return torch.stack(outs)

    def fused() -> torch.Tensor:
        out = triton_recurrent("lif", spec, p, lif.init_state(p, x_ff[0].detach(), refractory=False),
                               torch.zeros(B, H, device=device), x_ff, w)
        if out is None:
            raise RuntimeError("triton_recurrent declined the case (returned None)")
        return out[0]

    rows = []
    reference: dict[str, torch.Tensor] = {}
    for name, body in {"loop": loop, "triton": fused, "layers": lambda: layer(u)[0]}.items():
        row: dict[str, Any] = {"case": "recurrent", "T": T, "B": B, "n": H, "variant": name}
        if name != "layers":
            guarded(row, lambda body=body, row=row, name=name: _same_spikes(reference, name, lambda _: body(), row))

        def go(backward: bool, body=body) -> None:
            x_ff.grad = w.grad = None
            for q in layer.parameters():
                q.grad = None
            with torch.set_grad_enabled(backward):
                z = body()
                if backward:
                    z.backward(gz)

        def measure(go=go, row=row) -> None:
            reps = max(3, clock.reps // 2)
            with torch.no_grad():
                row["fwd_ms"] = clock(lambda: go(False), reps)
            row["fwd_bwd_ms"] = clock(lambda: go(True), reps)
            row["peak_mb"] = peak_memory_mb(device, lambda: go(True))

        guarded(row, measure)
        rows.append(row)
        print(f"  recurrent T={T} B={B} H={H} {name}: {row.get('fwd_bwd_ms', row.get('error'))}", flush=True)
    loop_row = rows[0]
    for r in rows:
        if "fwd_bwd_ms" in r and "fwd_bwd_ms" in loop_row:
            r["speedup_vs_loop"] = loop_row["fwd_bwd_ms"] / r["fwd_bwd_ms"]
    return rows


# ------------------------------------------------------------------------------------------------ equivalence


def _model_case(model: str, n: int, dtype: torch.dtype, device: torch.device):
    from spikeforge.dynamics import adaptive_lif, cuba_lif, if_neuron, lif

    g = torch.Generator(device="cpu").manual_seed(3)
    tau = 2e-3 + 6e-3 * torch.rand(n, generator=g, dtype=torch.float64)
    v_th = 0.8 + 0.4 * torch.rand(n, generator=g, dtype=torch.float64)
    mod, p, (sx, mx) = {
        "if": (if_neuron, if_neuron.make_params(v_th=v_th, v_reset=0.1, dt=1e-3), (0.6, 0.3)),
        "lif": (lif, lif.make_params(tau_mem=tau, v_th=v_th, v_leak=0.1, v_reset=-0.2, dt=1e-3), (3.0, 2.0)),
        "cuba_lif": (cuba_lif, cuba_lif.make_params(tau_mem=tau, tau_syn=3e-3, v_th=v_th, v_leak=0.0, v_reset=0.0,
                                                     dt=1e-3), (5.0, 4.0)),
        "adaptive_lif": (adaptive_lif, adaptive_lif.make_params(tau_mem=tau, tau_ahp=20e-3, b=0.3, v_th=v_th,
                                                                 v_leak=0.0, v_reset=-0.1, dt=1e-3), (3.0, 2.5)),
    }[model]
    return mod, type(p)(*[f.to(device=device, dtype=dtype) for f in p]), (sx, mx)


def _state(mod, p, like: torch.Tensor, refractory: bool):
    s = mod.init_state(p, like, refractory=refractory)
    g = torch.Generator(device="cpu").manual_seed(4)
    out = []
    for f in s:
        if f is None:
            out.append(None)
        elif f.is_floating_point():
            out.append((f + 0.5 * torch.rand(f.shape, generator=g, dtype=torch.float64).to(f)).requires_grad_())
        else:
            out.append(torch.randint(0, 3, f.shape, generator=g).to(f))
    return type(s)(*out)


def _loss(z: torch.Tensor, state, gz: torch.Tensor) -> torch.Tensor:
    total = (z * gz).sum()
    for k, f in enumerate(state):
        if f is not None and f.is_floating_point():
            total = total + (f * (0.5 + k)).sum()
    return total


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def _check_scan(rec: dict[str, Any], model: str, reset: str, refractory: int, detach: bool, dtype: torch.dtype,
                shape: tuple[int, int, int], device: torch.device) -> None:
    from spikeforge.core.surrogate import Surrogate
    from spikeforge.dynamics.common import FireSpec
    from spikeforge.kernels.triton_scan import triton_scan
    from spikeforge.sim import scan

    T, B, n = shape
    mod, p, (sx, mx) = _model_case(model, n, dtype, device)
    g = torch.Generator(device="cpu").manual_seed(5)
    x = (torch.randn(T, B, n, generator=g, dtype=torch.float64) * sx + mx).to(device=device, dtype=dtype)
    x.requires_grad_()
    state = _state(mod, p, x[0].detach(), refractory > 0)
    spec = FireSpec(Surrogate("fast_sigmoid", 4.0), reset, refractory, detach)
    out = triton_scan(model, spec, p, state, x)
    if out is None:
        raise RuntimeError("triton_scan declined the case (returned None)")
    z, s_end = out
    z_ref, s_ref, _ = scan.run(mod.step, spec, p, state, x)
    rec["spikes_equal"] = bool(torch.equal(z, z_ref))
    rec["spike_mismatches"] = int((z != z_ref).sum())
    rec["state_equal"] = all((a is None and b is None) or bool(torch.equal(a, b))
                             for a, b in zip(s_end, s_ref, strict=True))
    rec["spike_rate"] = float(z_ref.detach().mean())
    gz = torch.randn(z.shape, generator=g, dtype=torch.float64).to(z)
    wrt = [x] + [f for f in state if f is not None and f.is_floating_point()]
    grads = torch.autograd.grad(_loss(z, s_end, gz), wrt)
    grads_ref = torch.autograd.grad(_loss(z_ref, s_ref, gz), wrt)
    rec["grad_rel_err"] = max(_rel(a, b) for a, b in zip(grads, grads_ref, strict=True))
    rec["passed"] = rec["spikes_equal"] and rec["state_equal"] and rec["grad_rel_err"] <= 1e-5


def _check_recurrent(rec: dict[str, Any], model: str, refractory: int, dtype: torch.dtype,
                     shape: tuple[int, int, int], device: torch.device) -> None:
    from spikeforge.core.surrogate import Surrogate
    from spikeforge.dynamics.common import FireSpec
    from spikeforge.kernels.triton_scan import triton_recurrent

    T, B, H = shape
    mod, p, (sx, mx) = _model_case(model, H, dtype, device)
    g = torch.Generator(device="cpu").manual_seed(6)
    x = (torch.randn(T, B, H, generator=g, dtype=torch.float64) * sx + mx).to(device=device, dtype=dtype)
    x.requires_grad_()
    w = (torch.randn(H, H, generator=g, dtype=torch.float64) * (1.0 / H**0.5)).to(device=device, dtype=dtype)
    w.requires_grad_()
    z0 = (torch.rand(B, H, generator=g, dtype=torch.float64) > 0.5).to(device=device, dtype=dtype).requires_grad_()
    state = _state(mod, p, x[0].detach(), refractory > 0)
    spec = FireSpec(Surrogate("triangle", 0.8), "subtract", refractory, False)
    out = triton_recurrent(model, spec, p, state, z0, x, w)
    if out is None:
        raise RuntimeError("triton_recurrent declined the case (returned None)")
    z, s_end, _ = out
    zr, sr, outs = z0, state, []
    for t in range(T):
        zr, sr = mod.step(spec, p, sr, x[t] + zr @ w.t())
        outs.append(zr)
    z_ref = torch.stack(outs)
    rec["spikes_equal"] = bool(torch.equal(z, z_ref))
    rec["spike_mismatches"] = int((z != z_ref).sum())
    rec["spike_rate"] = float(z_ref.detach().mean())
    gz = torch.randn(z.shape, generator=g, dtype=torch.float64).to(z)
    wrt = [x, w, z0] + [f for f in state if f is not None and f.is_floating_point()]
    grads = torch.autograd.grad(_loss(z, s_end, gz), wrt)
    grads_ref = torch.autograd.grad(_loss(z_ref, sr, gz), wrt)
    rec["grad_rel_err"] = max(_rel(a, b) for a, b in zip(grads, grads_ref, strict=True))
    rec["passed"] = rec["spikes_equal"] and rec["grad_rel_err"] <= 1e-5


def equivalence(device: torch.device, smoke: bool) -> list[dict[str, Any]]:
    """Every model against the reference on ``device``: float32 (the production dtype, where fp contraction would
    show as spike mismatches) over all reset x refractory x detach combinations, float64 (gradient precision) over
    a subset; the recurrent kernel against a plain loop in both."""
    shape = (6, 2, 5) if smoke else (64, 8, 200)
    rshape = (5, 2, 6) if smoke else (32, 8, 128)
    models = ["if", "lif", "cuba_lif", "adaptive_lif"]
    every = [("subtract", 0, True), ("value", 2, False), ("none", 2, True), ("subtract", 2, False),
             ("value", 0, True), ("none", 0, False)]
    few = [("subtract", 0, True), ("value", 2, False)]
    plan = [(torch.float64, few if smoke else every, (0, 2))] if smoke else [
        (torch.float32, every, (0, 2)), (torch.float64, few, (0,))]
    out = []
    for dtype, combos, rec_refractory in plan:
        for model in models:
            for reset, refractory, detach in combos:
                rec: dict[str, Any] = {"kind": "scan", "model": model, "reset": reset, "refractory": refractory,
                                       "detach_reset": detach, "dtype": str(dtype).replace("torch.", ""),
                                       "shape": list(shape), "passed": False}
                guarded(rec, lambda rec=rec, m=model, r=reset, f=refractory, d=detach, dt=dtype:
                        _check_scan(rec, m, r, f, d, dt, shape, device))
                out.append(rec)
            for refractory in rec_refractory:
                rec = {"kind": "recurrent", "model": model, "refractory": refractory,
                       "dtype": str(dtype).replace("torch.", ""), "shape": list(rshape), "passed": False}
                guarded(rec, lambda rec=rec, m=model, f=refractory, dt=dtype:
                        _check_recurrent(rec, m, f, dt, rshape, device))
                out.append(rec)
    return out


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (set TRITON_INTERPRET=1)")
    ap.add_argument("--reps", type=int, default=10, help="timed repetitions per case (median)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--skip-timing", action="store_true", help="only the equivalence checks")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    import triton  # noqa: F401 - fail early and clearly when Triton is missing

    if args.smoke:
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise SystemExit("--smoke runs the kernels on CPU through Triton's interpreter: set TRITON_INTERPRET=1")
        device = torch.device("cpu")
        sizes, rsize, clock = SMOKE_SIZES, SMOKE_RECURRENT, Clock(device, 1, 2)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --smoke and TRITON_INTERPRET=1 on CPU")
        device = torch.device("cuda")
        sizes, rsize, clock = SIZES, RECURRENT, Clock(device, args.warmup, args.reps)

    env = environment()
    env.update({"triton": __import__("triton").__version__, "device": str(device),
                "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "smoke": args.smoke})
    t0 = time.perf_counter()
    print("equivalence checks ...", flush=True)
    checks = equivalence(device, args.smoke)
    n_pass = sum(c["passed"] for c in checks)
    print(f"equivalence: {n_pass}/{len(checks)} passed ({time.perf_counter() - t0:.1f} s)", flush=True)
    for c in checks:
        if not c["passed"]:
            print("  FAILED", {k: v for k, v in c.items() if k != "traceback"}, flush=True)
    timings: list[dict[str, Any]] = []

    def save() -> None:  # after every section, so a run cut short still leaves its results
        write_json(args.json, {"environment": env, "seconds": time.perf_counter() - t0, "equivalence": checks,
                               "equivalence_passed": n_pass, "equivalence_total": len(checks),
                               "timings": timings})

    save()
    if not args.skip_timing:
        for size in sizes:
            timings += bench_linear_lif([size], device, clock, args.smoke)
            save()
        timings += bench_recurrent(rsize, device, clock, args.smoke)
        print_table(timings, [("case", "case", ""), ("T", "T", "d"), ("B", "B", "d"), ("n", "n", "d"),
                              ("variant", "variant", ""), ("fwd_ms", "fwd ms", ".3f"),
                              ("fwd_bwd_ms", "fwd+bwd ms", ".3f"), ("x_floor", "x floor", ".2f"),
                              ("speedup_vs_loop", "vs loop", ".2f"),
                              ("spikes_equal_loop", "= loop", ""), ("peak_mb", "peak MiB", ".1f"),
                              ("mem_x_floor", "mem x floor", ".2f"), ("mem_x_spikingjelly", "mem x SJ", ".2f")])
        for r in timings:
            if "error" in r:
                print(f"  ERROR {r.get('case')} {r.get('variant', '')} T={r['T']}: {r['error']}")
    save()


if __name__ == "__main__":
    main()
