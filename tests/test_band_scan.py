"""The compact sparse-backward scan of IF/LIF layers without refractoriness (only the in-band neuron-steps kept
and visited, ``cpu_scan._BandScanFunction``) against the reference scan with the membrane detached outside the
band. (Separate from test_sparse.py, whose tests all run on both sparse-product paths; the scan uses neither.)"""

from __future__ import annotations

import pytest
import torch
from test_sparse import _rel, spikes

from spikeforge.nn import LIF, Linear, Sequential

# ---- the compact sparse-backward scan (IF/LIF without refractoriness) --------------------------------------------

def _scan_inputs(model: str, dtype, t: int = 40, b: int = 2, n: int = 600):
    """Per-neuron thresholds and time constants over several blocks of 512 neurons, a differentiable initial state."""
    from spikeforge.dynamics import if_neuron, lif

    g = torch.Generator().manual_seed(3)
    th = 0.8 + 0.4 * torch.rand(n, generator=g, dtype=dtype)
    if model == "if":
        p = if_neuron.make_params(v_th=th, v_reset=torch.tensor(-0.2, dtype=dtype), dt=1e-3)
        gain = 0.35
    else:
        tau = 5e-3 + 20e-3 * torch.rand(n, generator=g, dtype=dtype)
        p = lif.make_params(tau_mem=tau, v_th=th, v_leak=torch.tensor(0.1, dtype=dtype),
                            v_reset=torch.tensor(-0.2, dtype=dtype), dt=1e-3)
        gain = 6.0
    x = (gain * torch.rand(t, b, n, generator=g, dtype=dtype) - 0.1 * gain).requires_grad_()
    module = if_neuron if model == "if" else lif
    s0 = module.init_state(p, x[0], refractory=False)
    s0 = s0._replace(v=(s0.v + 0.5 * torch.rand(b, n, generator=g, dtype=dtype)).requires_grad_())
    return module, p, s0, x


@pytest.mark.parametrize("model", ["if", "lif"])
@pytest.mark.parametrize("reset", ["subtract", "value", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("band", [1e-9, 0.05, 1e6])  # nothing in the band, a few percent, everything
@pytest.mark.parametrize("compact_max", [0.1, 0.0, 1.0])  # 0.0: always the dense-layout fallback; 1.0: never
def test_compact_band_scan_equals_the_gated_reference(model, reset, dtype, band, compact_max, monkeypatch):
    """The compact scan (only in-band neuron-steps kept and visited) and its dense-layout fallback equal the
    reference scan with the membrane detached outside the band: spikes and final state identical, gradients w.r.t.
    the input and the initial membrane within 1e-5 relative (1e-10 in float64), several blocks of neurons."""
    from _sparse_reference import gated_fire

    from spikeforge.core.surrogate import Surrogate
    from spikeforge.dynamics import FireSpec
    from spikeforge.kernels import cpu_scan, fused_scan
    from spikeforge.sim import scan

    if not cpu_scan.available():
        pytest.skip("fused CPU kernels could not be built here")
    monkeypatch.setattr(cpu_scan, "BAND_SCAN_MAX", compact_max)
    spec = FireSpec(Surrogate("fast_sigmoid", 5.0), reset, 0, reset != "value")
    module, p, s0, x = _scan_inputs(model, dtype)
    g = torch.Generator().manual_seed(4)
    wz = torch.randn(x.shape, generator=g, dtype=dtype)
    wv = torch.randn(s0.v.shape, generator=g, dtype=dtype)
    z, s = fused_scan(model, spec, p, s0, x, sparse_backward=band)
    node = z.grad_fn.next_functions[0][0]
    assert type(node).__name__.startswith("_BandScanFunction")
    loss = (z * wz).sum() + (s.v * wv).sum()
    gx, gv = torch.autograd.grad(loss, [x, s0.v], retain_graph=True)
    gx2, gv2 = torch.autograd.grad(loss, [x, s0.v])  # a second backward through the kept graph: the same
    assert torch.equal(gx, gx2) and torch.equal(gv, gv2)
    monkeypatch.setattr(module, "fire", gated_fire(band))
    z_ref, s_ref, _ = scan.run(module.step, spec, p, s0, x)
    gx_ref, gv_ref = torch.autograd.grad((z_ref * wz).sum() + (s_ref.v * wv).sum(), [x, s0.v])
    assert torch.equal(z, z_ref) and torch.equal(s.v, s_ref.v) and 0 < z.sum() < z.numel()
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert _rel(gx, gx_ref) < tol and _rel(gv, gv_ref) < tol
    if band == 1e-9:
        assert float(gx.abs().max()) == 0.0 and float(gv.abs().max()) == 0.0
    elif band == 0.05:
        assert 0 < float((gx != 0).float().mean()) < 0.2


def test_compact_band_scan_is_only_for_if_and_lif_without_refractoriness():
    from spikeforge.kernels import cpu_scan

    if not cpu_scan.available():
        pytest.skip("fused CPU kernels could not be built here")
    x = torch.rand(10, 2, 8, requires_grad=True)
    for layer, compact in ((LIF(sparse_backward=0.3), True), (LIF(sparse_backward=0.3, refractory=2e-3), False),
                           (LIF(), False)):
        z, _ = layer(x)
        assert type(z.grad_fn.next_functions[0][0]).__name__.startswith("_BandScanFunction") == compact


def test_compact_band_scan_donated_buffer_and_kept_graph():
    """In a Sequential the Linear's output is donated to the LIF layer: the compact scan writes its input gradient
    into it, unless the graph is kept for another backward (then both backward passes give the same gradients)."""
    import inspect

    kw = {"fuse": False} if "fuse" in inspect.signature(Sequential).parameters else {}
    torch.manual_seed(5)
    net = Sequential(Linear(30, 700), LIF(5e-3, v_th=0.5, sparse_backward=0.1), Linear(700, 5), **kw)
    with torch.no_grad():
        net[0].weight.mul_(4.0)
    x = spikes(20, 3, 30, density=0.2, dtype=torch.float32)
    out, _ = net(x)
    grads = [torch.autograd.grad(out.square().sum(), list(net.parameters()), retain_graph=True) for _ in range(2)]
    out.square().sum().backward()
    for a, b, p in zip(grads[0], grads[1], net.parameters(), strict=True):
        assert torch.equal(a, b) and torch.equal(a, p.grad)
    assert float(grads[0][0].abs().max()) > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_takes_the_band_positions_as_the_nonzeros_of_its_gradient(dtype, monkeypatch):
    """The Linear before a compact sparse-backward scan forms its gradients from the scan's in-band positions (no
    search of the dense gradient): that CSR holds every non-zero of the gradient it receives, and the network's
    gradients are those of the searched non-zeros (bit for bit)."""
    import inspect

    from spikeforge.kernels import cpu_scan
    from spikeforge.kernels import sparse as sp

    if not cpu_scan.available() or not sp._native():
        pytest.skip("the C++ kernels could not be built here")
    kw = {"fuse": False} if "fuse" in inspect.signature(Sequential).parameters else {}

    def run(use_band: bool):
        torch.manual_seed(5)
        net = Sequential(Linear(30, 700), LIF(5e-3, v_th=0.5, sparse_backward=0.1), Linear(700, 5), **kw).to(dtype)
        with torch.no_grad():
            net[0].weight.mul_(4.0)
        x = spikes(20, 3, 30, density=0.05, dtype=dtype)  # sparse: the Linear's own backward (kernels.sparse)
        seen = []
        real = sp._band_nonzeros

        def spy(grad):
            nz = real(grad) if use_band else None
            if nz is not None:
                seen.append((grad.clone(), nz))
            return nz

        monkeypatch.setattr(sp, "_band_nonzeros", spy)
        out, _ = net(x)
        out.square().sum().backward()
        return [p.grad for p in net.parameters()], seen

    grads, seen = run(True)
    searched, none = run(False)
    assert len(seen) == 1 and not none
    grad, (rowptr, cols, vals) = seen[0]
    rows = torch.repeat_interleave(torch.arange(grad.shape[0]), rowptr.diff())
    rebuilt = torch.zeros_like(grad)
    rebuilt[rows, cols.long()] = vals
    assert torch.equal(rebuilt, grad) and 0 < vals.numel() < 0.2 * grad.numel()
    for a, b in zip(grads, searched, strict=True):
        assert torch.equal(a, b)
    assert float(grads[0].abs().max()) > 0
