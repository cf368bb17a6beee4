"""Exact spike-time gradients (multi-spike Fast & Deep): equal to central finite differences of the event engine's
spike times, in float64, with several spikes per neuron; and equal to EventProp's gradients."""

from __future__ import annotations

import math

import pytest
import torch

from spikeforge.core.checks import SpikeforgeError
from spikeforge.sim.event import simulate
from spikeforge.sim.exact_times import exact_spike_times

D = torch.float64


def _setup(seed: int, *, b: int = 2, n_in: int = 6, k_in: int = 2, n_out: int = 3, scale: float = 0.12):
    g = torch.Generator().manual_seed(seed)
    t_in = torch.sort(torch.rand(b, n_in, k_in, generator=g, dtype=D) * 20e-3, dim=-1).values
    t_in[0, 0, -1] = math.inf  # a padded (missing) input spike
    w = (torch.rand(n_out, n_in, generator=g, dtype=D) * 1.2 - 0.2) * scale
    return t_in, w


def _fd(fn, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Central differences of the scalar fn at every finite entry of x."""
    grad = torch.zeros_like(x)
    flat, gflat = x.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        if not math.isfinite(flat[i].item()):
            continue
        old = flat[i].item()
        flat[i] = old + eps
        up = fn()
        flat[i] = old - eps
        down = fn()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def _check_against_fd(t_in, w, *, w_rec=None, min_spikes=2, **kw):
    times = simulate(t_in, w, weight_rec=w_rec, **kw)
    fired = torch.isfinite(times)
    assert int(fired.sum(-1).max()) >= min_spikes, "the test needs neurons with several spikes"
    coef = torch.linspace(0.5, 1.5, fired.numel(), dtype=D).view_as(times)  # a generic linear read-out

    def objective() -> float:
        t = simulate(t_in, w, weight_rec=w_rec, **kw)
        assert torch.equal(torch.isfinite(t), fired), "a perturbation changed the spike count; pick another seed"
        return float((coef * torch.where(fired, t, torch.zeros_like(t))).sum())

    params = [p.clone().requires_grad_(True) for p in (t_in, w)] + ([w_rec.clone().requires_grad_(True)]
                                                                    if w_rec is not None else [])
    kw_exact = {k: v for k, v in kw.items() if k not in ("max_spikes", "t_max")}
    t = exact_spike_times(times, params[0], params[1], weight_rec=params[2] if w_rec is not None else None,
                          **kw_exact)
    assert torch.equal(torch.isfinite(t), fired) and torch.equal(t[fired], times[fired])  # value = engine's
    grads = torch.autograd.grad((coef * torch.where(fired, t, torch.zeros_like(t))).sum(), params)
    for p, g in zip((t_in, w, w_rec), grads, strict=False):
        fd = _fd(objective, p, 1e-7 if p is t_in else 1e-7 * float(w.abs().max()))
        finite = torch.isfinite(p)
        err = (g[finite] - fd[finite]).norm() / fd[finite].norm()
        assert err < 1e-4, f"relative error {err:.2e}"
        assert torch.isfinite(g).all() and (g[~finite] == 0).all()
    return times


@pytest.mark.parametrize("tau_syn", [5e-3, 10e-3])  # tau_syn != tau_mem, and == tau_mem (Fast & Deep)
def test_multi_spike_feedforward_equals_finite_differences(tau_syn):
    t_in, w = _setup(0, scale=0.12 if tau_syn == 5e-3 else 0.1)
    _check_against_fd(t_in, w, tau_mem=10e-3, tau_syn=tau_syn, v_th=1.0, max_spikes=4, t_max=60e-3)


def test_refractory_equals_finite_differences():
    t_in, w = _setup(1, scale=0.15)
    _check_against_fd(t_in, w, tau_mem=10e-3, tau_syn=5e-3, v_th=1.0, t_ref=1.5e-3, max_spikes=4, t_max=60e-3)


def test_recurrent_equals_finite_differences():
    t_in, w = _setup(2, scale=0.12)
    g = torch.Generator().manual_seed(7)
    w_rec = (torch.rand(3, 3, generator=g, dtype=D) - 0.5) * 0.05
    _check_against_fd(t_in, w, w_rec=w_rec, tau_mem=10e-3, tau_syn=5e-3, v_th=1.0, max_spikes=3, t_max=60e-3)


def test_missing_spikes_and_errors():
    t_in, w = _setup(3, scale=0.002)  # too weak to fire
    times = simulate(t_in, w, tau_mem=10e-3, tau_syn=5e-3, max_spikes=2)
    assert not torch.isfinite(times).any()
    w = w.clone().requires_grad_(True)
    t = exact_spike_times(times, t_in, w, tau_mem=10e-3, tau_syn=5e-3)
    assert torch.isinf(t).all()
    (g,) = torch.autograd.grad(torch.where(torch.isfinite(t), t, 0 * t).sum(), w, allow_unused=True)
    assert g is None or (g == 0).all()
    with pytest.raises(SpikeforgeError, match="tau_syn > 0"):
        exact_spike_times(times, t_in, w, tau_mem=10e-3, tau_syn=0.0)
    with pytest.raises(SpikeforgeError, match="shapes do not fit"):
        exact_spike_times(times, t_in, w[:, :3], tau_mem=10e-3, tau_syn=5e-3)


@pytest.mark.parametrize("recurrent", [False, True])
def test_exact_equals_eventprop_through_two_layers(recurrent):
    """Two chained EventLIF layers, several spikes per hidden neuron: the exact rebuild and EventProp give the same
    gradients for every weight and for the input spike times."""
    from spikeforge.nn.events import EventLIF

    t_in, _ = _setup(4, b=3, n_in=5, k_in=2)
    grads = {}
    for method in ("exact", "eventprop"):
        g = torch.Generator().manual_seed(11)
        kw = dict(tau_mem=10e-3, tau_syn=5e-3, t_max=80e-3, generator=g, gradient=method)
        hidden = EventLIF(5, 4, max_spikes=3, recurrent=recurrent, init_scale=6.0, **kw).double()
        out = EventLIF(4, 2, max_spikes=2, init_scale=3.0, **kw).double()
        x = t_in.clone().requires_grad_(True)
        h = hidden(x)
        y = out(h)
        assert int(torch.isfinite(h).sum(-1).max()) >= 2 and torch.isfinite(y).any()
        coef = torch.linspace(0.5, 1.5, y.numel(), dtype=D).view_as(y)
        loss = (coef * torch.where(torch.isfinite(y), y, torch.zeros_like(y))).sum()
        params = [x, *hidden.parameters(), *out.parameters()]
        grads[method] = (y.detach(), torch.autograd.grad(loss, params))
    (y_a, g_a), (y_b, g_b) = grads["exact"], grads["eventprop"]
    assert torch.equal(y_a, y_b)
    for a, b in zip(g_a, g_b, strict=True):
        assert torch.isfinite(a).all() and a.abs().sum() > 0
        assert (a - b).norm() / b.norm() < 1e-6, f"{(a - b).norm() / b.norm():.2e}"
