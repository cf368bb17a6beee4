"""Hardware-in-the-loop training (spikeforge.train.hil, spikeforge.targets.observe).

An *ideal* observer rebuilds the float model from the graph it is given (``from_nir``) and records its own
spikes and membranes (before the reset): training in the loop with it must be training in software. A
*noisy* observer perturbs those: the forward pass must then be the observation, with the gradient of a
straight-through BPTT written out by hand here. The Xylo emulator trains a tiny Yin-Yang task in the loop;
the trainer switches between software and target by its ``hil`` config section or ``target=``.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import Tensor

from spikeforge.core.checks import SpikeforgeError
from spikeforge.export.nir import from_nir
from spikeforge.nn import LI, LIF, CubaLIF, Linear, Neuron, Sequential
from spikeforge.targets.observe import LayerObservation, Observer, XyloObserver
from spikeforge.train import in_the_loop
from spikeforge.train.config import config_from_dict
from spikeforge.train.trainer import Trainer


def _recording_hook(store: list):
    """A step hook recording ``(spikes, membrane before the reset)`` per step, the model otherwise unchanged."""
    def hook(step):
        def run(spec, p, s, x):
            out, ns = step(spec, p, s, x)
            if spec is None:
                store.append((torch.zeros_like(out), out))
            else:  # the same integration without the reset: the membrane the threshold test saw
                store.append((out, step(dataclasses.replace(spec, reset="none"), p, s, x)[1].v))
            return out, ns
        return run
    return hook


class IdealObserver:
    """A "target" that is the float model itself, programmed from the graph (``from_nir``)."""

    def __init__(self, with_v: bool = True) -> None:
        self.with_v = with_v
        self.calls = 0

    def observe(self, graph, x):
        self.calls += 1
        model = from_nir(graph, dt=float(graph.metadata["dt"]))
        stores = []
        for layer in model.layers:
            if isinstance(layer, Neuron):
                stores.append([])
                layer.step_hook = _recording_hook(stores[-1])
        with torch.no_grad():
            model(x)
        return [LayerObservation(torch.stack([z for z, _ in st]), torch.stack([v for _, v in st]) if self.with_v
                                 else None) for st in stores]


class NoisyObserver(IdealObserver):
    """The ideal observation with spikes flipped and membranes shifted: a "chip" unlike the model."""

    def __init__(self, seed: int = 0, with_v: bool = True) -> None:
        super().__init__(with_v)
        self.gen = torch.Generator().manual_seed(seed)

    def observe(self, graph, x):
        obs = []
        for ob in super().observe(graph, x):
            flip = torch.rand(ob.spikes.shape, generator=self.gen) < 0.2
            spikes = torch.where(flip, 1 - ob.spikes, ob.spikes) if ob.spikes.any() else ob.spikes
            v = None if ob.v is None else ob.v + 0.3 * torch.randn(ob.v.shape, generator=self.gen)
            obs.append(LayerObservation(spikes, v))
        return obs


def _model(seed: int = 0) -> Sequential:
    torch.manual_seed(seed)
    m = Sequential(Linear(4, 12), LIF(tau_mem=5e-3), Linear(12, 10), CubaLIF(size=10, v_th=0.2, refractory=2e-3),
                   Linear(10, 3), LI(tau_mem=5e-3))
    with torch.no_grad():
        for i in (0, 2):
            m.layers[i].module.weight.mul_(4.0)
    return m


def _grads(model, fn, x):
    model.zero_grad()
    outs = fn(x)
    (outs[0].square().sum() + sum(o.sum() for o in outs[2][:-1])).backward()
    return outs, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("with_v", [True, False])
def test_ideal_observer_is_software_training(with_v):
    """(a) Injecting the model's own spikes and membranes changes nothing: outputs and gradients equal."""
    model = _model()
    x = torch.rand(16, 5, 4) * 4
    (out, _, outs), g_sw = _grads(model, model.layer_outputs, x)
    observer = IdealObserver(with_v)
    hil = in_the_loop(model, observer)
    assert isinstance(observer, Observer)
    (out_h, _, outs_h), g_h = _grads(model, hil.layer_outputs, x)
    assert observer.calls == 1
    # spikes and hidden layers bit for bit; the LI read-out steps in Python under the hook but runs its closed form
    # in software: equal up to rounding
    torch.testing.assert_close(out, out_h, rtol=1e-5, atol=1e-6)
    for a, b in zip(outs[:-1], outs_h[:-1], strict=True):
        assert torch.equal(a, b)
    assert outs[1].sum() > 0 and outs[3].sum() > 0  # spiking, so the surrogate path is exercised
    for a, b in zip(g_sw, g_h, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)  # the fused kernel sums in another order
    # the hook is gone afterwards: the model runs as before
    assert all(layer.step_hook is None for layer in model.layers if isinstance(layer, Neuron))
    assert torch.equal(model(x)[0], out)


def _manual(model: Sequential, x: Tensor, obs: list[LayerObservation]) -> Tensor:
    """Straight-through BPTT written out: hardware values forward, software derivatives backward."""
    lin1, lif, lin2, li = (model.layers[i] for i in range(4))
    a = torch.exp(torch.tensor(-lif.dt) / lif.tau_mem)
    cur = lin1(x)[0]
    v = torch.zeros_like(cur[0])
    zs = []
    for t in range(x.shape[0]):
        v_sw = a * v + (1 - a) * cur[t]
        v = v_sw + (obs[0].v[t] - v_sw).detach()
        z = lif.fire_spec.surrogate(v - lif.v_th)
        zs.append(z + (obs[0].spikes[t] - z).detach())  # no reset: the next hardware membrane holds it
    cur = lin2(torch.stack(zs))[0]
    b = torch.exp(torch.tensor(-li.dt) / li.tau_mem)
    v = torch.zeros_like(cur[0])
    outs = []
    for t in range(x.shape[0]):
        v_sw = b * v + (1 - b) * cur[t]
        v = v_sw + (obs[1].v[t] - v_sw).detach()
        outs.append(v)
    return torch.stack(outs)


def test_forward_is_the_observation_and_gradients_flow_through_it():
    """(b) The forward pass equals what the target recorded; gradients are the straight-through BPTT's."""
    torch.manual_seed(1)
    model = Sequential(Linear(4, 8), LIF(tau_mem=5e-3), Linear(8, 3), LI(tau_mem=5e-3))
    with torch.no_grad():
        model.layers[0].module.weight.mul_(3.0)
    x = torch.rand(12, 6, 4)
    hil = in_the_loop(model, NoisyObserver(seed=2))
    out, _, outs = hil.layer_outputs(x)
    obs = hil.last
    assert torch.equal(outs[1], obs[0].spikes) and torch.equal(out, obs[1].v)
    assert not torch.equal(outs[1], model.layer_outputs(x)[2][1])  # the observation is not the model's
    weight = torch.randn(out.shape)
    model.zero_grad()
    (out * weight).sum().backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    (_manual(model, x, obs) * weight).sum().backward()
    want = [p.grad.clone() for p in model.parameters()]
    for g, w in zip(got, want, strict=True):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_spikes_only_target_resets_the_software_membrane_with_hardware_spikes():
    """Without membranes the software membrane runs on and is reset by the hardware's spikes."""
    torch.manual_seed(3)
    model = Sequential(Linear(3, 5), LIF(tau_mem=5e-3, v_th=0.5), Linear(5, 2), LI(tau_mem=5e-3))
    x = torch.rand(8, 2, 3) * 3

    class Fixed:
        def observe(self, graph, x):
            z = torch.zeros(8, 2, 5)
            z[::2] = 1.0  # fires every other step, whatever the input
            return [LayerObservation(z, None), LayerObservation(torch.zeros(8, 2, 2), None)]

    hil = in_the_loop(model, Fixed())
    _, _, recs = hil.trace(x)
    z, v = recs[1][0], recs[1][1].v
    assert torch.equal(z, hil.last[0].spikes)
    cur = model.layers[0](x)[0].detach()
    a = float(torch.exp(torch.tensor(-1e-3 / 5e-3)))  # dt = 1 ms, tau = 5 ms
    vv = torch.zeros(2, 5)
    for t in range(8):
        vv = a * vv + (1 - a) * cur[t] - 0.5 * z[t]
        torch.testing.assert_close(v[t], vv)


def test_observer_errors_are_named():
    model = _model()
    with pytest.raises(SpikeforgeError, match="observe"):
        in_the_loop(model, object())

    class Short:
        def observe(self, graph, x):
            return [LayerObservation(torch.zeros(x.shape[0], x.shape[1], 12), None)]

    with pytest.raises(SpikeforgeError, match="1 layer observations.*3 neuron layers"):
        in_the_loop(model, Short())(torch.rand(4, 2, 4))


def test_xylo_observer_aligns_layers_and_converts_units():
    """The Xylo observer's spikes are the emulator's, shifted onto the model's grid; membranes in model units."""
    from spikeforge.graph import extract_graph
    from spikeforge.targets import dequantised
    from spikeforge.targets.xylo import XyloEmulator
    from spikeforge.targets.xylo import compile as compile_xylo
    from spikeforge.train.qat import state_peaks

    torch.manual_seed(0)
    model = Sequential(Linear(4, 16, bias=False), CubaLIF(tau_mem=10e-3, tau_syn=5e-3, size=16), Linear(16, 8),
                       LIF(tau_mem=10e-3), Linear(8, 3), LI(tau_mem=10e-3))
    x = torch.randint(0, 4, (15, 5, 4)).float()
    graph = extract_graph(model, 4)
    peaks = state_peaks(model, x)
    observer = XyloObserver()
    observer.calibrate(peaks)
    obs = observer.observe(graph, x)
    config = compile_xylo(graph, "xylo-audio2", peaks)
    _, rec = XyloEmulator(config).run(torch.cat([x, torch.zeros(2, 5, 4)]).int())
    assert torch.equal(obs[0].spikes, rec["spikes"][:15, :, :16].float())
    assert torch.equal(obs[1].spikes, rec["spikes"][1:16, :, 16:].float())  # one step later on the chip
    assert obs[2].spikes.abs().sum() == 0 and obs[2].v.shape == (15, 5, 3)
    # units: the float model holding the chip's values (dequantised) has the first layer's membrane (before the
    # reset) up to the integer rounding, and the same spikes
    values = dequantised(graph, "xylo-audio2", peaks)[1]
    with torch.no_grad():
        for name, vals in values.items():
            neuron, lin = model.layers[int(name)], model.layers[int(vals["weight_node"])].module
            lin.weight.copy_(torch.as_tensor(vals["weight"]))
            if lin.bias is not None:
                lin.bias.copy_(torch.as_tensor(vals["drive"]) - neuron.v_leak)
            for key in ("v_th", "tau_mem", "tau_syn"):
                if vals.get(key) is not None:
                    setattr(neuron, key, torch.as_tensor(vals[key], dtype=torch.float32))
        out, _, recs = model.trace(x)
    z0, v0 = recs[1][0], recs[1][1].v + recs[1][0] * model.layers[1].v_th
    assert z0.sum() > 0 and torch.equal(obs[0].spikes, z0)
    assert float((obs[0].v - v0).abs().max()) < 0.01 * float(v0.abs().max())
    assert torch.corrcoef(torch.stack([obs[2].v.flatten(), out.flatten()]))[0, 1] > 0.97
    with pytest.raises(SpikeforgeError, match="integer"):
        XyloObserver().observe(graph, x + 0.5)


def _tiny(tiny_config: dict) -> dict:
    cfg = copy.deepcopy(tiny_config)
    cfg["encoding"] = {"type": "events", "steps": 10, "gain": 15.0, "bias": False}
    cfg["model"]["init_gain"] = 0.5
    cfg["model"]["layers"] = [{"type": "linear", "out": 16},
                              {"type": "cuba_lif", "tau_mem": 10e-3, "tau_syn": 5e-3},
                              {"type": "linear", "out": 3}, {"type": "li", "tau_mem": 10e-3}]
    cfg["train"]["loss"]["rate_weight"] = 0.0
    cfg["train"]["schedule"] = {"name": "none"}
    cfg["output"]["plots"] = False
    return cfg


def test_xylo_in_the_loop_trains_through_the_config_switch(tiny_config):
    """(c) + (d): ``hil: {target: xylo-audio2}`` in the same config trains on the emulator and the loss drops."""
    cfg = _tiny(tiny_config)
    cfg["train"]["epochs"] = 5
    cfg["train"]["optimizer"]["lr"] = 2e-2
    cfg["model"]["init_gain"] = 1.0
    cfg["data"]["limit_train"] = 192
    software = Trainer(config_from_dict(cfg))
    assert software.hil is None
    cfg["hil"] = {"target": "xylo-audio2"}
    trainer = Trainer(config_from_dict(cfg))
    assert trainer.hil is not None and isinstance(trainer.hil.observer, XyloObserver)
    before = trainer.evaluate("train")["loss"]
    result = trainer.fit()
    assert trainer.hil.observer.config is not None  # the emulator ran
    after = trainer.evaluate("train")["loss"]
    assert after < 0.8 * before, (before, after, result)
    # evaluation runs on the target: the read-out is the emulator's membrane
    x = torch.randint(0, 5, (10, 4, 4)).float()
    out, _ = trainer.hil(x)
    assert torch.equal(out, trainer.hil.last[-1].v)


def test_trainer_target_argument_with_ideal_observer_equals_software(tiny_config):
    """(d) ``Trainer(cfg, target=observer)``: with the ideal observer the run is the software run."""
    cfg = copy.deepcopy(tiny_config)
    cfg["model"]["layers"] = [layer for layer in cfg["model"]["layers"] if layer["type"] != "dropout"]
    cfg["train"]["epochs"] = 2
    cfg["data"]["limit_train"] = 96
    cfg["output"]["plots"] = False
    soft = Trainer(config_from_dict(cfg))
    soft.fit()
    cfg["output"]["dir"] += "-hil"
    observer = IdealObserver()
    hil = Trainer(config_from_dict(cfg), target=observer)
    hil.fit()
    assert observer.calls > 0
    assert len(soft.history) == len(hil.history) == 2
    for a, b in zip(soft.history, hil.history, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    for p, q in zip(soft.model.parameters(), hil.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


def test_hil_config_is_validated(tiny_config):
    cfg = _tiny(tiny_config)
    cfg["hil"] = {"target": "xylo-audio2", "oops": 1}
    with pytest.raises(SpikeforgeError, match="hil.oops"):
        config_from_dict(cfg)
    cfg["hil"] = {"target": "nope"}
    with pytest.raises(SpikeforgeError, match="unknown hardware-in-the-loop target 'nope'"):
        Trainer(config_from_dict(cfg))
    cfg["hil"] = {"target": "xylo-audio2"}
    cfg["quantise"] = {"target": "xylo-audio2"}
    with pytest.raises(SpikeforgeError, match="exclusive"):
        Trainer(config_from_dict(cfg))


def test_docs_example_runs():
    """The first Python block of docs/hil.md (also the README snippet) runs as written and learns."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "hil.md").read_text()
    block = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    scope: dict = {}
    torch.manual_seed(0)
    exec(compile(block, "docs/hil.md", "exec"), scope)  # noqa: S102
    assert scope["hil"].last is not None  # the emulator ran
    assert scope["loss"].item() < 1.0  # chance is ln 3 = 1.10


def test_bss2_observer_through_the_config_switch(tiny_config):
    """``hil: {target: bss2, instance: i}`` builds that emulated chip; the forward pass is its observation."""
    from spikeforge.graph import extract_graph
    from spikeforge.targets.bss2.dynamics import BSS2Chip

    cfg = _tiny(tiny_config)
    cfg["model"]["layers"][1] = {"type": "lif", "tau_mem": 10e-3, "reset": "value"}
    cfg["hil"] = {"target": "bss2", "instance": 7, "options": {"seed": 1, "calibrated": False}}
    trainer = Trainer(config_from_dict(cfg))
    chip = trainer.hil.observer
    assert isinstance(chip, BSS2Chip) and chip.instance == 7
    with torch.no_grad():
        trainer.model.layers[0].module.weight.mul_(4.0)
    x = torch.randint(0, 6, (10, 4, 4)).float()
    out, _, outs = trainer.hil.layer_outputs(x)
    assert torch.equal(outs[1], trainer.hil.last[0].spikes) and torch.equal(out, trainer.hil.last[1].v)
    assert outs[1].sum() > 0
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())
    # the instance is the chip: the same instance (and noise seed) observes the same, another one differs
    again = Trainer(config_from_dict(cfg)).hil.observer
    graph = extract_graph(trainer.model, 4)
    same = BSS2Chip(instance=7, seed=1, calibrated=False).observe(graph, x)[1].v
    assert torch.equal(again.observe(graph, x)[1].v, same)
    assert not torch.equal(BSS2Chip(instance=8, seed=1, calibrated=False).observe(graph, x)[1].v, same)


def test_hil_bench_smoke(tmp_path):
    """bench/hil_yinyang.py runs end to end on two chips and writes its JSON and plot."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "hil.json"
    res = subprocess.run([sys.executable, str(root / "bench" / "hil_yinyang.py"), "--chips", "2", "--seed", "1",
                          "--sw-epochs", "1", "--hil-epochs", "1", "--hidden", "16", "--steps", "10",
                          "--limit-train", "128", "--limit-test", "100", "--out", str(tmp_path / "runs"),
                          "--json", str(out)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["instances"] == [100, 101] and len(data["runs"]) == 2
    assert all(0.0 <= r["deployed_acc"] <= 1.0 and 0.0 <= r["hil_acc"] <= 1.0 for r in data["runs"])
    assert (tmp_path / "hil.png").is_file() and "recovered fraction" in res.stdout


def test_step_hook_returning_the_step_is_the_reference_scan():
    """The neuron hook is inert unless set; a hook that returns the model's step runs the reference scan as is."""
    torch.manual_seed(0)
    x = torch.rand(12, 3, 5) * 3
    layer = LIF(tau_mem=5e-3, size=5)
    assert LIF.step_hook is None and layer.step_hook is None
    fused, _ = layer(x)
    reference, _ = LIF(tau_mem=5e-3, size=5, engine="reference")(x)
    calls = []
    layer.step_hook = lambda step: calls.append(step) or step
    hooked, _ = layer(x)
    assert len(calls) == 1 and torch.equal(hooked, reference) and torch.equal(fused, reference)
    _, _, rec = layer.trace(x)
    assert len(calls) == 2 and rec.v.shape == (12, 3, 5)


def test_shipped_bss2_config_switches_by_one_argument():
    from pathlib import Path

    from spikeforge.train.config import load_config

    path = Path(__file__).resolve().parent.parent / "configs" / "yinyang-bss2.yaml"
    assert load_config(path).hil.target is None
    cfg = load_config(path, {"hil.target": "bss2", "hil.instance": 3})
    assert (cfg.hil.target, cfg.hil.instance) == ("bss2", 3)
