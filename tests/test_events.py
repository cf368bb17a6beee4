"""Event-driven engine (exact spike times) and EventProp gradients."""

from __future__ import annotations

import math

import pytest
import torch

from spikeforge.core.checks import SpikeforgeError
from spikeforge.dynamics import cuba_lif
from spikeforge.dynamics import cuba_lif_exact as ex
from spikeforge.dynamics.common import FireSpec
from spikeforge.kernels import cpu_event
from spikeforge.nn import EventLIF
from spikeforge.nn.events import GRADIENTS
from spikeforge.sim import event
from spikeforge.sim import eventprop as ep

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(seed: int, b: int, n_in: int, k: int, span: float = 0.02) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.sort(torch.rand(b, n_in, k, generator=g, dtype=F64) * span, -1).values


# ------------------------------------------------------------------------------------------------ exact pieces


def _bisect(f, lo: float, hi: float) -> float:
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("tau_syn", [10e-3, 5e-3, 3e-3], ids=["lambert", "quadratic", "newton"])
def test_golden_single_input(tau_syn):
    """One input spike of weight w at t0: V(t) = w/(tm - ts) (e^{-s/tm} - e^{-s/ts}) (w s/tau^2 e^{-s/tau} for
    equal taus); the engine's spike time solves V = v_th, found here by hand (closed form or bisection)."""
    tm, w, t0, th = 10e-3, 0.06, 1e-3, 1.0
    if tau_syn == tm:
        def v(s):
            return w * s / tm**2 * math.exp(-s / tm)
    else:
        def v(s):
            return w / (tm - tau_syn) * (math.exp(-s / tm) - math.exp(-s / tau_syn))
    peak = _bisect(lambda s: -((v(s + 1e-9) - v(s)) / 1e-9), 0.0, 10 * tm)
    assert v(peak) > th
    if tau_syn == tm / 2:  # V = I0 (u - u^2), u = exp(-s/tm): hand-solved quadratic
        i0 = w / tau_syn
        s_hand = -tm * math.log((1 + math.sqrt(1 - 4 * th / i0)) / 2)
    else:
        s_hand = _bisect(lambda s: v(s) - th, 0.0, peak)
    assert abs(v(s_hand) - th) < 1e-12
    # free evolution reproduces the closed-form trajectory
    s = torch.linspace(0, 0.05, 26, dtype=F64)
    i0 = torch.tensor(w / tau_syn, dtype=F64)
    v_exact = torch.tensor([v(x) for x in s.tolist()], dtype=F64)
    torch.testing.assert_close(ex.v_at(i0, torch.tensor(0.0, dtype=F64), s, tm, tau_syn), v_exact, rtol=0,
                               atol=1e-13)
    # the engine, feed-forward and recurrent, finds the crossing
    times = torch.tensor([[[t0]]], dtype=F64)
    weight = torch.tensor([[w]], dtype=F64)
    out = event.simulate(times, weight, tau_mem=tm, tau_syn=tau_syn, v_th=th)
    assert out.shape == (1, 1, 1)
    assert abs(out.item() - (t0 + s_hand)) < 1e-12
    out_rec = event.simulate(times, weight, tau_mem=tm, tau_syn=tau_syn, v_th=th,
                             weight_rec=torch.zeros(1, 1, dtype=F64))
    assert abs(out_rec.item() - (t0 + s_hand)) < 1e-12
    # below threshold: no spike
    none = event.simulate(times, weight * th / v(peak) * 0.99, tau_mem=tm, tau_syn=tau_syn, v_th=th)
    assert math.isinf(none.item())


@pytest.mark.parametrize("ratio,closed", [(1.0, "lambert"), (2.0, "quadratic")])
def test_crossing_solvers_agree(ratio, closed):
    g = torch.Generator().manual_seed(0)
    i = torch.rand(3000, generator=g, dtype=F64) * 10
    v = torch.rand(3000, generator=g, dtype=F64) * 2 - 1.5
    tm = 10e-3
    a = ex.crossing_time(i, v, 1.0, tm, tm / ratio, method="newton")
    b = ex.crossing_time(i, v, 1.0, tm, tm / ratio, method=closed)
    c = ex.crossing_time(i, v, 1.0, tm, tm / ratio)  # auto
    fin = torch.isfinite(a)
    assert 500 < int(fin.sum()) < 2900  # both outcomes are exercised
    assert torch.equal(fin, torch.isfinite(b)) and torch.equal(fin, torch.isfinite(c))
    torch.testing.assert_close(a[fin], b[fin], rtol=0, atol=1e-12)
    torch.testing.assert_close(c[fin], b[fin], rtol=0, atol=0)
    assert float((ex.v_at(i[fin], v[fin], a[fin], tm, tm / ratio) - 1.0).abs().max()) < 1e-10
    # the root is the first crossing: V stays below threshold before it
    early = ex.v_at(i[fin], v[fin], a[fin] * 0.999, tm, tm / ratio)
    assert bool((early < 1.0).all())


def test_lambert_w0():
    z = torch.cat([torch.tensor([-1 / math.e, -0.3678794, 0.0], dtype=F64),
                   -torch.logspace(-12, math.log10(1 / math.e) - 1e-9, 200, dtype=F64)])
    w = ex.lambert_w0(z)
    assert float((w * torch.exp(w) - z).abs().max()) < 1e-15
    assert bool(((w >= -1) & (w <= 0)).all())


def test_crossing_horizon_and_time_constants_tensor():
    i = torch.tensor([20.0, 20.0, 0.5], dtype=F64)
    v = torch.tensor([0.0, 0.0, 0.0], dtype=F64)
    full = ex.crossing_time(i, v, 1.0, 10e-3, 5e-3)
    assert math.isfinite(full[0]) and math.isinf(full[2])
    short = ex.crossing_time(i, v, 1.0, 10e-3, 5e-3, horizon=float(full[0]) * 0.5)
    assert math.isinf(short[0])
    per_neuron = ex.crossing_time(i, v, 1.0, torch.tensor([10e-3, 10e-3, 10e-3], dtype=F64),
                                  torch.tensor([5e-3, 5e-3, 5e-3], dtype=F64))
    torch.testing.assert_close(per_neuron, full, rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------------------- engine


@pytest.mark.parametrize("tau_syn,t_ref", [(5e-3, 0.0), (10e-3, 0.0), (3e-3, 0.0), (5e-3, 2e-3), (0.0, 0.0),
                                           (0.0, 1e-3)])
def test_feedforward_equals_event_loop(tau_syn, t_ref):
    """The vectorised feed-forward engine and the per-event loop (used for recurrent layers) agree."""
    t = _inputs(1, 8, 6, 3, span=0.03)
    t[0, 0, 2] = math.inf
    t[1, :, 1:] = math.inf
    g = torch.Generator().manual_seed(2)
    w = (torch.rand(5, 6, generator=g, dtype=F64) * 0.5 - 0.1) * (0.015 if tau_syn == 0 else 0.02)
    kw = dict(tau_mem=10e-3, tau_syn=tau_syn, t_ref=t_ref, max_spikes=4)
    a = event.run(t, w, **kw)
    b = event.run(t, w, weight_rec=torch.zeros(5, 5, dtype=F64), **kw)
    fin = torch.isfinite(a.times)
    assert int(fin.sum()) > 40 and int((~fin).sum()) > 10
    assert torch.equal(fin, torch.isfinite(b.times))
    torch.testing.assert_close(a.times[fin], b.times[fin], rtol=0, atol=1e-13)
    torch.testing.assert_close(a.i_spike, b.i_spike, rtol=1e-12, atol=1e-12)
    # the current at the release is used only when a later spike follows; there the engines agree
    nxt = torch.isfinite(a.times[..., 1:])
    torch.testing.assert_close(a.i_release[..., :-1][nxt], b.i_release[..., :-1][nxt], rtol=1e-12, atol=1e-12)


def _time_stepped(times, weight, *, tau_mem, tau_syn, dt, t_end, max_spikes):
    """Spike times of spikeforge's time-stepped CubaLIF (reset to 0), inputs as impulses of area w on the grid."""
    steps = int(round(t_end / dt))
    p = cuba_lif.make_params(tau_mem=tau_mem, tau_syn=tau_syn, v_th=1.0, v_leak=0.0, v_reset=0.0, dt=dt)
    spec = FireSpec(reset="value")
    b, n_in, _ = times.shape
    n_out = weight.shape[0]
    x = torch.zeros(steps + 1, b, n_in, dtype=F64)
    fin = torch.isfinite(times)
    idx = torch.ceil(times[fin] / dt).long()  # the step whose interval ((n-1) dt, n dt] holds the spike
    bi, ii, _ = fin.nonzero(as_tuple=True)
    x.index_put_((idx, bi, ii), torch.ones_like(idx, dtype=F64), accumulate=True)
    drive = torch.einsum("tbi,ji->tbj", x, weight) / (tau_syn * (1 - p.beta))  # I jumps by w / tau_syn
    state = cuba_lif.init_state(p, drive[0], refractory=False)
    out = torch.full((b, n_out, max_spikes), math.inf, dtype=F64)
    count = torch.zeros(b, n_out, dtype=torch.long)
    for n in range(1, steps + 1):
        z, state = cuba_lif.step(spec, p, state, drive[n])
        for bb, j in (z > 0).nonzero().tolist():
            if count[bb, j] < max_spikes:
                out[bb, j, count[bb, j]] = n * dt
                count[bb, j] += 1
    return out


def test_converges_to_time_stepped_reference():
    """Spike times of the time-stepped CubaLIF converge to the event engine's as dt -> 0, at first order."""
    t = _inputs(4, 2, 4, 2, span=0.02)
    g = torch.Generator().manual_seed(5)
    w = torch.rand(3, 4, generator=g, dtype=F64) * 0.04 + 0.01
    kw = dict(tau_mem=10e-3, tau_syn=4e-3)
    exact = event.simulate(t, w, max_spikes=3, t_max=0.04, **kw)
    fin = torch.isfinite(exact)
    assert int(fin.sum()) >= 8
    errors = []
    for dt in (4e-5, 2e-5, 1e-5):
        ref = _time_stepped(t, w, dt=dt, t_end=0.04, max_spikes=3, **kw)
        assert torch.equal(torch.isfinite(ref), fin)
        errors.append(float((ref[fin] - exact[fin]).abs().max()))
    assert errors[-1] < 5 * 1e-5
    assert errors[0] / errors[1] > 1.5 and errors[1] / errors[2] > 1.5  # O(dt)


def test_refractory_period():
    t = _inputs(6, 4, 5, 3)
    g = torch.Generator().manual_seed(7)
    w = torch.rand(6, 5, generator=g, dtype=F64) * 0.1 + 0.05
    free = event.simulate(t, w, tau_mem=10e-3, tau_syn=5e-3, max_spikes=6)
    for t_ref in (1e-3, 4e-3):
        out = event.simulate(t, w, tau_mem=10e-3, tau_syn=5e-3, max_spikes=6, t_ref=t_ref)
        gaps = out[..., 1:] - out[..., :-1]
        both = torch.isfinite(gaps)
        assert int(both.sum()) > 10
        assert float(gaps[both].min()) >= t_ref
        rec = event.simulate(t, w, tau_mem=10e-3, tau_syn=5e-3, max_spikes=6, t_ref=t_ref,
                             weight_rec=torch.zeros(6, 6, dtype=F64))
        torch.testing.assert_close(rec, out, rtol=0, atol=1e-13)
    gaps_free = free[..., 1:] - free[..., :-1]
    assert float(gaps_free[torch.isfinite(gaps_free)].min()) < 4e-3  # the refractory period did something


def test_max_spikes_t_max_and_ordering():
    t = _inputs(8, 3, 5, 3)
    w = torch.linspace(0.05, 0.1, 20, dtype=F64).reshape(4, 5)
    many = event.simulate(t, w, tau_mem=10e-3, tau_syn=5e-3, max_spikes=8)
    few = event.simulate(t, w, tau_mem=10e-3, tau_syn=5e-3, max_spikes=2)
    assert few.shape == (3, 4, 2)
    torch.testing.assert_close(few, many[..., :2], rtol=0, atol=0)  # later spikes are dropped
    fin = torch.sort(many[torch.isfinite(many)]).values
    mid = len(fin) // 2
    t_max = float(fin[mid] + fin[mid + 1]) / 2  # between two spikes
    cut = event.simulate(t, w, tau_mem=10e-3, tau_syn=5e-3, max_spikes=8, t_max=t_max)
    keep = many <= t_max
    torch.testing.assert_close(cut[keep], many[keep], rtol=0, atol=0)
    assert bool(torch.isinf(cut[~keep]).all())
    assert bool((many[..., 1:] >= many[..., :-1]).all())


def test_long_times_do_not_overflow():
    """Inputs 10 s (1000 tau_mem) apart, where exp(t/tau) overflows: the two groups act independently."""
    t = _inputs(9, 2, 4, 2)
    w = torch.full((3, 4), 0.08, dtype=F64)
    w[0, 0] = -0.02
    kw = dict(tau_mem=10e-3, tau_syn=5e-3, max_spikes=8)
    early, late = t.clone(), t.clone()
    early[:, 2:] = math.inf
    late[:, :2] = math.inf
    mixed = torch.where(torch.arange(4).view(1, 4, 1) < 2, t, t + 10.0)
    for dtype in (F64, torch.float32):
        a = event.simulate(early.to(dtype), w.to(dtype), **kw)
        b = event.simulate(late.to(dtype), w.to(dtype), **kw) + 10.0
        both = torch.sort(torch.cat([a, b], -1), -1).values[..., :8]
        out = event.simulate(mixed.to(dtype), w.to(dtype), **kw)
        assert int(torch.isfinite(a).sum()) > 2 and int(torch.isfinite(b).sum()) > 2
        assert torch.equal(torch.isfinite(out), torch.isfinite(both))
        fin = torch.isfinite(out)
        tol = 1e-9 if dtype == F64 else 1e-5
        torch.testing.assert_close(out[fin], both[fin], rtol=0, atol=tol)
    shifted = event.simulate(t + 10.0, w, **kw)
    torch.testing.assert_close(shifted - 10.0, event.simulate(t, w, **kw), rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("case,match", [
    ("unsorted", "times_in must be sorted"),
    ("nan", "times_in must not contain NaN"),
    ("negative", "times_in must be >= 0"),
    ("rank", "times_in must have rank 3"),
    ("n_in", r"weight must have shape \[n_out, n_in\] with n_in = times_in.shape\[1\] = 3"),
    ("max_spikes", "max_spikes must be an integer >= 1"),
    ("tau_mem", "tau_mem must be positive"),
    ("tau_syn", "tau_syn must be finite and >= 0"),
    ("weight_rec", r"weight_rec must have shape \[n_out, n_out\]"),
])
def test_bad_input_errors(case, match):
    t = _inputs(0, 2, 3, 2)
    w = torch.full((4, 3), 0.05, dtype=F64)
    kw = dict(tau_mem=10e-3, tau_syn=5e-3, max_spikes=2)
    if case == "unsorted":
        t = t.flip(-1)
    elif case == "nan":
        t[1, 2, 0] = math.nan
    elif case == "negative":
        t[0, 0, 0] = -1e-3
    elif case == "rank":
        t = t[0]
    elif case == "n_in":
        w = torch.full((4, 5), 0.05, dtype=F64)
    elif case == "max_spikes":
        kw["max_spikes"] = 0
    elif case == "tau_mem":
        kw["tau_mem"] = -1e-3
    elif case == "tau_syn":
        kw["tau_syn"] = -1.0
    elif case == "weight_rec":
        kw["weight_rec"] = torch.zeros(4, 3, dtype=F64)
    with pytest.raises(SpikeforgeError, match=match) as info:
        event.simulate(t, w, **kw)
    assert "got" in str(info.value)


def test_event_lif_module_checks():
    with pytest.raises(SpikeforgeError, match="gradient must be one of"):
        EventLIF(3, 2, tau_mem=10e-3, tau_syn=5e-3, gradient="bptt")
    with pytest.raises(SpikeforgeError, match="needs tau_syn > 0"):
        EventLIF(3, 2, tau_mem=10e-3, tau_syn=0.0)
    with pytest.raises(SpikeforgeError, match="tau_mem must be positive"):
        EventLIF(3, 2, tau_mem=0.0, tau_syn=5e-3)
    with pytest.raises(SpikeforgeError, match="max_spikes"):
        EventLIF(3, 2, tau_mem=10e-3, tau_syn=5e-3, max_spikes=0)
    assert "eventprop" in GRADIENTS
    layer = EventLIF(3, 4, tau_mem=10e-3, tau_syn=5e-3, max_spikes=2, recurrent=True,
                     generator=torch.Generator().manual_seed(0))
    assert {n for n, _ in layer.named_parameters()} == {"weight", "weight_rec"}
    assert layer.weight.shape == (4, 3) and layer.weight_rec.shape == (4, 4)
    out = layer(_inputs(1, 5, 3, 2).float())
    assert out.shape == (5, 4, 2) and out.requires_grad
    with pytest.raises(SpikeforgeError, match="dtype and device"):
        layer(_inputs(1, 5, 3, 2))  # float64 times into a float32 layer


# ----------------------------------------------------------------------------------------------- EventProp


def _network(t, w1, w2, wr, kw):
    h = ep.eventprop(t, w1, weight_rec=wr, **kw)
    o = ep.eventprop(h, w2, **kw)
    return h, o


def _loss(h, o, c1, c2):
    return (torch.where(torch.isfinite(h), h, 0) * c1).sum() + (torch.where(torch.isfinite(o), o, 0) * c2).sum()


@pytest.mark.parametrize("cpp", [True, False], ids=["cpp", "torch"])
@pytest.mark.parametrize("tau_syn,t_ref,recurrent", [
    (5e-3, 0.0, False), (10e-3, 0.0, False), (3e-3, 1e-3, False), (3e-3, 0.0, True), (10e-3, 1e-3, True)])
def test_eventprop_matches_finite_differences(tau_syn, t_ref, recurrent, cpp, monkeypatch):
    """Two layers, several spikes per neuron, a loss on every spike time: EventProp gradients with respect to
    the input times and all weights equal central finite differences (float64). Feed-forward layers run the C++
    CPU kernel (``cpp``) or the PyTorch engine; recurrent layers always the latter."""
    if cpp and not cpu_event.available():
        pytest.skip("the C++ event kernels cannot be built here")
    monkeypatch.setattr(cpu_event, "ENABLED", cpp)
    g = torch.Generator().manual_seed(3)
    t = _inputs(3, 2, 4, 2)
    t[0, 1, 1] = math.inf
    w1 = torch.rand(5, 4, generator=g, dtype=F64) * 0.03
    w2 = torch.rand(3, 5, generator=g, dtype=F64) * 0.03
    wr = torch.randn(5, 5, generator=g, dtype=F64) * 0.005 if recurrent else None
    c1 = torch.rand(2, 5, 3, generator=g, dtype=F64)
    c2 = torch.rand(2, 3, 3, generator=g, dtype=F64)
    kw = dict(tau_mem=10e-3, tau_syn=tau_syn, t_ref=t_ref, max_spikes=3)
    args = [x.clone().requires_grad_() for x in (t, w1, w2)] + ([wr.clone().requires_grad_()] if recurrent else [])
    h, o = _network(*args[:3], args[3] if recurrent else None, kw)
    n_hidden, n_out = int(torch.isfinite(h).sum()), int(torch.isfinite(o).sum())
    assert n_hidden > 12 and n_out > 4 and int((torch.isfinite(h).sum(-1) >= 2).sum()) > 3  # several spikes
    _loss(h, o, c1, c2).backward()
    with torch.no_grad():
        for a, x in enumerate(args):
            fd = torch.zeros_like(x)
            eps = 1e-8 if a == 0 else 1e-7
            entries = range(x.numel())
            if recurrent:  # the per-event loop is slower: check a random subset of the entries
                entries = torch.randperm(x.numel(), generator=g)[:12].tolist()
            for j in entries:
                if not math.isfinite(x.view(-1)[j]):
                    continue
                vals = []
                for sign in (1, -1):
                    xs = [y.detach().clone() for y in args]
                    xs[a].view(-1)[j] += sign * eps
                    hp, op = _network(*xs[:3], xs[3] if recurrent else None, kw)
                    assert torch.equal(torch.isfinite(hp), torch.isfinite(h))  # no spike created or removed
                    assert torch.equal(torch.isfinite(op), torch.isfinite(o))
                    vals.append(_loss(hp, op, c1, c2))
                fd.view(-1)[j] = (vals[0] - vals[1]) / (2 * eps)
            grad = x.grad
            assert not bool(torch.isnan(grad).any())
            if recurrent:
                grad = grad.reshape(-1)[entries]
                fd = fd.reshape(-1)[entries]
            err = float((grad - fd).abs().max() / fd.abs().max())
            assert err < 1e-4, f"argument {a}: relative error {err:.2e}"
    assert float(args[0].grad[0, 1, 1]) == 0.0  # padded input time


@pytest.mark.parametrize("recurrent", [False, True])
def test_per_neuron_parameters(recurrent):
    """Per-neuron tau_mem, tau_syn and v_th tensors equal one layer per neuron with scalar parameters,
    forward and backward."""
    g = torch.Generator().manual_seed(3)
    t = _inputs(3, 3, 4, 2)
    w = torch.rand(3, 4, generator=g, dtype=F64) * 0.04
    tm = torch.tensor([10e-3, 8e-3, 12e-3], dtype=F64)
    ts = torch.tensor([5e-3, 8e-3, 3e-3], dtype=F64)  # Newton, Lambert and Newton regimes side by side
    th = torch.tensor([1.0, 0.8, 1.2], dtype=F64)
    rec = torch.zeros(3, 3, dtype=F64) if recurrent else None
    wt, tt = w.clone().requires_grad_(), t.clone().requires_grad_()
    out = ep.eventprop(tt, wt, tau_mem=tm, tau_syn=ts, v_th=th, max_spikes=2, t_ref=1e-3, weight_rec=rec)
    torch.where(torch.isfinite(out), out, 0).sum().backward()
    grad_t = torch.zeros_like(t)
    for j in range(3):
        wj, tj = w[j:j + 1].clone().requires_grad_(), t.clone().requires_grad_()
        oj = ep.eventprop(tj, wj, tau_mem=float(tm[j]), tau_syn=float(ts[j]), v_th=float(th[j]), max_spikes=2,
                          t_ref=1e-3)
        torch.where(torch.isfinite(oj), oj, 0).sum().backward()
        fin = torch.isfinite(oj)
        assert int(fin.sum()) >= 3 and torch.equal(fin, torch.isfinite(out[:, j:j + 1]))
        torch.testing.assert_close(out[:, j:j + 1][fin], oj[fin], rtol=0, atol=1e-15)
        torch.testing.assert_close(wt.grad[j:j + 1], wj.grad, rtol=1e-12, atol=1e-12)
        grad_t += tj.grad
    torch.testing.assert_close(tt.grad, grad_t, rtol=1e-12, atol=1e-12)


def test_eventprop_saves_only_spikes():
    """Memory for the backward pass: the inputs plus three numbers per output spike slot, whatever t_max."""
    t = _inputs(5, 4, 3, 2)
    w = (torch.rand(6, 3, generator=torch.Generator().manual_seed(6), dtype=F64) * 0.08).requires_grad_()
    for t_max in (0.01, 100.0):
        saved: list[int] = []

        def pack(x, saved=saved):
            saved.append(x.numel())
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            out = ep.eventprop(t, w, tau_mem=10e-3, tau_syn=5e-3, max_spikes=4, t_max=t_max)
        assert sum(saved) == t.numel() + w.numel() + 3 * out.numel()


def test_batch_chunks_give_the_same_result(monkeypatch):
    t = _inputs(15, 10, 4, 2)
    w = torch.rand(5, 4, generator=torch.Generator().manual_seed(16), dtype=F64) * 0.05
    results = []
    for limit in (event.CHUNK_ELEMENTS, 100):  # one chunk; chunks of 2 samples
        monkeypatch.setattr(event, "CHUNK_ELEMENTS", limit)
        wt, tt = w.clone().requires_grad_(), t.clone().requires_grad_()
        out = ep.eventprop(tt, wt, tau_mem=10e-3, tau_syn=5e-3, max_spikes=3)
        torch.where(torch.isfinite(out), out, 0).sum().backward()
        results.append((out.detach(), wt.grad, tt.grad))
    assert len(event.batch_chunks(t, 5)) == 5
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_event_loop_backward_equals_vectorised():
    """The per-event adjoint loop (recurrent layers) gives the feed-forward backward's gradients."""
    t = _inputs(11, 3, 5, 2)
    t[2, 0, 1] = math.inf
    g = torch.Generator().manual_seed(12)
    w = torch.rand(6, 5, generator=g, dtype=F64) * 0.05
    for t_ref in (0.0, 1.5e-3):
        p = event.make_params(6, w, tau_mem=10e-3, tau_syn=4e-3, v_th=1.0, t_ref=t_ref, max_spikes=3,
                              t_max=math.inf)
        rec = event.run_feedforward(t, w, p)
        grad = torch.where(torch.isfinite(rec.times), torch.rand(rec.times.shape, generator=g, dtype=F64), 0.0)
        gt_a, gw_a = ep.backward_feedforward(t, w, rec, grad, p)
        gt_b, gw_b, _ = ep.backward_events(t, w, None, rec, grad, p)
        torch.testing.assert_close(gt_a, gt_b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gw_a, gw_b, rtol=1e-10, atol=1e-12)


def test_eventprop_silent_neurons_and_padding_give_zero_not_nan():
    t = torch.full((2, 3, 2), math.inf, dtype=F64)
    t[0, 0, 0] = 1e-3
    w = torch.full((2, 3), 0.001, dtype=F64, requires_grad=True)  # far below threshold: no spikes
    t.requires_grad_()
    out = ep.eventprop(t, w, tau_mem=10e-3, tau_syn=5e-3, max_spikes=2)
    assert bool(torch.isinf(out).all())
    out.sum().backward()  # inf times with incoming gradient 1: ignored
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(t.grad, torch.zeros_like(t))
    with pytest.raises(SpikeforgeError, match="EventProp needs tau_syn > 0"):
        ep.eventprop(t, w, tau_mem=10e-3, tau_syn=0.0)


def test_event_lif_trains_a_spike_time():
    """Adam on EventProp gradients moves two spike times onto their targets."""
    layer = EventLIF(4, 2, tau_mem=10e-3, tau_syn=5e-3, init_scale=2.0,
                     generator=torch.Generator().manual_seed(1)).double()
    t = _inputs(2, 1, 4, 1, span=0.005)
    target = torch.tensor([[[0.0040], [0.0060]]], dtype=F64)
    opt = torch.optim.Adam(layer.parameters(), lr=5e-4)
    losses = []
    for _ in range(40):
        out = layer(t)
        assert bool(torch.isfinite(out).all())
        loss = ((out - target) ** 2).sum() * 1e4
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert min(losses[-5:]) < 0.05 * losses[0]


# --------------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    t = _inputs(13, 16, 5, 3).float()
    g = torch.Generator().manual_seed(14)
    w1 = (torch.rand(20, 5, generator=g) * 0.08).float()
    w2 = (torch.rand(3, 20, generator=g) * 0.02).float()
    wr = (torch.randn(20, 20, generator=g) * 0.005).float()
    kw = dict(tau_mem=10e-3, tau_syn=5e-3, max_spikes=2, t_ref=0.5e-3)
    results = []
    for dev in ("cpu", "cuda"):
        xs = [x.detach().to(dev).clone().requires_grad_() for x in (t, w1, w2, wr)]  # leaves on each device
        h = ep.eventprop(xs[0], xs[1], weight_rec=xs[3], **kw)
        o = ep.eventprop(h, xs[2], **kw)
        ff = ep.eventprop(xs[0], xs[1], **kw)
        loss = torch.where(torch.isfinite(o), o, 0).sum() + torch.where(torch.isfinite(ff), ff, 0).sum()
        loss.backward()
        results.append([o.detach().cpu(), ff.detach().cpu()] + [x.grad.cpu() for x in xs])
    for a, b in zip(*results, strict=True):
        assert torch.equal(torch.isfinite(a), torch.isfinite(b))
        fin = torch.isfinite(a)
        torch.testing.assert_close(a[fin], b[fin], rtol=1e-3, atol=1e-5)
