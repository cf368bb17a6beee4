"""Spike function and surrogate gradients (spikeforge.core.surrogate)."""

from __future__ import annotations

import math

import pytest
import torch

from spikeforge.core.checks import SpikeforgeError
from spikeforge.core.surrogate import SURROGATES, Surrogate, heaviside, surrogate

SCALES = (1.0, 7.5)
# Points where a primitive is not differentiable: |s x| in {0, 0.5, 1} (triangle, boxcar, |x|).
KINKS = (0.0, 0.5, 1.0)


def sample_points(scale: float, n: int = 200, seed: int = 0) -> torch.Tensor:
    """~n float64 points spread over the support and the tails, away from the kinks."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(3 * n, generator=g, dtype=torch.float64) * 2 - 1) * 2.5 / scale
    sx = (scale * x).abs()
    ok = torch.ones_like(x, dtype=torch.bool)
    for k in KINKS:
        ok &= (sx - k).abs() > 1e-3
    x = x[ok][:n]
    assert x.numel() == n
    return x


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_derivative_equals_autograd_of_primitive(name, scale):
    sg = Surrogate(name, scale)
    x = sample_points(scale).requires_grad_(True)
    (auto,) = torch.autograd.grad(sg.primitive(x).sum(), x)
    hand = sg.derivative(x.detach())
    assert hand.dtype == torch.float64 and hand.shape == x.shape
    torch.testing.assert_close(hand, auto, rtol=1e-12, atol=1e-12)
    # the table entry and the method are the same function
    torch.testing.assert_close(SURROGATES[name][1](x.detach(), scale), hand, rtol=0, atol=0)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", sorted(set(SURROGATES) - {"straight_through"}))
def test_primitive_is_a_smooth_step(name, scale):
    """Primitive goes from ~0 to ~1 and the derivative is >= 0 and integrates to ~1."""
    sg = Surrogate(name, scale)
    far = torch.tensor([-1e4, 1e4], dtype=torch.float64) / scale
    lo, hi = sg.primitive(far).tolist()
    assert lo < 1e-3 and hi > 1 - 1e-3
    assert abs(float(sg.primitive(torch.zeros(1, dtype=torch.float64))) - 0.5) < 1e-15
    x = torch.linspace(-200.0 / scale, 200.0 / scale, 400001, dtype=torch.float64)
    d = sg.derivative(x)
    assert bool((d >= 0).all())
    assert abs(float(torch.trapezoid(d, x)) - 1.0) < 1e-2


@pytest.mark.parametrize("scale", SCALES)
def test_derivative_peaks_by_hand(scale):
    """Derivatives at x = 0 from the formulas in the module docstring."""
    zero = torch.zeros(1, dtype=torch.float64)
    want = {
        "fast_sigmoid": scale / 2,
        "superspike": scale / 2,
        "arctan": scale / 2,
        "sigmoid": scale / 4,
        "triangle": scale,
        "boxcar": scale,
        "straight_through": 1.0,
    }
    assert set(want) == set(SURROGATES)
    for name, value in want.items():
        assert float(Surrogate(name, scale).derivative(zero)) == pytest.approx(value, rel=1e-14), name
    # one point off the peak, by hand: x = 1/(2s)
    x = torch.full((1,), 0.5 / scale, dtype=torch.float64)
    assert float(Surrogate("fast_sigmoid", scale).derivative(x)) == pytest.approx(scale / 2 / 1.5**2)
    assert float(Surrogate("arctan", scale).derivative(x)) == pytest.approx(
        scale / 2 / (1 + (math.pi / 4) ** 2))
    assert float(Surrogate("triangle", scale).derivative(x)) == pytest.approx(scale / 2)
    s = 1 / (1 + math.exp(-0.5))
    assert float(Surrogate("sigmoid", scale).derivative(x)) == pytest.approx(scale * s * (1 - s))
    # boxcar support is |x| < 1/(2s): just inside and just outside
    inside = torch.tensor([0.49 / scale, -0.49 / scale], dtype=torch.float64)
    outside = torch.tensor([0.51 / scale, -0.51 / scale], dtype=torch.float64)
    assert Surrogate("boxcar", scale).derivative(inside).tolist() == [scale, scale]
    assert Surrogate("boxcar", scale).derivative(outside).tolist() == [0.0, 0.0]
    far = torch.tensor([1.01 / scale, -1.01 / scale], dtype=torch.float64)
    assert Surrogate("triangle", scale).derivative(far).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_spike_forward_is_strict_heaviside(name, dtype):
    x = torch.tensor([-2.0, -1e-30, 0.0, -0.0, 1e-30, 1e-7, 3.0], dtype=dtype)
    z = Surrogate(name, 3.0)(x)
    assert z.dtype == dtype and z.shape == x.shape
    assert z.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert heaviside(x).tolist() == z.tolist()


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_spike_backward_is_grad_times_derivative(name, scale):
    sg = Surrogate(name, scale)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(4, 50, generator=g, dtype=torch.float64) / scale).requires_grad_(True)
    upstream = torch.randn(4, 50, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(sg(x), x, upstream)
    want = upstream * sg.derivative(x.detach())
    torch.testing.assert_close(grad, want, rtol=1e-15, atol=0)
    assert bool((grad != 0).any())


def test_spike_gradient_through_a_sum():
    sg = Surrogate("arctan", 2.0)
    x = torch.tensor([0.3, -0.1], dtype=torch.float64, requires_grad=True)
    (3.0 * sg(x)).sum().backward()
    want = [3.0 * 1.0 / (1 + (math.pi * 2.0 * v / 2) ** 2) for v in (0.3, -0.1)]  # s/2 = 1
    assert x.grad.tolist() == pytest.approx(want, rel=1e-14)


def test_factory_forms():
    assert surrogate() == Surrogate("fast_sigmoid", 10.0)
    assert surrogate(None, 4.0) == Surrogate("fast_sigmoid", 4.0)
    assert surrogate("arctan") == Surrogate("arctan", 10.0)
    assert surrogate("arctan", 2.0) == Surrogate("arctan", 2.0)
    assert surrogate({"name": "sigmoid", "scale": 3.0}) == Surrogate("sigmoid", 3.0)
    assert surrogate({"name": "sigmoid"}) == Surrogate("sigmoid", 10.0)
    sg = Surrogate("triangle", 2.0)
    assert surrogate(sg) is sg


def test_factory_scale_overrides_every_form():
    assert surrogate(Surrogate("triangle", 2.0), 5.0) == Surrogate("triangle", 5.0)
    assert surrogate({"name": "boxcar", "scale": 2.0}, 5.0) == Surrogate("boxcar", 5.0)
    assert surrogate({"name": "boxcar"}, 5.0) == Surrogate("boxcar", 5.0)


def test_unknown_name_names_the_argument():
    with pytest.raises(SpikeforgeError, match=r"surrogate name must be one of .*'arctan'.*got 'nope'"):
        Surrogate("nope")
    with pytest.raises(SpikeforgeError, match="got 'relu'"):
        surrogate("relu")


@pytest.mark.parametrize("bad", [0.0, -1.0, -0.5, float("inf"), float("nan")])
def test_non_positive_scale_names_the_argument(bad):
    with pytest.raises(SpikeforgeError, match=r"surrogate scale must be positive.*got"):
        Surrogate("arctan", bad)
    with pytest.raises(SpikeforgeError, match=r"surrogate scale"):
        surrogate("sigmoid", bad)


def test_scale_error_shows_the_value():
    with pytest.raises(SpikeforgeError, match=r"got -2\.0"):
        Surrogate("fast_sigmoid", -2.0)
    with pytest.raises(SpikeforgeError, match=r"got 0\b"):
        Surrogate("fast_sigmoid", 0)


def test_bad_spec_types():
    with pytest.raises(SpikeforgeError, match=r"unknown key\(s\) \['steepness'\]"):
        surrogate({"name": "arctan", "steepness": 2.0})
    with pytest.raises(SpikeforgeError, match="must be a name, a dict or a Surrogate, got int"):
        surrogate(3)
    with pytest.raises(SpikeforgeError, match="surrogate scale must be a positive number"):
        Surrogate("arctan", "big")  # type: ignore[arg-type]
