"""Spike-time losses and encoders: values by hand on tiny inputs, finite gradients, missing spikes."""

from __future__ import annotations

import math

import pytest
import torch

from spikeforge.core.checks import SpikeforgeError
from spikeforge.encode.spike_times import spike_times, yinyang_spike_times
from spikeforge.nn.event_readout import EventLI, membrane_on_grid
from spikeforge.sim.exact_times import psp_kernel
from spikeforge.train.time_losses import (
    first_spike_times,
    integral_cross_entropy,
    max_membrane_cross_entropy,
    spike_count_cross_entropy,
    spike_counts,
    time_weighting,
    ttfs_cross_entropy,
)

INF = math.inf


def test_ttfs_value_by_hand_and_missing_spikes():
    times = torch.tensor([[[1.0, 3.0], [2.0, INF], [INF, INF]]], requires_grad=True)  # [1, 3, 2]
    labels = torch.tensor([0])
    loss = ttfs_cross_entropy(times, labels, tau_0=0.5, t_max=4.0, alpha=0.1, tau_1=2.0)
    t = torch.tensor([1.0, 2.0, 4.0])  # the silent neuron counts as firing at t_max
    want = -math.log(math.exp(-2.0) / float(torch.exp(-t / 0.5).sum())) + 0.1 * (math.exp(0.5) - 1)
    assert loss.item() == pytest.approx(want, rel=1e-6)
    loss.sum().backward()
    g = times.grad
    assert torch.isfinite(g).all()
    assert g[0, 0, 1] == 0 and g[0, 2].abs().sum() == 0  # later spikes and missing spikes get nothing
    assert g[0, 0, 0] > 0 and g[0, 1, 0] < 0  # label earlier, other later
    # dL/dt_label = (1 - p_label)/tau_0 + alpha/tau_1 exp(t/tau_1)
    p = torch.softmax(-t / 0.5, 0)
    assert g[0, 0, 0].item() == pytest.approx(float((1 - p[0]) / 0.5 + 0.1 / 2.0 * math.exp(0.5)), rel=1e-5)


def test_ttfs_all_silent_is_finite():
    times = torch.full((2, 3, 1), INF, requires_grad=True)
    loss = ttfs_cross_entropy(times, torch.tensor([1, 2]), tau_0=1.0, t_max=2.0, alpha=0.01, tau_1=1.0)
    assert torch.allclose(loss, torch.full((2,), math.log(3) + 0.01 * (math.e**2 - 1)))
    loss.sum().backward()
    assert (times.grad == 0).all()
    assert first_spike_times(torch.tensor([[[5.0]]]), t_max=2.0).item() == 2.0  # late spikes are clipped


def test_spike_counts_value_and_straight_through_gradient():
    times = torch.tensor([[[0.1, 0.5, INF], [0.9, 1.5, INF]]], requires_grad=True)
    n = spike_counts(times, window=1.0)
    assert n.tolist() == [[2.0, 1.0]]
    n.sum().backward()
    assert times.grad.tolist() == [[[-1.0, -1.0, 0.0], [-1.0, 0.0, 0.0]]]
    loss = spike_count_cross_entropy(times, torch.tensor([1]), window=1.0, scale=2.0)
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(4) + math.exp(2))), rel=1e-6)


def test_max_membrane_and_integral_values_by_hand():
    v = torch.tensor([[[0.0, 1.0, 3.0], [2.0, 2.0, 0.0]]], requires_grad=True)
    grid = torch.tensor([0.0, 1.0, 2.0])
    y = torch.tensor([1])
    mm = max_membrane_cross_entropy(v, y, scale=1.0)
    assert mm.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(3) + math.exp(2))), rel=1e-6)
    # weighting none: trapezoid / T -> class 0: (0.5 + 2)/2 = 1.25, class 1: (2 + 1)/2 = 1.5
    ic = integral_cross_entropy(v, grid, y, weighting="none")
    assert ic.item() == pytest.approx(-math.log(math.exp(1.5) / (math.exp(1.25) + math.exp(1.5))), rel=1e-6)
    # linear weighting f = 1 - t/2 = [1, .5, 0]: class 0: (0 + .5)/2 + (.5 + 0)/2 = .5 -> /2 = .25;
    # class 1: (2 + 1)/2 + (1 + 0)/2 = 2 -> /2 = 1
    il = integral_cross_entropy(v, grid, y, weighting="linear")
    assert il.item() == pytest.approx(-math.log(math.exp(1.0) / (math.exp(0.25) + math.exp(1.0))), rel=1e-6)
    (mm + ic + il).sum().backward()
    assert torch.isfinite(v.grad).all()
    w = time_weighting(grid, "exp", t_max=2.0, tau_w=1.0)
    assert torch.allclose(w, torch.exp(-grid))
    with pytest.raises(SpikeforgeError, match="weighting"):
        time_weighting(grid, "cubic", t_max=2.0)


def test_integral_loss_keeps_gradients_where_max_loses_them():
    """A spike whose PSP peaks off the maximum still moves the integral loss (loss shaping's point)."""
    tau = 5e-3
    times = torch.tensor([[[2e-3], [20e-3]]], dtype=torch.float64, requires_grad=True)  # [1, 2 inputs, 1]
    weight = torch.tensor([[1.0, 0.01], [0.5, 0.0]], dtype=torch.float64)
    grid = torch.linspace(1e-3, 30e-3, 60, dtype=torch.float64)
    v = membrane_on_grid(times, weight, grid, tau_mem=tau, tau_syn=tau)
    max_loss = max_membrane_cross_entropy(v, torch.tensor([0]))
    g_max, = torch.autograd.grad(max_loss.sum(), times, retain_graph=True)
    assert g_max[0, 1, 0] == 0  # the late small input does not touch either maximum
    int_loss = integral_cross_entropy(v, grid, torch.tensor([0]), weighting="none")
    g_int, = torch.autograd.grad(int_loss.sum(), times)
    assert g_int[0, 1, 0] != 0 and torch.isfinite(g_int).all()


def test_membrane_on_grid_matches_kernel_sum():
    tau_m, tau_s = 10e-3, 5e-3
    times = torch.tensor([[[1e-3, 4e-3], [2e-3, INF]]], dtype=torch.float64, requires_grad=True)
    weight = torch.tensor([[0.3, -0.2]], dtype=torch.float64, requires_grad=True)
    grid = torch.tensor([0.5e-3, 3e-3, 10e-3], dtype=torch.float64)

    def k(s):
        return (math.exp(-s / tau_s) - math.exp(-s / tau_m)) / (tau_s - tau_m) if s > 0 else 0.0

    want = [0.3 * (k(t - 1e-3) + k(t - 4e-3)) - 0.2 * k(t - 2e-3) for t in grid.tolist()]
    v = membrane_on_grid(times, weight, grid, tau_mem=tau_m, tau_syn=tau_s)
    assert torch.allclose(v[0, 0], torch.tensor(want, dtype=torch.float64))
    v.sum().backward()
    assert torch.isfinite(times.grad).all() and times.grad[0, 1, 1] == 0
    # equal time constants: s e^{-s/tau}/tau^2; tau_syn = 0: e^{-s/tau}/tau
    s = torch.tensor([2e-3], dtype=torch.float64)
    assert psp_kernel(s, tau_mem=tau_m, tau_syn=tau_m).item() == pytest.approx(2e-3 * math.exp(-0.2) / tau_m**2)
    assert psp_kernel(s, tau_mem=tau_m, tau_syn=0.0).item() == pytest.approx(math.exp(-0.2) / tau_m)
    li = EventLI(2, 3, tau_mem=tau_m, tau_syn=tau_s, t_max=20e-3, steps=40, generator=torch.Generator().manual_seed(0))
    assert li(times.detach().float()).shape == (1, 3, 40)


def test_spike_time_encoders():
    x = torch.tensor([[0.0, 1.0, 0.5, 0.25]])
    t = yinyang_spike_times(x, tau_syn=2.0)
    assert t.shape == (1, 5, 1)
    assert torch.allclose(t[0, :, 0], torch.tensor([0.3, 4.0, 0.15 * 2 + 1.85, 0.3 + 1.85 * 0.5, 1.8]))
    img = torch.tensor([[[0.0, 1.0], [0.5, 0.05]]])  # [1, 2, 2]
    m = spike_times(img, t_min=0.0, t_max=10.0, threshold=0.1)
    assert m.shape == (1, 4, 1)
    assert m[0, 0, 0] == INF and m[0, 3, 0] == INF and m[0, 1, 0] == 0.0  # dark pixels silent, bright first
    assert m[0, 2, 0] == pytest.approx(10.0 * 0.5 / 0.9)
    with pytest.raises(SpikeforgeError, match="t_bias"):
        spike_times(x, t_min=0.0, t_max=1.0, t_bias=-1.0)


@pytest.mark.parametrize("taus", [(20e-3, 5e-3), (5e-3, 20e-3), (10e-3, 10e-3), (10e-3, 0.0), (10e-3, 9.9e-3)])
def test_event_li_separable_membrane_equals_the_direct_sum(taus):
    """EventLI's binned, separable evaluation equals evaluating K for every (spike, grid point) pair, values and
    gradients (float64), with padding, spikes between, before and after the grid points, and several per input;
    nearly equal time constants take the direct path."""
    from spikeforge.nn.event_readout import exponential_terms, membrane_on_grid, membrane_on_grid_direct

    tau_mem, tau_syn = taus
    g = torch.Generator().manual_seed(1)
    t = (torch.rand(4, 7, 3, generator=g, dtype=torch.float64) * 50e-3).sort(-1).values
    t[0, 0, 2] = math.inf
    t[1, 2, :] = math.inf
    t[2, 3, 0] = 1e-4  # before the first grid point
    t = t.requires_grad_(True)
    w = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    grid = torch.linspace(0.5e-3, 40e-3, 80, dtype=torch.float64)
    fast = membrane_on_grid(t, w, grid, tau_mem=tau_mem, tau_syn=tau_syn)
    ref = membrane_on_grid_direct(t, w, grid, tau_mem=tau_mem, tau_syn=tau_syn)
    assert (exponential_terms(tau_mem, tau_syn) is None) == (taus == (10e-3, 9.9e-3))
    assert float(ref.detach().abs().max()) > 1.0
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    up = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((fast * up).sum(), (t, w))
    want = torch.autograd.grad((ref * up).sum(), (t, w))
    for a, b in zip(got, want, strict=True):
        assert bool(torch.isfinite(a).all())
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
