"""Memristive crossbar synapses: spikeforge.analog.crossbar and spikeforge.nn.CrossbarLinear.

Expected values are written by hand from the model equations (docs/analog.md), never taken from the module.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from spikeforge.analog.crossbar import (
    CrossbarConfig,
    adc,
    crossbar_matmul,
    dac,
    drift,
    ir_drop_factors,
    pcm_read_noise_sigma,
    program,
    read,
)
from spikeforge.core.checks import SpikeforgeError
from spikeforge.nn import LIF, CrossbarLinear, Linear, Sequential

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sigma_prog_hand(g: float, g_max: float = 25.0) -> float:
    r = g / g_max
    return (0.26348 + 1.9650 * r - 1.1731 * r * r) * g_max / 25.0


# ---------------------------------------------------------------- (1) every effect off is exact


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 3, 5), (4, 16, 33), (2, 64, 10)])
def test_ideal_crossbar_equals_linear_exactly(shape):
    n, n_in, n_out = shape
    torch.manual_seed(1)
    w = torch.randn(n_out, n_in, dtype=F64)
    b = torch.randn(n_out, dtype=F64)
    x = torch.randn(n, n_in, dtype=F64)
    cfg = CrossbarConfig()
    st = program(w, cfg, gen())
    assert torch.equal(crossbar_matmul(x, st, cfg, gen()), F.linear(x, w))
    assert torch.equal(crossbar_matmul(x, st, cfg, gen(), bias=b), F.linear(x, w, b))
    # A w_max above max |W| keeps the ideal mapping exact too.
    cfg2 = CrossbarConfig(w_max=float(w.abs().max()) * 3)
    assert torch.equal(crossbar_matmul(x, program(w, cfg2, gen()), cfg2, gen()), F.linear(x, w))


def test_ideal_layer_equals_linear_exactly_in_train_and_eval():
    layer = CrossbarLinear(6, 4).double()
    x = torch.rand(5, 3, 6, dtype=F64)
    expect = F.linear(x, layer.weight, layer.bias)
    y, state = layer(x)
    assert state is None and torch.equal(y, expect)
    layer.eval()
    with torch.no_grad():
        assert torch.equal(layer(x)[0], expect)


# ---------------------------------------------------------------- (2) each effect alone


def test_levels_put_weights_on_the_grid_within_half_a_step():
    w = torch.rand(40, 30, dtype=F64) * 2 - 1
    cfg = CrossbarConfig(levels=5, w_max=1.0)
    eff = program(w, cfg, gen()).weight
    step = 1.0 / 4  # 5 levels over [0, w_max] per device of the pair
    k = eff / step
    assert torch.allclose(k, k.round(), atol=1e-9)
    err = (eff - w).abs()
    assert float(err.max()) <= step / 2 + 1e-12
    assert float(err.max()) > step / 4  # really quantised


def test_programming_noise_matches_the_pcm_polynomial():
    # g_min = 5 µS keeps every device far from the G >= 0 clamp; W = 0.5 w_max puts G+ at 15 µS, G- at 5 µS.
    cfg = CrossbarConfig(g_min=5.0, g_max=25.0, w_max=1.0, prog_noise=1.0)
    w = torch.full((200, 200), 0.5, dtype=F64)
    st = program(w, cfg, gen(3))
    assert abs(float((st.g_pos - 15.0).std()) / sigma_prog_hand(15.0) - 1) < 0.03
    assert abs(float((st.g_neg - 5.0).std()) / sigma_prog_hand(5.0) - 1) < 0.03
    assert abs(float((st.g_pos - 15.0).mean())) < 0.03
    rel_err = (st.weight - w) / w
    predicted = math.hypot(sigma_prog_hand(15.0), sigma_prog_hand(5.0)) * 1.0 / 20.0 / 0.5
    assert abs(float(rel_err.std()) / predicted - 1) < 0.03
    # The scale factor scales the noise; the draws are the same (fixed draw order).
    st2 = program(w, CrossbarConfig(g_min=5.0, g_max=25.0, w_max=1.0, prog_noise=0.5), gen(3))
    assert torch.allclose(st2.g_pos - 15.0, (st.g_pos - 15.0) / 2, atol=1e-12)


def test_stuck_at_fractions_are_binomial():
    p0, p1 = 0.1, 0.05
    cfg = CrossbarConfig(g_min=1.0, g_max=25.0, w_max=1.0, p_sa0=p0, p_sa1=p1)
    w = torch.rand(300, 300, dtype=F64) * 0.6 + 0.2  # G+ strictly inside (g_min, g_max)
    st = program(w, cfg, gen(5))
    n = w.numel()

    def tol(p):  # 4 binomial standard deviations
        return 4 * math.sqrt(p * (1 - p) / n)

    assert abs(float((st.g_pos == 1.0).double().mean()) - p0) < tol(p0)
    assert abs(float((st.g_pos == 25.0).double().mean()) - p1) < tol(p1)
    assert abs(float((st.g_neg == 25.0).double().mean()) - p1) < tol(p1)
    free = (st.g_pos != 1.0) & (st.g_pos != 25.0)
    g_target = 1.0 + w * 24.0
    assert torch.allclose(st.g_pos[free], g_target[free])


def test_drift_follows_a_power_law_with_the_pcm_exponent():
    cfg0 = CrossbarConfig(w_max=1.0)
    w = torch.full((100, 100), 0.5, dtype=F64)  # G+ = 12.5 µS, G- = 0
    st = program(w, cfg0, gen(7))
    # Hand values at g_rel = 0.5: mu = clip(-0.0155 ln 0.5 + 0.0244, 0.049, 0.1) = 0.049,
    # sigma = clip(-0.0125 ln 0.5 - 0.0059, 0.008, 0.045) = 0.008; E|N(0.049, 0.008)| ~ 0.049.
    prev = 0.5
    for t in (100.0, 1e3, 1e4, 1e5):
        w_t = read(st, CrossbarConfig(w_max=1.0, drift_t=t), gen())
        nu_est = -torch.log(w_t / w) / math.log(t / 20.0)
        assert abs(float(nu_est.mean()) - 0.049) < 0.0003  # standard error 0.008 / 100
        assert abs(float(nu_est.std()) - 0.008) < 0.0003
        assert float(w_t.mean()) < prev
        prev = float(w_t.mean())
    # At g_rel = 0.05 neither clip is active: nu ~ |N(mu, sigma)| with the aihwkit lines.
    w_low = torch.full((100, 100), 0.05, dtype=F64)  # G+ = 1.25 µS
    st_low = program(w_low, cfg0, gen(8))
    mu, sd = -0.0155 * math.log(0.05) + 0.0244, -0.0125 * math.log(0.05) - 0.0059
    folded_mean = (sd * math.sqrt(2 / math.pi) * math.exp(-mu * mu / (2 * sd * sd))
                   + mu * math.erf(mu / (sd * math.sqrt(2))))
    folded_std = math.sqrt(mu * mu + sd * sd - folded_mean ** 2)
    nu_low = -torch.log(read(st_low, CrossbarConfig(w_max=1.0, drift_t=2000.0), gen()) / w_low) / math.log(100.0)
    assert abs(float(nu_low.mean()) - folded_mean) < 0.0015  # standard error ~0.0003
    assert abs(float(nu_low.std()) - folded_std) < 0.0015
    assert torch.allclose(nu_low, st_low.nu_pos)
    # Off: t None, 0, or not past t0.
    for t in (None, 0.0, 20.0):
        assert torch.equal(read(st, CrossbarConfig(w_max=1.0, drift_t=t), gen()), w)
    g = torch.tensor([10.0], dtype=F64)
    assert torch.allclose(drift(g, torch.tensor([0.1], dtype=F64), 2000.0), g * 100.0 ** -0.1)


def test_read_noise_differs_per_read_with_the_given_relative_std():
    sigma = 0.05
    cfg = CrossbarConfig(w_max=1.0, read_noise=sigma)
    w = torch.full((200, 100), 0.5, dtype=F64)  # G- = 0: only G+ noise shows
    st = program(w, cfg, gen())
    g = gen(11)
    r1, r2 = read(st, cfg, g), read(st, cfg, g)
    assert not torch.equal(r1, r2)
    assert torch.equal(st.weight, w)  # reading does not reprogram
    for r in (r1, r2):
        rel = r / w - 1
        assert abs(float(rel.std()) / sigma - 1) < 0.03
        assert abs(float(rel.mean())) < 0.003
    # aihwkit 1/f value after one hour at g_max: 0.0088 * sqrt(ln((3600 + 250e-9) / 500e-9)).
    hand = 0.0088 * math.sqrt(math.log((3600 + 250e-9) / 500e-9))
    assert abs(float(pcm_read_noise_sigma(torch.tensor(1.0, dtype=F64), 3600.0)) - hand) < 1e-12


def test_dac_quantises_inputs_and_clips():
    x = torch.linspace(-1.5, 1.5, 1001, dtype=F64)
    q = dac(x, 4, 1.0)
    step = 1.0 / 7  # 4 bits signed: 7 steps per sign
    assert torch.allclose(q / step, (q / step).round(), atol=1e-9)
    inside = x.abs() <= 1.0
    assert float((q - x)[inside].abs().max()) <= step / 2 + 1e-12
    assert torch.equal(q[x > 1.0], torch.ones_like(q[x > 1.0]))
    assert torch.equal(q[x < -1.0], -torch.ones_like(q[x < -1.0]))
    assert torch.equal(dac(x, None), x)
    # Through the crossbar: the product of the quantised input.
    w = torch.randn(3, 1001, dtype=F64)
    cfg = CrossbarConfig(dac_bits=4, in_bound=1.0)
    y = crossbar_matmul(x[None], program(w, cfg, gen()), cfg, gen())
    xq_hand = torch.round(x.clamp(-1, 1) * 7) / 7
    assert torch.allclose(y, F.linear(xq_hand[None], w), atol=1e-9)


def test_adc_quantises_outputs_and_clips_at_out_bound():
    torch.manual_seed(2)
    w = torch.rand(50, 8, dtype=F64) * 2 - 1
    x = torch.rand(400, 8, dtype=F64) * 2 - 1
    cfg = CrossbarConfig(w_max=1.0, adc_bits=5, out_bound=2.0)  # unit = w_max * in_bound = 1
    y = crossbar_matmul(x, program(w, cfg, gen()), cfg, gen())
    ideal = F.linear(x, w)
    step = 2.0 / 15
    assert torch.allclose(y / step, (y / step).round(), atol=1e-9)
    inside = ideal.abs() <= 2.0
    assert bool(inside.any()) and bool((~inside).any())
    assert float((y - ideal)[inside].abs().max()) <= step / 2 + 1e-12
    assert torch.allclose(y[~inside], 2.0 * ideal[~inside].sign())
    # out_bound is in units of w_max * in_bound.
    cfg2 = CrossbarConfig(w_max=2.0, in_bound=0.5, adc_bits=5, out_bound=2.0)
    y2 = crossbar_matmul(x, program(w, cfg2, gen()), cfg2, gen())
    assert float(y2.abs().max()) <= 2.0 + 1e-12 and torch.allclose(y2, y, atol=step / 2 + 1e-12)
    assert torch.equal(adc(ideal, None, 1.0), ideal)


def test_ir_drop_attenuates_more_along_the_row_index():
    s, n_in = 0.5, 10
    a = ir_drop_factors(n_in, s, dtype=F64)
    assert bool((a[1:] < a[:-1]).all())
    hand = torch.tensor([1 / (1 + s * (i + 1) / n_in) for i in range(n_in)], dtype=F64)
    assert torch.allclose(a, hand)
    w = torch.rand(4, n_in, dtype=F64) + 0.1
    cfg = CrossbarConfig(ir_drop=s)
    y = crossbar_matmul(torch.eye(n_in, dtype=F64), program(w, cfg, gen()), cfg, gen())  # row i alone
    ratio = y / w.T
    assert torch.allclose(ratio, hand[:, None].expand_as(ratio))
    assert abs(float(ratio[-1, 0]) - 1 / (1 + s)) < 1e-12
    assert torch.equal(ir_drop_factors(n_in, 0.0, dtype=F64), torch.ones(n_in, dtype=F64))


# ---------------------------------------------------------------- (3) determinism


def test_layer_is_deterministic_given_seed():
    cfg = CrossbarConfig.aihwkit_pcm(3600.0)
    x = torch.rand(3, 2, 8)

    def make(seed):
        torch.manual_seed(0)
        return CrossbarLinear(8, 5, cfg, seed=seed)

    a, b, c = make(1), make(1), make(2)
    ya1, ya2 = a(x)[0], a(x)[0]
    assert torch.equal(ya1, b(x)[0]) and torch.equal(ya2, b(x)[0])
    assert not torch.equal(ya1, ya2)  # read noise is drawn per call
    assert not torch.equal(ya1, c(x)[0])  # another seed, another array
    a.program()  # restarts the read stream: the first output again
    assert torch.equal(a(x)[0], ya1)
    st1 = program(a.weight, cfg, gen(4))
    st2 = program(a.weight, cfg, gen(4))
    assert torch.equal(st1.g_pos, st2.g_pos) and torch.equal(st1.nu_neg, st2.nu_neg)


# ---------------------------------------------------------------- (4) straight-through gradients


def test_gradients_are_the_ideal_layers():
    cfg = CrossbarConfig(levels=4, prog_noise=1.0, read_noise=0.05, adc_bits=6, out_bound=4.0)
    torch.manual_seed(0)
    xb = CrossbarLinear(7, 3, cfg).double()
    ref = Linear(7, 3, sparse=False).double()
    with torch.no_grad():
        ref.weight.copy_(xb.weight)
        ref.bias.copy_(xb.bias)
    x = torch.rand(4, 2, 7, dtype=F64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    c = torch.randn(4, 2, 3, dtype=F64)
    y_xb, y_ref = xb(x1)[0], ref(x2)[0]
    assert not torch.allclose(y_xb, y_ref)  # the forward pass is non-ideal
    (y_xb * c).sum().backward()
    (y_ref * c).sum().backward()
    assert torch.equal(xb.weight.grad, ref.weight.grad)
    assert torch.equal(xb.bias.grad, ref.bias.grad)
    assert torch.equal(x1.grad, x2.grad)


def test_weight_update_reprograms_the_array():
    layer = CrossbarLinear(4, 2, CrossbarConfig(levels=3, w_max=1.0)).double()
    x = torch.eye(4, dtype=F64)[None]
    with torch.no_grad():
        layer.weight.fill_(0.3)
        y1 = layer(x)[0]
        layer.weight.fill_(0.8)
        y2 = layer(x)[0]
    bias = layer.bias.detach()
    assert torch.allclose(y1 - bias, torch.full_like(y1, 0.5))  # 0.3 -> nearest level 0.5
    assert torch.allclose(y2 - bias, torch.full_like(y2, 1.0))  # 0.8 -> nearest level 1.0


# ---------------------------------------------------------------- (5) under a spiking layer


def test_crossbar_under_lif_trains():
    torch.manual_seed(0)
    net = Sequential(CrossbarLinear(6, 4, CrossbarConfig.aihwkit_pcm()), LIF(tau_mem=5e-3))
    with torch.no_grad():
        net[0].weight.uniform_(0.5, 2.0)
    x = (torch.rand(20, 3, 6) < 0.5).float()
    out, state = net(x)
    assert out.shape == (20, 3, 4) and len(state) == 2
    assert 0 < float(out.detach().sum()) < out.numel()
    out.sum().backward()
    grad = net[0].weight.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


# ---------------------------------------------------------------- (6) errors


@pytest.mark.parametrize("kwargs, words", [
    ({"g_min": 5.0, "g_max": 5.0}, "g_min and g_max"),
    ({"g_min": -1.0}, "g_min"),
    ({"levels": 1}, "levels"),
    ({"prog_noise": -0.1}, "prog_noise"),
    ({"p_sa0": 1.5}, "p_sa0"),
    ({"p_sa0": 0.6, "p_sa1": 0.6}, "p_sa0 + p_sa1"),
    ({"drift_t": -1.0}, "drift_t"),
    ({"read_noise": float("nan")}, "read_noise"),
    ({"dac_bits": 1}, "dac_bits"),
    ({"adc_bits": 3.5}, "adc_bits"),
    ({"out_bound": 0.0}, "out_bound"),
    ({"ir_drop": -1.0}, "ir_drop"),
    ({"w_max": 0.0}, "w_max"),
])
def test_bad_config_is_named(kwargs, words):
    with pytest.raises(SpikeforgeError, match=words.replace("+", r"\+")):
        CrossbarConfig(**kwargs)


def test_bad_call_arguments_are_named():
    w = torch.randn(3, 4)
    cfg = CrossbarConfig()
    with pytest.raises(SpikeforgeError, match="weight must have rank 2"):
        program(w[0], cfg, gen())
    with pytest.raises(SpikeforgeError, match="generator must be a torch.Generator"):
        program(w, cfg, 0)
    st = program(w, cfg, gen())
    with pytest.raises(SpikeforgeError, match="in_features=4"):
        crossbar_matmul(torch.randn(2, 5), st, cfg, gen())
    layer = CrossbarLinear(4, 3)
    with pytest.raises(SpikeforgeError, match="x must end with dimensions"):
        layer(torch.randn(2, 2, 5))
    with pytest.raises(SpikeforgeError, match="rank"):
        layer(torch.randn(2, 4))
    with pytest.raises(SpikeforgeError, match="dtype"):
        layer(torch.randn(2, 2, 4, dtype=F64))
    with pytest.raises(SpikeforgeError, match="config must be a CrossbarConfig"):
        CrossbarLinear(4, 3, {"levels": 4})
    with pytest.raises(SpikeforgeError, match="in_features"):
        CrossbarLinear(0, 3)
    with pytest.raises(SpikeforgeError, match="seed"):
        CrossbarLinear(4, 3, seed="a")
