"""Xylo target: fit rules, quantisation, and the bit-accurate emulator (golden vector; agreement with xylosim)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from spikeforge.core.checks import SpikeforgeError
from spikeforge.graph import extract_graph
from spikeforge.nn import LI, LIF, CubaLIF, Linear, Sequential
from spikeforge.targets import compile as compile_target
from spikeforge.targets.xylo import XYLO_AUDIO2, XYLO_IMU, XyloConfig, XyloEmulator, compile, dash_from_tau
from spikeforge.targets.xylo.reference import random_config, random_input

DT = 1e-3


def _graph(*sizes: int, neuron=CubaLIF, **kw):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [Linear(a, b, bias=False), neuron(dt=DT, size=b, **kw)]
    return extract_graph(Sequential(*layers), sizes[0])


# ------------------------------------------------------------------------------------------ rules


def test_rules_refuse_too_many_hidden_neurons():
    with pytest.raises(SpikeforgeError, match=r"hidden layer '1' has 1200 neurons; xylo-audio2 holds at most 1000"):
        compile(_graph(16, 1200, 4))


def test_rules_imu_variant_limits():
    graph = _graph(16, 500, 4)
    compile(graph, "xylo-audio2")
    with pytest.raises(SpikeforgeError, match=r"500 neurons; xylo-imu holds at most 496"):
        compile(graph, "xylo-imu")
    wide = _graph(8, 20, 12)
    with pytest.raises(SpikeforgeError, match=r"output layer '3' has 12 neurons; xylo-audio2 has at most 8"):
        compile(wide, "xylo-audio2")
    assert compile(wide, "xylo-imu").n_out == 12


def test_rules_refuse_fan_in_and_inputs():
    with pytest.raises(SpikeforgeError, match=r"hidden layer '3': neuron \d+ has fan-in 80 .* allows at most 63"):
        compile(_graph(16, 80, 40, 4))
    with pytest.raises(SpikeforgeError, match=r"input has 20 channels; xylo-audio2 takes at most 16"):
        compile(_graph(20, 10, 4))


def test_rules_refuse_reset_and_unknown_target():
    with pytest.raises(SpikeforgeError, match=r"resets by 'value'.*subtract"):
        compile(_graph(4, 10, 2, neuron=LIF, reset="value"))
    with pytest.raises(SpikeforgeError, match=r"unknown target 'loihi9'"):
        compile_target(_graph(4, 10, 2), "loihi9")


# ----------------------------------------------------------------------------------- quantisation


def test_compile_produces_chip_integers():
    torch.manual_seed(0)
    model = Sequential(Linear(6, 20), LIF(5e-3, dt=DT, v_th=0.3, size=20), Linear(20, 3, bias=False),
                       LI(1e-2, dt=DT, size=3))
    cfg = compile_target(extract_graph(model, 6), "xylo-audio2")
    assert isinstance(cfg, XyloConfig)
    assert cfg.w_in.dtype == np.int8 and cfg.w_in.shape == (6, 20, 2) and cfg.w_out.shape == (20, 3, 1)
    assert not cfg.w_in.flags.writeable
    assert 0 <= cfg.weight_shift_in <= XYLO_AUDIO2.max_weight_shift
    assert (cfg.threshold >= 1).all() and (cfg.threshold_out == 32767).all()  # LI readout never fires
    assert np.abs(cfg.w_in).max() >= 64  # the int8 range is used
    assert set(cfg.info["hidden_layers"]) == {"1"}
    out, rec = XyloEmulator(cfg).run(torch.randint(0, 2, (10, 3, 6)))
    assert out.shape == (10, 3, 3) and rec["vmem"].shape == (10, 3, 20) and rec["isyn2"].shape == (10, 3, 20)
    # IMU: one synapse per neuron
    assert compile(extract_graph(model, 6), "xylo-imu").w_in.shape == (6, 20, 1)


def test_dash_from_tau():
    # decay 1 - 2^-dash ~ exp(-dt/tau): tau = dt / -ln(1 - 2^-d)
    for d in range(1, 16):
        tau = -DT / np.log1p(-(2.0 ** -d))
        assert dash_from_tau(np.array([tau]), DT)[0] == d
    assert dash_from_tau(np.array([1e3]), DT)[0] == 15


# ------------------------------------------------------------------------------------ emulator


def _golden_config() -> XyloConfig:
    one = np.ones
    return XyloConfig(spec=XYLO_AUDIO2, w_in=np.array([[[10, 0]]]), w_rec=np.zeros((1, 1, 2)),
                      w_out=np.array([[[5]]]), weight_shift_in=2, weight_shift_rec=0, weight_shift_out=0,
                      dash_mem=one(1) * 2, dash_syn=np.array([[1, 2]]), threshold=one(1) * 50, bias=one(1) * -3,
                      dash_mem_out=one(1), dash_syn_out=one((1, 1)), threshold_out=one(1) * 4,
                      bias_out=np.zeros(1), has_bias=True)


def test_golden_vector_one_neuron():
    """Hand-computed from the update order in docs/targets/xylo.md (no xylosim involved)."""
    x = torch.tensor([1, 2, 0, 0, 0]).view(5, 1, 1)
    out, rec = XyloEmulator(_golden_config()).run(x)
    # t0: Isyn 40 -> 40-20=20; V 0 -> 20-3=17.  t1: Isyn 20+80=100 -> 50; V 17-4+50-3=60 >= 50: spike, V 10.
    # t2: Isyn 25; V 10-2+25-3=30; the spike reaches the output: Iout 5 -> 3, Vout 3.
    # t3: Isyn 13; V 30-7+13-3=33; Iout 2, Vout 3-1+2=4 >= 4: spike, Vout 0.  t4: Isyn 7; V 33-8+7-3=29.
    assert rec["isyn"][:, 0, 0].tolist() == [20, 50, 25, 13, 7]
    assert rec["isyn2"][:, 0, 0].tolist() == [0, 0, 0, 0, 0]
    assert rec["vmem"][:, 0, 0].tolist() == [17, 10, 30, 33, 29]
    assert rec["spikes"][:, 0, 0].tolist() == [0, 1, 0, 0, 0]
    assert rec["isyn_out"][:, 0, 0].tolist() == [0, 0, 3, 2, 1]
    assert rec["vmem_out"][:, 0, 0].tolist() == [0, 0, 3, 0, 1]
    assert out[:, 0, 0].tolist() == [0, 0, 0, 1, 0]


def test_golden_saturation_and_negative_decay():
    # -5 >> 1 = -3 (arithmetic shift): the current goes -10 -> -5 -> -2 (not -3); +5 -> 3.
    cfg = dataclasses.replace(_golden_config(), w_in=np.array([[[-10, 0]]]), weight_shift_in=0, bias=np.zeros(1),
                              dash_mem=np.full(1, 15))
    _, rec = XyloEmulator(cfg).run(torch.tensor([0, 1, 0, 0]).view(4, 1, 1))
    assert rec["isyn"][:, 0, 0].tolist() == [0, -5, -2, -1]
    # saturation: 15 events (cap; 20 given) of 127 << 7 = 16256 saturate Isyn at 32767 before the decay
    cfg = dataclasses.replace(_golden_config(), w_in=np.array([[[127, 0]]]), weight_shift_in=7, bias=np.zeros(1),
                              threshold=np.full(1, 32767), dash_syn=np.array([[15, 15]]))
    _, rec = XyloEmulator(cfg).run(torch.tensor([20]).view(1, 1, 1))
    assert rec["isyn"][0, 0, 0].item() == 32767 - 1 and rec["vmem"][0, 0, 0].item() == 32766


def test_emulator_rejects_bad_input():
    emu = XyloEmulator(_golden_config())
    with pytest.raises(SpikeforgeError, match="event counts"):
        emu.run(torch.rand(3, 1, 1))
    with pytest.raises(SpikeforgeError, match=r"\[T, B, 1\]"):
        emu.run(torch.zeros(3, 1, 2, dtype=torch.int64))


def test_emulator_matches_xylosim_on_random_configs():
    pytest.importorskip("xylosim.v2", reason="xylosim not installed (pip install xylosim) - agreement not checked")
    from spikeforge.targets.xylo.reference import run_xylosim

    rng = np.random.default_rng(2024)
    for i in range(20):
        cfg = random_config(rng, XYLO_AUDIO2 if i % 2 == 0 else XYLO_IMU, max_hidden=48)
        x = random_input(rng, 40, 3, cfg.n_in)
        out, rec = XyloEmulator(cfg).run(torch.as_tensor(x))
        for b in range(x.shape[1]):
            ref_out, ref = run_xylosim(cfg, x[:, b])
            np.testing.assert_array_equal(out[:, b].numpy(), ref_out, err_msg=f"config {i} sample {b}: output")
            assert set(ref) <= set(rec)
            for key, value in ref.items():
                np.testing.assert_array_equal(rec[key][:, b].numpy(), value, err_msg=f"config {i} sample {b}: {key}")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_emulator_gpu_equals_cpu_on_random_configs():
    """The CUDA path (dense products, no CSR) gives the CPU path's integers, spike for spike and state for state."""
    rng = np.random.default_rng(5)
    for i in range(12):
        cfg = random_config(rng, XYLO_AUDIO2 if i % 2 == 0 else XYLO_IMU, max_hidden=200)
        x = torch.as_tensor(random_input(rng, 40, 8, cfg.n_in))
        out_c, rec_c = XyloEmulator(cfg).run(x)
        out_g, rec_g = XyloEmulator(cfg, device="cuda").run(x.cuda())
        assert torch.equal(out_c, out_g.cpu()), i
        for key in rec_c:
            assert torch.equal(rec_c[key], rec_g[key].cpu()), (i, key)
