"""C++ CPU kernels of the event-driven feed-forward layer (``spikeforge.kernels.cpu_event``) against the PyTorch
engine (``spikeforge.sim.event`` / ``spikeforge.sim.eventprop``), the reference they replace on CPU."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from test_events import _inputs

from spikeforge.kernels import cpu_event
from spikeforge.nn import EventLIF
from spikeforge.nn.event_readout import EventLI
from spikeforge.sim import event
from spikeforge.sim import eventprop as ep

F64, F32 = torch.float64, torch.float32

pytestmark = [pytest.mark.skipif(not cpu_event.available(), reason="the C++ event kernels cannot be built here"),
              pytest.mark.usefixtures("one_thread")]




@pytest.fixture(autouse=True)
def _kernels_on(monkeypatch):
    """Every test starts with the kernels enabled (whatever ``SPIKEFORGE_EVENT_KERNEL`` says)."""
    monkeypatch.setattr(cpu_event, "ENABLED", True)


@contextlib.contextmanager
def _engine(cpp: bool):
    """Run the block with the C++ kernels (``cpp``) or the PyTorch engine."""
    before = cpu_event.ENABLED
    cpu_event.ENABLED = cpp
    try:
        yield
    finally:
        cpu_event.ENABLED = before


def _layer(seed: int, *, b: int = 12, n_in: int = 10, k: int = 3, n_out: int = 24, scale: float = 0.05,
           span: float = 0.03, grid: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Input times with several spikes per input, ``+inf`` padding and an empty sample 0; mixed-sign weights
    (several output spikes per neuron). ``grid``: times rounded to it (simultaneous events)."""
    g = torch.Generator().manual_seed(seed)
    t = _inputs(seed, b, n_in, k, span=span)
    if grid is not None:
        t = torch.round(t / grid) * grid
    drop = torch.rand(b, n_in, k, generator=g) < 0.3
    t = torch.sort(torch.where(drop, math.inf, t), -1).values
    t[0] = math.inf
    w = (torch.rand(n_out, n_in, generator=g, dtype=F64) * 1.2 - 0.2) * scale
    return t, w


#: (tau_mem, tau_syn, v_th, t_ref, max_spikes, t_max); "per" = per-neuron tensors
CASES = {
    "newton": (10e-3, 3e-3, 1.0, 0.0, 4, math.inf),
    "lambert": (10e-3, 10e-3, 1.0, 2e-3, 5, math.inf),
    "quadratic": (10e-3, 5e-3, 1.0, 1e-3, 3, 0.02),
    "syn-slower": (4e-3, 8e-3, 1.0, 0.5e-3, 4, 0.025),
    "mnist-like": (20e-3, 5e-3, 1.0, 0.0, 3, 0.025),  # tau_mem == 4 tau_syn: polynomial crossing in C++
    "ratio-3": (15e-3, 5e-3, 0.8, 1e-3, 4, math.inf),
    "ratio-5": (25e-3, 5e-3, 1.5, 0.0, 3, 0.03),
    "per-neuron": ("per", "per", "per", 1e-3, 3, 0.03),
}


def _params(name: str, n_out: int, w: torch.Tensor):
    tm, ts, th, t_ref, k, t_max = CASES[name]
    if tm == "per":  # Lambert, quadratic, polynomial and Newton regimes side by side
        g = torch.Generator().manual_seed(99)
        tm = torch.tensor([10e-3, 10e-3, 20e-3, 6e-3, 15e-3, 7e-3] * (n_out // 6), dtype=F64)
        ts = torch.tensor([10e-3, 5e-3, 5e-3, 9e-3, 5e-3, 3e-3] * (n_out // 6), dtype=F64)
        th = 0.8 + 0.4 * torch.rand(n_out, generator=g, dtype=F64)
    return event.make_params(n_out, w, tau_mem=tm, tau_syn=ts, v_th=th, t_ref=t_ref, max_spikes=k, t_max=t_max)


def _both_forward(t: torch.Tensor, w: torch.Tensor, p) -> tuple[event.SpikeRecord, event.SpikeRecord]:
    with _engine(True):
        a = event.run_feedforward(t, w, p)
    with _engine(False):
        r = event.run_feedforward(t, w, p)
    return a, r


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_reference(name, dtype):
    t, w = _layer(list(CASES).index(name))
    t, w = t.to(dtype), w.to(dtype)
    a, r = _both_forward(t, w, _params(name, w.shape[0], w))
    assert a.times.dtype == dtype and a.times.shape == r.times.shape
    fa, fr = torch.isfinite(a.times), torch.isfinite(r.times)
    assert int(fr.sum()) > 100 and int((fr.sum(-1) >= 2).sum()) > 20 and int((~fr).sum()) > 20
    if dtype == F64:
        assert torch.equal(fa, fr)  # well-conditioned random cases: the same spikes
        torch.testing.assert_close(a.times[fa], r.times[fr], rtol=1e-9, atol=0)
        for x, y in ((a.i_spike, r.i_spike), (a.i_release, r.i_release)):
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9 * float(y.abs().max()))
    else:  # float32: the same spike counts (grazing crossings aside), times to float32 resolution
        same = (fa == fr).all(-1)
        assert int((~same).sum()) <= int(0.001 * same.numel())
        m = same.unsqueeze(-1) & fr
        torch.testing.assert_close(a.times[m], r.times[m], rtol=1e-4, atol=1e-6)
        for x, y in ((a.i_spike, r.i_spike), (a.i_release, r.i_release)):
            torch.testing.assert_close(x[same], y[same], rtol=1e-4, atol=1e-4 * float(y.abs().max()))
    assert torch.isinf(a.times[0]).all()  # the empty sample


def test_simultaneous_events_and_no_events():
    """Input times on a coarse grid (many events at the same instant, releases on event times) and inputs that
    never fire."""
    t, w = _layer(5, grid=1e-3, k=4)
    for t_ref in (0.0, 1e-3):
        p = event.make_params(w.shape[0], w, tau_mem=10e-3, tau_syn=4e-3, v_th=1.0, t_ref=t_ref, max_spikes=4,
                              t_max=math.inf)
        a, r = _both_forward(t, w, p)
        assert torch.equal(torch.isfinite(a.times), torch.isfinite(r.times))
        assert int(torch.isfinite(a.times).sum()) > 100
        for x, y in zip(a, r, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)
    silent = torch.full((3, 4, 2), math.inf, dtype=F64)
    with _engine(True):
        out = event.run(silent, w[:, :4], tau_mem=10e-3, tau_syn=5e-3, max_spikes=3)
    assert torch.isinf(out.times).all() and not out.i_spike.any() and not out.i_release.any()


@pytest.mark.parametrize("name", list(CASES))
def test_backward_matches_reference(name):
    t, w = _layer(list(CASES).index(name) + 7)
    p = _params(name, w.shape[0], w)
    grads = []
    for cpp in (True, False):
        with _engine(cpp):
            rec = event.run_feedforward(t, w, p)
            g = torch.Generator().manual_seed(1)
            grad = torch.where(torch.isfinite(rec.times), torch.randn(rec.times.shape, generator=g, dtype=F64), 0.0)
            grads.append(ep.backward_feedforward(t, w, rec, grad, p))
    (gt_c, gw_c), (gt_p, gw_p) = grads
    assert gt_c.shape == t.shape and gw_c.shape == w.shape
    assert float(gw_p.abs().max()) > 0 and float(gt_p.abs().max()) > 0
    assert _rel(gw_c, gw_p) < 1e-9 and _rel(gt_c, gt_p) < 1e-9
    assert bool((gt_c[~torch.isfinite(t)] == 0).all())  # padding gets no gradient


def test_two_threads_give_the_same_result():
    """Work split over samples x neurons (forward) and neurons (backward, per-thread event buffers)."""
    t, w = _layer(21, b=16, n_out=40)
    p = _params("mnist-like", w.shape[0], w)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            rec = event.run_feedforward(t, w, p)
            grad = torch.where(torch.isfinite(rec.times), 1.0, 0.0).to(F64)
            results.append((*rec, *ep.backward_feedforward(t, w, rec, grad, p)))
        finally:
            torch.set_num_threads(1)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_training_step_same_with_and_without_kernels(dtype):
    """An EventLIF layer with an EventLI read-out: loss, gradients and the Adam update agree with the C++ kernels
    on and off."""
    g = torch.Generator().manual_seed(4)
    t = _inputs(4, 16, 20, 1, span=0.02).to(dtype)
    y = torch.randint(0, 3, (16,), generator=g)
    results = []
    for cpp in (True, False):
        lif = EventLIF(20, 30, tau_mem=20e-3, tau_syn=5e-3, max_spikes=3, t_max=0.04, init_scale=3.0,
                       generator=torch.Generator().manual_seed(0)).to(dtype)
        readout = EventLI(30, 3, tau_mem=20e-3, tau_syn=5e-3, t_max=0.04, steps=40,
                          generator=torch.Generator().manual_seed(1)).to(dtype)
        opt = torch.optim.Adam([*lif.parameters(), *readout.parameters()], lr=1e-3)
        with _engine(cpp):
            h = lif(t)
            loss = torch.nn.functional.cross_entropy(readout(h).mean(-1) * 10.0, y)
            opt.zero_grad()
            loss.backward()
            grads = (lif.weight.grad.clone(), readout.weight.grad.clone())
            opt.step()
        results.append((h.detach(), loss.detach(), *grads, lif.weight.detach().clone()))
    assert int(torch.isfinite(results[0][0]).sum()) > 50
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == F64 else dict(rtol=1e-4, atol=1e-5)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_fallbacks(monkeypatch):
    """Plain LIF and a disabled or unbuildable kernel run the PyTorch engine (a failed build warns once)."""
    t, w = _layer(8, b=4, n_out=8)
    plain = event.make_params(8, w, tau_mem=10e-3, tau_syn=0.0, v_th=1.0, t_ref=0.0, max_spikes=2, t_max=math.inf)
    assert not cpu_event.covers(t, w, plain)
    syn = _params("newton", 8, w)
    assert cpu_event.covers(t, w, syn)
    assert not cpu_event.covers(t.to(torch.float16), w.to(torch.float16), syn)
    with _engine(False):
        assert not cpu_event.covers(t, w, syn)
    ref = event.run_feedforward(t, w, syn)

    def broken():
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setitem(cpu_event._STATE, "status", None)
    monkeypatch.setattr(cpu_event, "_compile", broken)
    with pytest.warns(RuntimeWarning, match="C\\+\\+ event kernels unavailable \\(no C\\+\\+ compiler found\\)"):
        assert not cpu_event.build()
    assert not cpu_event.build()  # once per process: no second warning, no second try
    out = event.run_feedforward(t, w, syn)  # the PyTorch engine
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_the_kernel_is_registered_with_the_engine_below_it():
    """sim sits below kernels (it may not import them): importing spikeforge registers the C++ engine there."""
    from spikeforge.sim import event

    assert cpu_event in event.KERNELS
    t = torch.tensor([[[1e-3], [2e-3]]], dtype=torch.float64)
    w = torch.ones(3, 2, dtype=torch.float64)
    p = event.make_params(3, w, tau_mem=20e-3, tau_syn=5e-3, v_th=1.0, t_ref=0.0, max_spikes=1, t_max=1.0)
    assert event.feedforward_kernel(t, w, p) is cpu_event
