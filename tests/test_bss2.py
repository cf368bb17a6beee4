"""BrainScaleS-2-like target: rules, 6-bit signed-row weights, the noise-accurate emulator (exact against the float
model when ideal; frozen mismatch; per-run noise; CADC read-out) and calibration through the read-out."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from spikeforge.core.checks import SpikeforgeError
from spikeforge.graph import extract_graph
from spikeforge.nn import IF, LI, LIF, CubaLIF, Linear, Sequential
from spikeforge.targets import compile as compile_target
from spikeforge.targets.bss2 import (
    BSS2,
    BSS2Chip,
    BSS2Config,
    Calibration,
    FixedPattern,
    NoiseModel,
    calibrate,
    compile,
    spread,
)
from spikeforge.targets.observe import LayerObservation, Observer

DT = 1e-3
EXACT = dataclasses.replace(BSS2, h_us=1.0)  # one sub-step per model step (dt = 1 ms -> 1 us hardware)


def _model(hidden, n_in=5, n_hid=40, n_out=3, gain=4.0, seed=0):
    """Weights on the 6-bit grid (max |W| = gain), so the chip holds them exactly."""
    torch.manual_seed(seed)
    m = Sequential(Linear(n_in, n_hid, bias=False), hidden, Linear(n_hid, n_out, bias=False),
                   LI(10e-3, dt=DT, size=n_out))
    with torch.no_grad():
        for lin in (m[0], m[2]):
            w = torch.randint(-63, 64, lin.weight.shape).float()
            w.view(-1)[0] = 63
            lin.weight.copy_(w / 63 * gain)
    return m


def _input(steps=30, batch=6, n_in=5, p=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, batch, n_in, generator=g) < p).float()


# ------------------------------------------------------------------------------------------ exactness (ideal chip)


@pytest.mark.parametrize("kind", ["CubaLIF", "LIF"])
def test_ideal_chip_equals_float_model(kind):
    """No mismatch, no noise, exact read-out, one sub-step per model step (and an instantaneous synapse for LIF/LI):
    the emulator's scheme is spikeforge's, so spikes are identical and membranes equal to float rounding."""
    if kind == "CubaLIF":
        hidden = CubaLIF(10e-3, 5e-3, dt=DT, size=40, reset="value", v_reset=-0.2, refractory=2e-3)
    else:
        hidden = LIF(20e-3, dt=DT, size=40, reset="value", v_th=0.8)
    m = _model(hidden)
    x = _input()
    _, _, rec = m.trace(x)
    chip = BSS2Chip(EXACT, instance=0, noise=NoiseModel.ideal(), ideal_readout=True, lif_tau_syn_us=0.0,
                    dtype=torch.float64)
    obs = chip.observe(extract_graph(m, 5), x)
    z_float = rec[1][0]
    assert z_float.sum() > 50  # the test has spikes to compare
    assert torch.equal(obs[0].spikes, z_float)
    v_float = rec[1][1].v
    keep = z_float == 0
    assert torch.allclose(obs[0].v[keep].float(), v_float[keep], atol=1e-5)
    assert torch.allclose(obs[1].v.float(), rec[3][0], atol=1e-5)  # LI read-out membrane
    assert torch.equal(obs[1].spikes, torch.zeros_like(obs[1].spikes))


def test_small_steps_give_the_continuous_time_psp():
    """With many sub-steps the ideal chip integrates the continuous-time neuron: one input event of weight w at t = 0
    gives the analytic PSP w dt / (tau_m - tau_s) (exp(-t/tau_m) - exp(-t/tau_s)) (float units)."""
    m = Sequential(Linear(1, 1, bias=False), CubaLIF(10e-3, 5e-3, dt=DT, size=1, reset="value", v_th=100.0))
    with torch.no_grad():
        m[0].weight.fill_(2.0)
    x = torch.zeros(40, 1, 1)
    x[0] = 1.0
    chip = BSS2Chip(dataclasses.replace(BSS2, h_us=0.02), noise=NoiseModel.ideal(), ideal_readout=True,
                    dtype=torch.float64)
    v = chip.observe(extract_graph(m, 1), x)[0].v[:, 0, 0]
    t = torch.arange(1, 41, dtype=torch.float64) * DT
    psp = 2.0 * DT / (10e-3 - 5e-3) * (torch.exp(-t / 10e-3) - torch.exp(-t / 5e-3))
    assert torch.allclose(v, psp, atol=0.01 * float(psp.max()))
    coarse = BSS2Chip(EXACT, noise=NoiseModel.ideal(), ideal_readout=True, dtype=torch.float64)
    v1 = coarse.observe(extract_graph(m, 1), x)[0].v[:, 0, 0]
    assert (v1 - psp).abs().max() > 3 * (v - psp).abs().max()  # one step per dt is the float model, not the limit


# ------------------------------------------------------------------------------------------ mismatch and noise


def test_mismatch_is_frozen_per_instance_and_noise_differs_per_run():
    noise = NoiseModel(membrane_noise=0.0, cadc_noise=0.0)
    a, b = FixedPattern.draw(BSS2, noise, 3), FixedPattern.draw(BSS2, noise, 3)
    c = FixedPattern.draw(BSS2, noise, 4)
    assert torch.equal(a.tau, b.tau) and torch.equal(a.synapse, b.synapse) and torch.equal(a.cadc_offset, b.cadc_offset)
    assert not torch.equal(a.tau, c.tau) and not torch.equal(a.volt_offset, c.volt_offset)
    assert 0.03 < float(a.tau.std()) < 0.07  # the configured 5 %
    m = _model(CubaLIF(10e-3, 5e-3, dt=DT, size=40, reset="value"))
    g, x = extract_graph(m, 5), _input()
    run = lambda chip: chip.observe(g, x)  # noqa: E731
    o1 = run(BSS2Chip(instance=3, noise=noise, calibrated=False))
    o2 = run(BSS2Chip(instance=3, noise=noise, calibrated=False))
    o3 = run(BSS2Chip(instance=4, noise=noise, calibrated=False))
    assert torch.equal(o1[0].spikes, o2[0].spikes) and torch.equal(o1[1].v, o2[1].v)
    assert not torch.equal(o1[1].v, o3[1].v)
    noisy = BSS2Chip(instance=3, calibrated=False, seed=0)  # default temporal noise
    r1, r2 = noisy.observe(g, x), noisy.observe(g, x)
    assert not torch.equal(r1[1].v, r2[1].v)
    same_seed = BSS2Chip(instance=3, calibrated=False, seed=0).observe(g, x)
    assert torch.equal(same_seed[1].v, r1[1].v)


def test_spike_jitter_moves_spikes_but_keeps_them():
    chip = BSS2Chip(noise=dataclasses.replace(NoiseModel.ideal(), spike_jitter_us=1.0), seed=0)
    z = (torch.rand(200, 4, 10, generator=torch.Generator().manual_seed(0)) < 0.05).float()
    moved = chip._jitter(z, 0.25)
    assert moved.sum() == z.sum() and not torch.equal(moved, z)
    assert torch.equal(BSS2Chip(noise=NoiseModel.ideal())._jitter(z, 0.25), z)  # off by default


# ------------------------------------------------------------------------------------------ weights and read-out


def test_six_bit_signed_rows_by_hand():
    m = Sequential(Linear(3, 2, bias=False), LIF(10e-3, dt=DT, size=2, reset="value"))
    w = torch.tensor([[1.0, -0.5, 0.0], [0.26, 0.5, 0.0]])
    with torch.no_grad():
        m[0].weight.copy_(w)
    cfg = compile(extract_graph(m, 3))
    layer = cfg.layers[0]
    # scale = 63 / max|W| = 63: round(63 * W), clamp to +-63
    assert layer.scale == 63.0
    np.testing.assert_array_equal(layer.weight, [[63, -32, 0], [16, 32, 0]])  # 31.5 -> 32, 16.38 -> 16
    # source 0: only positive weights -> one excitatory row; source 1: both signs -> exc + inh row; source 2: none
    np.testing.assert_array_equal(layer.exc_rows, [0, 1, -1])
    np.testing.assert_array_equal(layer.inh_rows, [-1, 2, -1])
    # an explicit scale saturates at 63 (hxtorch linear_saturating)
    cfg2 = compile(extract_graph(m, 3), weight_scale={layer.name: 100.0})
    np.testing.assert_array_equal(cfg2.layers[0].weight, [[63, -50, 0], [26, 50, 0]])
    # thresholds and leak land on the calibration targets; k = 45 CADC units per model unit
    assert layer.k == 45.0 and layer.threshold[0] == 125.0 and layer.leak[0] == 80.0 and layer.reset[0] == 80.0
    cfg_any = compile_target(extract_graph(m, 3), "bss2")
    assert isinstance(cfg_any, BSS2Config)
    out = BSS2Chip(noise=NoiseModel.ideal()).output(cfg_any, torch.ones(5, 2, 3))  # deployment: output sequence
    assert out.shape == (5, 2, 2)


def test_cadc_quantises_and_clips():
    chip = BSS2Chip(noise=NoiseModel.ideal())
    v = torch.tensor([[[-3.0, 0.4, 0.6, 100.2, 254.6, 300.0]]])
    got = chip._readout(torch.arange(6), v)
    assert got.tolist() == [[[0.0, 0.0, 1.0, 100.0, 255.0, 255.0]]]
    skewed = BSS2Chip(noise=dataclasses.replace(NoiseModel.ideal(), cadc_offset=2.0, cadc_gain_rel=0.02),
                      calibrated=False)
    idx = torch.arange(6)
    expect = (skewed.cadc_of(idx, v.double()).round().clamp(0, 255)).float()
    assert torch.equal(skewed._readout(idx, v), expect)
    # through observe: membranes are CADC integers mapped back (midpoints between 2 us samples: half-integers)
    m = _model(LIF(10e-3, dt=DT, size=40, reset="value"))
    obs = BSS2Chip(noise=NoiseModel.ideal()).observe(extract_graph(m, 5), _input())
    cfg = compile(extract_graph(m, 5))
    codes = (obs[1].v.double() - cfg.layers[1].v_leak[0]) * cfg.layers[1].k + cfg.layers[1].origin
    assert torch.allclose(2 * codes, (2 * codes).round(), atol=1e-3)
    assert float(codes.min()) >= 0 and float(codes.max()) <= 255


# ------------------------------------------------------------------------------------------ calibration


def test_calibration_reduces_spread_at_least_four_times():
    spec = dataclasses.replace(BSS2, neurons_per_row=48)  # a small instance: 96 neurons
    chip = BSS2Chip(spec, instance=5, calibrated=False, seed=0)
    before = spread(chip, Calibration.nominal(spec))
    report = calibrate(chip)
    after = spread(chip)
    for name in ("leak", "reset", "threshold", "tau_mem", "tau_syn_exc", "tau_syn_inh"):
        assert before[name][1] >= 4 * after[name][1], (name, before[name], after[name])
    assert abs(after["tau_mem"][0] - spec.tau_mem_us) < 0.1 and abs(after["leak"][0] - spec.leak) < 0.5
    assert report.runs > 10 and set(report.measured) >= {"tau_mem", "tau_syn_exc", "gm_inh"}


def test_deployment_agrees_with_float_model_after_calibration():
    """A software model deployed on a noisy chip: after calibration the LI read-out follows the float model's output
    closely; on the uncalibrated chip the mismatch (a few CADC offsets, ~ the output's own range) scrambles it."""
    torch.manual_seed(0)
    m = Sequential(Linear(5, 120, bias=False), CubaLIF(10e-3, 5e-3, dt=DT, size=120, reset="value"),
                   Linear(120, 3, bias=False), LI(10e-3, dt=DT, size=3))
    with torch.no_grad():
        m[0].weight.mul_(8.0)
    g, x = extract_graph(m, 5), _input(30, 100)
    out, _ = m(x)
    corr = lambda a: float(torch.corrcoef(torch.stack([a.flatten(), out.detach().flatten()]))[0, 1])  # noqa: E731
    calibrated = corr(BSS2Chip(instance=2, seed=0).output(g, x))
    uncalibrated = corr(BSS2Chip(instance=2, calibrated=False, seed=0).output(g, x))
    assert calibrated > 0.8 and calibrated > uncalibrated + 0.2, (calibrated, uncalibrated)


# ------------------------------------------------------------------------------------------ rules and interface


def test_rules_refuse_what_the_chip_cannot_hold():
    big = Sequential(Linear(4, 300, bias=False), LIF(dt=DT, size=300, reset="value"))
    with pytest.raises(SpikeforgeError, match=r"layer '1' has 300 neurons; the bss2 mapper places a layer in one "
                                              r"neuron row of 256"):
        compile(extract_graph(big, 4))
    many = Sequential(Linear(4, 250, bias=False), LIF(dt=DT, size=250, reset="value"), Linear(250, 250, bias=False),
                      LIF(dt=DT, size=250, reset="value"), Linear(250, 20, bias=False), LIF(dt=DT, size=20,
                                                                                           reset="value"))
    with pytest.raises(SpikeforgeError, match=r"the network has 520 neurons; bss2 has 512 neuron circuits"):
        compile(extract_graph(many, 4))
    wide = Sequential(Linear(200, 10, bias=False), LIF(dt=DT, size=10, reset="value"))
    with torch.no_grad():
        wide[0].weight.uniform_(-1, 1)
    with pytest.raises(SpikeforgeError, match=r"needs 400 synapse rows .* has 256"):
        compile(extract_graph(wide, 200))
    three = Sequential(*[m for _ in range(3) for m in (Linear(100, 100), LIF(dt=DT, size=100, reset="value"))])
    cfg_two = compile(extract_graph(Sequential(*list(three.layers)[:4]), 100))
    assert [layer.neuron_row for layer in cfg_two.layers] == [0, 1]  # 200 synapse rows each: one array apiece
    with pytest.raises(SpikeforgeError, match=r"layer '5' \(100 neurons, 200 synapse rows.*fits in no neuron row"):
        compile(extract_graph(three, 100))
    with pytest.raises(SpikeforgeError, match=r"resets by 'subtract'.*reset='value'"):
        compile(extract_graph(Sequential(Linear(4, 10), LIF(dt=DT, size=10)), 4))
    with pytest.raises(SpikeforgeError, match=r"is IF; bss2 neurons always leak"):
        compile(extract_graph(Sequential(Linear(4, 10), IF(dt=DT, size=10, reset="value")), 4))


def test_observe_is_an_observer_and_fast_enough():
    import time

    torch.set_num_threads(1)
    chip = BSS2Chip(instance=1, calibrated=False)
    assert isinstance(chip, Observer)
    m = Sequential(Linear(5, 120, bias=False), LIF(10e-3, dt=DT, size=120, reset="value"),
                   Linear(120, 3, bias=False), LI(10e-3, dt=DT, size=3))
    g, x = extract_graph(m, 5), _input(30, 100)
    obs = chip.observe(g, x)
    assert len(obs) == 2 and all(isinstance(o, LayerObservation) for o in obs)
    assert chip.output(g, x).shape == (30, 100, 3)  # deployment: the LI read-out's membrane
    assert obs[0].spikes.shape == (30, 100, 120) and obs[1].v.shape == (30, 100, 3)
    start = time.perf_counter()
    chip.observe(g, x)
    assert time.perf_counter() - start < 0.5  # ~25 ms on one free core; generous for a shared CI machine


@pytest.mark.gpu
def test_cuda_equals_cpu_without_noise():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    m = _model(CubaLIF(10e-3, 5e-3, dt=DT, size=40, reset="value"))
    g, x = extract_graph(m, 5), _input()
    noise = NoiseModel(membrane_noise=0.0, cadc_noise=0.0)  # mismatch on, temporal noise off
    cpu = BSS2Chip(instance=2, noise=noise, calibrated=False, dtype=torch.float64).observe(g, x)
    gpu = BSS2Chip(instance=2, noise=noise, calibrated=False, dtype=torch.float64, device="cuda").observe(g, x)
    for a, b in zip(cpu, gpu, strict=True):
        assert torch.equal(a.spikes, b.spikes.cpu())
        assert torch.allclose(a.v, b.v.cpu(), atol=1e-9)
