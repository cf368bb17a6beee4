"""spikeforge.graph and spikeforge.export: graph extraction, NIR round trips, conventions, errors, and
spike-for-spike interoperability with snnTorch and Norse (skipped when they are not installed).

Reference dynamics for NIR graphs are written here as plain forward-Euler loops, never with spikeforge's
step functions.
"""

from __future__ import annotations

import contextlib
import io
import math

import nir
import numpy as np
import pytest
import torch
from torch import nn

from spikeforge.core.checks import SpikeforgeError
from spikeforge.export import DISCRETISATIONS, NODES, from_nir, to_nir
from spikeforge.graph import extract_graph
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
    MaxPool2d,
    Recurrent,
    Sequential,
    TimeDistributed,
)

DT = 1e-3


def _spikes(shape: tuple[int, ...], p: float = 0.3, seed: int = 0) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < p).float()


def _scaled(model: Sequential, gain: float = 3.0) -> Sequential:
    """Stronger weights so that every layer fires."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                p.mul_(gain)
    return model.eval()


# ---------------------------------------------------------------------------------------- models


def _lif_model() -> Sequential:
    return Sequential(
        Linear(6, 8),
        LIF(torch.linspace(4e-3, 2e-2, 8), dt=DT, v_th=0.2, refractory=2e-3, surrogate="arctan",
            surrogate_scale=5.0, size=8, learn=("tau_mem", "v_th"), detach_reset=False),
        Linear(8, 3),
        LIF(7e-3, dt=DT, v_th=0.1, reset="value", v_reset=-0.1, v_leak=0.05),
    )


def _cuba_model() -> Sequential:
    return Sequential(Linear(6, 8, bias=False), CubaLIF(8e-3, 3e-3, dt=DT, v_th=0.2, size=8),
                      Linear(8, 3), CubaLIF(1e-2, 2e-3, dt=DT, v_th=0.1, reset="none"))


def _if_li_model() -> Sequential:
    return Sequential(Linear(6, 8), IF(dt=DT, v_th=0.5, reset="value"), Linear(8, 3),
                      LI(torch.tensor([5e-3, 1e-2, 2e-2]), dt=DT, v_leak=0.1, size=3, learn=("tau_mem",)))


def _conv2d_model() -> Sequential:
    return Sequential(
        Conv2d(2, 4, 3, padding=1), LIF(5e-3, dt=DT, v_th=0.3, size=(4, 16, 16)), AvgPool2d(2),
        TimeDistributed(nn.LPPool2d(1, 2)), Conv2d(4, 4, 3, stride=2, padding="valid", bias=False),
        IF(dt=DT, v_th=0.1), Flatten(), Linear(4, 3), LI(dt=DT),
    )


def _conv2d_grouped_model() -> Sequential:
    # nir 1.0.8's type inference gets these two convolutions wrong (it reads the kernel as square and
    # ignores groups); the graph carries the shapes measured on the model instead.
    return Sequential(Conv2d(2, 4, (3, 1), stride=2), TimeDistributed(nn.Conv2d(4, 4, 1, groups=2)),
                      LIF(dt=DT, v_th=0.1))


def _conv1d_model() -> Sequential:
    return Sequential(Conv1d(2, 3, 3, stride=2, dilation=1, padding=1), IF(dt=DT, v_th=0.2),
                      TimeDistributed(nn.Flatten(1, 2)), Delay(2), Linear(12, 4), LIF(dt=DT, v_th=0.1))


def _delay_model() -> Sequential:
    return Sequential(Linear(6, 5), Delay([0, 1, 3, 2, 1]), DelayedLinear(5, 4, bias=False),
                      LIF(dt=DT, v_th=0.2), DelayedLinear(4, 3))


def _recurrent_model() -> Sequential:
    return Sequential(
        Recurrent(6, LIF(6e-3, dt=DT, v_th=0.3, size=8)),
        Recurrent(8, CubaLIF(8e-3, 2e-3, dt=DT, v_th=0.1, size=5, reset="value"), bias=False,
                  self_connections=True),
        Linear(5, 3), LI(dt=DT),
    )


MODELS = {
    "lif": (_lif_model, (6,)),
    "cuba_lif": (_cuba_model, (6,)),
    "if_li": (_if_li_model, (6,)),
    "conv2d_pools_flatten": (_conv2d_model, (2, 16, 16)),
    "conv2d_grouped_nonsquare": (_conv2d_grouped_model, (2, 7, 5)),
    "conv1d_delay": (_conv1d_model, (2, 8)),
    "delays": (_delay_model, (6,)),
    "recurrent": (_recurrent_model, (6,)),
}


def _assert_same_model(a: Sequential, b: Sequential, x: torch.Tensor) -> None:
    assert repr(a) == repr(b)
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert getattr(la, "fire_spec", None) == getattr(lb, "fire_spec", None)
    ya, _ = a(x)
    yb, _ = b(x)
    assert torch.equal(ya, yb)


# --------------------------------------------------------------------------------------- graph


def test_graph_nodes_edges_and_metadata():
    model = _scaled(Sequential(Linear(6, 8), Dropout(0.3), _lif_model()[1], Recurrent(8, LIF(dt=DT, size=4)),
                               Linear(4, 2, bias=False), LI(dt=DT)))
    g = extract_graph(model, (6,))
    assert isinstance(g, nir.NIRGraph)
    assert list(g.nodes) == ["input", "0", "2", "3", "4", "5", "output"]  # Dropout (1) is dropped
    assert g.edges == [("input", "0"), ("0", "2"), ("2", "3"), ("3", "4"), ("4", "5"), ("5", "output")]
    kinds = [type(g.nodes[k]) for k in ("0", "2", "3", "4", "5")]
    assert kinds == [nir.Affine, nir.LIF, nir.NIRGraph, nir.Linear, nir.LI]
    assert g.metadata["dt"] == DT and g.metadata["discretisation"] == "exp"
    assert g.metadata["generator"].startswith("spikeforge")
    lif = g.nodes["2"]
    np.testing.assert_array_equal(lif.tau, model[2].tau_mem.detach().numpy())  # a copy, in seconds
    np.testing.assert_array_equal(lif.r, np.ones(8))
    assert lif.metadata["reset"] == "subtract" and lif.metadata["refractory_steps"] == 2
    assert lif.metadata["detach_reset"] is False and lif.metadata["dt"] == DT
    assert lif.metadata["learn"] == "tau_mem,v_th" and lif.metadata["surrogate"] == "arctan"
    rec = g.nodes["3"]
    assert set(rec.edges) == {("input", "w_in"), ("w_in", "neuron"), ("neuron", "w_rec"), ("w_rec", "neuron"),
                              ("neuron", "output")}
    assert isinstance(rec.nodes["neuron"], nir.LIF) and isinstance(rec.nodes["w_rec"], nir.Linear)
    assert np.all(np.diag(rec.nodes["w_rec"].weight) == 0)  # self-connections are off
    assert rec.metadata == {"layer": "Recurrent", "self_connections": False}
    np.testing.assert_array_equal(g.nodes["output"].output_type["output"], [2])


def test_if_is_written_with_r_equal_to_one_over_dt():
    g = extract_graph(Sequential(Linear(2, 3), IF(dt=DT)), 2)
    np.testing.assert_allclose(g.nodes["1"].r, np.full(3, 1 / DT))


# ----------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("discretisation", DISCRETISATIONS)
def test_round_trip_is_exact(name, discretisation, tmp_path):
    make, in_shape = MODELS[name]
    torch.manual_seed(1)
    model = _scaled(make())
    x = _spikes((20, 2, *in_shape))
    path = tmp_path / f"{name}.nir"
    graph = to_nir(model, in_shape, path=path, discretisation=discretisation)
    assert graph.metadata["discretisation"] == discretisation
    type_check = name != "conv2d_grouped_nonsquare"  # see _conv2d_grouped_model
    assert nir.read(path, type_check=type_check).metadata["discretisation"] == discretisation
    for source in (graph, path, str(path)):
        _assert_same_model(model, from_nir(source, dt=DT), x)
    assert all(out.abs().sum() > 0 for out in model.layer_outputs(x)[2])  # no silent layer


def test_round_trip_drops_dropout_and_keeps_outputs():
    torch.manual_seed(2)
    model = _scaled(Sequential(Linear(6, 8), LIF(dt=DT, v_th=0.2), Dropout(0.5), TimeDistributed(nn.Identity()),
                               Linear(8, 3), LIF(dt=DT, v_th=0.1)))
    back = from_nir(to_nir(model, (6,)), dt=DT)
    assert [type(m) for m in back.layers] == [Linear, LIF, Linear, LIF]
    x = _spikes((10, 2, 6))
    assert torch.equal(model(x)[0], back(x)[0])


# ----------------------------------------------------------------------------------- conventions


def _euler_lif(cur: torch.Tensor, tau, r, v_leak, v_th, v_reset, dt: float, *, fire: bool = True):
    """Forward Euler of NIR's LIF/LI (reset to v_reset), in float64: returns spikes (or membranes)."""
    v = torch.as_tensor(v_leak, dtype=torch.float64).expand(cur.shape[1:]).clone()
    out = []
    for x in cur.double():
        v = v + dt / torch.as_tensor(tau) * (torch.as_tensor(v_leak) - v + torch.as_tensor(r) * x)
        if fire:
            z = (v > torch.as_tensor(v_th)).double()
            v = torch.where(z > 0, torch.as_tensor(v_reset, dtype=torch.float64), v)
            out.append(z)
        else:
            out.append(v.clone())
    return torch.stack(out)


def test_euler_writing_reproduces_the_model_under_forward_euler():
    torch.manual_seed(3)
    model = _scaled(Sequential(Linear(4, 5), LI(torch.tensor([2e-3, 5e-3, 1e-2, 3e-2, 1.0]), dt=DT, v_leak=0.2,
                                                size=5)))
    g = to_nir(model, (4,), discretisation="euler")
    li = g.nodes["1"]
    tau = model[1].tau_mem.double().numpy()
    np.testing.assert_allclose(li.tau, DT / (1 - np.exp(-DT / tau)), rtol=1e-12)
    np.testing.assert_array_equal(li.r, 1.0)
    x = _spikes((30, 2, 4))
    cur = model[0](x)[0].detach()
    want = _euler_lif(cur, torch.as_tensor(li.tau), li.r, li.v_leak, None, None, DT, fire=False)
    torch.testing.assert_close(model(x)[0].double(), want, rtol=1e-5, atol=1e-6)
    exp = to_nir(model, (4,), discretisation="exp").nodes["1"]
    np.testing.assert_array_equal(exp.tau, model[1].tau_mem.numpy())


def _foreign(*nodes: nir.NIRNode) -> nir.NIRGraph:
    return nir.NIRGraph.from_list(*nodes)


def test_foreign_lif_gain_is_folded_into_the_weights():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32) * 0.1
    tau, r = np.full(5, 4e-3), np.linspace(0.5, 3.0, 5)
    vth, vleak, vreset = np.full(5, 0.5), np.zeros(5), np.full(5, -0.2)
    g = _foreign(nir.Affine(w, b), nir.LIF(tau=tau, r=r, v_leak=vleak, v_threshold=vth, v_reset=vreset))
    model = from_nir(g, dt=DT)
    assert model[1].fire_spec.reset == "value"
    torch.testing.assert_close(model[0].weight, torch.as_tensor(w * r[:, None], dtype=torch.float32))
    x = _spikes((40, 3, 4), p=0.5)
    cur = torch.nn.functional.linear(x.double(), torch.as_tensor(w).double(), torch.as_tensor(b).double())
    want = _euler_lif(cur, tau, r, vleak, vth, vreset, DT)
    got = model(x)[0]
    assert want.sum() > 10 and torch.equal(got.double(), want)


def test_foreign_gain_without_weights_rescales_the_membrane():
    tau, r, vth = np.full(3, 5e-3), np.array([2.0, 4.0, 8.0]), np.full(3, 1.0)
    g = _foreign(nir.Input(input_type={"input": np.array([3])}),
                 nir.LIF(tau=tau, r=r, v_leak=np.zeros(3), v_threshold=vth, v_reset=np.zeros(3)))
    model = from_nir(g, dt=DT)
    torch.testing.assert_close(model[0].v_th, torch.as_tensor(vth / r, dtype=torch.float32))
    x = torch.rand((50, 2, 3), generator=torch.Generator().manual_seed(4))
    want = _euler_lif(x, tau, r, np.zeros(3), vth, 0.0, DT)
    assert want.sum() > 5 and torch.equal(model(x)[0].double(), want)


def test_foreign_cuba_lif_and_if_gains():
    n = 3
    ones = np.ones(n)
    cuba = nir.CubaLIF(tau_syn=ones * 2e-3, tau_mem=ones * 5e-3, r=ones * 2.0, v_leak=ones * 0.0,
                       v_threshold=ones, w_in=ones * 3.0)
    m = from_nir(_foreign(nir.Linear(np.eye(n, dtype=np.float32)), cuba), dt=DT)
    torch.testing.assert_close(m[0].weight, torch.eye(n) * 6.0)
    torch.testing.assert_close(m[1].tau_syn, torch.full((n,), -DT / math.log(1 - DT / 2e-3)))
    m = from_nir(_foreign(nir.Linear(np.eye(n, dtype=np.float32)), nir.IF(r=ones * 250.0, v_threshold=ones)), dt=DT)
    torch.testing.assert_close(m[0].weight, torch.eye(n) * 0.25)  # v += dt * r * x


def test_foreign_recurrent_subgraph_in_snntorch_form():
    """input -> LIF <-> Affine (with bias), no input weights: the identity, and the bias joins the input's."""
    n, tau, r = 4, 3e-3, 2.0
    rng = np.random.default_rng(5)
    w_rec = rng.normal(size=(n, n)).astype(np.float32)
    b_rec = rng.normal(size=n).astype(np.float32) * 0.1
    lif = nir.LIF(tau=np.full(n, tau), r=np.full(n, r), v_leak=np.zeros(n), v_threshold=np.full(n, 0.5),
                  v_reset=np.zeros(n))
    nodes = {"input": nir.Input(input_type={"input": np.array([n])}), "lif": lif, "w_rec": nir.Affine(w_rec, b_rec),
             "output": nir.Output(output_type={"output": np.array([n])})}
    sub = nir.NIRGraph(nodes=nodes,
                       edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([n])}), "rnn": sub,
                            "output": nir.Output(output_type={"output": np.array([n])})},
                     edges=[("input", "rnn"), ("rnn", "output")])
    model = from_nir(g, dt=DT)
    layer = model[0]
    assert isinstance(layer, Recurrent) and layer.self_connections == bool(np.any(np.diag(w_rec)))
    torch.testing.assert_close(layer.input.weight, torch.eye(n) * r)
    x = _spikes((30, 2, n), p=0.5)
    v, z, out = torch.zeros(2, n, dtype=torch.float64), torch.zeros(2, n, dtype=torch.float64), []
    for xt in x.double():
        i = xt + z @ torch.as_tensor(w_rec).double().T + torch.as_tensor(b_rec).double()
        v = v + DT / tau * (-v + r * i)
        z = (v > 0.5).double()
        v = torch.where(z > 0, 0.0, v)
        out.append(z)
    want = torch.stack(out)
    assert want.sum() > 5 and torch.equal(model(x)[0].double(), want)


# ---------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("layers", "match"), [
    ((Linear(4, 3), AdaptiveLIF(dt=DT)), r"layer 1 \(AdaptiveLIF\): NIR has no adaptive neuron"),
    ((DelayedLinear(4, 3, delays=torch.ones(3, 4, dtype=torch.long)), LIF(dt=DT)),
     r"layer 0 \(DelayedLinear\) has per-synapse delays"),
    ((Linear(4, 3), LIF(dt=DT), TimeDistributed(nn.ReLU())), r"layer 2 \(TimeDistributed\(ReLU\)\).*no NIR node"),
    ((Linear(4, 3), Recurrent(3, AdaptiveLIF(dt=DT, size=2))), r"layer 1 \(Recurrent\) neuron.*no adaptive neuron"),
    ((Linear(4, 3), LIF(dt=DT), Linear(3, 3), LIF(dt=2 * DT)), r"share one dt.*layer 3 \(LIF\) has dt=0.002"),
    ((Linear(4, 4), Delay(1)), r"layer 1 \(Delay\).*needs the model's dt"),
    ((Sequential(Linear(4, 3)), LIF(dt=DT)), r"layer 0 \(Sequential\): nested Sequential"),
])
def test_extract_refuses_what_nir_cannot_express(layers, match):
    with pytest.raises(SpikeforgeError, match=match):
        extract_graph(Sequential(*layers), (4,))


@pytest.mark.parametrize(("layers", "shape", "match"), [
    ((Conv2d(1, 2, 3), MaxPool2d(2)), (1, 6, 6), r"layer 1 \(MaxPool2d\): NIR has no max pooling"),
    ((Conv1d(1, 2, 3), AvgPool1d(2)), (1, 6), r"layer 1 \(AvgPool1d\): NIR has no 1-D pooling"),
    ((TimeDistributed(nn.AvgPool2d(2, padding=1)),), (1, 6, 6), r"layer 0 .*without padding"),
    ((Linear(4, 3),), (5,), r"layer 0 \(Linear\) could not take a step"),
])
def test_extract_refuses_layers_and_shapes(layers, shape, match):
    with pytest.raises(SpikeforgeError, match=match):
        extract_graph(Sequential(*layers), shape)


def test_extract_needs_a_sequential():
    with pytest.raises(SpikeforgeError, match=r"takes a spikeforge.nn.Sequential.*Sequential\(layer\)"):
        extract_graph(LIF(), (3,))


def test_strict_refuses_metadata_only_settings():
    with pytest.raises(SpikeforgeError, match=r"node '1' \(nir.LIF\): reset='subtract'.*reset='value'"):
        to_nir(Sequential(Linear(2, 3), LIF(dt=DT)), (2,), strict=True)
    with pytest.raises(SpikeforgeError, match=r"refractory period of 3 steps"):
        to_nir(Sequential(Linear(2, 3), LIF(dt=DT, reset="value", refractory=3e-3)), (2,), strict=True)
    to_nir(Sequential(Linear(2, 3), LIF(dt=DT, reset="value")), (2,), strict=True)


def test_bad_discretisation():
    with pytest.raises(SpikeforgeError, match=r"discretisation must be one of \('euler', 'exp'\)"):
        to_nir(Sequential(Linear(2, 3)), (2,), discretisation="rk4")
    with pytest.raises(SpikeforgeError, match=r"discretisation must be one of"):
        from_nir(to_nir(Sequential(Linear(2, 3)), (2,)), dt=DT, discretisation="zoh")


@pytest.mark.parametrize(("node", "match"), [
    (nir.I(r=np.ones(3)), r"node 'i' \(nir.I\): cannot be imported: spikeforge has no integrator"),
    (nir.Scale(scale=np.ones(3)), r"node 'scale' \(nir.Scale\).*fold the scale into the weights"),
    (nir.CubaLI(tau_syn=np.ones(3), tau_mem=np.ones(3), r=np.ones(3), v_leak=np.zeros(3)),
     r"nir.CubaLI.*no current-based leaky integrator"),
    (nir.LIF(tau=np.full(3, 5e-4), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
     r"node 'lif' \(nir.LIF\): tau = 0.0005 s is not longer than dt = 0.001 s.*discretisation='exp'"),
    (nir.LI(tau=np.full(3, 1e-2), r=np.full(3, 2.0), v_leak=np.zeros(3)),
     r"node 'li' \(nir.LI\): its input gain .* 2..2, not 1.*LI read-out"),
    (nir.Delay(delay=np.array([1e-3, 1.5e-3, 0.0])), r"node 'delay' \(nir.Delay\): delays must be whole"),
])
def test_from_nir_refuses_with_the_node_name(node, match):
    g = _foreign(nir.Input(input_type={"input": np.array([3])}), node)
    with pytest.raises(SpikeforgeError, match=match):
        from_nir(g, dt=DT)


def test_from_nir_refuses_branches_and_missing_files(tmp_path):
    a, b = nir.Linear(np.ones((2, 2))), nir.Linear(np.ones((2, 2)))
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}), "a": a, "b": b,
                            "output": nir.Output(output_type={"output": np.array([2])})},
                     edges=[("input", "a"), ("input", "b"), ("a", "output"), ("b", "output")])
    with pytest.raises(SpikeforgeError, match=r"node 'input' has 2 successors.*chain"):
        from_nir(g, dt=DT)
    with pytest.raises(SpikeforgeError, match=r"no NIR file at"):
        from_nir(tmp_path / "missing.nir", dt=DT)
    with pytest.raises(SpikeforgeError, match=r"dt must be positive"):
        from_nir(g, dt=0.0)


def test_the_table_covers_every_node_the_graph_writes():
    written = {type(n) for make, shape in MODELS.values() for n in extract_graph(make(), shape).nodes.values()}
    assert written - {nir.Input, nir.Output} <= set(NODES)


# ------------------------------------------------------------------------------ interoperability


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def snntorch():
    module = pytest.importorskip("snntorch", reason="snnTorch is not installed (pip install snntorch nirtorch)")
    pytest.importorskip("snntorch.export_nir", reason="snnTorch's NIR support needs nirtorch (pip install nirtorch)")
    return module


@pytest.fixture(scope="module")
def norse():
    return pytest.importorskip("norse.torch", reason="Norse is not installed (pip install --no-deps norse nirtorch)")


SNN_DT = 1e-4  # snnTorch's NIR import and export assume dt = 1e-4 s
# nirtorch warns that the API snnTorch and Norse call is deprecated; not ours to fix.
third_party = pytest.mark.filterwarnings("ignore:nirtorch.*deprecated:DeprecationWarning")


@third_party
def test_spikeforge_to_snntorch_same_spikes(snntorch):
    from snntorch.import_nir import import_from_nir

    torch.manual_seed(6)
    model = _scaled(Sequential(Linear(6, 8), LIF(5e-4, dt=SNN_DT, v_th=0.3, reset="value", size=8),
                               Linear(8, 4), LIF(1e-3, dt=SNN_DT, v_th=0.2, reset="value", size=4)), 4.0)
    x = _spikes((60, 4, 6))
    want = model(x)[0]
    net = _quiet(import_from_nir, to_nir(model, (6,)))
    with torch.no_grad():
        got = torch.stack([_quiet(net, xt)[0] for xt in x])
    assert want.sum() > 20 and torch.equal(got, want)


@third_party
def test_snntorch_to_spikeforge_same_spikes(snntorch):
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(7)

    def leaky(n, beta, th):
        return snntorch.Leaky(beta=torch.full((n,), beta), threshold=torch.full((n,), th), init_hidden=True,
                              reset_mechanism="zero", reset_delay=False)

    net = nn.Sequential(nn.Linear(6, 8), leaky(8, 0.7, 0.5), nn.Linear(8, 4), leaky(4, 0.8, 0.3))
    x = _spikes((60, 4, 6))
    with torch.no_grad():
        net[0].weight.mul_(2.0)
        want = torch.stack([net(xt) for xt in x])
        graph = _quiet(export_to_nir, net, torch.zeros(1, 6), ignore_dims=[0])
    model = from_nir(graph, dt=SNN_DT)
    assert [type(m) for m in model.layers] == [Linear, LIF, Linear, LIF]
    assert want.sum() > 20 and torch.equal(model(x)[0], want)


@third_party
def test_spikeforge_to_norse_same_spikes(norse):
    torch.manual_seed(8)
    model = _scaled(Sequential(Linear(6, 8), LIF(5e-3, dt=DT, v_th=0.3, reset="value", size=8),
                               Linear(8, 4), LIF(1e-2, dt=DT, v_th=0.1, reset="value", size=4)))
    x = _spikes((60, 4, 6))
    want = model(x)[0]
    net = norse.from_nir(to_nir(model, (6,)), dt=DT)
    state, outs = None, []
    with torch.no_grad():
        for xt in x:
            out, state = net(xt, state)
            outs.append(out)
    assert want.sum() > 20 and torch.equal(torch.stack(outs), want)


@third_party
def test_norse_to_spikeforge_same_spikes(norse):
    torch.manual_seed(9)
    n_hidden, n_out = 8, 4
    lif = norse.LIFBoxCell(norse.LIFBoxParameters(
        tau_mem_inv=torch.full((n_hidden,), 200.0), v_th=torch.full((n_hidden,), 0.3),
        v_leak=torch.zeros(n_hidden), v_reset=torch.zeros(n_hidden)))
    li = norse.LIBoxCell(norse.LIBoxParameters(tau_mem_inv=torch.full((n_out,), 100.0), v_leak=torch.zeros(n_out)))
    net = norse.SequentialState(nn.Linear(6, n_hidden), lif, nn.Linear(n_hidden, n_out), li)
    x = _spikes((60, 4, 6))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        s1 = s2 = None
        spikes, membranes = [], []
        for xt in x:
            z, s1 = net[1](net[0](xt), s1)
            v, s2 = net[3](net[2](z), s2)
            spikes.append(z)
            membranes.append(v)
        graph = norse.to_nir(net, torch.zeros(1, 6), dt=DT)
    for node in graph.nodes.values():  # Norse 1.1.0 writes dt * tau (norse issue #411)
        if isinstance(node, (nir.LIF, nir.LI)):
            node.tau = node.tau / DT
    model = from_nir(graph, dt=DT)
    assert [type(m) for m in model.layers] == [Linear, LIF, Linear, LI]
    _, _, outs = model.layer_outputs(x)
    assert torch.stack(spikes).sum() > 20 and torch.equal(outs[1], torch.stack(spikes))
    torch.testing.assert_close(outs[3], torch.stack(membranes), rtol=1e-5, atol=1e-6)
