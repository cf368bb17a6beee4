"""Deployment: event-count coding, quantise/dequantise, quantisation-aware training, cost models, `deploy`."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from spikeforge.core.checks import SpikeforgeError
from spikeforge.encode import event_counts
from spikeforge.graph import extract_graph
from spikeforge.nn import LI, CubaLIF, Linear, Sequential
from spikeforge.targets import compile as compile_target
from spikeforge.targets import dequantised
from spikeforge.targets.loihi import LoihiEnergyModel
from spikeforge.targets.loihi import estimate_cost as loihi_cost
from spikeforge.targets.xylo import XyloEmulator, XyloPowerModel, usage
from spikeforge.targets.xylo import estimate_cost as xylo_cost
from spikeforge.targets.xylo.cost import cycles_per_step, mean_fanout
from spikeforge.train.config import config_from_dict
from spikeforge.train.qat import QuantisedModel, state_peaks
from spikeforge.train.trainer import Trainer


def _model(hidden: int = 12, seed: int = 0) -> Sequential:
    torch.manual_seed(seed)
    return Sequential(Linear(4, hidden), CubaLIF(tau_mem=10e-3, tau_syn=5e-3, size=hidden), Linear(hidden, 3),
                      LI(tau_mem=10e-3))


def test_event_counts_round_clamp_and_refuse():
    x = torch.tensor([[0.0, 0.26, 0.5, 1.0, 3.0]])
    seq = event_counts(x, 4, gain=15.0, max_events=15)
    assert seq.shape == (4, 1, 5)
    # rates 0, 3.9, 7.5, 15, 15 (clamped); cumulative rounding: counts floor or ceil of the rate, the totals
    # over t steps round(t * rate)
    assert seq[:, 0, 1].tolist() == [4.0, 4.0, 4.0, 4.0] and seq[:, 0, 2].tolist() == [8.0, 7.0, 8.0, 7.0]
    assert seq[:, 0, 3].tolist() == [15.0] * 4 and seq[:, 0, 4].tolist() == [15.0] * 4
    assert seq[:, 0, 0].sum() == 0
    fine = event_counts(torch.tensor([[0.51, 0.52]]), 30, gain=15.0)
    assert fine.sum(0)[0, 0] != fine.sum(0)[0, 1]  # resolved over the sequence, though 1 step would not
    with pytest.raises(SpikeforgeError, match="non-negative"):
        event_counts(-x, 2)
    with pytest.raises(SpikeforgeError, match="max_events"):
        event_counts(x, 2, max_events=0)


def _set_values(model: Sequential, values: dict) -> None:
    """Write dequantised values into the float model (node names are layer indices)."""
    with torch.no_grad():
        for name, vals in values.items():
            neuron = model.layers[int(name)]
            lin = model.layers[int(vals["weight_node"])].module
            lin.weight.copy_(torch.as_tensor(vals["weight"]))
            lin.bias.copy_(torch.as_tensor(vals["drive"]) - neuron.v_leak)
            for key in ("v_th", "tau_mem", "tau_syn"):
                if vals.get(key) is not None:
                    setattr(neuron, key, torch.as_tensor(vals[key], dtype=torch.float32))


def test_dequantise_is_a_fixed_point_of_quantise():
    """Re-quantising the values the integers stand for gives the same integers (quantise o dequantise = id)."""
    model = _model()
    graph = extract_graph(model, 4)
    peaks = state_peaks(model, torch.randint(0, 16, (20, 16, 4)).float())
    config, values = dequantised(graph, "xylo-audio2", peaks)
    _set_values(model, values)
    again = compile_target(extract_graph(model, 4), "xylo-audio2", peaks=peaks)
    for field in ("w_in", "w_out", "threshold", "bias", "dash_mem", "dash_syn", "bias_out", "dash_mem_out"):
        assert np.array_equal(getattr(config, field), getattr(again, field)), field
    assert (config.weight_shift_in, config.weight_shift_out) == (again.weight_shift_in, again.weight_shift_out)


def test_calibration_keeps_states_inside_int16():
    """Without calibration a threshold may take the whole int16 range; with the float states' peaks the chip's
    membranes stay off the rails on the calibration data."""
    model = _model(seed=1)
    x = torch.randint(0, 16, (30, 32, 4)).float()
    peaks = state_peaks(model, x)
    plain = compile_target(extract_graph(model, 4), "xylo-audio2")
    calibrated = compile_target(extract_graph(model, 4), "xylo-audio2", peaks=peaks)
    assert calibrated.info["sigma_hidden"] < plain.info["sigma_hidden"]
    _, rec = XyloEmulator(calibrated).run(x.to(torch.int64))
    assert int(rec["vmem"].abs().max()) < 32767 and int(rec["isyn"].abs().max()) < 32767


def test_quantised_model_runs_with_chip_values_and_straight_through_gradients():
    model = _model().eval()  # eval: the calibration peaks are not updated by this forward pass
    qat = QuantisedModel(model, (4,), "xylo-audio2")
    x = torch.randint(0, 16, (15, 8, 4)).float()
    out_q, _, outs = qat(x)
    # the same as the float model loaded with the dequantised values
    twin = copy.deepcopy(model)
    _, values = dequantised(extract_graph(model, 4), "xylo-audio2", qat.peaks)
    _set_values(twin, values)
    out_t, _, _ = twin.layer_outputs(x)
    assert torch.allclose(out_q, out_t, atol=1e-5)
    assert not torch.allclose(out_q, model(x)[0], atol=1e-5)  # quantisation changes the float model's output
    # straight-through: the float weight receives the gradient taken at the quantised weight
    out_q.sum().backward()
    out_t.sum().backward()
    assert torch.allclose(model.layers[0].module.weight.grad, twin.layers[0].module.weight.grad, atol=1e-4)
    assert len(outs) == len(model.layers)


def _xylo_tiny(tiny_config: dict) -> dict:
    cfg = copy.deepcopy(tiny_config)
    cfg["encoding"] = {"type": "events", "steps": 10, "gain": 15.0, "bias": False}
    cfg["model"]["init_gain"] = 0.5
    cfg["model"]["layers"] = [{"type": "linear", "out": 16},
                              {"type": "cuba_lif", "tau_mem": 10e-3, "tau_syn": 5e-3},
                              {"type": "linear", "out": 3}, {"type": "li", "tau_mem": 10e-3}]
    cfg["quantise"] = {"target": "xylo-audio2", "start_epoch": 1}
    cfg["output"]["plots"] = False
    return cfg


def test_qat_config_is_validated(tiny_config):
    cfg = _xylo_tiny(tiny_config)
    cfg["quantise"]["target"] = "loihi"
    with pytest.raises(SpikeforgeError, match="quantise.target"):
        config_from_dict(cfg)
    cfg["quantise"] = {"target": "xylo-audio2", "start_epoch": 3}
    with pytest.raises(SpikeforgeError, match="start_epoch"):
        config_from_dict(cfg)


def test_qat_training_then_deploy_report(tiny_config, tmp_path):
    from spikeforge.cli.deploy import deploy, format_report

    trainer = Trainer(config_from_dict(_xylo_tiny(tiny_config)))
    assert not trainer.quantised(training=True)  # epoch 0 trains in float
    trainer.fit()
    assert trainer.quantised()
    ck = torch.load(trainer.out_dir / "last.pt", weights_only=False)
    assert ck["qat_peaks"] and set(ck["qat_peaks"]) == {"1", "3"}
    report = deploy(trainer.out_dir / "last.pt", "xylo-audio2", out=tmp_path / "dep", progress=False)
    acc = report["accuracy"]
    assert 0 <= acc["chip_emulator"] <= 1 and acc["quantised_model"] is not None
    # the chip runs what QAT trained: its accuracy is close to the quantised model's
    assert abs(acc["chip_emulator"] - acc["quantised_model"]) <= 0.1, acc
    assert report["calibration"].startswith("state peaks saved")
    assert {row["resource"] for row in report["fit"]} >= {"hidden neurons", "input channels"}
    for key in ("chip_config", "chip_config_json", "nir", "report"):
        assert (tmp_path / "dep").joinpath(report["files"][key].split("/")[-1]).is_file()
    saved = np.load(tmp_path / "dep" / "chip_config.npz")
    assert saved["w_in"].dtype == np.int8 and saved["w_in"].shape == (4, 16, 2)
    assert json.loads((tmp_path / "dep" / "deploy.json").read_text())["target"] == "xylo-audio2"
    assert report["cost"]["total_power_w"] > report["cost"]["dynamic_power_w"] > 0
    text = format_report(report)
    assert "fit report" in text and "chip emulator" in text and "power" in text


def test_deploy_refuses_non_event_input(tiny_config, tmp_path):
    from spikeforge.cli.deploy import deploy

    cfg = copy.deepcopy(tiny_config)
    cfg["train"]["epochs"] = 1
    cfg["output"]["plots"] = False
    cfg["model"]["layers"][1] = {"type": "cuba_lif", "tau_mem": 5e-3, "tau_syn": 2e-3}
    trainer = Trainer(config_from_dict(cfg))
    trainer.fit()
    with pytest.raises(SpikeforgeError, match="encoding.type 'events'"):
        deploy(trainer.out_dir / "last.pt", "xylo-audio2", out=tmp_path / "d", progress=False)


def test_deploy_to_loihi_with_spike_input(tiny_config, tmp_path):
    from spikeforge.cli.deploy import deploy

    cfg = copy.deepcopy(tiny_config)
    cfg["encoding"] = {"type": "poisson", "steps": 8, "gain": 1.0, "bias": False}
    cfg["model"]["layers"][1] = {"type": "lif", "tau_mem": 5e-3, "reset": "value"}
    cfg["train"]["epochs"] = 1
    cfg["output"]["plots"] = False
    trainer = Trainer(config_from_dict(cfg))
    trainer.fit()
    report = deploy(trainer.out_dir / "last.pt", "loihi", out=tmp_path / "l", limit=50, progress=False)
    assert report["samples"] == 50 and report["cost"]["latency_per_step_s"] is None
    assert report["cost"]["synops_per_sample"] > 0


def test_xylo_cycle_model_by_hand():
    model = _model(hidden=5)
    cfg = compile_target(extract_graph(model, 4), "xylo-audio2")
    n_in, n, k = 4, 5, 3
    assert mean_fanout(cfg) == 0.0  # feed-forward: no recurrent weights
    expect = n_in * (0.5 * n * 3.5 + 1) + n * (0 + 3) + n * 0.2 * (1 + 8 * k) + n * 19 + 12 * k
    assert cycles_per_step(cfg, 0.5, 0.2) == pytest.approx(expect)
    steps = 10
    est = xylo_cost(cfg, np.full(7, 0.5 * n_in * steps), np.full(7, 0.2 * n * steps), steps,
                    XyloPowerModel(clock_hz=1e6, energy_per_cycle=2e-12, idle_power=1e-4))
    assert est["cycles_per_step"] == pytest.approx(expect)
    assert est["energy_per_sample_j"] == pytest.approx(expect * 2e-12 * steps)
    assert est["total_power_w"] == pytest.approx(expect * 2e-12 / 1e-3 + 1e-4)
    assert est["latency_per_step_s"] == pytest.approx(expect / 1e6)
    assert est["real_time"] == (expect / 1e6 <= 1e-3)
    with pytest.raises(SpikeforgeError, match="clock_hz"):
        XyloPowerModel(clock_hz=0)


def test_loihi_event_count_by_hand():
    from spikeforge.nn import LIF

    torch.manual_seed(0)
    model = Sequential(Linear(3, 4, bias=False), LIF(tau_mem=5e-3, reset="value"), Linear(4, 2, bias=False),
                       LI(tau_mem=5e-3))
    with torch.no_grad():
        model.layers[0].module.weight.copy_(torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]]))
    cfg = compile_target(extract_graph(model, 3), "loihi")
    fan_in0 = (np.asarray(cfg.layers[0].weight) != 0).sum(axis=0)  # per input channel: [3, 2, 1]
    fan_in1 = (np.asarray(cfg.layers[1].weight) != 0).sum(axis=0)
    inputs = np.array([[2.0, 1.0, 0.0]])
    layer_spikes = [np.array([[1.0, 0, 0, 3]]), np.array([[0.0, 0]])]
    e = LoihiEnergyModel(synop=1.0, neuron_update=10.0, spike=100.0)
    est = loihi_cost(cfg, inputs, layer_spikes, steps=5, model=e)
    synops = inputs[0] @ fan_in0 + layer_spikes[0][0] @ fan_in1
    assert est["synops_per_sample"] == synops
    assert est["energy_per_sample_j"] == pytest.approx(synops + 10.0 * 5 * 6 + 100.0 * 4)


def test_usage_rows_match_the_config():
    model = _model(hidden=7)
    cfg = compile_target(extract_graph(model, 4), "xylo-imu")
    rows = {r["resource"]: (r["used"], r["limit"]) for r in usage(cfg)}
    assert rows["hidden neurons"] == (7, 496) and rows["output neurons"] == (3, 16)
    assert rows["input + recurrent weights (non-zero)"][0] == int((cfg.w_in != 0).sum() + (cfg.w_rec != 0).sum())


def test_several_spikes_per_step_fire_reset_and_gradient():
    from spikeforge.dynamics.common import FireSpec, fire

    v = torch.tensor([0.5, 1.5, 2.5, 3.0, 7.2, -3.0], dtype=torch.float64, requires_grad=True)
    f = fire(FireSpec(max_spikes=5), v, torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0), None, v)
    assert f.z.tolist() == [0.0, 1.0, 2.0, 3.0, 5.0, 0.0]
    assert torch.allclose(f.v, torch.tensor([0.5, 0.5, 0.5, 0.0, 2.2, -3.0], dtype=torch.float64))
    (grad,) = torch.autograd.grad(f.z.sum(), v)
    one = torch.autograd.grad(fire(FireSpec(), v, torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0),
                                   None, v).z.sum(), v)[0]
    # the extra spikes add the slope 1/v_th inside 2 <= v/v_th < K, nothing outside
    assert torch.allclose(grad - one, torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    fv = fire(FireSpec(reset="value", max_spikes=5), v, torch.tensor(1.0, dtype=torch.float64),
              torch.tensor(-0.5, dtype=torch.float64), None, v)
    assert fv.v.tolist()[1:5] == [-0.5, -0.5, -0.5, -0.5]  # one reset to the value, however many spikes


def test_max_spikes_layer_graph_and_targets():
    from spikeforge.export.nir import from_nir, to_nir

    torch.manual_seed(0)
    layer = CubaLIF(size=6, max_spikes=31)
    assert "max_spikes=31" in repr(layer)
    model = Sequential(Linear(4, 6), layer, Linear(6, 3), LI(tau_mem=10e-3))
    with torch.no_grad():
        model.layers[0].module.weight.abs_().mul_(5.0)
    x = torch.randint(0, 16, (12, 3, 4)).float()
    assert float(model.layer_outputs(x)[2][1].detach().max()) > 1  # strongly driven: several spikes in a step
    back = from_nir(to_nir(model, 4), dt=1e-3)
    assert back.layers[1].fire_spec.max_spikes == 31
    assert torch.equal(back(x)[0], model(x)[0])
    with pytest.raises(SpikeforgeError, match="max_spikes=1"):
        to_nir(Sequential(Linear(4, 6), CubaLIF(size=6, reset="value", max_spikes=31)), 4, strict=True)
    compile_target(extract_graph(model, 4), "xylo-audio2")  # 31 is the chip's own count
    odd = Sequential(Linear(4, 6), CubaLIF(size=6, max_spikes=5), Linear(6, 3), LI(tau_mem=10e-3))
    with pytest.raises(SpikeforgeError, match="max_spikes=31"):
        compile_target(extract_graph(odd, 4), "xylo-audio2")
    with pytest.raises(SpikeforgeError, match="binary spikes"):
        from spikeforge.nn import LIF

        compile_target(extract_graph(Sequential(Linear(4, 6), LIF(size=6, reset="value", max_spikes=2),
                                                Linear(6, 3), LI()), 4), "loihi")
