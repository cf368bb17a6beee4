"""Tests of spikeforge.encode: rate, latency and delta codings, and the read-outs."""

from __future__ import annotations

import math

import pytest
import torch

from spikeforge.core.checks import SpikeforgeError
from spikeforge.encode import (
    READOUTS,
    ConstantCurrent,
    Delta,
    FirstSpikeTime,
    Latency,
    MaxMembrane,
    MeanMembrane,
    Poisson,
    SpikeCount,
    constant_current,
    decode,
    delta,
    first_spike_time,
    latency,
    latency_times,
    max_membrane,
    mean_membrane,
    poisson,
    spike_count,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# rate.py
# ----------------------------------------------------------------------------------------------


def test_poisson_shape_dtype_and_binary() -> None:
    x = torch.rand(3, 2, 5, generator=_gen(0))
    z = poisson(x, 7, generator=_gen(1))
    assert z.shape == (7, 3, 2, 5)
    assert z.dtype == x.dtype
    assert set(z.unique().tolist()) <= {0.0, 1.0}


def test_poisson_empirical_rate() -> None:
    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    x = p.expand(256, 5)
    z = poisson(x, 100, generator=_gen(2))
    rate = z.mean(dim=(0, 1))
    assert torch.allclose(rate, p, atol=0.01)
    assert rate[0] == 0.0 and rate[-1] == 1.0


def test_poisson_gain_clamps_to_one() -> None:
    x = torch.tensor([[0.0, 0.1, 0.4, 1.0]])
    z = poisson(x, 50, gain=5.0, generator=_gen(3))
    assert torch.equal(z.mean(dim=(0, 1)), torch.tensor([0.0, z[:, 0, 1].mean().item(), 1.0, 1.0]))
    assert 0.35 < z[:, 0, 1].mean().item() < 0.65  # p = 0.5


def test_poisson_reproducible_with_seeded_generator() -> None:
    x = torch.full((4, 10), 0.3)
    a = poisson(x, 20, generator=_gen(7))
    b = poisson(x, 20, generator=_gen(7))
    c = poisson(x, 20, generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    module = Poisson(20, generator=_gen(7))
    assert torch.equal(module(x), a)


def test_poisson_integer_input_is_converted() -> None:
    x = torch.tensor([[0, 1]], dtype=torch.int64)
    z = poisson(x, 5, generator=_gen(0))
    assert z.is_floating_point()
    assert torch.equal(z[:, 0, 1], torch.ones(5))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"x": torch.tensor(0.5), "steps": 3}, "x"),
        ({"x": torch.tensor([[float("nan")]]), "steps": 3}, "x"),
        ({"x": torch.tensor([[float("inf")]]), "steps": 3}, "x"),
        ({"x": torch.tensor([[-0.1]]), "steps": 3}, "x"),
        ({"x": torch.tensor([[0.1]]), "steps": -1}, "steps"),
        ({"x": torch.tensor([[0.1]]), "steps": 2.0}, "steps"),
        ({"x": torch.tensor([[0.1]]), "steps": 3, "gain": -1.0}, "gain"),
        ({"x": torch.tensor([[0.1]]), "steps": 3, "generator": 1}, "generator"),
    ],
)
def test_poisson_errors_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(SpikeforgeError, match=rf"^{name} must"):
        poisson(**kwargs)


def test_constant_current_repeats_and_passes_gradients() -> None:
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    c = constant_current(x, 4)
    assert c.shape == (4, 2, 2)
    assert all(torch.equal(c[t], x.detach()) for t in range(4))
    c.sum().backward()
    assert torch.equal(x.grad, torch.full((2, 2), 4.0))
    assert torch.equal(ConstantCurrent(4)(x), c)


def test_constant_current_errors() -> None:
    with pytest.raises(SpikeforgeError, match="^steps must"):
        constant_current(torch.ones(2, 3), 0)
    with pytest.raises(SpikeforgeError, match="^x must"):
        constant_current(torch.tensor([[1.0, float("nan")]]), 3)
    with pytest.raises(SpikeforgeError, match="^x must have rank"):
        constant_current(torch.tensor(1.0), 3)


# ----------------------------------------------------------------------------------------------
# latency.py
# ----------------------------------------------------------------------------------------------


def _spike_steps(z: torch.Tensor) -> list[int | None]:
    """Step of the single spike of each element of a [T, 1, N] train, None where silent."""
    assert bool((z.sum(0) <= 1).all()), "latency must fire at most once per input"
    out: list[int | None] = []
    for n in range(z.shape[-1]):
        idx = z[:, 0, n].nonzero()
        out.append(int(idx[0]) if len(idx) else None)
    return out


def test_latency_linear_exact_positions() -> None:
    x = torch.tensor([[1.0, 0.75, 0.5, 0.0, 0.9]])
    z = latency(x, 11)
    assert z.shape == (11, 1, 5)
    # t = 10 (1 - x), rounded half up: 0, 2.5 -> 3, 5, 10, 1
    assert _spike_steps(z) == [0, 3, 5, 10, 1]
    assert torch.equal(Latency(11)(x), z)


def test_latency_linear_window_and_threshold() -> None:
    x = torch.tensor([[1.0, 0.5, 0.0]])
    assert _spike_steps(latency(x, 10, t_min=2, t_max=6)) == [2, 4, 6]
    y = torch.tensor([[1.0, 0.75, 0.5, 0.25]])
    # normalize=True stretches [theta, 1] over the window: t = 10 (1 - x) / 0.5
    assert _spike_steps(latency(y, 11, threshold=0.5)) == [0, 5, 10, None]
    # normalize=False keeps t = 10 (1 - x) and only silences x < theta
    assert _spike_steps(latency(y, 11, threshold=0.5, normalize=False)) == [0, 3, 5, None]


def test_latency_log_exact_positions() -> None:
    # raw RC time: t = 10 ln(x / (x - 0.5)): 6.93 -> 7, 10.99 -> 11, x <= 0.5 silent,
    # x = 0.55 -> 23.98 > t_max = 19 -> silent
    x = torch.tensor([[1.0, 0.75, 0.5, 0.3, 0.55]])
    z = latency(x, 20, mode="log", threshold=0.5, tau=10.0, normalize=False)
    assert _spike_steps(z) == [7, 11, None, None, None]
    # normalized: x = 1 at t_min, midpoint x = 0.75 mid-window, x = 0.9 -> 1.45 -> 1,
    # x = 0.6 -> 13.5 > 10 silent
    y = torch.tensor([[1.0, 0.75, 0.9, 0.6, 0.5]])
    z = latency(y, 11, mode="log", threshold=0.5)
    assert _spike_steps(z) == [0, 5, 1, None, None]


def test_latency_times_continuous() -> None:
    x = torch.tensor([[1.0, 0.75, 0.25, 0.0]], dtype=torch.float64)
    t = latency_times(x, t_min=1.0, t_max=3.0, threshold=0.25)
    expected = torch.tensor([[1.0, 1.0 + 0.25 / 0.75 * 2.0, 3.0, math.inf]], dtype=torch.float64)
    assert torch.allclose(t, expected)
    assert t.dtype == torch.float64
    theta, tau = 0.2, 3.0
    t = latency_times(x, t_min=0.0, t_max=100.0, mode="log", threshold=theta, tau=tau,
                      normalize=False)
    rc = [tau * math.log(v / (v - theta)) for v in (1.0, 0.75, 0.25)]
    assert torch.allclose(t[0, :3], torch.tensor(rc, dtype=torch.float64))
    assert math.isinf(t[0, 3].item())


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: latency(torch.tensor([[1.5]]), 5), "x"),
        (lambda: latency(torch.tensor([[-0.5]]), 5), "x"),
        (lambda: latency(torch.tensor([[float("nan")]]), 5), "x"),
        (lambda: latency(torch.tensor(0.5), 5), "x"),
        (lambda: latency(torch.tensor([[0.5]]), -2), "steps"),
        (lambda: latency(torch.tensor([[0.5]]), 5, t_max=5), "t_max"),
        (lambda: latency(torch.tensor([[0.5]]), 5, t_min=-1), "t_min"),
        (lambda: latency(torch.tensor([[0.5]]), 5, mode="exp"), "mode"),
        (lambda: latency(torch.tensor([[0.5]]), 5, mode="log"), "threshold"),
        (lambda: latency(torch.tensor([[0.5]]), 5, threshold=1.0), "threshold"),
        (lambda: latency(torch.tensor([[0.5]]), 5, mode="log", threshold=0.1, tau=0), "tau"),
        (lambda: latency_times(torch.tensor([[0.5]]), t_min=2.0, t_max=1.0), "t_max"),
        (lambda: Latency(5, mode="log"), "threshold"),
    ],
)
def test_latency_errors_name_the_argument(call, name: str) -> None:
    with pytest.raises(SpikeforgeError, match=rf"^{name} must"):
        call()


# ----------------------------------------------------------------------------------------------
# delta.py
# ----------------------------------------------------------------------------------------------


def _ramp() -> torch.Tensor:
    """Hand-made [T=8, B=1, C=2] series with exactly representable values."""
    up = [0.0, 1.0, 2.0, 2.0, 4.5, 4.5, 4.5, 1.0]
    down = [0.0, -0.5, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0]
    return torch.tensor([up, down]).T.reshape(8, 1, 2)


def test_delta_golden_spikes() -> None:
    threshold = torch.tensor([1.0, 0.5])
    z, ref = delta(_ramp(), threshold=threshold)
    assert z.shape == (8, 1, 2, 2)
    # channel 0, threshold 1: jump 2 -> 4.5 is sent as a burst of one spike per step
    assert z[:, 0, 0, 0].tolist() == [0, 1, 1, 0, 1, 1, 0, 0]  # ON
    assert z[:, 0, 0, 1].tolist() == [0, 0, 0, 0, 0, 0, 0, 1]  # OFF
    # channel 1, threshold 0.5: two OFF steps
    assert z[:, 0, 1, 0].tolist() == [0] * 8
    assert z[:, 0, 1, 1].tolist() == [0, 1, 1, 0, 0, 0, 0, 0]
    assert ref.tolist() == [[3.0, -1.0]]


def test_delta_on_only_matches_on_channel() -> None:
    z, ref = delta(_ramp(), threshold=torch.tensor([1.0, 0.5]))
    on, ref_on = delta(_ramp(), threshold=torch.tensor([1.0, 0.5]), off_spikes=False)
    assert on.shape == (8, 1, 2)
    assert torch.equal(on, z[..., 0])
    assert torch.equal(ref_on, ref)


def test_delta_initial_state() -> None:
    s = torch.tensor([[[3.0]], [[3.0]]])
    z, ref = delta(s, threshold=1.0, state=torch.zeros(1, 1))
    assert z[:, 0, 0, 0].tolist() == [1.0, 1.0]
    assert ref.tolist() == [[2.0]]


@pytest.mark.parametrize("off_spikes", [True, False])
def test_delta_streaming_in_chunks_equals_one_call(off_spikes: bool) -> None:
    signal = torch.cumsum(torch.randn(40, 3, 4, generator=_gen(5)), dim=0)
    whole, ref_whole = delta(signal, threshold=0.7, off_spikes=off_spikes)
    parts, state = [], None
    for chunk in torch.split(signal, [1, 6, 13, 20]):
        z, state = delta(chunk, threshold=0.7, off_spikes=off_spikes, state=state)
        parts.append(z)
    assert torch.equal(torch.cat(parts), whole)
    assert torch.equal(state, ref_whole)
    assert whole.sum() > 0
    module = Delta(0.7, off_spikes=off_spikes)
    first, st = module(signal[:25])
    rest, st = module(signal[25:], st)
    assert torch.equal(torch.cat([first, rest]), whole)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"signal": torch.ones(5), "threshold": 1.0}, "signal"),
        ({"signal": torch.tensor([[1.0], [float("nan")]]), "threshold": 1.0}, "signal"),
        ({"signal": torch.ones(5, 2), "threshold": 0.0}, "threshold"),
        ({"signal": torch.ones(5, 2), "threshold": torch.ones(3)}, "threshold"),
        ({"signal": torch.ones(5, 2), "threshold": 1.0, "state": torch.zeros(3)}, "state"),
    ],
)
def test_delta_errors_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(SpikeforgeError, match=rf"^{name} must"):
        delta(**kwargs)


# ----------------------------------------------------------------------------------------------
# readout.py
# ----------------------------------------------------------------------------------------------


def _spikes() -> torch.Tensor:
    """[T=4, B=1, C=3]: neuron 0 fires at 1 and 3, neuron 1 never, neuron 2 at 0 and 1."""
    return torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]).T[:, None]


def test_membrane_and_count_readouts() -> None:
    z = _spikes()
    assert spike_count(z).tolist() == [[2.0, 0.0, 2.0]]
    v = torch.tensor([[[0.0, -1.0], [2.0, -3.0]], [[1.0, -2.0], [4.0, 5.0]]])  # [T=2, B=2, C=2]
    assert max_membrane(v).tolist() == [[1.0, -1.0], [4.0, 5.0]]
    assert mean_membrane(v).tolist() == [[0.5, -1.5], [3.0, 1.0]]
    assert torch.equal(SpikeCount()(z), spike_count(z))
    assert torch.equal(MaxMembrane()(v), max_membrane(v))
    assert torch.equal(MeanMembrane()(v), mean_membrane(v))


def test_first_spike_time_hard_values() -> None:
    z = _spikes()
    assert first_spike_time(z).tolist() == [[1.0, 4.0, 0.0]]
    assert first_spike_time(z, dt=0.5).tolist() == [[0.5, 2.0, 0.0]]
    assert first_spike_time(z, no_spike=-1.0).tolist() == [[1.0, -1.0, 0.0]]
    assert torch.equal(FirstSpikeTime(dt=0.5)(z), first_spike_time(z, dt=0.5))
    # random binary trains: equal to the hard argmax of the first spike
    r = (torch.rand(12, 5, 7, generator=_gen(4)) < 0.15).float()
    fired = r.any(dim=0)
    hard = torch.where(fired, r.argmax(dim=0).float(), torch.full((5, 7), 12.0)) * 0.1
    assert torch.allclose(first_spike_time(r, dt=0.1), hard)


def test_first_spike_time_gradient_matches_hand_derivation() -> None:
    z = _spikes().requires_grad_(True)
    first_spike_time(z).sum().backward()
    # d/dz_s = s - t* for s < t*; at t*: t* - (next spike time or T); zero after
    expected = torch.tensor([[-1.0, -2.0, 0.0, 0.0], [-4.0, -3.0, -2.0, -1.0], [-1.0, 0.0, 0.0, 0.0]])
    assert torch.equal(z.grad[:, 0].T, expected)


def test_first_spike_time_surrogate_gradients_flow() -> None:
    v = torch.randn(10, 4, 3, generator=_gen(6), requires_grad=True)
    soft = torch.sigmoid(4.0 * v)
    z = (v > 0).float() + soft - soft.detach()  # straight-through surrogate spike
    t = first_spike_time(z)
    hard = (v > 0).float()
    assert torch.allclose(t, first_spike_time(hard), atol=1e-5)
    t.sum().backward()
    assert v.grad is not None and bool((v.grad != 0).any())
    assert torch.isfinite(v.grad).all()


def test_decode_names() -> None:
    assert decode("spike_count") is spike_count
    assert decode("max_membrane") is max_membrane
    assert decode("mean_membrane") is mean_membrane
    assert decode("first_spike_time") is first_spike_time
    assert set(READOUTS) == {"spike_count", "max_membrane", "mean_membrane", "first_spike_time"}
    with pytest.raises(SpikeforgeError, match="^name must be one of .*spike_count.*'rate'"):
        decode("rate")


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: spike_count(torch.ones(4)), "z"),
        (lambda: max_membrane(torch.ones(4)), "v"),
        (lambda: mean_membrane(torch.ones(4, 2, dtype=torch.int64)), "v"),
        (lambda: first_spike_time(torch.ones(4)), "z"),
        (lambda: first_spike_time(torch.tensor([[float("nan")]])), "z"),
        (lambda: first_spike_time(torch.ones(4, 2), dt=0.0), "dt"),
        (lambda: first_spike_time(torch.ones(4, 2), no_spike=math.inf), "no_spike"),
    ],
)
def test_readout_errors_name_the_argument(call, name: str) -> None:
    with pytest.raises(SpikeforgeError, match=rf"^{name} must"):
        call()
