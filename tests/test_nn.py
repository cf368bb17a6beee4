"""spikeforge.nn: neuron modules, memoryless layers, streaming, delays, recurrence, gradients, errors.

Expected values are written by hand or computed with plain loops here, never by the modules' own
step functions.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from spikeforge.core.checks import SpikeforgeError
from spikeforge.core.surrogate import Surrogate
from spikeforge.nn import (
    IF,
    LI,
    LIF,
    AdaptiveLIF,
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    CubaLIF,
    Delay,
    DelayedLinear,
    Dropout,
    Flatten,
    Linear,
    MaxPool1d,
    MaxPool2d,
    Recurrent,
    RecurrentState,
    Sequential,
    TimeDistributed,
)
from spikeforge.sim import scan

DT = 1e-3
CHUNKS = (3, 7, 2)  # uneven split of T = 12


def rand_seq(*shape: int, seed: int = 0, scale: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


def run_in_chunks(module, x: torch.Tensor, chunks=CHUNKS):
    assert sum(chunks) == x.shape[0]
    outs, state, t = [], None, 0
    for n in chunks:
        out, state = module(x[t:t + n], state)
        outs.append(out)
        t += n
    return torch.cat(outs), state


def assert_states_equal(a, b, *, exact: bool = True):
    """States equal field by field; ``exact=False`` allows float rounding (the LI read-out's closed form sums in
    another order when a sequence is cut into chunks)."""
    if a is None or b is None:
        assert a is None and b is None
    elif isinstance(a, torch.Tensor):
        if exact:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    else:
        assert type(a) is type(b) and len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            assert_states_equal(u, v, exact=exact)


# ---------------------------------------------------------------------------------------------------
# Streaming: chunks with carried state == one call, exactly
# ---------------------------------------------------------------------------------------------------

NEURONS = {
    "IF": lambda: IF(dt=DT, v_th=1.0),
    "IF_refractory_value": lambda: IF(dt=DT, reset="value", v_reset=-0.2, refractory=2 * DT),
    "LIF": lambda: LIF(5e-3, dt=DT),
    "LIF_refractory": lambda: LIF(5e-3, dt=DT, refractory=3 * DT, size=4),
    "CubaLIF": lambda: CubaLIF(5e-3, 2e-3, dt=DT, reset="value", v_reset=0.1),
    "AdaptiveLIF": lambda: AdaptiveLIF(5e-3, 50e-3, 0.3, dt=DT, refractory=DT),
    "LI": lambda: LI(5e-3, dt=DT, v_leak=0.1),
}


@pytest.mark.parametrize("name", sorted(NEURONS))
def test_neuron_streaming_is_exact(name):
    neuron = NEURONS[name]()
    x = rand_seq(12, 3, 4, scale=3.0) + 1.0
    whole, state = neuron(x)
    if neuron.spiking:
        assert 0 < float(whole.detach().mean()) < 1  # there are spikes and silences to get wrong
    chunked, chunked_state = run_in_chunks(neuron, x)
    # spikes and spiking membranes are bit-exact; the LI read-out's closed form is exact up to rounding
    assert_states_equal(chunked, whole, exact=neuron.spiking)
    assert_states_equal(chunked_state, state, exact=neuron.spiking)


def make_recurrent(seed: int = 0) -> Recurrent:
    torch.manual_seed(seed)
    rec = Recurrent(5, LIF(5e-3, dt=DT, size=6))
    with torch.no_grad():
        rec.input.weight.mul_(4.0)
        rec.recurrent.weight.normal_(0.0, 1.5).fill_diagonal_(0.0)
    return rec


def test_recurrent_streaming_is_exact():
    rec = make_recurrent()
    x = rand_seq(12, 3, 5, seed=1)
    whole, state = rec(x)
    assert 0 < float(whole.detach().mean()) < 1
    chunked, chunked_state = run_in_chunks(rec, x)
    assert torch.equal(chunked, whole)
    assert isinstance(chunked_state, RecurrentState)
    assert_states_equal(chunked_state, state)


def test_delay_streaming_is_exact():
    delay = Delay([0, 2, 5, 1])
    x = rand_seq(12, 3, 4)
    whole, state = delay(x)
    chunked, chunked_state = run_in_chunks(delay, x, chunks=(1, 4, 7))  # a chunk shorter than 5
    assert torch.equal(chunked, whole)
    assert torch.equal(chunked_state, state)
    assert torch.equal(state, x[-5:])


def test_delayed_linear_streaming_is_exact():
    torch.manual_seed(0)
    dl = DelayedLinear(4, 3, delays=torch.randint(0, 5, (3, 4)))
    x = rand_seq(12, 2, 4)
    whole, state = dl(x)
    chunked, chunked_state = run_in_chunks(dl, x, chunks=(2, 1, 9))
    assert torch.equal(chunked, whole)
    assert torch.equal(chunked_state, state)


def make_stack() -> Sequential:
    torch.manual_seed(0)
    net = Sequential(
        Linear(4, 8),
        LIF(5e-3, dt=DT, size=8),
        Recurrent(8, LIF(5e-3, dt=DT, size=6, reset="value")),
        nn.Linear(6, 3),  # a plain torch layer is wrapped automatically
        LI(5e-3, dt=DT, size=3),
    )
    with torch.no_grad():
        net[0].weight.mul_(5.0)
        net[2].input.weight.mul_(5.0)
    return net


def test_sequential_streaming_is_exact():
    net = make_stack()
    assert isinstance(net[3], TimeDistributed) and len(net) == 5
    x = rand_seq(12, 3, 4, seed=2)
    whole, state = net(x)
    assert whole.shape == (12, 3, 3)
    assert len(state) == 5 and state[0] is None and state[3] is None
    chunked, chunked_state = run_in_chunks(net, x)
    assert_states_equal(chunked, whole, exact=False)  # the stack ends in an LI read-out (closed form)
    assert_states_equal(chunked_state[:-1], state[:-1])  # every spiking layer's state is bit-exact
    assert_states_equal(chunked_state[-1], state[-1], exact=False)


def test_sequential_trace_records_every_layer():
    net = make_stack()
    x = rand_seq(12, 3, 4, seed=2)
    out, state, records = net.trace(x)
    torch.testing.assert_close(out, net(x)[0], rtol=1e-5, atol=1e-6)  # trace steps the LI read-out in Python
    assert len(records) == 5
    assert records[0][1] is None and records[3][1] is None
    hidden_out, hidden_rec = records[1]
    assert hidden_rec.v.shape == (12, 3, 8)
    assert torch.equal(records[-1][0], out)
    assert torch.equal(records[-1][1].v, out)  # LI outputs its membrane


# ---------------------------------------------------------------------------------------------------
# Memoryless layers equal the torch layer applied step by step
# ---------------------------------------------------------------------------------------------------


def per_step(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([module(x[t]) for t in range(x.shape[0])])


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: Linear(5, 3), (4, 2, 5)),
        (lambda: Linear(5, 3, bias=False), (4, 2, 5)),
        (lambda: Conv1d(2, 3, 3, padding=1), (4, 2, 2, 9)),
        (lambda: Conv1d(2, 3, 3, stride=2, dilation=2), (4, 2, 2, 11)),
        (lambda: Conv2d(2, 3, (3, 2), padding=1), (4, 2, 2, 6, 5)),
        (lambda: MaxPool1d(2), (4, 2, 3, 8)),
        (lambda: AvgPool1d(3, stride=2), (4, 2, 3, 9)),
        (lambda: MaxPool2d(2), (4, 2, 3, 6, 6)),
        (lambda: AvgPool2d(3, stride=1), (4, 2, 3, 5, 5)),
        (lambda: Flatten(), (4, 2, 3, 2, 5)),
    ],
)
def test_memoryless_layer_equals_torch_per_step(make, shape):
    torch.manual_seed(0)
    layer = make()
    x = rand_seq(*shape, dtype=torch.float64)
    layer.double()
    y, state = layer(x)
    assert state is None
    want = per_step(layer.module, x)
    assert y.shape == want.shape and y.shape[:2] == shape[:2]
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)


def test_linear_by_hand():
    lin = Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2.0, -1.0]]))
        lin.bias.fill_(0.5)
    x = torch.tensor([[[1.0, 3.0]], [[0.0, -2.0]]])  # [T=2, B=1, 2]
    y, _ = lin(x)
    assert y.reshape(-1).tolist() == [2.0 - 3.0 + 0.5, 2.0 + 0.5]


def test_flatten_shape():
    y, _ = Flatten()(torch.zeros(3, 2, 4, 5, 6))
    assert y.shape == (3, 2, 120)


def test_dropout_mask_is_constant_over_time():
    torch.manual_seed(0)
    drop = Dropout(0.5)
    x = torch.ones(6, 3, 400)
    y, state = drop(x)
    assert state is None
    for t in range(6):
        assert torch.equal(y[t], y[0])
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}  # kept values scaled by 1/(1-p)
    kept = float((y[0] > 0).float().mean())
    assert 0.4 < kept < 0.6
    # masks differ between samples of the batch
    assert not torch.equal(y[0, 0], y[0, 1])


def test_dropout_eval_and_edge_probabilities():
    x = rand_seq(4, 2, 7)
    drop = Dropout(0.3).eval()
    y, _ = drop(x)
    assert torch.equal(y, x)
    assert torch.equal(Dropout(0.0)(x)[0], x)
    assert torch.equal(Dropout(1.0)(x)[0], torch.zeros_like(x))


# ---------------------------------------------------------------------------------------------------
# Delays
# ---------------------------------------------------------------------------------------------------


def test_delay_per_channel_golden():
    # x[t, 0, c] = 10 * (t + 1) + c
    x = torch.tensor([[[10.0 * (t + 1) + c for c in range(3)]] for t in range(5)])
    y, state = Delay([0, 1, 3])(x)
    want = torch.tensor([
        [[10.0, 0.0, 0.0]],
        [[20.0, 11.0, 0.0]],
        [[30.0, 21.0, 0.0]],
        [[40.0, 31.0, 12.0]],
        [[50.0, 41.0, 22.0]],
    ])
    assert torch.equal(y, want)
    assert torch.equal(state, x[-3:])
    # the stored history feeds the next chunk
    y2, _ = Delay([0, 1, 3])(torch.zeros(2, 1, 3), state)
    assert y2.tolist() == [[[0.0, 51.0, 32.0]], [[0.0, 0.0, 42.0]]]


def test_delay_scalar_and_extra_dims():
    x = rand_seq(6, 2, 3, 4)
    y, _ = Delay(2)(x)
    assert torch.equal(y[:2], torch.zeros_like(y[:2]))
    assert torch.equal(y[2:], x[:-2])
    y0, _ = Delay(0)(x)
    assert torch.equal(y0, x)
    # per-channel delays act on the last dimension of [T, B, ..., C]
    y, _ = Delay([1, 0, 0, 2])(x)
    assert torch.equal(y[1:, ..., 0], x[:-1, ..., 0])
    assert torch.equal(y[..., 1], x[..., 1])
    assert torch.equal(y[2:, ..., 3], x[:-2, ..., 3])
    assert torch.equal(y[:2, ..., 3], torch.zeros(2, 2, 3))


def test_delayed_linear_equals_sum_over_synapses():
    torch.manual_seed(3)
    n_in, n_out, T, B = 3, 2, 7, 2
    delays = torch.tensor([[0, 2, 4], [1, 1, 0]])
    dl = DelayedLinear(n_in, n_out, delays=delays).double()
    x = rand_seq(T, B, n_in, dtype=torch.float64)
    y, _ = dl(x)
    w, b = dl.linear.weight.detach(), dl.linear.bias.detach()
    want = torch.zeros(T, B, n_out, dtype=torch.float64)
    for t in range(T):
        for bb in range(B):
            for j in range(n_out):
                acc = float(b[j])
                for i in range(n_in):
                    d = int(delays[j, i])
                    if t - d >= 0:
                        acc += float(w[j, i]) * float(x[t - d, bb, i])
                want[t, bb, j] = acc
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)


def test_delayed_linear_default_is_linear():
    torch.manual_seed(0)
    dl = DelayedLinear(4, 3, bias=False)
    x = rand_seq(5, 2, 4)
    y, state = dl(x)
    torch.testing.assert_close(y, x @ dl.linear.weight.t())
    assert state.shape == (0, 2, 4)


# ---------------------------------------------------------------------------------------------------
# Recurrence
# ---------------------------------------------------------------------------------------------------


def loop_recurrent_lif(x, w_in, b_in, w_rec, *, alpha, v_th):
    """Hand-written recurrent LIF (v_leak = 0, subtract reset) as a Python loop over time."""
    T, B, _ = x.shape
    H = w_in.shape[0]
    v = torch.zeros(B, H, dtype=x.dtype)
    z = torch.zeros(B, H, dtype=x.dtype)
    outs = []
    for t in range(T):
        cur = x[t] @ w_in.t() + b_in + z @ w_rec.t()
        v = alpha * v + (1 - alpha) * cur
        z = (v > v_th).to(x.dtype)
        v = v - z * v_th
        outs.append(z)
    return torch.stack(outs)


@pytest.mark.parametrize("self_connections", [False, True])
def test_recurrent_equals_python_loop(self_connections):
    torch.manual_seed(0)
    tau = 4e-3
    rec = Recurrent(3, LIF(tau, dt=DT, size=5), self_connections=self_connections).double()
    with torch.no_grad():
        rec.input.weight.mul_(6.0)
        rec.recurrent.weight.normal_(0.0, 2.0)  # diagonal nonzero on purpose
    w = rec.recurrent.weight.detach().clone()
    assert bool((torch.diagonal(w) != 0).all())
    x = rand_seq(15, 2, 3, seed=4, dtype=torch.float64)
    y, state = rec(x)
    w_rec = w if self_connections else w * (1 - torch.eye(5, dtype=torch.float64))
    want = loop_recurrent_lif(x, rec.input.weight.detach(), rec.input.bias.detach(), w_rec,
                              alpha=math.exp(-DT / tau), v_th=1.0)
    assert torch.equal(y, want)
    assert torch.equal(state.z, want[-1])
    # the recurrence matters: without it the spikes differ
    no_rec = loop_recurrent_lif(x, rec.input.weight.detach(), rec.input.bias.detach(),
                                torch.zeros(5, 5, dtype=torch.float64), alpha=math.exp(-DT / tau),
                                v_th=1.0)
    assert not torch.equal(y, no_rec)
    # and so do the self connections
    other = w * (1 - torch.eye(5, dtype=torch.float64)) if self_connections else w
    alt = loop_recurrent_lif(x, rec.input.weight.detach(), rec.input.bias.detach(), other,
                             alpha=math.exp(-DT / tau), v_th=1.0)
    assert not torch.equal(y, alt)


def test_recurrent_diagonal_zeroed_by_default():
    torch.manual_seed(0)
    rec = Recurrent(3, LIF(size=4))
    assert torch.equal(torch.diagonal(rec.recurrent.weight), torch.zeros(4))
    rec_self = Recurrent(3, LIF(size=4), self_connections=True)
    assert bool((torch.diagonal(rec_self.recurrent.weight) != 0).any())


def test_recurrent_trace_returns_neuron_record():
    rec = make_recurrent()
    x = rand_seq(6, 2, 5)
    out, state, record = rec.trace(x)
    assert torch.equal(out, rec(x)[0])
    assert record.v.shape == (6, 2, 6)
    assert torch.equal(record.v[-1], state.neuron.v)


# ---------------------------------------------------------------------------------------------------
# Parameters and gradients
# ---------------------------------------------------------------------------------------------------


def test_learned_parameters_get_gradients():
    n = LIF(5e-3, dt=DT, v_th=torch.tensor([0.8, 1.0, 1.2, 1.0]), size=4,
            learn=("tau_mem", "v_th"))
    names = {k for k, _ in n.named_parameters()}
    assert names == {"tau_mem", "v_th"}
    assert n.tau_mem.shape == (4,) and n.v_th.shape == (4,)
    assert n.v_th.tolist() == pytest.approx([0.8, 1.0, 1.2, 1.0])
    x = rand_seq(20, 8, 4, seed=5, scale=2.0) + 1.0
    out, _ = n(x)
    assert 0 < float(out.detach().mean()) < 1
    out.sum().backward()
    for p in (n.tau_mem, n.v_th):
        assert p.grad is not None and bool(torch.isfinite(p.grad).all())
        assert bool((p.grad != 0).all())
    assert bool((n.v_th.grad < 0).all())  # a higher threshold means fewer spikes


def test_single_step_input_gradient_by_hand():
    """dz/dx for one LIF step is (1 - alpha) * surrogate'(v - v_th)."""
    sg = Surrogate("fast_sigmoid", 5.0)
    n = LIF(2.0**-9, dt=2.0**-10, v_th=1.0, surrogate=sg)  # exact in float32: alpha = exp(-1/2)
    x = torch.tensor([[[1.5, 3.0, -1.0]]], dtype=torch.float64, requires_grad=True)
    z, _ = n(x)
    z.sum().backward()
    g = 1 - math.exp(-0.5)
    want = [g * 0.5 * 5.0 / (1 + 5.0 * abs(g * v - 1.0)) ** 2 for v in (1.5, 3.0, -1.0)]
    assert x.grad.reshape(-1).tolist() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("per_neuron", [False, True])
@pytest.mark.parametrize("steps", [1, 7, 8, 9, 30])
def test_li_closed_form_equals_the_step_loop(per_neuron, steps):
    """The LI read-out's whole-sequence closed form (chunks of 8 here) equals the reference step loop: membrane,
    final state and gradients with respect to the input, the initial state and learned time constants."""
    from spikeforge.dynamics import li

    torch.manual_seed(steps)
    tau = torch.tensor([2e-3, 5e-3, 20e-3], dtype=torch.float64) if per_neuron else 4e-3
    learn = ("tau_mem", "v_leak") if per_neuron else ()
    n = LI(tau, dt=DT, v_leak=0.2, size=3, learn=learn).double()
    x = rand_seq(steps, 4, 3, seed=steps, scale=2.0, dtype=torch.float64).requires_grad_(True)
    v0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    p = n.params(x)
    assert n.closed_form(p, x)
    fast, fast_state = li.run(p, li.LIState(v0), x, chunk=8)
    ref, ref_state, _ = scan.run(li.step, None, p, li.LIState(v0), x)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast_state.v, ref_state.v, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    wrt = (x, v0, *[getattr(n, name) for name in learn])
    got = torch.autograd.grad((fast * g).sum(), wrt, retain_graph=True)  # p is shared by both graphs
    want = torch.autograd.grad((ref * g).sum(), wrt)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_li_forward_uses_the_closed_form_and_reference_the_loop():
    x = rand_seq(20, 2, 3, seed=3, dtype=torch.float64).requires_grad_(True)
    n = LI(5e-3, dt=DT).double()
    fast, _ = n(x)
    n.set_engine("reference")
    ref, _ = n(x)
    assert type(ref.grad_fn).__name__ == "StackBackward0"  # one output per step of the Python loop
    assert type(fast.grad_fn).__name__ != "StackBackward0"
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(SpikeforgeError, match="engine='auto' or 'reference'"):
        n.set_engine("fused")


def test_li_tau_gradient_matches_finite_difference():
    n = LI(4e-3, dt=DT, size=2, learn=("tau_mem",)).double()
    x = rand_seq(10, 3, 2, seed=6, dtype=torch.float64)
    out, _ = n(x)
    (out ** 2).sum().backward()
    grad = n.tau_mem.grad.clone()
    eps = 1e-9
    for k in range(2):
        with torch.no_grad():
            n.tau_mem[k] += eps
            plus = float((n(x)[0] ** 2).sum())
            n.tau_mem[k] -= 2 * eps
            minus = float((n(x)[0] ** 2).sum())
            n.tau_mem[k] += eps
        assert float(grad[k]) == pytest.approx((plus - minus) / (2 * eps), rel=1e-5)


def test_per_neuron_tau_equals_separate_neurons():
    taus = [2e-3, 5e-3, 20e-3]
    x = rand_seq(15, 2, 3, seed=7, scale=2.0, dtype=torch.float64) + 1.0
    joint, _, rec = LIF(torch.tensor(taus), dt=DT, size=3).trace(x)
    for k, tau in enumerate(taus):
        alone, _, rec_k = LIF(tau, dt=DT).trace(x[..., k:k + 1])
        assert torch.equal(joint[..., k:k + 1], alone)
        torch.testing.assert_close(rec.v[..., k:k + 1], rec_k.v, rtol=0, atol=0)
    # the time constants really differ: the membranes are not all alike
    assert not torch.equal(joint[..., 0], joint[..., 2])


def test_per_neuron_tau_without_size_broadcasts():
    n = LI(torch.tensor([2.0**-10, 2.0**-8]), dt=2.0**-10)  # alpha = exp(-1), exp(-1/4)
    x = torch.ones(3, 1, 2, dtype=torch.float64)
    out, _ = n(x)
    a = [math.exp(-1.0), math.exp(-0.25)]
    want = [[1 - a[k] ** (t + 1) for k in range(2)] for t in range(3)]
    torch.testing.assert_close(out.reshape(3, 2), torch.tensor(want, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


def test_surrogate_options_reach_the_fire_spec():
    n = LIF(surrogate={"name": "arctan", "scale": 2.0}, surrogate_scale=5.0)
    assert n.fire_spec.surrogate == Surrogate("arctan", 5.0)
    n = LIF(surrogate=Surrogate("boxcar", 2.0), surrogate_scale=3.0)
    assert n.fire_spec.surrogate == Surrogate("boxcar", 3.0)
    n = LIF(surrogate="triangle")
    assert n.fire_spec.surrogate == Surrogate("triangle", 10.0)
    assert LIF(refractory=3e-3, dt=1e-3).fire_spec.refractory == 3
    assert "reset='subtract'" in repr(LIF(size=2, learn=("v_th",)))


def test_double_converts_parameters():
    n = CubaLIF(size=3, learn=("tau_syn",)).double()
    assert n.tau_syn.dtype == torch.float64 and n.tau_mem.dtype == torch.float64
    x = torch.ones(2, 1, 3, dtype=torch.float64)
    assert n(x)[0].dtype == torch.float64


# ---------------------------------------------------------------------------------------------------
# Errors name the argument, what was expected and what was received
# ---------------------------------------------------------------------------------------------------


def test_neuron_wrong_rank():
    n = LIF(size=3)
    with pytest.raises(SpikeforgeError, match=r"x must have rank 3 .*\[T, B, 3\].*shape \(4, 3\) \(rank 2\)"):
        n(torch.zeros(4, 3))
    with pytest.raises(SpikeforgeError, match=r"x must have rank .*\(rank 1\)"):
        LIF()(torch.zeros(5))
    with pytest.raises(SpikeforgeError, match=r"x must have rank 3 .*\(rank 4\)"):
        LI(size=3)(torch.zeros(2, 2, 2, 3))


def test_neuron_wrong_trailing_size():
    with pytest.raises(SpikeforgeError, match=r"x must end with dimensions \(3,\).*got shape \(5, 2, 4\)"):
        LIF(size=3)(torch.zeros(5, 2, 4))
    with pytest.raises(SpikeforgeError, match=r"x must end with dimensions \(2, 3\).*got shape \(5, 2, 3, 2\)"):
        IF(size=(2, 3))(torch.zeros(5, 2, 3, 2))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_input(bad):
    x = torch.zeros(4, 2, 3)
    x[2, 1, 0] = bad
    with pytest.raises(SpikeforgeError, match=rf"x must be finite.*element \(2, 1, 0\).*{bad}"):
        LIF(size=3)(x)
    with pytest.raises(SpikeforgeError, match="x must be finite"):
        Linear(3, 2)(x)
    with pytest.raises(SpikeforgeError, match="x must be finite"):
        Recurrent(3, LIF(size=2))(x)


@pytest.mark.parametrize("tau", [0.0, -1e-3])
def test_non_positive_time_constants(tau):
    with pytest.raises(SpikeforgeError, match=rf"tau_mem must be positive.*got {tau!r}"):
        LIF(tau)
    with pytest.raises(SpikeforgeError, match=rf"tau_mem must be positive.*got {tau!r}"):
        LI(tau)
    with pytest.raises(SpikeforgeError, match=rf"tau_syn must be positive.*got {tau!r}"):
        CubaLIF(10e-3, tau)
    with pytest.raises(SpikeforgeError, match=rf"tau_ahp must be positive.*got {tau!r}"):
        AdaptiveLIF(10e-3, tau)
    with pytest.raises(SpikeforgeError, match=rf"tau_mem must be positive.*got {tau!r}"):
        LIF(torch.tensor([5e-3, tau]), size=2)


def test_bad_dt():
    with pytest.raises(SpikeforgeError, match=r"dt must be positive.*got 0\.0"):
        LIF(dt=0.0)
    with pytest.raises(SpikeforgeError, match=r"dt must be positive.*got -0\.001"):
        IF(dt=-1e-3)


def test_unknown_reset_mode():
    with pytest.raises(SpikeforgeError, match=r"reset must be one of \('subtract', 'value', 'none'\), got 'zero'"):
        LIF(reset="zero")
    with pytest.raises(SpikeforgeError, match="got 'Subtract'"):
        IF(reset="Subtract")


def test_learn_without_size():
    with pytest.raises(SpikeforgeError, match=r"learning \['tau_mem'\] per neuron needs the layer size.*size=N"):
        LIF(learn=("tau_mem",))


def test_learn_unknown_parameter():
    with pytest.raises(SpikeforgeError, match=r"unknown parameter\(s\) \['tau_syn'\].*LIF has"):
        LIF(size=2, learn=("tau_syn",))


def test_per_neuron_value_of_wrong_size():
    with pytest.raises(SpikeforgeError, match=r"tau_mem must end with dimensions \(3,\)"):
        LIF(torch.tensor([1e-2, 2e-2]), size=3)


def test_bad_refractory_and_surrogate():
    with pytest.raises(SpikeforgeError, match=r"refractory must be a finite duration >= 0.*-0\.001"):
        LIF(refractory=-1e-3)
    with pytest.raises(SpikeforgeError, match="surrogate name must be one of.*got 'relu'"):
        LIF(surrogate="relu")


def test_dt_larger_than_tau_warns():
    with pytest.warns(UserWarning, match=r"dt=0\.002 is larger than tau_mem=0\.001"):
        LIF(1e-3, dt=2e-3)
    with pytest.warns(UserWarning, match=r"larger than tau_syn"):
        CubaLIF(10e-3, 1e-3, dt=2e-3)
    with pytest.warns(UserWarning, match=r"larger than tau_mem=0\.0005"):
        LI(torch.tensor([1e-2, 5e-4]), dt=1e-3)


def test_dt_equal_to_tau_does_not_warn(recwarn):
    LIF(1e-3, dt=1e-3)
    IF(dt=1.0)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_recurrent_errors():
    with pytest.raises(SpikeforgeError, match="needs size=\\(hidden,\\), got size=None"):
        Recurrent(3, LIF())
    with pytest.raises(SpikeforgeError, match="must be a spiking neuron layer.*got LI"):
        Recurrent(3, LI(size=4))
    rec = Recurrent(3, LIF(size=4))
    with pytest.raises(SpikeforgeError, match=r"x must end with dimensions \(3,\).*got shape \(5, 2, 4\)"):
        rec(torch.zeros(5, 2, 4))
    with pytest.raises(SpikeforgeError, match=r"x must have rank .*got a tensor of shape \(2, 3\)"):
        rec(torch.zeros(2, 3))


def test_delay_errors():
    with pytest.raises(SpikeforgeError, match="whole numbers of time steps"):
        Delay([1.5, 2.0])
    with pytest.raises(SpikeforgeError, match=r"delays must be >= 0 steps, got minimum -1"):
        Delay([0, -1])
    with pytest.raises(SpikeforgeError, match=r"x must end with dimensions \(3,\).*got shape \(4, 2, 5\)"):
        Delay([0, 1, 2])(torch.zeros(4, 2, 5))
    with pytest.raises(SpikeforgeError, match=r"delays must have shape .*\(2, 3\), got \(3, 2\)"):
        DelayedLinear(3, 2, delays=torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(SpikeforgeError, match=r"x must end with dimensions \(3,\)"):
        DelayedLinear(3, 2)(torch.zeros(4, 2, 2))


def test_layer_and_container_errors():
    with pytest.raises(SpikeforgeError, match=r"Linear could not take input of shape \(4, 2, 3\)"):
        Linear(5, 2)(torch.zeros(4, 2, 3))
    with pytest.raises(SpikeforgeError, match=r"p must lie in \[0\.0, 1\.0\], got 1\.5"):
        Dropout(1.5)
    with pytest.raises(SpikeforgeError, match="layer 1 must be a torch.nn.Module, got function"):
        Sequential(Linear(2, 2), lambda x: x)
    net = Sequential(Linear(2, 2), LIF(size=2))
    with pytest.raises(SpikeforgeError, match=r"one entry per layer \(2\), got tuple of length 1"):
        net(torch.zeros(3, 1, 2), (None,))
    with pytest.raises(SpikeforgeError, match="module must be a torch.nn.Module, got int"):
        TimeDistributed(3)  # type: ignore[arg-type]
