"""spikeforge.kernels on the CPU: every fused path equals the reference scan (spikes, state, gradients).

The reference is :func:`spikeforge.sim.scan.run` over each model's ``step``; the fused kernels restate the
equations in C++ and must reproduce it spike for spike, with gradients within 1e-5 relative.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from _sparse_reference import gated_fire

from spikeforge.core.checks import SpikeforgeError
from spikeforge.core.surrogate import SURROGATES, Surrogate
from spikeforge.dynamics import FireSpec, adaptive_lif, cuba_lif, if_neuron, lif
from spikeforge.kernels import cpu_scan, fused_recurrent, fused_scan
from spikeforge.nn import IF, LIF, AdaptiveLIF, CubaLIF, Recurrent
from spikeforge.sim import scan

F64 = torch.float64
MODULES = {"if": if_neuron, "lif": lif, "cuba_lif": cuba_lif, "adaptive_lif": adaptive_lif}
RESETS = ("subtract", "value", "none")

pytestmark = pytest.mark.skipif(not cpu_scan.available(), reason="fused CPU kernels could not be built here")


def _params(model: str, n: int, dtype=F64):
    """Per-neuron time constants and thresholds so that broadcasting is exercised."""
    g = torch.Generator().manual_seed(1)
    tau = 5e-3 + 20e-3 * torch.rand(n, generator=g, dtype=dtype)
    th = 0.8 + 0.4 * torch.rand(n, generator=g, dtype=dtype)
    t = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
    if model == "if":
        return if_neuron.make_params(v_th=th, v_reset=t(-0.2), dt=1e-3)
    if model == "lif":
        return lif.make_params(tau_mem=tau, v_th=th, v_leak=t(0.1), v_reset=t(-0.2), dt=1e-3)
    if model == "cuba_lif":
        return cuba_lif.make_params(tau_mem=tau, tau_syn=t(4e-3), v_th=th, v_leak=t(0.0), v_reset=t(-0.2), dt=1e-3)
    return adaptive_lif.make_params(tau_mem=tau, tau_ahp=t(80e-3), b=t(0.3), v_th=th, v_leak=t(0.0),
                                    v_reset=t(-0.2), dt=1e-3)


def _inputs(model: str, refractory: int, *, t: int = 40, b: int = 3, n: int = 5, dtype=F64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gain = 0.35 if model == "if" else 6.0
    x = (gain * torch.rand(t, b, n, generator=g, dtype=dtype)).requires_grad_()
    p = _params(model, n, dtype)
    s0 = MODULES[model].init_state(p, x[0], refractory=refractory > 0)
    fields = []
    for f in s0:  # a non-resting, differentiable initial state
        if f is None or not f.is_floating_point():
            fields.append(f)
        else:
            fields.append((f + 0.5 * torch.rand(f.shape, generator=g, dtype=dtype)).requires_grad_())
    return p, type(s0)(*fields), x


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp(min=1e-30)).item()


def _compare(model: str, spec: FireSpec, p, s0, x, *, tol: float = 1e-5) -> torch.Tensor:
    z_ref, s_ref, _ = scan.run(MODULES[model].step, spec, p, s0, x)
    out = fused_scan(model, spec, p, s0, x)
    assert out is not None
    z, s = out
    assert torch.equal(z, z_ref)
    for a, b in zip(s_ref, s, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype and torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    g = torch.Generator().manual_seed(2)
    w = torch.randn(z.shape, generator=g, dtype=z.dtype)
    ws = [None if f is None or not f.is_floating_point() else torch.randn(f.shape, generator=g, dtype=f.dtype)
          for f in s_ref]

    def loss(zz, ss):
        return (zz * w).sum() + sum((f * c).sum() for f, c in zip(ss, ws, strict=True) if c is not None)

    wrt = [x] + [f for f in s0 if f is not None and f.requires_grad]
    g_ref = torch.autograd.grad(loss(z_ref, s_ref), wrt)
    g_fus = torch.autograd.grad(loss(z, s), wrt)
    for a, b in zip(g_ref, g_fus, strict=True):
        assert a.abs().max() > 0
        assert _rel(a, b) < tol
    return z_ref


@pytest.mark.parametrize("model,reset,refractory", list(itertools.product(MODULES, RESETS, (0, 2))))
def test_fused_scan_equals_reference(model: str, reset: str, refractory: int) -> None:
    for detach, sur in [(True, "fast_sigmoid"), (False, "sigmoid"), (True, "boxcar")]:
        spec = FireSpec(Surrogate(sur, 4.0), reset, refractory, detach)
        z = _compare(model, spec, *_inputs(model, refractory))
        # the inputs drive real spiking, resets and refractory holds
        assert 0.02 < z.mean().item() < (1.0 if reset == "none" else 0.9)


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_every_surrogate(name: str) -> None:
    spec = FireSpec(Surrogate(name, 3.0), "subtract", 1, False)
    _compare("lif", spec, *_inputs("lif", 1, seed=3))


def test_float32_spikes_identical() -> None:
    for model in MODULES:
        spec = FireSpec(Surrogate("arctan", 2.0), "value", 1, True)
        p, s0, x = _inputs(model, 1, t=60, b=4, n=33, dtype=torch.float32)
        _compare(model, spec, p, s0, x, tol=1e-4)


def test_streaming_in_chunks_equals_one_call() -> None:
    spec = FireSpec(Surrogate(), "subtract", 2, True)
    p, s0, x = _inputs("adaptive_lif", 2, t=50)
    z_all, s_all = fused_scan("adaptive_lif", spec, p, s0, x)
    z1, s1 = fused_scan("adaptive_lif", spec, p, s0, x[:17])
    z2, s2 = fused_scan("adaptive_lif", spec, p, s1, x[17:])
    assert torch.equal(torch.cat([z1, z2]), z_all)
    for a, b in zip(s_all, s2, strict=True):
        assert torch.equal(a, b)
    g_all = torch.autograd.grad(z_all.sum() + s_all.v.sum(), x)[0]
    g_chunks = torch.autograd.grad(torch.cat([z1, z2]).sum() + s2.v.sum(), x)[0]
    assert _rel(g_all, g_chunks) < 1e-12


def test_no_grad_path_equals_grad_path() -> None:
    spec = FireSpec(Surrogate(), "value", 1, True)
    p, s0, x = _inputs("cuba_lif", 1)
    z, s = fused_scan("cuba_lif", spec, p, s0, x)
    with torch.no_grad():
        z_ng, s_ng = fused_scan("cuba_lif", spec, p, s0, x)
    assert torch.equal(z, z_ng) and torch.equal(s.v, s_ng.v) and torch.equal(s.ref, s_ng.ref)


def test_learned_params_and_unknown_cases_fall_back() -> None:
    spec = FireSpec()
    p, s0, x = _inputs("lif", 0)
    p_learn = p._replace(v_th=p.v_th.clone().requires_grad_())
    assert fused_scan("lif", spec, p_learn, s0, x) is None
    assert fused_scan("lif", spec, p, s0, x.detach().to(torch.int64)) is None
    with pytest.raises(SpikeforgeError, match="model must be one of"):
        fused_scan("hodgkin_huxley", spec, p, s0, x)
    with pytest.raises(SpikeforgeError, match="sparse_backward"):
        fused_scan("lif", spec, p, s0, x, sparse_backward=-1.0)
    # a LIF layer learning its threshold runs the reference under engine="auto" and equals it
    layer = LIF(size=5, learn=("v_th",)).double()
    ref = LIF(size=5, learn=("v_th",), engine="reference").double()
    assert torch.equal(layer(x.detach())[0], ref(x.detach())[0])
    with pytest.raises(SpikeforgeError, match="cannot run fused"):
        LIF(size=5, learn=("v_th",), engine="fused").double()(x.detach())


def test_build_failure_warns_once_and_gives_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cpu_scan._STATE, "status", None)

    def no_compiler():
        raise RuntimeError("no C++ compiler found (c++/g++ on PATH or $CXX)")

    monkeypatch.setattr(cpu_scan, "_compile", no_compiler)
    layer = LIF(reset="value", refractory=2e-3).double()
    ref = LIF(reset="value", refractory=2e-3, engine="reference").double()
    x = 4.0 * torch.rand(30, 2, 6, dtype=F64, generator=torch.Generator().manual_seed(5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        z1, _ = layer(x)
        z2, _ = layer(x)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and "\n" not in msgs[0] and "reference scan" in msgs[0]
    assert torch.equal(z1, ref(x)[0]) and torch.equal(z2, z1)


def test_compile_failure_names_the_compiler_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source that does not compile raises with the compiler's first ``error:`` line (file, line and what is
    wrong), not its last line (a source excerpt or caret line, which said nothing in the one-line warning)."""
    if not cpu_scan.build():
        pytest.skip("no working C++ compiler here")
    monkeypatch.setattr(cpu_scan, "_cache_dir", lambda: tmp_path / "cache")
    src = tmp_path / "broken.cpp"
    src.write_text("int f() {\n  return undeclared_name_xyz;\n}\n")
    with pytest.raises(RuntimeError) as err:
        cpu_scan.compile_library(src, "broken")
    msg = str(err.value)
    assert "error:" in msg and "undeclared_name_xyz" in msg and "broken.cpp" in msg and "\n" not in msg
    assert cpu_scan._compiler_error("a.cpp:1:2: warning: w\n  x\n  ^~\n", 1) == "^~"  # no error line: the last
    assert cpu_scan._compiler_error("", 4) == "compiler exit status 4"


def _recurrent_pair(cls, reset: str, refractory: float, *, hidden: int = 12, seed: int = 0):
    torch.manual_seed(seed)
    kw = {} if cls is IF else {"v_reset": -0.1}
    fused = Recurrent(6, cls(size=hidden, reset=reset, refractory=refractory, **kw)).double()
    with torch.no_grad():
        fused.input.weight.mul_(8.0)
        fused.recurrent.weight.mul_(3.0)
    ref = Recurrent(6, cls(size=hidden, reset=reset, refractory=refractory, engine="reference", **kw)).double()
    ref.load_state_dict(fused.state_dict())
    return fused, ref


@pytest.mark.parametrize("cls,reset,refractory",
                         list(itertools.product((IF, LIF, CubaLIF, AdaptiveLIF), ("subtract", "value"), (0.0, 2e-3))))
def test_recurrent_equals_reference(cls, reset: str, refractory: float) -> None:
    fused, ref = _recurrent_pair(cls, reset, refractory)
    x = torch.rand(25, 3, 6, dtype=F64, generator=torch.Generator().manual_seed(4)).requires_grad_()
    z_f, s_f = fused(x)
    z_r, s_r = ref(x)
    assert torch.equal(z_f, z_r) and torch.equal(s_f.z, s_r.z)
    assert 0.01 < z_r.mean().item() < 0.9
    for a, b in zip(s_r.neuron, s_f.neuron, strict=True):
        assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    w = torch.randn(z_r.shape, dtype=F64, generator=torch.Generator().manual_seed(6))

    def loss(z, s):
        return (z * w).sum() + (s.neuron.v ** 2).sum() + 0.3 * s.z.sum()

    g_f = torch.autograd.grad(loss(z_f, s_f), [x, *fused.parameters()])
    g_r = torch.autograd.grad(loss(z_r, s_r), [x, *ref.parameters()])
    for a, b in zip(g_r, g_f, strict=True):
        assert _rel(a, b) < 1e-5


def test_recurrent_streaming_and_initial_spikes() -> None:
    spec = FireSpec(Surrogate("triangle", 1.0), "subtract", 1, False)
    p = _params("lif", 8)
    g = torch.Generator().manual_seed(7)
    x = (3.0 * torch.rand(20, 2, 8, generator=g, dtype=F64)).requires_grad_()
    w = (0.5 * torch.randn(8, 8, generator=g, dtype=F64)).requires_grad_()
    z0 = (torch.rand(2, 8, generator=g, dtype=F64) > 0.5).to(F64).requires_grad_()
    s0 = lif.init_state(p, x[0], refractory=True)
    z, s, zl = fused_recurrent("lif", spec, p, s0, z0, x, w)
    z1, s1, zl1 = fused_recurrent("lif", spec, p, s0, z0, x[:9], w)
    z2, s2, zl2 = fused_recurrent("lif", spec, p, s1, zl1, x[9:], w)
    assert torch.equal(torch.cat([z1, z2]), z) and torch.equal(zl2, zl) and torch.equal(s2.v, s.v)

    def step(spec_, p_, st, x_t):
        zz, ns = lif.step(spec_, p_, st[0], x_t + st[1] @ w.t())
        return zz, (ns, zz)

    z_r, (s_r, zl_r), _ = scan.run(step, spec, p, (s0, z0), x)
    assert torch.equal(z_r, z)
    g_r = torch.autograd.grad((z_r * torch.arange(20.0, dtype=F64)[:, None, None]).sum() + s_r.v.sum(), [x, w, z0])
    g_f = torch.autograd.grad((z * torch.arange(20.0, dtype=F64)[:, None, None]).sum() + s.v.sum(), [x, w, z0])
    for a, b in zip(g_r, g_f, strict=True):
        assert _rel(a, b) < 1e-5


def _banded_reference(spec: FireSpec, p, s0, x, band: float, w=None) -> torch.Tensor:
    """The LIF reference loop written out with sparse backward: outside the band the membrane is a constant
    (detached), so neither the surrogate nor the leak carries gradient through it.

    With ``w`` the input includes the recurrent term ``z_{t-1} @ w.T`` (from ``z_{-1} = 0``).
    """
    v, z_prev = s0.v, torch.zeros_like(x[0])
    deriv = spec.surrogate.derivative
    outs = []
    for t in range(x.shape[0]):
        x_t = x[t] if w is None else x[t] + z_prev @ w.t()
        u = p.v_leak + p.alpha * (v - p.v_leak) + (1.0 - p.alpha) * x_t
        u = torch.where((u - p.v_th).abs() < band, u, u.detach())
        d = u - p.v_th
        dz = deriv(d.detach()) * (d.detach().abs() < band).to(x.dtype)
        z = (d > 0).to(x.dtype) + (d - d.detach()) * dz  # value H(d), derivative dz
        v = u - z.detach() * p.v_th
        outs.append(z)
        z_prev = z
    return torch.stack(outs)


def test_sparse_backward_cuts_the_membrane_outside_the_band() -> None:
    spec = FireSpec(Surrogate("fast_sigmoid", 5.0), "subtract", 0, True)
    p, s0, x = _inputs("lif", 0, t=60, n=7)
    s0 = s0._replace(v=s0.v.detach())
    band = 0.3
    weights = torch.linspace(-1, 1, x.numel(), dtype=F64).view(x.shape)
    z_hand = _banded_reference(spec, p, s0, x, band)
    z, _ = fused_scan("lif", spec, p, s0, x, sparse_backward=band)
    assert torch.equal(z, z_hand)
    g_hand = torch.autograd.grad((z_hand * weights).sum(), x)[0]
    g = torch.autograd.grad((z * weights).sum(), x)[0]
    assert _rel(g_hand, g) < 1e-10
    g_dense = torch.autograd.grad((fused_scan("lif", spec, p, s0, x)[0] * weights).sum(), x)[0]
    assert _rel(g_dense, g) > 1e-3  # the band really cuts gradient


def test_recurrent_sparse_backward_cuts_the_membrane_outside_the_band() -> None:
    spec = FireSpec(Surrogate("fast_sigmoid", 5.0), "subtract", 0, True)
    g = torch.Generator().manual_seed(8)
    p = _params("lif", 40)
    x = (2.0 * torch.rand(50, 3, 40, generator=g, dtype=F64)).requires_grad_()
    w = (0.6 * torch.randn(40, 40, generator=g, dtype=F64)).requires_grad_()
    s0 = lif.init_state(p, x[0], refractory=False)
    weights = torch.randn(x.shape, generator=g, dtype=F64)
    for band in (0.05, 0.3):  # narrow: the sparse product path; wide: the dense one
        z_hand = _banded_reference(spec, p, s0, x, band, w)
        z, _, _ = fused_recurrent("lif", spec, p, s0, torch.zeros_like(x[0]), x, w, sparse_backward=band)
        assert torch.equal(z, z_hand) and 0.02 < z.mean().item() < 0.5
        g_hand = torch.autograd.grad((z_hand * weights).sum(), [x, w])
        g_fused = torch.autograd.grad((z * weights).sum(), [x, w])
        for a, b in zip(g_hand, g_fused, strict=True):
            assert a.abs().max() > 0 and _rel(a, b) < 1e-10


@pytest.mark.parametrize(("model", "reset", "refractory"),
                         [(m, r, ref) for m in MODULES for r in RESETS for ref in (0, 2)])
def test_sparse_backward_every_model_equals_the_gated_reference(model: str, reset: str, refractory: int,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    band = 0.4
    spec = FireSpec(Surrogate("fast_sigmoid", 5.0), reset, refractory, reset != "value")
    p, s0, x = _inputs(model, refractory, t=50, n=9)
    weights = torch.linspace(-1, 1, x.numel(), dtype=F64).view(x.shape)
    z, _ = fused_scan(model, spec, p, s0, x, sparse_backward=band)
    g = torch.autograd.grad((z * weights).sum(), x)[0]
    monkeypatch.setattr(MODULES[model], "fire", gated_fire(band))
    z_ref, _, _ = scan.run(MODULES[model].step, spec, p, s0, x)
    g_ref = torch.autograd.grad((z_ref * weights).sum(), x)[0]
    assert torch.equal(z, z_ref) and z.sum() > 0
    assert g_ref.abs().max() > 0 and _rel(g_ref, g) < 1e-10
    if model != "cuba_lif":  # the input gradient is zero wherever the membrane is outside the band
        assert (g != 0).float().mean() < 0.9


def test_layer_engine_arguments() -> None:
    with pytest.raises(SpikeforgeError, match="engine must be one of"):
        LIF(engine="gpu")
    with pytest.raises(SpikeforgeError, match="sparse_backward needs the fused engine"):
        LIF(engine="reference", sparse_backward=0.5)
    layer = LIF(sparse_backward=0.5, engine="fused")
    assert layer.sparse_backward == 0.5 and layer.engine == "fused"
    x = torch.rand(5, 2, 3)
    with pytest.raises(SpikeforgeError, match="reference scan"):
        layer.trace(x)
    assert len(LIF().trace(x)) == 3


def test_layers_take_the_fused_path_by_default() -> None:
    def graph_names(t: torch.Tensor) -> str:
        names, todo = [], [t.grad_fn]
        while todo:
            fn = todo.pop()
            if fn is not None:
                names.append(type(fn).__name__)
                todo.extend(f for f, _ in fn.next_functions)
        return " ".join(names)

    x = torch.rand(10, 2, 4, requires_grad=True)
    for cls in (IF, LIF, CubaLIF, AdaptiveLIF):
        assert "_ScanFunction" in graph_names(cls()(x)[0])
        assert "_ScanFunction" not in graph_names(cls(engine="reference")(x)[0])
    assert "_RecurrentFunction" in graph_names(Recurrent(4, LIF(size=3))(x)[0])


def test_training_config_switches_sparse_backward_on() -> None:
    from spikeforge.train.build import build_model
    from spikeforge.train.config import config_from_dict

    cfg = config_from_dict({
        "data": {"dataset": "yinyang"},
        "model": {"dt": 1e-3, "layers": [
            {"type": "linear", "out": 8},
            {"type": "lif", "tau_mem": 10e-3, "sparse_backward": 0.3, "engine": "fused"},
            {"type": "recurrent", "out": 6, "neuron": {"type": "cuba_lif", "sparse_backward": 0.2}},
            {"type": "linear", "out": 3},
            {"type": "li"},
        ]},
    })
    model = build_model(cfg.model, (5,), 3)
    lif_layer = next(m for m in model.modules() if isinstance(m, LIF))
    rec = next(m for m in model.modules() if isinstance(m, Recurrent))
    assert (lif_layer.engine, lif_layer.sparse_backward) == ("fused", 0.3)
    assert rec.neuron.sparse_backward == 0.2
    out, _ = model(torch.rand(12, 2, 5))
    out.sum().backward()


def test_backward_overwrites_saved_membrane_only_when_the_graph_is_dropped() -> None:
    """The gradient w.r.t. x reuses the saved membrane's memory unless the graph is kept (retain_graph): a kept
    graph gives the same gradient on every backward, and all equal the reference scan's."""
    spec = FireSpec(Surrogate(), "subtract", 1, True)
    p, s0, x = _inputs("lif", 1)
    z_ref = scan.run(lif.step, spec, p, s0, x)[0]
    g_ref = torch.autograd.grad(z_ref.sum(), x)[0]
    z, _ = fused_scan("lif", spec, p, s0, x)
    loss = z.sum()  # its gradient reaches the kernel as a stride-0 expansion (read in place, not copied)
    g1 = torch.autograd.grad(loss, x, retain_graph=True)[0]
    g2 = torch.autograd.grad(loss, x, retain_graph=True)[0]
    g3 = torch.autograd.grad(loss, x)[0]  # the last one may overwrite the saved membrane
    assert torch.equal(g1, g2) and torch.equal(g1, g3)
    assert _rel(g1, g_ref) < 1e-12


@pytest.mark.parametrize("model", ["lif", "cuba_lif", "adaptive_lif"])
@pytest.mark.parametrize("refractory", [0, 2])
def test_donated_input_keeps_results_and_gradients(model: str, refractory: int) -> None:
    """Sequential donates a Linear's fresh output to the next neuron layer: the fused kernel keeps its saved
    membrane there. Spikes and every gradient equal the reference engine (which never donates)."""
    from spikeforge.nn import Linear, Sequential

    cls = {"lif": LIF, "cuba_lif": CubaLIF, "adaptive_lif": AdaptiveLIF}[model]
    kw = {"tau_syn": 3e-3} if model == "cuba_lif" else ({"tau_ahp": 30e-3} if model == "adaptive_lif" else {})
    torch.manual_seed(3)
    x = (torch.rand(40, 3, 12, dtype=F64) < 0.3).to(F64)
    outs, grads = [], []
    for engine in ("auto", "reference"):
        torch.manual_seed(4)
        net = Sequential(Linear(12, 16), cls(tau_mem=5e-3, dt=1e-3, refractory=refractory * 1e-3, engine=engine,
                                             **kw), Linear(16, 5), cls(tau_mem=5e-3, dt=1e-3, engine=engine, **kw))
        net = net.to(F64)
        with torch.no_grad():
            net[0].weight.mul_(12.0)
            net[2].weight.mul_(12.0)
        out, _ = net(x)
        (out * torch.linspace(-1, 1, out.numel(), dtype=F64).view(out.shape)).sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in net.parameters()])
    assert outs[0].sum() > 0 and grads[0][0].abs().sum() > 0
    assert torch.equal(outs[0], outs[1])
    for g, g_ref in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-9)


def test_donation_writes_into_the_linear_output_only_without_hooks() -> None:
    """The donated buffer is the Linear's output: a forward hook that keeps it sees it intact (no donation),
    and without a hook the saved membrane lives there (the output's autograd version was bumped)."""
    from spikeforge.nn import Linear, Sequential

    torch.manual_seed(0)
    net = Sequential(Linear(8, 6), LIF(tau_mem=5e-3, dt=1e-3))
    x = (torch.rand(10, 2, 8) < 0.5).float()
    kept = []
    handle = net[0].register_forward_hook(lambda mod, inp, out: kept.append((out[0], out[0].clone())))
    net(x)[0].sum().backward()
    handle.remove()
    assert torch.equal(kept[0][0], kept[0][1])  # not overwritten while a hook holds it
    seen = []
    forward = net[1].forward

    def spy(x_in, state=None, *, donate=False):  # an instance attribute: no hook, so donation stays on
        seen.append((x_in, x_in._version, donate))
        return forward(x_in, state, donate=donate)

    net[1].forward = spy
    net(x)
    x_in, version_on_entry, donated = seen[0]
    assert donated and x_in._version > version_on_entry  # the saved membrane was written into it
