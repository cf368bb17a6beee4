"""Analog neuron integration: transfer curves (Linear, Rails, Measured), mismatch, the AnalogLIF layer."""

from __future__ import annotations

import math

import pytest
import torch

from spikeforge.analog.neuron import Linear, Measured, Rails, mismatch, offset_mismatch
from spikeforge.core.checks import SpikeforgeError
from spikeforge.dynamics import analog_lif
from spikeforge.nn import LIF, AnalogLIF


def _inputs(T=60, B=3, N=8, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, N, generator=g) * scale


# (1) Linear curve, no mismatch == LIF, bit for bit


@pytest.mark.parametrize("reset", ["subtract", "value", "none"])
@pytest.mark.parametrize("refractory", [0.0, 2e-3])
def test_linear_equals_lif_exactly(reset, refractory):
    x = _inputs() * 3.0 - 0.5
    kw = dict(tau_mem=8e-3, dt=1e-3, v_th=1.0, v_leak=0.1, v_reset=-0.2, reset=reset, refractory=refractory)
    ref = LIF(**kw, engine="reference")
    z_ref, _, rec_ref = ref.trace(x)
    for layer in (AnalogLIF(**kw), AnalogLIF(**kw, curve=Linear())):
        z, _, rec = layer.trace(x)
        assert torch.equal(z, z_ref)
        assert torch.equal(rec.v, rec_ref.v)
        out, _ = layer(x)
        assert torch.equal(out, z_ref)
    assert z_ref.sum() > 0


def test_general_path_with_identity_callable_matches_lif():
    """The non-shortcut path (v + c(v, dv)) with an identity callable agrees with LIF to rounding."""
    x = _inputs()
    z_ref, _, rec_ref = LIF(reset="value", engine="reference").trace(x)
    z, _, rec = AnalogLIF(reset="value", curve=lambda v, dv: dv).trace(x)
    torch.testing.assert_close(rec.v, rec_ref.v, atol=1e-6, rtol=0)
    assert (z != z_ref).float().mean() < 0.01


# (2) Rails


def test_rails_membrane_never_crosses_rails():
    rails = Rails(-1.0, 1.5, 10.0)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(200, 4, 16, generator=g) * 50.0)  # huge inputs of both signs
    layer = AnalogLIF(curve=rails, reset="none")
    _, _, rec = layer.trace(x)
    assert rec.v.max() <= rails.v_hi and rec.v.min() >= rails.v_lo  # float32: may land on the rail, not beyond
    assert rec.v.max() > rails.v_hi - 0.05 and rec.v.min() < rails.v_lo + 0.05  # it does get pushed there
    _, _, rec64 = layer.trace(x.double() / 10)  # float64, strong drive: strictly inside
    assert rec64.v.max() < rails.v_hi and rec64.v.min() > rails.v_lo
    assert rec64.v.max() > rails.v_hi - 0.05
    # the curve alone: from anywhere inside, any increment stays inside
    v = torch.linspace(-0.999, 1.499, 101, dtype=torch.float64).repeat_interleave(41)
    dv = torch.linspace(-4.0, 4.0, 41, dtype=torch.float64).repeat(101)
    v_new = v + rails(v, dv)
    assert v_new.max() < 1.5 and v_new.min() > -1.0


def test_rails_increment_shrinks_monotonically_towards_rail():
    rails = Rails(-1.0, 1.5, 10.0)
    v = torch.linspace(-0.9, 1.49, 200, dtype=torch.float64)
    up = rails(v, torch.full_like(v, 0.3))
    assert torch.all(up[1:] < up[:-1])  # closer to v_hi: smaller upward step
    down = rails(v, torch.full_like(v, -0.3))
    assert torch.all(down[1:].abs() > down[:-1].abs())  # farther from v_lo: larger downward step
    # the small-signal gain goes to 0 at the rail
    assert rails.gain(torch.tensor([1.5]))[0] == 0 and rails.gain(torch.tensor([-1.0]), -1)[0] == 0


def test_rails_matches_linear_far_from_rails_within_documented_bound():
    rails = Rails(-10.0, 10.0, 40.0)  # w = 0.5
    w = rails.width
    v = torch.linspace(-4.0, 4.0, 81, dtype=torch.float64).repeat_interleave(21)
    dv = torch.linspace(-1.0, 1.0, 21, dtype=torch.float64).repeat(81)
    c = rails(v, dv)
    h = torch.where(dv >= 0, 10.0 - v, v + 10.0)
    d = h - dv.abs()
    bound = w * torch.exp(-d / w) / (1 - torch.exp(-h / w))
    assert torch.all((c - dv).abs() <= bound + 1e-12)
    assert (c - dv).abs().max() < 1e-4  # D >= 5 = 10 w here
    # and a whole neuron away from the rails spikes like the linear one
    x = _inputs(scale=1.5, N=16).double()
    z_lin, _ = LIF(engine="reference")(x)
    z, _ = AnalogLIF(curve=rails)(x)
    assert (z != z_lin).float().mean() < 0.01


def test_rails_compression_reduces_firing_near_rail():
    x = torch.full((100, 1, 1), 1.4)
    z_lin, _ = LIF(engine="reference", v_th=1.0)(x)
    z, _ = AnalogLIF(curve=Rails(-1.0, 1.2, 5.0), v_th=1.0)(x)
    assert 0 < z.sum() < z_lin.sum()


def test_rails_membrane_beyond_rail_not_pushed_further():
    rails = Rails(0.0, 1.0, 10.0)
    v = torch.tensor([-0.5, 1.5])
    out = rails(v, torch.tensor([-1.0, 1.0]))
    assert torch.equal(out, torch.zeros(2))
    back = rails(v, torch.tensor([0.2, -0.2]))
    assert back[0] > 0 and back[1] < 0


# (3) Measured


def test_measured_flat_table_equals_linear():
    x = _inputs()
    curve = Measured([-1.0, 0.0, 2.0], [1.0, 1.0, 1.0])
    z_ref, _, rec_ref = LIF(engine="reference").trace(x)
    z, _, rec = AnalogLIF(curve=curve).trace(x)
    torch.testing.assert_close(rec.v, rec_ref.v, atol=1e-6, rtol=0)
    assert (z != z_ref).float().mean() < 0.01


def test_measured_gain_region_scales_increment_exactly():
    curve = Measured([0.0, 0.5, 0.6, 2.0], [1.0, 1.0, 0.25, 0.25])
    dv = torch.tensor([0.1, -0.3, 0.2, 0.2, 0.2], dtype=torch.float64)
    v = torch.tensor([0.2, 0.3, 0.8, 5.0, 0.55], dtype=torch.float64)
    out = curve(v, dv)
    expected = torch.tensor([0.1, -0.3, 0.05, 0.05, 0.2 * 0.625], dtype=torch.float64)
    torch.testing.assert_close(out, expected, atol=1e-15, rtol=0)
    # in a neuron: the step from a membrane in the low-gain region is exactly 0.25 of the linear one
    p = analog_lif.make_params(tau_mem=10e-3, v_th=5.0, v_leak=0.0, v_reset=0.0, dt=1e-3, curve=curve)
    s = analog_lif.AnalogLIFState(torch.full((1, 3), 1.0, dtype=torch.float64))
    xin = torch.tensor([[3.0, 0.0, -2.0]], dtype=torch.float64)
    _, s_new = analog_lif.step(LIF().fire_spec, p, s, xin)
    lin = analog_lif.make_params(tau_mem=10e-3, v_th=5.0, v_leak=0.0, v_reset=0.0, dt=1e-3)
    _, s_lin = analog_lif.step(LIF().fire_spec, lin, s, xin)
    torch.testing.assert_close(s_new.v - s.v, 0.25 * (s_lin.v - s.v), atol=1e-15, rtol=0)


# (4) Mismatch


def test_mismatch_statistics_and_reproducibility():
    g = mismatch(20000, 0.1, torch.Generator().manual_seed(3))
    assert g.shape == (20000,)
    assert abs(g.mean().item() - 1.0) < 0.005  # 5 standard errors of the mean (0.1 / sqrt(20000) = 7e-4)
    assert abs(g.std().item() / g.mean().item() - 0.1) < 0.005
    assert torch.equal(g, mismatch(20000, 0.1, torch.Generator().manual_seed(3)))
    assert not torch.equal(g, mismatch(20000, 0.1, torch.Generator().manual_seed(4)))
    assert torch.equal(mismatch((2, 3), 0.0), torch.ones(2, 3))
    off = offset_mismatch(20000, 0.02, torch.Generator().manual_seed(3))
    assert abs(off.std().item() - 0.02) < 0.001 and abs(off.mean().item()) < 0.001


def test_layer_mismatch_fixed_by_seed_and_higher_gain_fires_more():
    a = AnalogLIF(size=64, mismatch_sigma=0.2, seed=7)
    b = AnalogLIF(size=64, mismatch_sigma=0.2, seed=7)
    c = AnalogLIF(size=64, mismatch_sigma=0.2, seed=8)
    assert torch.equal(a.gain, b.gain) and not torch.equal(a.gain, c.gain)
    assert abs(a.gain.std().item() - 0.2) < 0.08
    x = torch.full((200, 1, 64), 1.5)
    z, _ = a(x)
    rates = z.mean(dim=(0, 1))
    order = torch.argsort(a.gain)
    low, high = rates[order[:16]].mean(), rates[order[-16:]].mean()
    assert high > low
    # rank correlation between gain and rate is strongly positive
    rg = torch.argsort(torch.argsort(a.gain)).float()
    rr = torch.argsort(torch.argsort(rates)).float()
    corr = torch.corrcoef(torch.stack([rg, rr]))[0, 1]
    assert corr > 0.8
    z_nom, _ = AnalogLIF(size=64)(x)
    assert z_nom.mean(dim=(0, 1)).std() == 0  # no mismatch: all neurons identical


def test_mismatch_with_rails_still_inside_rails():
    rails = Rails(-1.0, 1.5, 10.0)
    layer = AnalogLIF(size=32, curve=rails, mismatch_sigma=0.5, seed=1, reset="none")
    assert layer.gain.max() > 1.3
    _, _, rec = layer.trace(torch.full((100, 2, 32), 30.0))
    assert rec.v.max() <= 1.5  # float32: lands on the rail at most (clipped against rounding)
    _, _, rec64 = layer.trace(torch.full((100, 2, 32), 3.0, dtype=torch.float64))
    assert rec64.v.max() < 1.5
    v_nominal = AnalogLIF(curve=rails, reset="none").trace(torch.full((100, 2, 32), 3.0, dtype=torch.float64))[2].v
    assert (rec64.v[5] != v_nominal[5]).any()  # mismatch does change the trajectories


# (5) gradients


@pytest.mark.parametrize("curve", [Rails(-1.0, 1.5, 10.0), Measured([0.0, 1.0], [1.0, 0.5])])
def test_gradients_flow_through_nonlinear_integration(curve):
    x = _inputs(T=30, N=8).requires_grad_(True)
    layer = AnalogLIF(curve=curve, size=8, mismatch_sigma=0.1, learn=("tau_mem", "v_th"))
    z, _ = layer(x)
    z.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert layer.tau_mem.grad.abs().sum() > 0 and torch.isfinite(layer.v_th.grad).all()
    # the curve's own derivative matches finite differences
    v = torch.tensor([0.3, 1.2, -0.8], dtype=torch.float64, requires_grad=True)
    dv = torch.tensor([0.2, 0.1, -0.1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: curve(a, b), (v, dv))


# (6) errors


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Rails(1.0, 0.0), "v_lo < v_hi"),
        (lambda: Rails(0.0, 1.0, 0.0), "sharpness must be > 0"),
        (lambda: Rails(0.0, math.inf), "v_hi must be a finite number"),
        (lambda: Measured([0.0, 1.0, 2.0], [1.0, 1.0]), "as many gain_points"),
        (lambda: Measured([0.0, 0.0], [1.0, 1.0]), "strictly increasing"),
        (lambda: Measured([0.0, 1.0], [1.0, -0.5]), ">= 0"),
        (lambda: Measured([0.0], [1.0]), "at least 2 entries"),
        (lambda: mismatch(0, 0.1), "n must be a positive int"),
        (lambda: mismatch(4, -0.1), "sigma must be >= 0"),
        (lambda: mismatch(4, 1.5), "sigma must be < 1"),
        (lambda: AnalogLIF(mismatch_sigma=0.1), "needs the layer size"),
        (lambda: AnalogLIF(size=4, mismatch_sigma=-0.1), r"mismatch_sigma must be a number in \[0, 1\)"),
        (lambda: AnalogLIF(curve="rails"), "curve must be a transfer curve"),
        (lambda: AnalogLIF(seed=1.5), "seed must be an integer"),
        (lambda: analog_lif.make_params(tau_mem=1e-2, v_th=1.0, v_leak=0.0, v_reset=0.0, dt=1e-3, curve=3),
         "curve must be callable"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, match):
    with pytest.raises(SpikeforgeError, match=match):
        make()


def test_repr_and_no_fused_engine():
    layer = AnalogLIF(size=4, curve=Rails(), mismatch_sigma=0.1, seed=2)
    r = repr(layer)
    assert "Rails" in r and "mismatch_sigma=0.1" in r and "seed=2" in r
    assert layer.kernel is None
    with pytest.raises(SpikeforgeError, match="no fused kernel"):
        layer.set_engine("fused")
