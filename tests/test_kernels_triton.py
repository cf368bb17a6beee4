"""The Triton fused scans (spikeforge.kernels.triton_scan) equal the reference scan: spikes and gradients.

The kernels run on CUDA, or on CPU under Triton's interpreter (``TRITON_INTERPRET=1``, which must be set before
Triton kernels are defined, i.e. before this process imports spikeforge.kernels.triton_scan). Without either
the in-process tests skip, and wherever Triton is installed ``test_kernel_suite_in_interpreter_subprocess`` runs
them in a subprocess under the interpreter, ``test_gpu_bench_smoke_in_interpreter`` runs the GPU benchmark's
smoke mode, and ``test_kernels_compile_for_h100_without_a_gpu`` builds the kernels for sm_90 (no GPU needed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _sparse_reference import gated_fire

from spikeforge.core.surrogate import SURROGATES, Surrogate
from spikeforge.dynamics import adaptive_lif, cuba_lif, if_neuron, lif
from spikeforge.dynamics.common import FireSpec
from spikeforge.sim import scan

ROOT = Path(__file__).resolve().parent.parent
HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
CUDA = torch.cuda.is_available()
RUNNABLE = HAS_TRITON and (INTERPRET or CUDA)
DEVICE = "cpu" if INTERPRET or not CUDA else "cuda"

needs_kernels = pytest.mark.skipif(
    not RUNNABLE, reason="needs triton and CUDA, or triton with TRITON_INTERPRET=1 set before the run")

MODULES = {"if": if_neuron, "lif": lif, "cuba_lif": cuba_lif, "adaptive_lif": adaptive_lif}


def _params(model: str, n: int, dtype: torch.dtype, *, per_neuron: bool):
    g = torch.Generator().manual_seed(11)
    tau = (2e-3 + 6e-3 * torch.rand(n, generator=g, dtype=torch.float64)) if per_neuron else 5e-3
    v_th = (0.8 + 0.4 * torch.rand(n, generator=g, dtype=torch.float64)) if per_neuron else 1.0
    if model == "if":
        p = if_neuron.make_params(v_th=v_th, v_reset=0.1, dt=1e-3)
    elif model == "lif":
        p = lif.make_params(tau_mem=tau, v_th=v_th, v_leak=0.1, v_reset=-0.2, dt=1e-3)
    elif model == "cuba_lif":
        p = cuba_lif.make_params(tau_mem=tau, tau_syn=3e-3, v_th=v_th, v_leak=0.0, v_reset=0.0, dt=1e-3)
    else:
        p = adaptive_lif.make_params(tau_mem=tau, tau_ahp=20e-3, b=0.3, v_th=v_th, v_leak=0.0, v_reset=-0.1,
                                     dt=1e-3)
    return type(p)(*[f.to(dtype=dtype, device=DEVICE) for f in p])


def _inputs(model: str, T: int, B: int, n: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    scale = {"if": (0.6, 0.3), "lif": (3.0, 2.0), "cuba_lif": (5.0, 4.0), "adaptive_lif": (3.0, 2.5)}[model]
    x = torch.randn(T, B, n, generator=g, dtype=torch.float64) * scale[0] + scale[1]
    return x.to(dtype=dtype, device=DEVICE).requires_grad_()


def _leaf_state(model: str, p, like: torch.Tensor, refractory: bool, seed: int = 1):
    """A non-resting initial state whose float fields require grad (so d/d state0 is checked too)."""
    s = MODULES[model].init_state(p, like, refractory=refractory)
    g = torch.Generator().manual_seed(seed)
    fields = []
    for f in s:
        if f is None:
            fields.append(None)
        elif f.is_floating_point():
            noise = torch.rand(f.shape, generator=g, dtype=torch.float64).to(f)
            fields.append((f + 0.5 * noise).detach().requires_grad_())
        else:  # some neurons start refractory
            fields.append(torch.randint(0, 3, f.shape, generator=g).to(f))
    return type(s)(*fields)


def _loss(z, state, gz):
    """A loss that weighs every spike and every final float state field differently."""
    total = (z * gz).sum()
    for k, f in enumerate(state):
        if f is not None and f.is_floating_point():
            total = total + (f * (0.5 + k) * torch.linspace(-1, 1, f.numel(), dtype=f.dtype,
                                                             device=f.device).view(f.shape)).sum()
    return total


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def _compare_scan(model, spec, p, state, x, *, sparse=None, rtol=1e-5):
    from spikeforge.kernels.triton_scan import triton_scan

    out = triton_scan(model, spec, p, state, x, sparse_backward=sparse)
    assert out is not None, "the Triton path declined a supported case"
    z, s_end = out
    z_ref, s_ref, _ = scan.run(MODULES[model].step, spec, p, state, x)
    assert torch.equal(z, z_ref), f"spikes differ in {int((z != z_ref).sum())} places"
    for a, b in zip(s_end, s_ref, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype and torch.equal(a, b)
    gz = torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(z)
    wrt = [x] + [f for f in state if f is not None and f.is_floating_point()]
    grads = torch.autograd.grad(_loss(z, s_end, gz), wrt)
    if sparse is None:
        grads_ref = torch.autograd.grad(_loss(z_ref, s_ref, gz), wrt)
    else:
        grads_ref = _sparse_reference_grads(model, spec, p, state, x, gz, sparse, wrt)
    for name, a, b in zip(["x", *[f"state.{i}" for i in range(len(wrt) - 1)]], grads, grads_ref, strict=True):
        assert _rel_err(a, b) <= rtol, f"d/d{name}: relative error {_rel_err(a, b):.3g}"
    return z


def _sparse_reference_grads(model, spec, p, state, x, gz, band, wrt):
    """Reference gradients of sparse backward: the membrane outside ``|v - v_th| < band`` is a constant."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MODULES[model], "fire", gated_fire(band))
        z, s_end, _ = scan.run(MODULES[model].step, spec, p, state, x)
    return torch.autograd.grad(_loss(z, s_end, gz), wrt)


@needs_kernels
@pytest.mark.parametrize("model", list(MODULES))
@pytest.mark.parametrize("reset", ["subtract", "value", "none"])
@pytest.mark.parametrize("refractory", [0, 2])
@pytest.mark.parametrize("detach", [True, False])
def test_scan_equals_reference_float64(model, reset, refractory, detach):
    T, B, n = 8, 3, 7
    p = _params(model, n, torch.float64, per_neuron=(refractory == 0))
    x = _inputs(model, T, B, n, torch.float64)
    state = _leaf_state(model, p, x[0].detach(), refractory > 0)
    spec = FireSpec(Surrogate("fast_sigmoid", 4.0), reset, refractory, detach)
    z = _compare_scan(model, spec, p, state, x)
    assert 0 < z.sum() < z.numel(), "inputs should make some, not all, neurons fire"


@needs_kernels
@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_every_surrogate(name):
    p = _params("lif", 6, torch.float64, per_neuron=True)
    x = _inputs("lif", 6, 2, 6, torch.float64, seed=3)
    state = _leaf_state("lif", p, x[0].detach(), False)
    _compare_scan("lif", FireSpec(Surrogate(name, 3.0), "subtract", 0, True), p, state, x)


@needs_kernels
@pytest.mark.parametrize("model", ["lif", "adaptive_lif"])
def test_sparse_backward_band(model):
    p = _params(model, 5, torch.float64, per_neuron=True)
    x = _inputs(model, 7, 3, 5, torch.float64, seed=4)
    state = _leaf_state(model, p, x[0].detach(), True)
    _compare_scan(model, FireSpec(Surrogate("sigmoid", 5.0), "value", 1, False), p, state, x, sparse=0.3)


@needs_kernels
@pytest.mark.parametrize("model", list(MODULES))
def test_float32_feature_dims_and_many_lanes(model):
    # [T, B, 2, 20] -> 80 lanes: more than one interpreter block would hold at BLOCK=64, masks exercised.
    T, B = 6, 2
    p = _params(model, 20, torch.float32, per_neuron=True)
    x = _inputs(model, T, B * 2, 20, torch.float32, seed=7).detach().view(T, B, 2, 20).requires_grad_()
    state = _leaf_state(model, p, x[0].detach(), True)
    # float32: the kernel sums the same terms as autograd in another order; 1e-5 of the largest gradient covers
    # the few-ulp rounding differences accumulated over T steps.
    _compare_scan(model, FireSpec(Surrogate("arctan", 2.0), "subtract", 1, True), p, state, x, rtol=1e-5)


@needs_kernels
@pytest.mark.parametrize("model", ["cuba_lif", "adaptive_lif"])
def test_sequence_longer_than_the_prefetch_window(model):
    # The kernels load 8 steps ahead; 19 steps cross that window twice, forward and backward.
    from spikeforge.kernels.triton_scan import _PREFETCH

    T = 2 * _PREFETCH + 3
    p = _params(model, 3, torch.float64, per_neuron=True)
    x = _inputs(model, T, 2, 3, torch.float64, seed=12)
    state = _leaf_state(model, p, x[0].detach(), True)
    _compare_scan(model, FireSpec(Surrogate("boxcar", 1.0), "subtract", 3, False), p, state, x)


@needs_kernels
@pytest.mark.parametrize("v_th_shape", [(), (20,), (2, 1), (1, 2, 20), (3, 2, 20)])
def test_param_broadcasting(v_th_shape):
    # scalar, per neuron (repeated over the batch), broadcast over the last dim (materialised per lane), full.
    T, B = 5, 3
    p = _params("adaptive_lif", 20, torch.float64, per_neuron=True)
    v_th = 0.7 + 0.6 * torch.rand(v_th_shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    p = p._replace(v_th=v_th.to(DEVICE))
    x = _inputs("adaptive_lif", T, B * 2, 20, torch.float64, seed=2).detach().view(T, B, 2, 20).requires_grad_()
    state = _leaf_state("adaptive_lif", p, x[0].detach(), False)
    _compare_scan("adaptive_lif", FireSpec(Surrogate("fast_sigmoid", 3.0), "value", 0, False), p, state, x)


@needs_kernels
@pytest.mark.parametrize("reduce", ["sum", "sum_time", "mean_batch"])
def test_broadcast_output_gradients_are_read_through_strides(reduce):
    """``out.sum()`` (and sums over one axis) send back a stride-0 expansion; the kernel reads it through its
    strides instead of copying it, with the reference's gradients."""
    from spikeforge.kernels.triton_scan import triton_scan

    spec = FireSpec(Surrogate("fast_sigmoid", 3.0), "subtract", 0, True)
    p = _params("lif", 6, torch.float64, per_neuron=True)
    x = _inputs("lif", 19, 3, 6, torch.float64, seed=21)
    state = _leaf_state("lif", p, x[0].detach(), False)
    loss = {"sum": lambda z: z.sum(),
            "sum_time": lambda z: (z.sum(0) * torch.arange(18, dtype=z.dtype, device=z.device).view(3, 6)).sum(),
            "mean_batch": lambda z: (z.mean(1) ** 2).sum()}[reduce]
    wrt = [x, state.v]
    z, _ = triton_scan("lif", spec, p, state, x)
    grads = torch.autograd.grad(loss(z), wrt)
    z_ref, _, _ = scan.run(MODULES["lif"].step, spec, p, state, x)
    grads_ref = torch.autograd.grad(loss(z_ref), wrt)
    for a, b in zip(grads, grads_ref, strict=True):
        assert _rel_err(a, b) <= 1e-12


@needs_kernels
def test_declines_what_it_does_not_cover():
    from spikeforge.kernels.triton_scan import triton_scan

    p = _params("lif", 4, torch.float64, per_neuron=True)
    x = _inputs("lif", 3, 2, 4, torch.float64)
    state = lif.init_state(p, x[0], refractory=False)
    spec = FireSpec()
    learned = p._replace(alpha=p.alpha.clone().requires_grad_())
    assert triton_scan("lif", spec, learned, state, x) is None
    assert triton_scan("lif", spec, p, state, x.detach().half()) is None
    assert triton_scan("li", spec, p, state, x) is None
    assert triton_scan("lif", spec, p, state, x[:0]) is None
    assert triton_scan("lif", spec, p, lif.LIFState(state.v[:1]), x) is None

    class Custom(Surrogate):
        pass

    assert triton_scan("lif", FireSpec(Custom("arctan")), p, state, x) is None


@needs_kernels
@pytest.mark.parametrize("refractory", [0, 2])
def test_inplace_reuses_the_input_buffer(refractory):
    from spikeforge.kernels.triton_scan import triton_scan

    p = _params("lif", 6, torch.float64, per_neuron=True)
    leaf = _inputs("lif", 12, 3, 6, torch.float64, seed=5)
    spec = FireSpec(Surrogate("fast_sigmoid", 4.0), "subtract", refractory, True)
    state = lif.init_state(p, leaf[0].detach(), refractory=refractory > 0)
    x = leaf * 1.0  # a buffer the caller owns, like a linear layer's output
    before = x.detach().clone()
    z, s = triton_scan("lif", spec, p, state, x, inplace=True)
    assert not torch.equal(x.detach(), before), "the saved membrane should overwrite x"
    z_ref, s_ref, _ = scan.run(lif.step, spec, p, state, before.clone().requires_grad_())
    assert torch.equal(z, z_ref) and torch.equal(s.v, s_ref.v)
    gz = torch.randn(z.shape, generator=torch.Generator().manual_seed(1), dtype=z.dtype).to(z.device)
    g = torch.autograd.grad((z * gz).sum() + s.v.sum(), leaf, retain_graph=True)[0]
    x_ref = leaf * 1.0
    z2, s2, _ = scan.run(lif.step, spec, p, state, x_ref)
    g_ref = torch.autograd.grad((z2 * gz).sum() + s2.v.sum(), leaf)[0]
    assert _rel_err(g, g_ref) <= 1e-12
    # the graph was retained, so the saved membrane was not overwritten: a second backward gives the same
    g2 = torch.autograd.grad((z * gz).sum() + s.v.sum(), leaf)[0]
    assert torch.equal(g, g2)


@needs_kernels
def test_inplace_detects_another_saved_use_of_x():
    from spikeforge.kernels.triton_scan import triton_scan

    p = _params("if", 4, torch.float64, per_neuron=False)
    leaf = _inputs("if", 5, 2, 4, torch.float64)
    x = leaf * 1.0
    other = (x * x).sum()  # saves x for its backward
    z, _ = triton_scan("if", FireSpec(), p, if_neuron.init_state(p, x[0].detach(), refractory=False), x,
                       inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (z.sum() + other).backward()


@needs_kernels
def test_several_spikes_per_step_are_declined():
    from spikeforge.kernels.triton_scan import triton_scan

    if "max_spikes" not in FireSpec.__dataclass_fields__:
        pytest.skip("FireSpec has no max_spikes here")
    p = _params("lif", 4, torch.float64, per_neuron=False)
    x = _inputs("lif", 3, 2, 4, torch.float64)
    state = lif.init_state(p, x[0], refractory=False)
    assert triton_scan("lif", FireSpec(max_spikes=3), p, state, x) is None


@needs_kernels
def test_no_grad_saves_nothing_and_matches():
    from spikeforge.kernels.triton_scan import triton_scan

    p = _params("cuba_lif", 5, torch.float32, per_neuron=False)
    x = _inputs("cuba_lif", 5, 2, 5, torch.float32).detach()
    state = cuba_lif.init_state(p, x[0], refractory=False)
    spec = FireSpec()
    with torch.no_grad():
        z, s = triton_scan("cuba_lif", spec, p, state, x)
    z_ref, s_ref, _ = scan.run(cuba_lif.step, spec, p, state, x)
    assert not z.requires_grad and torch.equal(z, z_ref) and torch.equal(s.i, s_ref.i)


def _reference_recurrent(model, spec, p, state, z0, x_ff, w):
    z, outs = z0, []
    for t in range(x_ff.shape[0]):
        z, state = MODULES[model].step(spec, p, state, x_ff[t] + z @ w.t())
        outs.append(z)
    return torch.stack(outs), state, z


@needs_kernels
@pytest.mark.parametrize("model", list(MODULES))
@pytest.mark.parametrize("refractory", [0, 2])
def test_recurrent_equals_plain_loop(model, refractory):
    from spikeforge.kernels.triton_scan import triton_recurrent

    T, B, H = 6, 3, 8
    dt = torch.float64
    p = _params(model, H, dt, per_neuron=True)
    x_ff = _inputs(model, T, B, H, dt, seed=9)
    g = torch.Generator().manual_seed(2)
    w = (torch.randn(H, H, generator=g, dtype=dt) * 0.6).to(DEVICE).requires_grad_()
    z0 = (torch.rand(B, H, generator=g, dtype=dt) > 0.5).to(dt).to(DEVICE).requires_grad_()
    state = _leaf_state(model, p, x_ff[0].detach(), refractory > 0)
    spec = FireSpec(Surrogate("triangle", 0.8), "value" if refractory else "subtract", refractory, False)
    out = triton_recurrent(model, spec, p, state, z0, x_ff, w)
    assert out is not None
    z, s_end, z_last = out
    z_ref, s_ref, z_last_ref = _reference_recurrent(model, spec, p, state, z0, x_ff, w)
    assert torch.equal(z, z_ref) and torch.equal(z_last, z_last_ref)
    assert 0 < z.sum() < z.numel()
    for a, b in zip(s_end, s_ref, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    gz = torch.randn(z.shape, generator=g, dtype=dt).to(DEVICE)
    wrt = [x_ff, w, z0] + [f for f in state if f is not None and f.is_floating_point()]
    grads = torch.autograd.grad(_loss(z, s_end, gz) + (z_last * 0.3).sum(), wrt)
    grads_ref = torch.autograd.grad(_loss(z_ref, s_ref, gz) + (z_last_ref * 0.3).sum(), wrt)
    for k, (a, b) in enumerate(zip(grads, grads_ref, strict=True)):
        assert _rel_err(a, b) <= 1e-5, f"gradient {k}: relative error {_rel_err(a, b):.3g}"


@pytest.mark.gpu
@pytest.mark.skipif(not (CUDA and HAS_TRITON and not INTERPRET), reason="needs CUDA and triton (compiled)")
def test_cuda_float32_large_equals_reference():
    """Compiled kernels on the GPU: several programs, a long sequence, prefetch boundaries."""
    from spikeforge.kernels.triton_scan import triton_scan

    T, B, n = 37, 16, 300
    for model in MODULES:
        p = _params(model, n, torch.float32, per_neuron=True)
        x = _inputs(model, T, B, n, torch.float32, seed=13)
        state = _leaf_state(model, p, x[0].detach(), True)
        spec = FireSpec(Surrogate("fast_sigmoid", 5.0), "subtract", 2, True)
        z, s = triton_scan(model, spec, p, state, x)
        z_ref, s_ref, _ = scan.run(MODULES[model].step, spec, p, state, x)
        assert torch.equal(z, z_ref), model
        g = torch.autograd.grad((z * torch.linspace(-1, 1, z.numel(), device=z.device).view(z.shape)).sum(), x)[0]
        g_ref = torch.autograd.grad(
            (z_ref * torch.linspace(-1, 1, z.numel(), device=z.device).view(z.shape)).sum(), x)[0]
        assert _rel_err(g, g_ref) <= 1e-5, model


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (the interpreter runs on CPU)")
def test_gpu_bench_smoke_in_interpreter(tmp_path):
    out = tmp_path / "gpu_kernels.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_kernels.py"), "--smoke", "--json", str(out)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads(out.read_text())
    checks = data["equivalence"]
    assert len(checks) >= 8 and all(c["passed"] for c in checks), checks
    assert data["timings"] and all("error" not in r for r in data["timings"]), data["timings"]


@pytest.mark.skipif(not HAS_TRITON or RUNNABLE, reason="needs triton; runs only where the tests above skipped")
def test_kernel_suite_in_interpreter_subprocess():
    """Where neither CUDA nor TRITON_INTERPRET is set, run the equivalence tests above under the interpreter."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)),
                          "-k", "not subprocess and not smoke"], capture_output=True, text=True, timeout=900,
                         env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and " failed" not in res.stdout


@pytest.mark.skipif(not HAS_TRITON or INTERPRET, reason="needs triton, compiled mode (TRITON_INTERPRET unset)")
@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
def test_kernels_compile_for_h100_without_a_gpu(dtype):
    """Triton's front end, LLVM and the bundled ptxas build the kernels for sm_90 on any machine: this catches
    what the interpreter cannot (loop-carried types, constexpr branches, fp-fusion flag) before a GPU run."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from spikeforge.kernels import triton_scan as ts

    ints = {"T", "L", "n_ref", "q1", "q2", "q3", "qth", "qlk", "qrs"}
    floats = {"scale", "scale2", "sparse_b"}

    def signature(kernel, constexprs, int_ptrs):
        sig = {}
        for name in kernel.arg_names:
            if name in constexprs:
                sig[name] = "constexpr"
            elif name.endswith("_ptr"):
                sig[name] = int_ptrs.get(name, f"*{dtype}")
            elif name in ints:
                sig[name] = "i32"
            elif name in floats:
                sig[name] = "fp32"
            else:
                sig[name] = "i64"
        return sig

    target = GPUTarget("cuda", 90, 32)
    refs = {"fl_ptr": "*i8", "ref_ptr": "*i32", "refo_ptr": "*i32"}
    for model, reset, block, warps in [(0, 0, 32, 1), (3, 1, 256, 4), (2, 2, 64, 2)]:
        fwd = {"MODEL": model, "RESET": reset, "REFRAC": True, "SAVE": True, "HAS_REC": model == 3, "BLOCK": block}
        bwd = {"MODEL": model, "RESET": reset, "REFRAC": True, "DETACH": reset == 1, "SURR": 2 * model % 6,
               "SPARSE": True, "HAS_GV": True, "HAS_GAUX": model >= 2, "BLOCK": block}
        for kernel, consts in [(ts._scan_fwd_kernel, fwd), (ts._scan_bwd_kernel, bwd)]:
            src = ASTSource(kernel, signature(kernel, consts, refs), constexprs=consts)
            compiled = triton.compile(src, target=target, options={"num_warps": warps, "enable_fp_fusion": False})
            ptx = compiled.asm["ptx"]
            assert ".target sm_90" in ptx
            if kernel is ts._scan_fwd_kernel:  # no contraction into fma: spikes bit-equal to PyTorch's ops
                assert "fma.rn" not in ptx
