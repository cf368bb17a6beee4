"""The fused ``Linear -> neuron`` path (spikeforge.kernels.fused_linear) equals the unfused Sequential.

The reference is the same ``Sequential`` with ``fuse=False`` (the Linear's product over all steps, then the neuron's
fused scan, itself pinned to the reference scan by tests/test_kernels_cpu.py): spikes and final state identical,
gradients of weights, bias, input and initial state within 1e-5 relative.
"""

from __future__ import annotations

import pytest
import torch

from spikeforge.core.checks import SpikeforgeError
from spikeforge.kernels import cpu_scan, fused_linear
from spikeforge.kernels import sparse as sp
from spikeforge.nn import IF, LIF, AdaptiveLIF, CubaLIF, Linear, Sequential

F32, F64 = torch.float32, torch.float64
NEURONS = {
    "if": (IF, {}),
    "lif": (LIF, {"tau_mem": 8e-3}),
    "cuba_lif": (CubaLIF, {"tau_mem": 8e-3, "tau_syn": 3e-3}),
    "adaptive_lif": (AdaptiveLIF, {"tau_mem": 8e-3, "tau_ahp": 30e-3, "b": 0.3}),
}
RESETS = ("subtract", "value", "none")

pytestmark = pytest.mark.skipif(not cpu_scan.available(), reason="fused CPU kernels could not be built here")


@pytest.fixture(params=["native", "embedding_bag"])
def sparse_path(request, monkeypatch):
    """The sparse product on both compute paths: the C++ kernels and the embedding_bag fallback."""
    if request.param == "native" and not sp._native():
        pytest.skip("sparse C++ kernels could not be built here")
    monkeypatch.setitem(sp._NATIVE, "enabled", request.param == "native")
    return request.param


@pytest.fixture(params=[None, 3])
def blocks(request, monkeypatch):
    """Output neurons in one block (this thread) or in 3 blocks with a thread each."""
    monkeypatch.setattr(fused_linear, "BLOCKS", request.param)
    return request.param


def _net(model: str, *, fuse, chunk=None, n_in=20, n_out=12, dtype=F64, reset="subtract", refractory=0.0,
         sparse_backward=None, seed=1, **extra):
    cls, kw = NEURONS[model]
    torch.manual_seed(seed)
    neuron = cls(dt=1e-3, reset=reset, refractory=refractory, v_reset=-0.2, sparse_backward=sparse_backward,
                 **kw, **extra)
    net = Sequential(Linear(n_in, n_out), neuron, fuse=fuse, chunk_steps=chunk).to(dtype)
    with torch.no_grad():
        net[0].weight.mul_(0.6 if model == "if" else 8.0)
        net[0].bias.add_(0.1)
    return net


def _spikes(t, b, n, *, density=0.15, dtype=F64, seed=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(t, b, n, generator=g) < density).to(dtype)


def _ran_fused(out: torch.Tensor) -> bool:
    """Whether the fused autograd function produced ``out`` (searching its graph)."""
    seen, todo = set(), [out.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if type(fn).__name__ == "_FusedLinearScanBackward":
            return True
        todo.extend(f for f, _ in fn.next_functions)
    return False


def _state(net, x, dtype):
    """A non-resting, differentiable initial state (the state after a short prefix, made a leaf)."""
    with torch.no_grad():
        _, s = net(x[:4])
    neuron_state = s[1]
    fields = [f if f is None or not f.is_floating_point() else f.clone().requires_grad_() for f in neuron_state]
    return (None, type(neuron_state)(*fields))


def _run(net, x, state, *, x_grad=True):
    """Output, final state and gradients of a loss on the output and on the final state; whether it ran fused."""
    x = x.detach().clone().requires_grad_(x_grad)
    out, s = net(x, state)
    fused = _ran_fused(out)
    g = torch.Generator().manual_seed(5)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for f in s[1]:
        if f is not None and f.is_floating_point():
            loss = loss + (f * torch.randn(f.shape, generator=g, dtype=f.dtype)).sum()
    loss.backward()
    grads = [p.grad for p in net.parameters()] + [x.grad]
    if state is not None:
        grads += [f.grad for f in state[1] if f is not None and f.is_floating_point()]
    return out.detach(), s[1], grads, fused


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


def _compare(model, *, dtype=F64, t=37, b=3, chunk=7, state=True, x_grad=True, **kw):
    x = _spikes(t, b, 20, dtype=dtype)
    fused, plain = _net(model, fuse=True, chunk=chunk, dtype=dtype, **kw), _net(model, fuse=False, dtype=dtype, **kw)
    s_f = _state(fused, x, dtype) if state else None
    s_p = _state(plain, x, dtype) if state else None
    out_f, st_f, g_f, ran = _run(fused, x, s_f, x_grad=x_grad)
    out_p, st_p, g_p, ran_p = _run(plain, x, s_p, x_grad=x_grad)
    assert ran and not ran_p
    assert torch.equal(out_f, out_p)
    for a, c in zip(st_f, st_p, strict=True):
        assert (a is None) == (c is None)
        if a is not None:
            assert a.dtype == c.dtype and torch.equal(a, c)
    assert len(g_f) == len(g_p)
    for a, c in zip(g_f, g_p, strict=True):
        assert (a is None) == (c is None)
        if a is not None:
            assert c.abs().max() > 0
            assert _rel(a, c) < 1e-5
    return out_f


@pytest.mark.parametrize("model", list(NEURONS))
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_every_model_and_reset_equals_unfused(model, reset, dtype, sparse_path, blocks):
    out = _compare(model, dtype=dtype, reset=reset)
    assert 0 < out.mean() < 0.9  # the neurons spike, and not always


@pytest.mark.parametrize("model", list(NEURONS))
def test_refractory_and_attached_reset_equal_unfused(model, blocks):
    _compare(model, refractory=2e-3)
    _compare(model, refractory=3e-3, detach_reset=False, reset="value", chunk=4)


@pytest.mark.parametrize("chunk", [1, 2, 5, 36, 37, 100, None])
def test_chunk_sizes(chunk, blocks):
    """Chunks of one step, chunks that do not divide T, one chunk, and the automatic size."""
    _compare("lif", chunk=chunk, dtype=F32)


def test_single_step_and_no_initial_state():
    _compare("cuba_lif", t=1, chunk=None, state=False)
    _compare("lif", t=1, chunk=3, state=True)


def test_state_carried_in_and_out_is_exact(blocks):
    """Feeding the sequence in two calls with the returned state equals one call, fused or not."""
    x = _spikes(40, 2, 20)
    net = _net("adaptive_lif", fuse=True, chunk=6)
    whole, s_whole = net(x)
    a, s = net(x[:13])
    b, s = net(x[13:], s)
    assert torch.equal(torch.cat([a, b]), whole)
    for f, g in zip(s[1], s_whole[1], strict=True):
        assert f is None and g is None or torch.equal(f, g)


@pytest.mark.parametrize("model", ["lif", "cuba_lif"])
def test_no_grad_inference_equals_unfused(model, blocks):
    x = _spikes(50, 3, 20, dtype=F32)
    fused, plain = _net(model, fuse=True, chunk=9, dtype=F32), _net(model, fuse=False, dtype=F32)
    with torch.no_grad():
        out_f, s_f = fused(x)
        out_p, s_p = plain(x)
    assert out_f.grad_fn is None and torch.equal(out_f, out_p)
    assert all(f is None and g is None or torch.equal(f, g) for f, g in zip(s_f[1], s_p[1], strict=True))


def test_no_weight_gradient_needed():
    """Frozen synapses: only the input and the initial state get gradients."""
    x = _spikes(30, 2, 20)
    results = []
    for fuse in (True, False):
        net = _net("lif", fuse=fuse, chunk=4)
        net[0].requires_grad_(False)
        xi = x.clone().requires_grad_()
        out, _ = net(xi)
        out.sum().backward()
        results.append((out, xi.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert _rel(results[0][1], results[1][1]) < 1e-10


def test_sparse_backward_band_is_passed_through(blocks):
    """The neuron's sparse-backward band reaches the fused scan backward: gradients equal the unfused layer with
    the same band (and differ from the exact ones)."""
    out = _compare("lif", sparse_backward=0.3)
    assert out.sum() > 0
    x = _spikes(37, 3, 20).requires_grad_()
    exact = _net("lif", fuse=True, chunk=7)
    band = _net("lif", fuse=True, chunk=7, sparse_backward=0.3)
    grads = []
    for net in (exact, band):
        xi = x.detach().clone().requires_grad_()
        net(xi)[0].sum().backward()
        grads.append(net[0].weight.grad)
    assert not torch.allclose(grads[0], grads[1])


def test_stacked_pairs_and_retained_graph():
    """Two fused pairs in a row (the second one's input is the first one's spikes) and a graph kept for a second
    backward give the unfused gradients each time."""
    x = _spikes(45, 2, 20, dtype=F64)
    grads = {}
    for fuse in (True, False):
        torch.manual_seed(3)
        net = Sequential(Linear(20, 16), LIF(tau_mem=6e-3), Linear(16, 10), CubaLIF(tau_syn=3e-3),
                         fuse=fuse, chunk_steps=8).to(F64)
        with torch.no_grad():
            net[0].weight.mul_(8.0)
            net[2].weight.mul_(15.0)
            net[2].bias.add_(0.5)
        out, _ = net(x)
        assert out.sum() > 0
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=F64).view(out.shape)).sum()
        loss.backward(retain_graph=True)
        first = [p.grad.clone() for p in net.parameters()]
        net.zero_grad()
        loss.backward()
        second = [p.grad.clone() for p in net.parameters()]
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
        grads[fuse] = first
    for a, b in zip(grads[True], grads[False], strict=True):
        assert _rel(a, b) < 1e-9


def test_weighted_sparse_input(blocks):
    """``Linear(sparse=True)`` with non-binary values: the fused path uses the values too."""
    x = _spikes(30, 2, 20) * torch.rand(30, 2, 20, dtype=F64, generator=torch.Generator().manual_seed(4))
    outs, grads = [], []
    for fuse in (True, False):
        net = _net("lif", fuse=fuse, chunk=4)
        net[0].sparse = True
        out, _ = net(x)
        if fuse:
            assert _ran_fused(out)
        (out * torch.arange(out.numel(), dtype=F64).view(out.shape).sin()).sum().backward()
        outs.append(out)
        grads.append([p.grad for p in net.parameters()])
    assert torch.equal(outs[0], outs[1]) and outs[0].sum() > 0
    for a, b in zip(*grads, strict=True):
        assert _rel(a, b) < 1e-10


def test_policy():
    """``fuse="auto"`` fuses a Linear on sparse binary spikes followed by a fused-capable neuron layer over more
    than one chunk; one chunk, a compact sparse-backward scan, a dense input, ``fuse=False``, hooks, the reference
    engine or learned neuron parameters run unfused; ``fuse=True`` also fuses a dense input (dense product per
    chunk)."""
    sparse_x, dense_x = _spikes(20, 2, 20, dtype=F32), torch.rand(20, 2, 20)
    assert not _ran_fused(_net("lif", fuse="auto", dtype=F32)(sparse_x)[0])  # one chunk (1024 samples or more)
    # the compact sparse-backward scan (LIF with a band, no refractoriness) runs unfused; with refractoriness fused
    assert not _ran_fused(_net("lif", fuse="auto", chunk=5, sparse_backward=0.3, dtype=F32)(sparse_x)[0])
    assert _ran_fused(_net("lif", fuse="auto", chunk=5, sparse_backward=0.3, refractory=2e-3, dtype=F32)(sparse_x)[0])
    net = _net("lif", fuse="auto", chunk=5, dtype=F32)
    assert _ran_fused(net(sparse_x)[0])
    assert not _ran_fused(net(dense_x)[0])
    net.set_fuse(False)
    assert not _ran_fused(net(sparse_x)[0])
    net.set_fuse(True, chunk_steps=3)
    out = net(dense_x)[0]
    assert _ran_fused(out)
    plain = _net("lif", fuse=False, dtype=F32)(dense_x)[0]
    assert (out != plain).float().mean() < 0.01  # the dense product per chunk may round differently
    net.set_fuse("auto", chunk_steps=5)
    with torch.no_grad():  # inference: unfused under "auto"
        calls = []
        real = fused_linear.fused_linear_scan
        fused_linear.fused_linear_scan = lambda *a, **k: calls.append(1) or real(*a, **k)
        try:
            net(sparse_x)
        finally:
            fused_linear.fused_linear_scan = real
        assert not calls
    busy = _spikes(20, 2, 20, density=0.2, dtype=F32)  # 4 active inputs per sample
    limit = fused_linear.AUTO_MAX_ACTIVE
    try:
        fused_linear.AUTO_MAX_ACTIVE = 3
        assert not _ran_fused(net(busy)[0])
        fused_linear.AUTO_MAX_ACTIVE = 5
        assert _ran_fused(net(busy)[0])
    finally:
        fused_linear.AUTO_MAX_ACTIVE = limit
    handle = net[0].register_forward_pre_hook(lambda mod, inp: None)
    assert not _ran_fused(net(sparse_x)[0])
    handle.remove()
    handle = net[1].register_forward_hook(lambda mod, inp, out: None)
    assert not _ran_fused(net(sparse_x)[0])
    handle.remove()
    assert _ran_fused(net(sparse_x)[0])
    net[1].set_engine("reference")
    assert not _ran_fused(net(sparse_x)[0])
    learned = Sequential(Linear(20, 12), LIF(size=12, learn=("tau_mem",)))
    out = learned(sparse_x)[0]
    assert not _ran_fused(out)
    out.sum().backward()
    assert learned[1].tau_mem.grad is not None


def test_fuse_argument_is_checked():
    with pytest.raises(SpikeforgeError, match="fuse must be"):
        Sequential(Linear(2, 2), LIF(), fuse="yes")
    with pytest.raises(SpikeforgeError, match="chunk_steps"):
        Sequential(Linear(2, 2), LIF(), chunk_steps=0)


def test_size_mismatch_still_reports_the_neuron_error():
    net = Sequential(Linear(20, 12), LIF(size=11))
    with pytest.raises(SpikeforgeError):
        net(_spikes(5, 2, 20, dtype=F32))


def test_column_blocks():
    """One block per intra-op thread, on whole 128-wide tiles where the layer is wide enough."""
    assert fused_linear.column_blocks(256, 2) == (0, 128, 256)
    assert fused_linear.column_blocks(1024, 2) == (0, 512, 1024)
    assert fused_linear.column_blocks(300, 2) == (0, 128, 300)
    assert fused_linear.column_blocks(200, 2) == (0, 200)  # too narrow for two tiles: one block
    assert fused_linear.column_blocks(1024, 1) == (0, 1024)
    assert fused_linear.column_blocks(512, 16) == (0, 128, 256, 384, 512)


def test_threads_setting_is_restored(blocks):
    """The workers' intra-op setting does not leak into this thread or into threads started later."""
    import threading

    before = torch.get_num_threads()
    _compare("lif", chunk=5)
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert torch.get_num_threads() == before and seen == [before]


def test_default_chunk_steps():
    assert fused_linear.chunk_steps(2000, 8, 256) == 128  # 16 chunks of at least 1024 samples
    assert fused_linear.chunk_steps(500, 16, 1024) == 64  # 1024 samples per chunk at least
    assert fused_linear.chunk_steps(100, 4, 4096) == 100  # at least n_in samples: one chunk
    assert fused_linear.chunk_steps(3, 1, 10) == 3


def _saved_bytes(net, x) -> int:
    """Bytes of the distinct tensors autograd keeps for backward (weights and parameters included)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = net(x)
    return sum(storages.values()), out


def test_saved_memory_is_a_fraction_of_unfused():
    """The unfused pair keeps the membrane of every step and the spikes (2 x T x B x out values); the fused one
    keeps the input's non-zeros, the weights and the state at each chunk boundary."""
    t, b, n_in, n_out = 400, 4, 64, 64
    x = _spikes(t, b, n_in, density=0.1, dtype=F32)
    fused, plain = _net("lif", fuse=True, n_in=n_in, n_out=n_out, dtype=F32), \
        _net("lif", fuse=False, n_in=n_in, n_out=n_out, dtype=F32)
    saved_f, out_f = _saved_bytes(fused, x)
    saved_p, out_p = _saved_bytes(plain, x)
    assert torch.equal(out_f, out_p)
    per_step_value = t * b * n_out * 4
    assert saved_p >= 2 * per_step_value
    weights = (n_in + 1) * n_out * 4
    assert saved_f - weights < 0.5 * per_step_value < saved_p / 4


@pytest.mark.parametrize("band", [None, 0.3])
def test_layer_outputs_as_forward_runs_them(band):
    """``layer_outputs(x, every=False)`` (what the trainer calls) runs the layers as ``forward`` does: the same
    output and gradients as ``forward``, every neuron layer's output equal to ``layer_outputs(x)``'s, and None for
    a ``Linear`` whose current is never held (fused with its LIF layer, or, with sparse backward, donated to it)."""
    from spikeforge.nn import LI

    def run(mode):
        torch.manual_seed(2)
        net = Sequential(Linear(40, 64), LIF(5e-3, v_th=0.5, sparse_backward=band), Linear(64, 10), LI())
        with torch.no_grad():
            net[0].weight.mul_(4.0)
        x = (torch.rand(12, 3, 40, generator=torch.Generator().manual_seed(3)) < 0.1).float()
        if mode == "forward":
            out, _ = net(x)
            outs = None
        else:
            out, _, outs = net.layer_outputs(x, every=mode == "every")
        out.square().sum().backward()
        return out.detach(), outs, [p.grad for p in net.parameters()]

    out_f, _, grads_f = run("forward")
    out_k, outs_k, grads_k = run("kept")
    out_e, outs_e, grads_e = run("every")
    assert torch.equal(out_k, out_f) and len(outs_k) == 4 and outs_k[0] is None
    assert all(torch.equal(outs_k[i].detach(), outs_e[i].detach()) for i in (1, 3))  # the neuron layers'
    assert outs_k[2] is None or torch.equal(outs_k[2].detach(), outs_e[2].detach())  # donated to LI, or held
    assert float(outs_k[1].detach().sum()) > 0
    for a, b, c in zip(grads_k, grads_f, grads_e, strict=True):
        assert torch.equal(a, b) and torch.allclose(a, c, rtol=1e-5, atol=1e-7)


def _band_net(kind: str, dtype):
    """Networks whose ``Linear -> LIF`` pairs run sparse backward (LIF v_th 0.5, band 0.2): ``plain`` (two hidden
    layers and a read-out), ``dropout`` (the same with dropout after each hidden layer), ``dense-next`` (the second
    hidden layer's Linear takes the dense product: the chain ends after the first pair, its dropout applied
    outside)."""
    from spikeforge.nn import LI, Dropout

    def band_lif():
        return LIF(5e-3, v_th=0.5, sparse_backward=0.2)

    drop = kind in ("dropout", "dense-next")
    layers = [Linear(40, 300), band_lif(), *([Dropout(0.3)] if drop else []),
              Linear(300, 200, sparse=False if kind == "dense-next" else "auto"), band_lif(),
              *([Dropout(0.3)] if drop else []), Linear(200, 10), LI()]
    return layers


def _band_model(kind: str, dtype, fuse="auto") -> Sequential:
    """:func:`_band_net` as a ``Sequential`` (seeded), the two hidden layers' weights scaled up 5x so that their
    neurons fire and the band holds some of their steps."""
    torch.manual_seed(4)
    net = Sequential(*_band_net(kind, dtype), fuse=fuse).to(dtype)
    with torch.no_grad():
        for lin in [m for m in net.layers if isinstance(m, Linear)][:2]:
            lin.weight.mul_(5.0)
    return net


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("compact_max", [0.1, 0.0])  # 0.0: every block crowded, the dense layout
@pytest.mark.parametrize("kind", ["plain", "dropout", "dense-next"])
def test_band_chain_equals_the_unfused_layers(dtype, compact_max, kind, monkeypatch):
    """Under ``fuse="auto"`` the ``Linear -> LIF`` pairs under sparse backward, the dropouts between them and the
    read-out ``Linear`` run as one chain (``fused_linear.BandChain``) whose backward forms each layer's gradient at
    the in-band steps of the layer below only (``csr_sddmm``) and never a dense gradient between the layers: output,
    spikes and final states identical to the unfused layers, every gradient (weights, biases, the initial state)
    within 1e-6 relative (1e-12 in float64), also with a gradient on the hidden spikes from outside the chain (a
    rate penalty), with every block crowded (the dense layout), and when the chain ends early (a dense product
    next: the dropout drawn for it is applied outside the chain)."""
    from test_sparse import _rel

    if not sp._native():
        pytest.skip("sparse C++ kernels could not be built here")
    monkeypatch.setattr(cpu_scan, "BAND_SCAN_MAX", compact_max)
    x = _spikes(14, 3, 40, density=0.1, dtype=dtype)

    def run(fuse):
        net = _band_model(kind, dtype, fuse)
        s0 = net[1].init_state(torch.zeros(3, 300, dtype=dtype))
        s0 = s0._replace(v=torch.full((3, 300), 0.1, dtype=dtype, requires_grad=True))
        stages = []
        real = fused_linear.BandChain.finish
        monkeypatch.setattr(fused_linear.BandChain, "finish",
                            lambda self: stages.append((len(self.stages), self.tail is not None)) or real(self))
        states = [None] * len(net.layers)
        states[1] = s0
        torch.manual_seed(9)  # the dropout masks
        out, state, outs = net.layer_outputs(x, tuple(states), every=False)
        hidden = [o for m, o in zip(net.layers, outs, strict=True) if isinstance(m, LIF)]
        (out.square().sum() + 0.1 * hidden[-1].sum()).backward()
        monkeypatch.setattr(fused_linear.BandChain, "finish", real)
        neurons = [k for k, m in enumerate(net.layers) if isinstance(m, LIF)]
        return (out.detach(), [state[k].v.detach() for k in neurons], [h.detach() for h in hidden],
                [p.grad for p in net.parameters()] + [s0.v.grad], stages)

    out_f, v_f, h_f, grads_f, stages_f = run("auto")
    out_u, v_u, h_u, grads_u, stages_u = run(False)
    assert stages_f == ([(1, False)] if kind == "dense-next" else [(2, True)]) and stages_u == []
    assert torch.equal(out_f, out_u)
    assert all(torch.equal(a, b) for a, b in zip(v_f + h_f, v_u + h_u, strict=True))
    tol = 1e-12 if dtype == F64 else 1e-6
    for a, b in zip(grads_f, grads_u, strict=True):
        assert _rel(a, b) < tol
    assert float(grads_f[0].abs().max()) > 0 and float(grads_f[-1].abs().max()) > 0


def test_band_chain_frees_its_tensors_after_the_step(monkeypatch):
    """A band chain holds no reference to its own outputs: once a training step's graph and outputs are gone the
    chain and every tensor it kept are freed by reference counting alone (an output -> autograd node -> chain ->
    output cycle is invisible to the garbage collector and leaked each step's tensors, until memory ran out)."""
    import gc
    import weakref

    if not sp._native():
        pytest.skip("sparse C++ kernels could not be built here")
    x = _spikes(14, 3, 40, density=0.1, dtype=F32)
    net = _band_model("dropout", F32)
    chains = []
    real = fused_linear.BandChain.finish
    monkeypatch.setattr(fused_linear.BandChain, "finish", lambda self: chains.append(weakref.ref(self)) or real(self))

    def step():
        out, _, outs = net.layer_outputs(x, every=False)
        spikes = weakref.ref(outs[1])
        out.square().sum().backward()
        return spikes

    gc.disable()
    try:
        spikes = step()
        assert len(chains) == 1
        assert chains[0]() is None and spikes() is None
    finally:
        gc.enable()


def test_band_chain_backward_twice_and_no_second_derivative():
    """A band chain's backward can run again on a kept graph (``retain_graph``: the same gradients) and refuses a
    second derivative with autograd's error for once-differentiable functions, instead of a wrong zero."""
    if not sp._native():
        pytest.skip("sparse C++ kernels could not be built here")
    x = _spikes(14, 3, 40, density=0.1, dtype=F32)
    net = _band_model("dropout", F32)
    torch.manual_seed(1)
    loss = net(x)[0].square().sum()
    loss.backward(retain_graph=True)
    first = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    loss.backward()
    assert all(torch.equal(a, p.grad) for a, p in zip(first, net.parameters(), strict=True))
    assert float(first[0].abs().max()) > 0
    torch.manual_seed(1)
    g = torch.autograd.grad(net(x)[0].square().sum(), net[0].weight, create_graph=True)[0]
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()
