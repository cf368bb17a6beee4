"""Sparse spike arithmetic (spikeforge.kernels.sparse) and its use by nn.Linear: equal to the dense product.

The reference is always torch's dense ``x @ W.T + b`` and its autograd, never the sparse code itself.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikeforge.core.checks import SpikeforgeError
from spikeforge.kernels import sparse as sp
from spikeforge.nn import LIF, Linear, Sequential


@pytest.fixture(params=["native", "embedding_bag"], autouse=True)
def path(request, monkeypatch):
    """Run every test on both compute paths: the C++ kernels and the embedding_bag fallback."""
    if request.param == "native" and not sp._native():
        pytest.skip("sparse C++ kernels could not be built here")
    monkeypatch.setitem(sp._NATIVE, "enabled", request.param == "native")
    return request.param


def spikes(*shape: int, density: float, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) < density).to(dtype)


def weights(out: int, inp: int, *, seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out, inp, generator=g, dtype=dtype), torch.randn(out, generator=g, dtype=dtype)


def dense_and_sparse(x, w, b, *, x_grad: bool, active=None):
    """Outputs and gradients (x, W, b) of the dense reference and of sparse_linear for one upstream grad."""
    g = torch.randn(x.shape[0], w.shape[0], generator=torch.Generator().manual_seed(7), dtype=x.dtype)
    results = []
    for fn in (lambda a, c, d: a @ c.t() + d, lambda a, c, d: sp.sparse_linear(a, c, d, active=active)):
        xi = x.clone().requires_grad_(x_grad)
        wi, bi = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        y = fn(xi, wi, bi)
        y.backward(g)
        results.append((y.detach(), xi.grad, wi.grad, bi.grad))
    return results


@pytest.mark.parametrize("shape", [(200, 96, 80), (37, 300, 130), (1, 5, 3)])
@pytest.mark.parametrize("density", [0.0, 0.03, 0.1, 0.5, 1.0])
def test_float64_forward_and_gradients_equal_dense(shape, density):
    n, i, o = shape
    x = spikes(n, i, density=density, seed=n + i)
    w, b = weights(o, i)
    (yd, _, gwd, gbd), (ys, gxs, gws, gbs) = dense_and_sparse(x, w, b, x_grad=False)
    assert gxs is None
    torch.testing.assert_close(ys, yd, rtol=0, atol=1e-12)
    torch.testing.assert_close(gws, gwd, rtol=0, atol=1e-12)
    torch.testing.assert_close(gbs, gbd, rtol=0, atol=1e-12)


def test_float64_input_gradient_when_required():
    x = spikes(120, 64, density=0.1)
    w, b = weights(48, 64)
    (yd, gxd, gwd, gbd), (ys, gxs, gws, gbs) = dense_and_sparse(x, w, b, x_grad=True)
    for got, want in ((ys, yd), (gxs, gxd), (gws, gwd), (gbs, gbd)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_float32_medium_shape_within_1e5_relative():
    # Big enough that the forward and the weight gradient both run in several column blocks / tiles.
    x = spikes(3000, 1024, density=0.1, dtype=torch.float32)
    w, b = weights(600, 1024, dtype=torch.float32)
    assert sp._block(1024, 600, sp._FWD_TABLE_BYTES, 4, 64) < 600
    assert sp._block(3000, 600, sp._BWD_TABLE_BYTES, 4, 32) < 600
    (yd, _, gwd, gbd), (ys, _, gws, gbs) = dense_and_sparse(x, w, b, x_grad=False)
    for got, want in ((ys, yd), (gws, gwd), (gbs, gbd)):
        err = (got - want).abs().max() / want.abs().max()
        assert err < 1e-5, err


def test_weighted_non_binary_input_equals_dense():
    x = spikes(90, 40, density=0.2) * torch.randn(90, 40, dtype=torch.float64)
    w, b = weights(30, 40)
    active = sp.find_active(x)
    assert active.values is not None
    (yd, gxd, gwd, gbd), (ys, gxs, gws, gbs) = dense_and_sparse(x, w, b, x_grad=True, active=active)
    for got, want in ((ys, yd), (gxs, gxd), (gws, gwd), (gbs, gbd)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_no_bias_and_inference_mode():
    x = spikes(50, 20, density=0.2)
    w, _ = weights(10, 20)
    with torch.no_grad():
        torch.testing.assert_close(sp.sparse_linear(x, w), x @ w.t(), rtol=0, atol=1e-12)


def test_find_active_coordinates_and_binary_flag():
    x = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    a = sp.find_active(x)
    assert a.index.tolist() == [1, 3, 5]
    assert a.rows.tolist() == [0, 1, 1] and a.cols.tolist() == [1, 0, 2]
    assert a.values is None and a.shape == (2, 3) and a.density == pytest.approx(0.5)
    x[1, 2] = 2.0
    assert sp.find_active(x).values.tolist() == [1.0, 1.0, 2.0]


def test_choose_by_density_binary_dtype_and_device():
    sparse_x = spikes(400, 100, density=0.05, dtype=torch.float32)
    assert sp.choose(sparse_x, 0.2) is not None
    assert sp.choose(sparse_x, 0.04) is None  # exact density 0.05 >= threshold
    assert sp.choose(spikes(400, 100, density=0.6, dtype=torch.float32), 0.2) is None  # dense: estimate only
    scaled = sp.choose(sparse_x * 1.25, 0.2)  # spikes after dropout (p = 0.2): one common value, weighted
    assert scaled is not None and bool((scaled.values == 1.25).all())
    mixed = sparse_x.clone()
    mixed.view(-1)[mixed.view(-1).nonzero()[0]] = 0.5
    assert sp.choose(mixed, 0.2) is None  # real-valued: not spikes
    assert sp.choose(sparse_x.to(torch.int64), 0.2) is None  # unsupported dtype
    assert sp.choose(sparse_x, 0.0) is None
    assert sp.default_threshold("cuda") == 0.0 and sp.default_threshold("cpu") > 0.0
    assert sp.choose(sparse_x) is not None  # CPU default threshold admits 5 % density


def test_sparse_linear_errors_name_arguments():
    x = spikes(4, 3, density=0.5, dtype=torch.float32)
    with pytest.raises(SpikeforgeError, match="weight"):
        sp.sparse_linear(x, torch.zeros(2, 5))
    with pytest.raises(SpikeforgeError, match="dtype"):
        sp.sparse_linear(x, torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(SpikeforgeError, match="active"):
        sp.sparse_linear(x, torch.zeros(2, 3), active=sp.find_active(x[:2]))
    with pytest.raises(SpikeforgeError, match="2-D"):
        sp.find_active(x[0])


def test_linear_modes_equal_and_false_is_plain_nn_linear():
    torch.manual_seed(0)
    x = spikes(20, 6, 64, density=0.1, dtype=torch.float32)
    layers = {mode: Linear(64, 32, sparse=mode) for mode in ("auto", True, False)}
    ref = nn.Linear(64, 32)
    for layer in layers.values():
        layer.load_state_dict(layers[False].state_dict())
    ref.load_state_dict(layers[False].module.state_dict())
    out = {}
    for mode, layer in layers.items():
        y, state = layer(x)
        assert state is None
        y.square().sum().backward()
        out[mode] = (y.detach(), layer.weight.grad.clone(), layer.bias.grad.clone())
    y_ref = ref(x.reshape(-1, 64)).reshape(20, 6, 32)
    y_ref.square().sum().backward()
    # sparse=False is exactly the old dense path: bit-identical to torch.nn.Linear.
    assert torch.equal(out[False][0], y_ref.detach())
    assert torch.equal(out[False][1], ref.weight.grad) and torch.equal(out[False][2], ref.bias.grad)
    for mode in ("auto", True):
        for got, want in zip(out[mode], out[False], strict=True):
            assert ((got - want).abs().max() / want.abs().max()) < 1e-5


def test_linear_auto_uses_sparse_only_when_it_should(monkeypatch):
    calls = []
    real = sp.sparse_linear
    import spikeforge.nn.layers as layers_mod

    monkeypatch.setattr(layers_mod, "sparse_linear", lambda *a, **k: calls.append(1) or real(*a, **k))
    layer = Linear(50, 8, sparse_threshold=0.3)
    layer(spikes(10, 4, 50, density=0.1, dtype=torch.float32))
    assert calls == [1]
    layer(torch.randn(10, 4, 50))  # analog input: dense
    layer(spikes(10, 4, 50, density=0.5, dtype=torch.float32))  # too dense
    Linear(50, 8, sparse=False)(spikes(10, 4, 50, density=0.1, dtype=torch.float32))
    assert calls == [1]


def test_linear_option_errors_and_repr():
    with pytest.raises(SpikeforgeError, match="sparse must be"):
        Linear(3, 2, sparse="yes")
    with pytest.raises(SpikeforgeError, match="sparse_threshold"):
        Linear(3, 2, sparse_threshold=1.5)
    assert "sparse_threshold=0.2" in repr(Linear(3, 2, sparse_threshold=0.2))
    with pytest.raises(SpikeforgeError, match="could not take input"):
        Linear(3, 2)(torch.zeros(4, 2, 5))


def test_network_gradients_through_sparse_hidden_layer_equal_dense():
    # Hidden spikes feed a second sparse Linear whose input requires grad (surrogate path through LIF).
    torch.manual_seed(3)
    x = spikes(30, 4, 40, density=0.15, dtype=torch.float64)
    nets = {}
    for mode in (True, False):
        torch.manual_seed(3)
        nets[mode] = Sequential(Linear(40, 64, sparse=mode), LIF(5e-3, v_th=0.3),
                                Linear(64, 10, sparse=mode)).double()
    grads = {}
    for mode, net in nets.items():
        y, _ = net(x)
        y.sum().backward()
        grads[mode] = [p.grad for p in net.parameters()]
    for got, want in zip(grads[True], grads[False], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_dropout_scaled_spikes_take_the_sparse_path_with_dense_gradients(monkeypatch):
    """In training, dropout scales the kept spikes by 1/(1-p): "auto" still takes the sparse product (its weight
    and input gradients from the non-zeros), and the whole network's gradients equal the dense network's."""
    import spikeforge.nn.layers as layers_mod
    from spikeforge.nn import Dropout

    calls = []
    real = sp.sparse_linear
    monkeypatch.setattr(layers_mod, "sparse_linear", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = spikes(30, 4, 40, density=0.15, dtype=torch.float64)
    grads, outs = {}, {}
    for mode in ("auto", False):
        torch.manual_seed(3)
        kw = {"sparse": mode, "sparse_threshold": 0.95} if mode == "auto" else {"sparse": mode}
        net = Sequential(Linear(40, 64, **kw), LIF(5e-3, v_th=0.3), Dropout(0.2), Linear(64, 10, **kw),
                         fuse=False).double().train()
        torch.manual_seed(4)  # the same dropout mask for both
        outs[mode], _ = net(x)
        outs[mode].square().sum().backward()
        grads[mode] = [p.grad for p in net.parameters()]
    assert calls == [1, 1]  # both products of the "auto" network were sparse, none of the dense one
    torch.testing.assert_close(outs["auto"], outs[False], rtol=0, atol=1e-10)
    for got, want in zip(grads["auto"], grads[False], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_negative_zero_is_exact_and_not_binary():
    x = torch.tensor([[0.0, 1.0, -0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    w, b = weights(4, 3)
    active = sp.find_active(x)
    assert active.values is not None  # -0.0 is found by its bit pattern: not treated as a spike
    assert sp.choose(x, 0.9) is None
    torch.testing.assert_close(sp.sparse_linear(x, w, b), x @ w.t() + b, rtol=0, atol=1e-12)


def test_linear_rejects_non_finite_input_on_both_paths():
    x = spikes(5, 2, 16, density=0.1, dtype=torch.float32)
    x[1, 0, 3] = float("nan")
    for mode in ("auto", True, False):
        with pytest.raises(SpikeforgeError, match="finite|NaN"):
            Linear(16, 4, sparse=mode)(x)


def test_native_kernels_build_where_the_fused_scans_do():
    from spikeforge.kernels import cpu_scan

    if cpu_scan.available():
        assert sp._native()


@pytest.mark.parametrize("density", [0.0, 0.03, 0.15, 0.6])
def test_input_gradient_from_a_sparse_output_gradient_equals_dense(density):
    """Sparse backward leaves most of a layer's output gradient exactly zero; ``grad @ W`` is then formed from
    the non-zeros (C++ ``sparse_igrad`` below ``IGRAD_DENSITY``, the dense product above) and equals it."""
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(40, 30, generator=g, dtype=torch.float64) < 0.2).to(torch.float64).requires_grad_()
    w = torch.randn(25, 30, generator=g, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(40, 25, generator=g, dtype=torch.float64)
    grad = grad * (torch.rand(40, 25, generator=g, dtype=torch.float64) < density)
    y = sp.sparse_linear(x, w)
    gx, gw = torch.autograd.grad(y, [x, w], grad)
    torch.testing.assert_close(gx, grad @ w.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, grad.t() @ x.detach(), rtol=1e-12, atol=1e-12)
    if sp._native():
        direct = torch.ops.spikeforge_sparse.sparse_igrad(grad.contiguous(), w.detach().contiguous())
        torch.testing.assert_close(direct, grad @ w.detach(), rtol=1e-12, atol=1e-12)


# ---- sparse output gradients (sparse backward): CSR kernels and whole networks against the reference ------------

def _sparse_grad(n: int, o: int, density: float, dtype, seed: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    grad = torch.randn(n, o, generator=g, dtype=dtype)
    grad = grad * (torch.rand(n, o, generator=g, dtype=dtype) < density)
    grad[1] = 0.0  # an empty row
    return grad


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach(), want.detach()
    scale = float(want.abs().max())
    return float((got - want).abs().max()) / (scale if scale > 0 else 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("density", [0.0, 0.04, 0.3, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(70, 37, 300), (40, 1100, 24)])  # (N, I, O): tails only; tiles and blocks
def test_csr_kernels_equal_dense_products(path, dtype, density, weighted, shape):
    """grad_nonzeros + csr_igrad / csr_wgrad (outer product and row method) / csr_colsum equal the dense products,
    for no non-zeros, few, many and all, odd widths (vector tails), several column tiles of W, empty rows, binary
    and weighted inputs."""
    if path != "native":
        pytest.skip("C++ kernels only")
    n, i, o = shape
    x = spikes(n, i, density=0.2, seed=5, dtype=dtype)
    if weighted:
        x = x * torch.randn(n, i, generator=torch.Generator().manual_seed(6), dtype=dtype)
    x[3] = 0.0
    active = sp.find_active(x)
    w = torch.randn(o, i, generator=torch.Generator().manual_seed(8), dtype=dtype)
    grad = _sparse_grad(n, o, density, dtype)
    nz = sp.grad_nonzeros(grad, max_density=1.0)
    assert nz is not None and int(nz[0][-1]) == int(torch.count_nonzero(grad))
    assert sp.grad_nonzeros(grad, max_density=0.0) is None or density == 0.0
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert _rel(torch.ops.spikeforge_sparse.csr_igrad(*nz, w), grad @ w) < tol
    assert _rel(torch.ops.spikeforge_sparse.csr_colsum(*nz, o), grad.sum(0)) < tol
    vals = x.new_empty(0) if active.values is None else active.values
    for cost in (0.0, 1e30):  # 0: always the outer product; huge: always the row method
        gw = torch.ops.spikeforge_sparse.csr_wgrad(*nz, grad, active.index, vals, i, cost)
        assert _rel(gw, grad.t() @ x) < tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("shape", [(48, 37, 300, 4), (24, 1100, 24, 8)])  # (N, I, O, B)
def test_csr_sddmm_equals_the_input_gradient_at_the_wanted_entries(path, dtype, scaled, shape):
    """csr_sddmm (the input gradient sampled at given entries, e.g. the in-band steps of the layer below, times a
    dropout mask) equals csr_igrad's full product at those entries times the mask, bit for bit: rows without
    wanted entries, rows without non-zeros, wanted counts that are not multiples of the vector width, every entry of
    a row wanted, and the 16-lane and 8-wide paths."""
    if path != "native":
        pytest.skip("C++ kernels only")
    n, i, o, b = shape
    gen = torch.Generator().manual_seed(3)
    grad = _sparse_grad(n, o, 0.1, dtype)
    grad[5] = 0.0
    nz = sp.grad_nonzeros(grad, max_density=1.0)
    w = torch.randn(o, i, generator=gen, dtype=dtype)
    want = torch.rand(n, i, generator=gen) < 0.3
    want[2] = False  # no wanted entry
    want[7] = True  # all of them
    want[9] = False
    want[9, :21] = True  # 21: one full vector and a tail
    rows = want.nonzero()
    brow = torch.zeros(n + 1, dtype=torch.int64)
    brow[1:] = torch.cumsum(want.sum(1), 0)
    bcols = rows[:, 1].to(torch.int32).contiguous()
    keep = (torch.rand(b, i, generator=gen) < 0.8).to(dtype) / 0.8 if scaled else w.new_empty(0)
    got = torch.ops.spikeforge_sparse.csr_sddmm(*nz, w, brow, bcols, keep, b)
    full = torch.ops.spikeforge_sparse.csr_igrad(*nz, w)
    expect = full[rows[:, 0], rows[:, 1]]
    if scaled:
        expect = expect * keep[rows[:, 0] % b, rows[:, 1]]
    assert got.shape == expect.shape and torch.equal(got, expect)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert _rel(full, grad @ w) < tol
    with pytest.raises(RuntimeError, match="brow"):
        torch.ops.spikeforge_sparse.csr_sddmm(*nz, w, brow[:-1], bcols, keep, b)


def _mlp(dtype, band, *, reference: bool, fuse=None):
    torch.manual_seed(11)
    kw = {} if fuse is None else {"fuse": fuse}
    if reference:  # dense products, the reference scan (its fire gated by the caller)
        layers = (Linear(40, 64, sparse=False), LIF(5e-3, v_th=0.5, engine="reference"),
                  Linear(64, 48, sparse=False), LIF(5e-3, v_th=0.5, engine="reference"), Linear(48, 10, sparse=False))
    else:
        layers = (Linear(40, 64), LIF(5e-3, v_th=0.5, sparse_backward=band), Linear(64, 48),
                  LIF(5e-3, v_th=0.5, sparse_backward=band), Linear(48, 10))
    net = Sequential(*layers, **kw).to(dtype)
    with torch.no_grad():
        net[0].weight.mul_(4.0)
        net[2].weight.mul_(4.0)
    return net


def _fuse_options():
    import inspect

    return [None, False] if "fuse" in inspect.signature(Sequential).parameters else [None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("band", [1e-9, 0.15, 1e6])  # nothing in the band, a few percent, everything
@pytest.mark.parametrize("fuse", _fuse_options())
def test_sparse_backward_network_equals_the_gated_reference(path, dtype, band, fuse, monkeypatch):
    """Linear -> LIF -> Linear -> LIF -> Linear with sparse backward (sparse Linear products, gradients from the
    non-zeros of the sparse output gradients) equals dense Linear layers and the reference scan with the membrane
    detached outside the band: spikes identical, every gradient within 1e-5 relative (1e-10 in float64)."""
    from _sparse_reference import gated_fire

    from spikeforge.dynamics import lif

    x = spikes(30, 4, 40, density=0.15, seed=9, dtype=dtype)
    weights = torch.randn(30, 4, 10, generator=torch.Generator().manual_seed(10), dtype=dtype)
    found = []
    real = sp.grad_nonzeros
    monkeypatch.setattr(sp, "grad_nonzeros", lambda *a, **k: found.append(real(*a, **k)) or found[-1])
    net = _mlp(dtype, band, reference=False, fuse=fuse)
    out, _ = net(x)
    (out * weights).sum().backward()
    with torch.no_grad():
        hidden = net.layer_outputs(x)[2]
    monkeypatch.setattr(lif, "fire", gated_fire(band))
    ref = _mlp(dtype, band, reference=True, fuse=fuse)
    out_ref, _ = ref(x)
    (out_ref * weights).sum().backward()
    with torch.no_grad():
        hidden_ref = ref.layer_outputs(x)[2]
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    for k in (1, 3):  # spikes of both hidden layers identical
        assert torch.equal(hidden[k], hidden_ref[k]) and hidden[k].sum() > 0
    assert _rel(out.detach(), out_ref.detach()) < tol
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        assert _rel(p.grad, q.grad) < tol, (p.shape, _rel(p.grad, q.grad))
    if band == 1e-9:  # nothing in the band: no gradient reaches the first two Linear layers
        assert float(net[0].weight.grad.abs().max()) == 0.0 and float(net[2].weight.grad.abs().max()) == 0.0
    else:
        assert float(net[0].weight.grad.abs().max()) > 0.0
    if band == 0.15 and path == "native" and fuse is False:
        assert sum(nz is not None for nz in found) >= 2  # the hidden Linear layers used the CSR kernels
