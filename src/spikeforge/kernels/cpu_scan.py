"""Fused CPU scans: the whole time loop of a neuron layer in one C++ call, forward and backward.

The C++ source (``csrc/scan.cpp``, next to this file) restates the equations of
:mod:`spikeforge.dynamics` operation by operation; it is compiled on first use with the system C++ compiler
into a cache directory (``$SPIKEFORGE_KERNEL_CACHE`` or ``~/.cache/spikeforge/kernels``), keyed by a hash of
the source, the torch version and the flags, and loaded as a torch operator library. No compiler is needed at
install time; where none works, :func:`fused_scan` warns once (one line) and returns None so the caller runs
the reference scan.

Memory: the forward keeps for backward one value per step and neuron (the membrane after integration and
refractory hold) besides its own spike output; the refractory mask is recomputed from the spikes. Under sparse
backward an IF or LIF layer without refractoriness keeps only its in-band steps (position and membrane) while
they are at most :data:`BAND_SCAN_MAX` of a block's steps (:class:`_BandScanFunction`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..core.checks import SpikeforgeError
from ..dynamics import adaptive_lif, cuba_lif, if_neuron, lif
from ..dynamics.common import FireSpec
from .sparse import note_band_gradient

__all__ = ["MODELS", "SURROGATE_CODES", "available", "build", "fused_recurrent", "fused_scan"]

#: model name -> (C++ code, the state type, name of its second state variable or None).
MODELS: dict[str, tuple[int, type, str | None]] = {
    "if": (0, if_neuron.IFState, None),
    "lif": (1, lif.LIFState, None),
    "cuba_lif": (2, cuba_lif.CubaLIFState, "i"),
    "adaptive_lif": (3, adaptive_lif.AdaptiveLIFState, "a"),
}
_RESETS = {"subtract": 0, "value": 1, "none": 2}
#: surrogate name -> C++ code (every entry of spikeforge.core.surrogate.SURROGATES).
SURROGATE_CODES = {"fast_sigmoid": 0, "superspike": 0, "arctan": 1, "sigmoid": 2, "triangle": 3, "boxcar": 4,
                   "straight_through": 5}
# Parameter rows of the [6, N] table the kernel reads: alpha, beta|rho, b, v_th, v_leak, v_reset.
_PARAM_ROWS = ("alpha", ("beta", "rho"), "b", "v_th", "v_leak", "v_reset")
_SOURCE = Path(__file__).resolve().parent / "csrc" / "scan.cpp"
_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-w"]


def _flags() -> list[str]:
    """Compiler flags; OpenMP only where torch's own parallel backend is OpenMP (at::parallel_for inlines it)."""
    openmp = "parallel backend: OpenMP" in torch.__config__.parallel_info()
    return _FLAGS + (["-fopenmp"] if openmp else [])

# Build state of this process: None (not tried), True (loaded) or the reason it failed.
_STATE: dict[str, Any] = {"status": None}


def _cache_dir() -> Path:
    root = os.environ.get("SPIKEFORGE_KERNEL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "spikeforge" / "kernels"


def _compile_command(src: Path, out: Path) -> list[str]:
    from torch.utils import cpp_extension

    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        raise RuntimeError("no C++ compiler found (c++/g++ on PATH or $CXX)")
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))
    inc = [f"-I{p}" for p in cpp_extension.include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]
    libs = cpp_extension.library_paths()
    link = [f"-L{p}" for p in libs] + [f"-Wl,-rpath,{p}" for p in libs] + ["-lc10", "-ltorch_cpu"]
    return [cxx, *_flags(), f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *inc, str(src), "-o", str(out), *link]


def _compiler_error(output: str, status: int) -> str:
    """The line of a failed compiler run that says what went wrong: its first ``error:`` line (GCC and Clang end
    with a source excerpt and a caret line, which alone say nothing), else the last line, else the exit status."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line
    return lines[-1] if lines else f"compiler exit status {status}"


def compile_library(source: Path, stem: str) -> Path:
    """Compile a C++ source of this package into the kernel cache (once per source, torch, flags and Python) and
    return the shared library's path; raises with the compiler's last line when it fails."""
    text = source.read_bytes()
    key = hashlib.sha256(text + torch.__version__.encode() + " ".join(_flags()).encode()
                         + sys.version.encode()).hexdigest()[:16]
    out = _cache_dir() / f"{stem}_{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        proc = subprocess.run(_compile_command(source, tmp_out), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(_compiler_error(proc.stderr or proc.stdout, proc.returncode))
        os.replace(tmp_out, out)  # atomic: concurrent builds of the same key are harmless
    return out


def load_library(state: dict[str, Any], compile_fn: Callable[[], Path], what: str, fallback: str) -> bool:
    """Compile (first use, ``compile_fn() -> library path``) and load a library; True when its ops are usable in
    this process.

    ``state["status"]`` keeps the outcome: None (not tried), True, or the reason it failed. A failure is reported
    once per process by a one-line warning (``spikeforge: {what} unavailable (reason); using {fallback}.``); later
    calls return False at once.
    """
    if state["status"] is None:
        try:
            torch.ops.load_library(str(compile_fn()))
            state["status"] = True
        except Exception as err:  # any build or load failure means: use the fallback
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            state["status"] = reason
            warnings.warn(f"spikeforge: {what} unavailable ({reason}); using {fallback}.", RuntimeWarning,
                          stacklevel=4)
    return state["status"] is True


def _compile() -> Path:
    """Compile ``csrc/scan.cpp`` into the cache and return the library path."""
    return compile_library(_SOURCE, "spikeforge_scan")


def build() -> bool:
    """Compile (first use) and load the kernels; True when they are usable in this process.

    A failure is reported once per process by a one-line warning; later calls return False at once.
    """
    return load_library(_STATE, lambda: _compile(), "fused CPU kernels", "the reference scan")


def available() -> bool:
    """True when the fused CPU kernels are compiled and loaded (builds them on first call)."""
    return build()


def _param_table(params: NamedTuple, like: Tensor) -> Tensor | None:
    """The model's parameters broadcast to the neurons of ``like`` as a ``[6, N]`` table, or None."""
    fields = params._asdict()
    shape = like.shape
    rows = []
    for name in _PARAM_ROWS:
        names = name if isinstance(name, tuple) else (name,)
        value = next((fields[n] for n in names if n in fields), None)
        if value is None:
            rows.append(like.new_zeros(()).expand(shape))
            continue
        value = torch.as_tensor(value).to(dtype=like.dtype, device=like.device)
        try:
            rows.append(value.expand(shape) if value.dim() <= len(shape) else None)
        except RuntimeError:
            return None
        if rows[-1] is None:
            return None
    return torch.stack([r.reshape(-1) for r in rows]).contiguous()


class _Setup(NamedTuple):
    code: int
    state_cls: type
    aux_name: str | None
    reset: int
    refr: int
    detach: bool
    surr: int
    scale: float
    band: float


def _prepare(model: str, spec: FireSpec, params: NamedTuple, state: NamedTuple, x: Tensor,
             sparse_backward: float | None) -> tuple[_Setup, Tensor, Tensor, Tensor, Tensor | None] | None:
    """Check that the fused kernel covers this call; return its settings and flat state, or None."""
    if model not in MODELS or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    if x.dim() < 2 or x.shape[0] == 0 or x.numel() == 0 or not isinstance(spec, FireSpec):
        return None
    if spec.surrogate.name not in SURROGATE_CODES:
        return None
    if any(isinstance(f, Tensor) and f.requires_grad for f in params):
        return None  # learned parameters: the reference scan differentiates them
    code, state_cls, aux_name = MODELS[model]
    if not isinstance(state, state_cls):
        return None
    table = _param_table(params, x[0])
    if table is None:
        return None
    neuron_shape = x.shape[1:]
    try:
        v = state.v.to(x.dtype).expand(neuron_shape)
        aux = getattr(state, aux_name).to(x.dtype).expand(neuron_shape) if aux_name else None
        ref = state.ref.expand(neuron_shape) if state.ref is not None else None
    except RuntimeError:
        return None
    if aux is None:
        aux = v.new_zeros(())
    setup = _Setup(code, state_cls, aux_name, _RESETS[spec.reset], int(spec.refractory), bool(spec.detach_reset),
                   SURROGATE_CODES[spec.surrogate.name], float(spec.surrogate.scale),
                   float(sparse_backward or 0.0))
    return setup, table, v, aux, ref


def _flat_ref(ref: Tensor | None, n: int) -> Tensor:
    if ref is None:
        return torch.empty(0, dtype=torch.int32)
    return ref.reshape(n).to(torch.int32).clone()


def _keep_graph() -> bool:
    """Whether the running backward keeps the graph (``retain_graph``/``create_graph``); True when unknown."""
    try:
        return bool(torch._C._autograd._get_current_graph_task_keep_graph())
    except (AttributeError, RuntimeError):
        return True


def _grads_or_zeros(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g.contiguous().clone()


class _ScanFunction(torch.autograd.Function):
    """Fused scan of one neuron layer; inputs and state flat ([T, N] and [N])."""

    @staticmethod
    def forward(ctx, x, v0, aux0, ref0, table, setup, inplace=False):  # type: ignore[override]
        v = v0.clone()
        aux = aux0.clone() if setup.aux_name else v0.new_zeros(v0.shape)
        ref = ref0.clone()
        if inplace:  # the saved membrane overwrites x, which the caller owns
            z = torch.ops.spikeforge_scan.scan_fwd_into(x, table, v, aux, ref, setup.code, setup.reset, setup.refr)
            vh = x
            torch.autograd.graph.increment_version(x)  # any other saved use of x now fails loudly
        else:
            z, vh = torch.ops.spikeforge_scan.scan_fwd(x, table, v, aux, ref, setup.code, setup.reset, setup.refr,
                                                       True)
        ctx.save_for_backward(vh, z, table, ref0)
        ctx.setup = setup
        ctx.mark_non_differentiable(ref)
        return z, v, aux, ref

    @staticmethod
    def backward(ctx, gz, gv, gaux, gref):  # type: ignore[override]
        vh, z, table, ref0 = ctx.saved_tensors
        s = ctx.setup
        # gz is read through its strides (the stride-0 expansion that `out.sum()` sends back is not copied)
        gz = z.new_zeros(()).expand(z.shape) if gz is None else gz
        gv = _grads_or_zeros(gv, vh[0])
        gaux = _grads_or_zeros(gaux, vh[0])
        # the gradient w.r.t. x overwrites the saved membrane when the graph is not kept for another backward
        inplace = not _keep_graph()
        gx = torch.ops.spikeforge_scan.scan_bwd(gz, vh, z, table, ref0, gv, gaux, s.code, s.reset, s.refr, s.detach,
                                                s.surr, s.scale, s.band, inplace)
        return gx, gv, (gaux if s.aux_name else None), None, None, None, None


class _BandScanFunction(torch.autograd.Function):
    """Fused scan of an IF or LIF layer without refractoriness under sparse backward, keeping only the in-band
    neuron-steps (C++ ``scan_fwd_band`` / ``scan_bwd_band``): outside the band such a step passes no gradient at all,
    so the backward visits only the kept positions and membranes. When a block of neurons has more than
    :data:`BAND_SCAN_MAX` of its steps in the band, the forward starts over as :class:`_ScanFunction` does (dense
    layout, the band applied as a mask in the backward), which is faster there. Both give identical results."""

    @staticmethod
    def forward(ctx, x, v0, table, setup, own):  # type: ignore[override]
        z, v, saved = _band_forward(x, v0, table, setup, own)
        ctx.setup, ctx.compact = setup, len(saved) == 3
        # a donated input is dead now: the compact backward writes the input gradient into it (no fresh pages)
        buf = x if ctx.compact and own else None
        if buf is not None:
            torch.autograd.graph.increment_version(x)  # any other saved use of x now fails loudly
        ctx.save_for_backward(z, table, buf, *saved)
        return z, v

    @staticmethod
    def backward(ctx, gz, gv):  # type: ignore[override]
        s = ctx.setup
        z, table, buf, *saved = ctx.saved_tensors
        gz = z.new_zeros(()).expand(z.shape) if gz is None else gz
        gv = _grads_or_zeros(gv, z[0])
        if not ctx.compact:
            return _band_dense_backward(gz, saved[0], z, table, s, gv), gv, None, None, None
        pos, vhb, offsets = saved
        # the donated buffer only when the graph is not kept: a second backward would overwrite this gradient
        out = buf if buf is not None and not _keep_graph() else z.new_empty(0)
        gx = torch.ops.spikeforge_scan.scan_bwd_band(gz, pos, vhb, offsets, z, table, gv, out, s.code, s.reset,
                                                     s.detach, s.surr, s.scale)
        note_band_gradient(gx, pos)  # the Linear before takes its non-zeros from pos (no search of gx)
        return gx, gv, None, None, None


def _band_forward(x: Tensor, v0: Tensor, table: Tensor, setup: _Setup,
                  own: bool) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """Forward of an IF/LIF layer under sparse backward, ``x [T, N]``: ``(z, v_final, saved)``, ``saved`` being the
    compact scan's ``(pos, vhb, offsets)``, or ``(vh,)`` when a block of neurons has more than
    :data:`BAND_SCAN_MAX` of its steps in the band (the dense layout from the initial state, faster there; with
    ``own`` the membrane is saved over ``x``)."""
    v = v0.clone()
    z, pos, vhb, offsets = torch.ops.spikeforge_scan.scan_fwd_band(x, table, v, v0.new_zeros(v0.shape), setup.code,
                                                                   setup.reset, setup.band, BAND_SCAN_MAX)
    if offsets.numel() > 0:
        return z, v, (pos, vhb, offsets)
    v = v0.clone()
    no_ref = torch.empty(0, dtype=torch.int32)
    aux = v0.new_zeros(v0.shape)
    if own:
        z = torch.ops.spikeforge_scan.scan_fwd_into(x, table, v, aux, no_ref, setup.code, setup.reset, 0)
        torch.autograd.graph.increment_version(x)
        return z, v, (x,)
    z, vh = torch.ops.spikeforge_scan.scan_fwd(x, table, v, aux, no_ref, setup.code, setup.reset, 0, True)
    return z, v, (vh,)


def _band_dense_backward(gz: Tensor, vh: Tensor, z: Tensor, table: Tensor, setup: _Setup, gv: Tensor) -> Tensor:
    """Backward of :func:`_band_forward`'s dense layout (the band as a mask): the input gradient ``[T, N]`` (written
    over ``vh`` unless the graph is kept); ``gv`` is updated in place."""
    no_ref = torch.empty(0, dtype=torch.int32)
    return torch.ops.spikeforge_scan.scan_bwd(gz, vh, z, table, no_ref, gv, torch.zeros_like(gv), setup.code,
                                              setup.reset, 0, setup.detach, setup.surr, setup.scale, setup.band,
                                              not _keep_graph())


def _band_path(setup: _Setup, ref: Tensor) -> bool:
    """Whether the compact sparse-backward scan covers the call: IF or LIF, a band, no refractoriness."""
    return BAND_SCAN and setup.band > 0 and setup.code in (0, 1) and ref.numel() == 0


def compact_band(model: str, spec: FireSpec, sparse_backward: float | None) -> bool:
    """Whether a layer runs the compact sparse-backward scan (:class:`_BandScanFunction`: IF or LIF, a band, no
    refractoriness), whose backward hands the ``Linear`` before it the positions of its gradient's non-zeros."""
    return BAND_SCAN and sparse_backward is not None and model in ("if", "lif") and spec.refractory == 0


#: the compact sparse-backward scan for IF/LIF layers without refractoriness (:class:`_BandScanFunction`); False:
#: always the dense layout with the band as a mask (identical results)
BAND_SCAN = True
#: fraction of a block's neuron-steps in the band above which the compact scan gives way to the dense layout
BAND_SCAN_MAX = 0.1


def _wants_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _final_state(setup: _Setup, v: Tensor, aux: Tensor, ref: Tensor, state: NamedTuple, shape) -> NamedTuple:
    ref_out = ref.reshape(shape).to(state.ref.dtype) if state.ref is not None else None
    fields = {"v": v.reshape(shape), "ref": ref_out}
    if setup.aux_name:
        fields[setup.aux_name] = aux.reshape(shape)
    return setup.state_cls(**fields)


def fused_scan(model: str, spec: FireSpec, params: NamedTuple, state: NamedTuple, x: Tensor, *,
               sparse_backward: float | None = None, inplace: bool = False) -> tuple[Tensor, NamedTuple] | None:
    """Run a spiking model over all time steps of ``x`` in one fused CPU call.

    Args:
        model: ``"if"``, ``"lif"``, ``"cuba_lif"`` or ``"adaptive_lif"``.
        spec: the firing spec (surrogate, reset, refractoriness, detach_reset).
        params: the model's per-step parameters (0-dim or broadcastable to ``x[0]``; not requiring grad).
        state: the model's state at the start of the sequence.
        x: input currents.
        sparse_backward: band ``b`` > 0: the surrogate derivative is taken as zero where ``|v - v_th| >= b``
            (Perez-Nieves & Goodman 2021); None: exact surrogate gradient.
        inplace: the caller owns ``x`` (e.g. the fresh output of a linear layer nothing else reads): the membrane
            saved for backward overwrites ``x`` (whose autograd version is bumped), so the scan adds only its
            spikes to memory. Only when ``x`` is contiguous and a gradient is recorded; otherwise ignored.

    Returns:
        ``(spikes, final_state)``, differentiable w.r.t. ``x`` and the initial state; None when the case is
        not covered (non-CPU or integer tensors, learned parameters, unknown state) or the kernels could not be
        built, so that the caller runs the reference scan.

    Shape:
        x ``[T, B, *features]`` -> spikes ``[T, B, *features]``.
    """
    prep = _prepare(model, spec, params, state, x, sparse_backward)
    if prep is None or not build():
        return None
    setup, table, v0, aux0, ref = prep
    t, shape = x.shape[0], x.shape[1:]
    n = shape.numel()
    xf = x.reshape(t, n).contiguous()
    vf, af = v0.reshape(n).contiguous(), aux0.expand(shape).reshape(n).contiguous()
    rf = _flat_ref(ref, n)
    if _wants_grad(x, v0, aux0 if setup.aux_name else None):
        own = bool(inplace) and x.is_contiguous() and x.requires_grad  # xf is then a view of x itself
        if _band_path(setup, rf):
            z, v = _BandScanFunction.apply(xf, vf, table, setup, own)
            aux, ref_out = af.clone(), rf
        else:
            z, v, aux, ref_out = _ScanFunction.apply(xf, vf, af, rf, table, setup, own)
    else:
        v, aux = vf.clone(), af.clone()
        ref_out = rf
        z, _ = torch.ops.spikeforge_scan.scan_fwd(xf, table, v, aux, ref_out, setup.code, setup.reset, setup.refr,
                                                  False)
    return z.reshape(x.shape), _final_state(setup, v, aux, ref_out, state, shape)


class _RecurrentFunction(torch.autograd.Function):
    """Fused recurrent layer: neuron scan with the recurrent product inside the time loop."""

    @staticmethod
    def forward(ctx, x_ff, v0, aux0, z0, w, ref0, table, setup):  # type: ignore[override]
        v = v0.clone()
        aux = aux0.clone()
        ref = ref0.clone()
        wt = w.t().contiguous()
        z, vh = torch.ops.spikeforge_scan.rec_fwd(x_ff, wt, z0, table, v, aux, ref, setup.code, setup.reset,
                                                  setup.refr, True)
        ctx.save_for_backward(vh, z, wt, table, ref0, z0)
        ctx.setup = setup
        ctx.mark_non_differentiable(ref)
        return z, v, aux, ref

    @staticmethod
    def backward(ctx, gz, gv, gaux, gref):  # type: ignore[override]
        vh, z, wt, table, ref0, z0 = ctx.saved_tensors
        s = ctx.setup
        gz = _grads_or_zeros(gz, z) if gz is None or not gz.is_contiguous() else gz
        gv = _grads_or_zeros(gv, vh[0].reshape(-1))
        gaux = _grads_or_zeros(gaux, vh[0].reshape(-1))
        gx, gz0 = torch.ops.spikeforge_scan.rec_bwd(gz, vh, z, wt, table, ref0, z0, gv, gaux, s.code, s.reset,
                                                    s.refr, s.detach, s.surr, s.scale, s.band)
        gw = None
        if ctx.needs_input_grad[4]:
            if _density(z) < _SPARSE_WGRAD_BELOW:
                gw = torch.ops.spikeforge_scan.rec_wgrad(gx, z, z0).t()
            else:
                h = wt.shape[0]
                gw = gx[0].t() @ z0
                if z.shape[0] > 1:
                    gw = gw + gx[1:].reshape(-1, h).t() @ z[:-1].reshape(-1, h)
        return gx, gv, (gaux if s.aux_name else None), gz0, gw, None, None, None


_SPARSE_WGRAD_BELOW = 0.15  # spike density under which the weight gradient adds rows instead of a GEMM


def _density(z: Tensor) -> float:
    return float(torch.count_nonzero(z)) / max(z.numel(), 1)


def fused_recurrent(model: str, spec: FireSpec, params: NamedTuple, state: NamedTuple, z0: Tensor, x_ff: Tensor,
                    w_rec: Tensor, *, sparse_backward: float | None = None) -> tuple[Tensor, NamedTuple, Tensor] | None:
    """Recurrent spiking layer ``x_t = x_ff[t] + z_{t-1} @ w_rec.T`` fused over time on the CPU.

    The recurrent product adds only the columns of ``w_rec`` whose neuron spiked at the previous step; the
    backward skips neurons whose input gradient is zero and forms the weight gradient in one matrix product.

    Args:
        model, spec, params, state, sparse_backward: as :func:`fused_scan`.
        z0: spikes of the step before the sequence.
        x_ff: feed-forward input current, computed for all steps at once.
        w_rec: recurrent weights ``[H, H]`` (row: postsynaptic neuron).

    Returns:
        ``(spikes, final neuron state, last spikes)`` differentiable w.r.t. ``x_ff``, the initial state, ``z0``
        and ``w_rec``; or None when not covered (see :func:`fused_scan`).

    Shape:
        x_ff ``[T, B, H]``, z0 ``[B, H]``, w_rec ``[H, H]`` -> spikes ``[T, B, H]``.
    """
    if x_ff.dim() != 3 or w_rec.dim() != 2 or w_rec.shape != (x_ff.shape[2], x_ff.shape[2]):
        return None
    if z0.shape != x_ff.shape[1:] or w_rec.dtype != x_ff.dtype or w_rec.device != x_ff.device:
        return None
    prep = _prepare(model, spec, params, state, x_ff, sparse_backward)
    if prep is None or not build():
        return None
    setup, table, v0, aux0, ref = prep
    shape = x_ff.shape[1:]
    n = shape.numel()
    vf, af = v0.reshape(n).contiguous(), aux0.expand(shape).reshape(n).contiguous()
    rf = _flat_ref(ref, n)
    xc, zc = x_ff.contiguous(), z0.to(x_ff.dtype).contiguous()
    if _wants_grad(x_ff, v0, aux0 if setup.aux_name else None, z0, w_rec):
        z, v, aux, ref_out = _RecurrentFunction.apply(xc, vf, af, zc, w_rec, rf, table, setup)
    else:
        v, aux, ref_out = vf.clone(), af.clone(), rf
        z, _ = torch.ops.spikeforge_scan.rec_fwd(xc, w_rec.t().contiguous(), zc, table, v, aux, ref_out, setup.code,
                                                 setup.reset, setup.refr, False)
    return z, _final_state(setup, v, aux, ref_out, state, shape), z[-1]


def check_band(sparse_backward: float | None) -> float | None:
    """Validate a sparse-backward band (None or a finite number > 0)."""
    if sparse_backward is None:
        return None
    try:
        band = float(sparse_backward)
    except (TypeError, ValueError):
        band = float("nan")
    if not band > 0 or band == float("inf"):
        raise SpikeforgeError(
            f"sparse_backward must be None or a band width > 0 around the threshold (e.g. 0.5), "
            f"got {sparse_backward!r}."
        )
    return band
