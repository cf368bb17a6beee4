r"""Fused GPU scans in Triton: every time step of a spiking layer in one kernel, forward and backward.

The equations are those of :mod:`spikeforge.dynamics` (``if_neuron``, ``lif``, ``cuba_lif``,
``adaptive_lif``) and :func:`spikeforge.dynamics.common.fire`, restated here once in the same floating-point
order (and compiled with ``enable_fp_fusion=False``) so that spikes are bit-identical to the reference
:func:`spikeforge.sim.scan.run`; ``tests/test_kernels_triton.py`` pins them to it.

Design
------
* **Forward**: one launch. Each program owns ``BLOCK`` lanes of the flattened ``[B * features]`` neuron axis and
  loops over ``t`` inside the kernel, keeping the state in registers; the input of the next eight steps is
  prefetched (rotating registers) so the loop is not bound by one memory latency per step.
* **What is saved for backward**: the membrane *before reset* ``v_t`` (after the refractory hold) in the input
  dtype, and, only with refractoriness, one int8 per step and lane saying whether the neuron was active. Spikes are
  not saved: ``z_t = H(v_t - v_th)`` (times the active flag) is recomputed from ``v_t`` exactly. The input ``x``
  and the other state variables are not saved: the backward recurrence needs only ``v_t`` and the constants.
  (Recomputing ``v_t`` instead would need ``x``, which is as large as ``v_t``.) Nothing is saved when no input
  requires a gradient. ``inplace=True`` (for callers that own ``x``) writes ``v_t`` over ``x`` and then
  ``dL/dx`` over ``v_t``: the scan then adds only the spikes to the memory of the layer in front of it.
* **Backward**: one launch, the adjoint recurrence for ``t = T-1 .. 0`` with the surrogate derivative
  (``sparse_backward=b``: where ``|v - v_th| >= b`` the membrane is a constant, so no gradient passes through
  it), reset (``detach_reset`` honoured), refractory
  hold, the synaptic current (CubaLIF) and the AHP current (AdaptiveLIF, whose jump ``b z`` carries gradient
  through the surrogate).
* **Recurrent layers**: the product ``z_{t-1} W_rec^T`` cannot be hoisted, so each step is one cuBLAS ``mm``
  plus one launch of the forward kernel with ``T = 1`` that adds ``x_ff[t]`` (in the reference's order) and
  updates the state in place; backward is per step one ``addmm`` (``dL/dz_t`` from step ``t + 1``) plus one
  backward kernel, and ``dW_rec`` is one matrix product over all steps at the end. Launch count: 2 per step
  each way; CUDA graphs are not used.

Only ``triton`` itself is optional: without it (or for tensors not on CUDA, unless ``TRITON_INTERPRET=1``)
the entry points return None and the caller falls back to the reference scan.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ..core.surrogate import Surrogate
from ..dynamics import adaptive_lif, cuba_lif, if_neuron, lif
from ..dynamics.common import FireSpec
from .cpu_scan import _keep_graph

try:  # Triton is optional: without it every entry point returns None.
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - exercised only where triton is missing or broken
    triton = None
    tl = None

__all__ = ["MODELS", "available", "triton_recurrent", "triton_scan"]

#: model name -> (kernel id, dynamics module)
MODELS = {"if": (0, if_neuron), "lif": (1, lif), "cuba_lif": (2, cuba_lif), "adaptive_lif": (3, adaptive_lif)}
_RESET_IDS = {"subtract": 0, "value": 1, "none": 2}
_SURROGATE_IDS = {"fast_sigmoid": 0, "superspike": 0, "arctan": 1, "sigmoid": 2, "triangle": 3, "boxcar": 4,
                  "straight_through": 5}
_PREFETCH = 8  # steps of input loaded ahead inside the kernels (fixed by the rotating registers below)


# Triton decides when the kernels below are defined (at import) whether they run compiled or interpreted.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _interpreting() -> bool:
    return _INTERPRET


def available(device: torch.device | str | None = None) -> bool:
    """Whether the Triton path can run on ``device`` (CUDA, or any device under ``TRITON_INTERPRET=1``)."""
    if triton is None:
        return False
    if _interpreting():
        return True
    return device is not None and torch.device(device).type == "cuda"


if triton is not None:

    @triton.jit
    def _surrogate_d(u, scale, scale2, SURR: tl.constexpr):
        """Surrogate derivative at ``u = v - v_th`` (the table of core/surrogate.py)."""
        if SURR == 0:  # fast sigmoid / superspike
            d = 1.0 + tl.abs(scale * u)
            out = 0.5 * scale / (d * d)
        elif SURR == 1:  # arctan, scale2 = pi * scale / 2
            w = scale2 * u
            out = 0.5 * scale / (1.0 + w * w)
        elif SURR == 2:  # sigmoid
            sig = 1.0 / (1.0 + tl.exp(-(scale * u)))
            out = scale * sig * (1.0 - sig)
        elif SURR == 3:  # triangle
            out = scale * tl.maximum(1.0 - tl.abs(scale * u), 0.0)
        elif SURR == 4:  # boxcar
            out = scale * (tl.abs(scale * u) < 0.5).to(u.dtype)
        else:  # straight through
            out = u * 0.0 + 1.0
        return out

    @triton.jit(do_not_specialize=["T", "n_ref"])
    def _scan_fwd_kernel(
        x_ptr, r_ptr, z_ptr, vp_ptr, fl_ptr,
        v_ptr, aux_ptr, ref_ptr, vo_ptr, auxo_ptr, refo_ptr,
        p1_ptr, p2_ptr, p3_ptr, vth_ptr, vleak_ptr, vreset_ptr,
        q1, q2, q3, qth, qlk, qrs,
        T, L, n_ref,
        MODEL: tl.constexpr, RESET: tl.constexpr, REFRAC: tl.constexpr, SAVE: tl.constexpr,
        HAS_REC: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """Forward scan over T steps for BLOCK lanes; arrays are [T, L] (inputs/outputs) or [L] (state, params).

        The input at step t is ``x[t]``, or ``x[t] + r[t]`` with HAS_REC (the recurrent product, added in the
        reference's order). Parameter ``p`` of lane ``l`` is ``p[l % q]`` (``q``: its period, 1 for a scalar).
        """
        pid = tl.program_id(0)
        lanes = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = lanes < L
        v = tl.load(v_ptr + lanes, mask=m, other=0.0)
        vth = tl.load(vth_ptr + lanes % qth, mask=m, other=1.0)
        vreset = tl.load(vreset_ptr + lanes % qrs, mask=m, other=0.0)
        # Defaults keep every name defined; unused ones are dead code for a given MODEL.
        aux = v * 0.0
        alpha = vth * 0.0
        oma = alpha
        vleak = alpha
        c2 = alpha
        om2 = alpha
        bb = alpha
        if MODEL != 0:
            alpha = tl.load(p1_ptr + lanes % q1, mask=m, other=0.0)
            oma = 1.0 - alpha
            vleak = tl.load(vleak_ptr + lanes % qlk, mask=m, other=0.0)
        if MODEL >= 2:
            aux = tl.load(aux_ptr + lanes, mask=m, other=0.0)
            c2 = tl.load(p2_ptr + lanes % q2, mask=m, other=0.0)  # beta (CubaLIF) or rho (AdaptiveLIF)
            om2 = 1.0 - c2
        if MODEL == 3:
            bb = tl.load(p3_ptr + lanes % q3, mask=m, other=0.0)
        ref = tl.zeros([BLOCK], dtype=tl.int32)
        if REFRAC:
            ref = tl.load(ref_ptr + lanes, mask=m, other=0)

        xq = x_ptr + lanes
        x0 = tl.load(xq, mask=m, other=0.0)
        x1 = tl.load(xq + 1 * L, mask=m & (1 < T), other=0.0)
        x2 = tl.load(xq + 2 * L, mask=m & (2 < T), other=0.0)
        x3 = tl.load(xq + 3 * L, mask=m & (3 < T), other=0.0)
        x4 = tl.load(xq + 4 * L, mask=m & (4 < T), other=0.0)
        x5 = tl.load(xq + 5 * L, mask=m & (5 < T), other=0.0)
        x6 = tl.load(xq + 6 * L, mask=m & (6 < T), other=0.0)
        x7 = tl.load(xq + 7 * L, mask=m & (7 < T), other=0.0)
        xq = xq + 8 * L
        rq = r_ptr + lanes
        zq = z_ptr + lanes
        vpq = vp_ptr + lanes
        flq = fl_ptr + lanes
        # A while loop: Triton's interpreter cannot take range() of a runtime scalar under numpy >= 2.3. The
        # counter starts as a Triton value (pid * 0), as the compiler requires of loop-carried variables.
        t = pid * 0
        while t < T:
            xn = tl.load(xq, mask=m & (t + 8 < T), other=0.0)
            xt = x0
            if HAS_REC:
                xt = xt + tl.load(rq, mask=m, other=0.0)
            apre = aux
            if MODEL == 0:
                vi = v + xt
            elif MODEL == 1:
                vi = vleak + alpha * (v - vleak) + oma * xt
            elif MODEL == 2:
                aux = c2 * aux + om2 * xt
                vi = vleak + alpha * (v - vleak) + oma * aux
            else:
                apre = c2 * aux
                vi = vleak + alpha * (v - vleak) + oma * (xt - apre)
            if REFRAC:
                act = ref <= 0
                vi = tl.where(act, vi, v)
                zb = ((vi - vth) > 0) & act
            else:
                zb = (vi - vth) > 0
            z = zb.to(vi.dtype)
            if RESET == 0:
                vn = vi - z * vth
            elif RESET == 1:
                vn = vi - z * (vi - vreset)
            else:
                vn = vi
            if MODEL == 3:
                aux = apre + bb * z
            if REFRAC:
                ref = tl.where(zb, n_ref, tl.maximum(ref - 1, 0))
            tl.store(zq, z, mask=m)
            if SAVE:
                tl.store(vpq, vi, mask=m)
                if REFRAC:
                    tl.store(flq, act.to(tl.int8), mask=m)
            v = vn
            x0 = x1
            x1 = x2
            x2 = x3
            x3 = x4
            x4 = x5
            x5 = x6
            x6 = x7
            x7 = xn
            xq += L
            rq += L
            zq += L
            vpq += L
            flq += L
            t += 1
        tl.store(vo_ptr + lanes, v, mask=m)
        if MODEL >= 2:
            tl.store(auxo_ptr + lanes, aux, mask=m)
        if REFRAC:
            tl.store(refo_ptr + lanes, ref, mask=m)

    @triton.jit(do_not_specialize=["T"])
    def _scan_bwd_kernel(
        gz_ptr, vp_ptr, fl_ptr, gx_ptr,
        gv_ptr, gaux_ptr, gvo_ptr, gauxo_ptr,
        p1_ptr, p2_ptr, p3_ptr, vth_ptr, vreset_ptr,
        q1, q2, q3, qth, qrs,
        T, L, last_off, gz_st, gz_sl, gz_last, scale, scale2, sparse_b,
        MODEL: tl.constexpr, RESET: tl.constexpr, REFRAC: tl.constexpr, DETACH: tl.constexpr,
        SURR: tl.constexpr, SPARSE: tl.constexpr, HAS_GV: tl.constexpr, HAS_GAUX: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """Adjoint scan for t = T-1 .. 0: dL/dx_t and dL/d(initial state) from dL/dz_t and dL/d(final state).

        ``dL/dz`` is read through its strides ``gz_st`` (time) and ``gz_sl`` (lane, 0 or 1), so the stride-0
        expansion that ``out.sum()`` sends back is not materialised."""
        pid = tl.program_id(0)
        lanes = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = lanes < L
        vth = tl.load(vth_ptr + lanes % qth, mask=m, other=1.0)
        vreset = tl.load(vreset_ptr + lanes % qrs, mask=m, other=0.0)
        alpha = vth * 0.0 + 1.0  # IF: dv_t/dv_{t-1} = 1 and dv_t/dx_t = 1
        oma = alpha
        c2 = vth * 0.0
        om2 = c2
        bb = c2
        if MODEL != 0:
            alpha = tl.load(p1_ptr + lanes % q1, mask=m, other=0.0)
            oma = 1.0 - alpha
        if MODEL >= 2:
            c2 = tl.load(p2_ptr + lanes % q2, mask=m, other=0.0)
            om2 = 1.0 - c2
        if MODEL == 3:
            bb = tl.load(p3_ptr + lanes % q3, mask=m, other=0.0)
        gv = vth * 0.0
        gaux = vth * 0.0
        if HAS_GV:
            gv = tl.load(gv_ptr + lanes, mask=m, other=0.0)
        if HAS_GAUX:
            gaux = tl.load(gaux_ptr + lanes, mask=m, other=0.0)

        gq = gz_ptr + gz_last + lanes * gz_sl
        vq = vp_ptr + last_off + lanes
        fq = fl_ptr + last_off + lanes
        xq = gx_ptr + last_off + lanes
        g0 = tl.load(gq, mask=m, other=0.0)
        g1 = tl.load(gq - 1 * gz_st, mask=m & (1 < T), other=0.0)
        g2 = tl.load(gq - 2 * gz_st, mask=m & (2 < T), other=0.0)
        g3 = tl.load(gq - 3 * gz_st, mask=m & (3 < T), other=0.0)
        g4 = tl.load(gq - 4 * gz_st, mask=m & (4 < T), other=0.0)
        g5 = tl.load(gq - 5 * gz_st, mask=m & (5 < T), other=0.0)
        g6 = tl.load(gq - 6 * gz_st, mask=m & (6 < T), other=0.0)
        g7 = tl.load(gq - 7 * gz_st, mask=m & (7 < T), other=0.0)
        u0 = tl.load(vq, mask=m, other=0.0)
        u1 = tl.load(vq - 1 * L, mask=m & (1 < T), other=0.0)
        u2 = tl.load(vq - 2 * L, mask=m & (2 < T), other=0.0)
        u3 = tl.load(vq - 3 * L, mask=m & (3 < T), other=0.0)
        u4 = tl.load(vq - 4 * L, mask=m & (4 < T), other=0.0)
        u5 = tl.load(vq - 5 * L, mask=m & (5 < T), other=0.0)
        u6 = tl.load(vq - 6 * L, mask=m & (6 < T), other=0.0)
        u7 = tl.load(vq - 7 * L, mask=m & (7 < T), other=0.0)
        f0 = tl.zeros([BLOCK], dtype=tl.int8)
        f1 = f0
        f2 = f0
        f3 = f0
        f4 = f0
        f5 = f0
        f6 = f0
        f7 = f0
        if REFRAC:
            f0 = tl.load(fq, mask=m, other=0)
            f1 = tl.load(fq - 1 * L, mask=m & (1 < T), other=0)
            f2 = tl.load(fq - 2 * L, mask=m & (2 < T), other=0)
            f3 = tl.load(fq - 3 * L, mask=m & (3 < T), other=0)
            f4 = tl.load(fq - 4 * L, mask=m & (4 < T), other=0)
            f5 = tl.load(fq - 5 * L, mask=m & (5 < T), other=0)
            f6 = tl.load(fq - 6 * L, mask=m & (6 < T), other=0)
            f7 = tl.load(fq - 7 * L, mask=m & (7 < T), other=0)
        gq = gq - 8 * gz_st
        vq = vq - 8 * L
        fq = fq - 8 * L
        i = pid * 0
        while i < T:
            ahead = m & (i + 8 < T)
            gn = tl.load(gq, mask=ahead, other=0.0)
            un = tl.load(vq, mask=ahead, other=0.0)
            fn = f0
            if REFRAC:
                fn = tl.load(fq, mask=ahead, other=0)
            vp = u0
            du = vp - vth
            if REFRAC:
                act = f0 != 0
                zb = (du > 0) & act
            else:
                zb = du > 0
            z = zb.to(vp.dtype)
            gzt = g0
            gapre = gaux
            if MODEL == 3:
                gzt = gzt + bb * gaux
            if RESET == 0:
                gvp = gv
                if not DETACH:
                    gzt = gzt - vth * gv
            elif RESET == 1:
                gvp = gv * (1.0 - z)
                if not DETACH:
                    gzt = gzt - (vp - vreset) * gv
            else:
                gvp = gv
            sg = _surrogate_d(du, scale, scale2, SURR)
            if SPARSE:
                sg = tl.where(tl.abs(du) < sparse_b, sg, 0.0)
            if REFRAC:
                sg = tl.where(act, sg, 0.0)
            gvp = gvp + gzt * sg
            if REFRAC:
                gvi = tl.where(act, gvp, 0.0)
                gv = tl.where(act, 0.0, gvp) + alpha * gvi
            else:
                gvi = gvp
                gv = alpha * gvi
            if SPARSE:  # outside the band the membrane is a constant: no gradient passes through it
                inb = tl.abs(du) < sparse_b
                gvi = tl.where(inb, gvi, 0.0)
                gv = tl.where(inb, gv, 0.0)
            gu = oma * gvi
            if MODEL == 2:
                git = gu + gaux
                gx = om2 * git
                gaux = c2 * git
            elif MODEL == 3:
                gx = gu
                gaux = c2 * (gapre - gu)
            else:
                gx = gu
            tl.store(xq, gx, mask=m)
            g0 = g1
            g1 = g2
            g2 = g3
            g3 = g4
            g4 = g5
            g5 = g6
            g6 = g7
            g7 = gn
            u0 = u1
            u1 = u2
            u2 = u3
            u3 = u4
            u4 = u5
            u5 = u6
            u6 = u7
            u7 = un
            f0 = f1
            f1 = f2
            f2 = f3
            f3 = f4
            f4 = f5
            f5 = f6
            f6 = f7
            f7 = fn
            gq -= gz_st
            vq -= L
            fq -= L
            xq -= L
            i += 1
        tl.store(gvo_ptr + lanes, gv, mask=m)
        if MODEL >= 2:
            tl.store(gauxo_ptr + lanes, gaux, mask=m)


@dataclass(frozen=True)
class _Config:
    """Everything a launch needs besides tensors; settled once per call."""

    model: int
    reset: int
    refrac: bool
    detach: bool
    surr: int
    scale: float
    scale2: float
    sparse: float | None
    n_ref: int
    lanes: int
    block: int
    warps: int


class _Consts(NamedTuple):
    """Per-lane constants in the input dtype; lane ``l`` uses ``p[l % period]`` (``p*`` are dummies where unused)."""

    p1: Tensor
    p2: Tensor
    p3: Tensor
    v_th: Tensor
    v_leak: Tensor
    v_reset: Tensor
    periods: tuple[int, int, int, int, int, int]


def _launch_shape(lanes: int) -> tuple[int, int]:
    """Lanes per program and warps: enough programs to fill a GPU, at most 256 lanes each."""
    if _interpreting():  # small blocks: tests on a few dozen lanes still cover several programs and masks
        return min(64, triton.next_power_of_2(lanes)), 1
    block = triton.next_power_of_2(max(1, lanes // 264))
    block = max(32, min(256, block))  # <= 2 lanes per thread: 8 prefetched steps stay in registers
    return block, max(1, min(4, block // 32))


def _forward(cfg: _Config, c: _Consts, x: Tensor, v0: Tensor, aux0: Tensor | None, ref0: Tensor | None,
             z: Tensor, vp: Tensor, fl: Tensor, vo: Tensor, auxo: Tensor | None, refo: Tensor | None,
             save: bool, rec: Tensor | None = None) -> None:
    """Launch the forward kernel over ``x`` (+ ``rec``) ``[T, L]`` (state ``[L]``; outputs may alias inputs)."""
    T = x.shape[0]
    grid = (triton.cdiv(cfg.lanes, cfg.block),)
    with _on_device(x):
        _launch_fwd(grid, cfg, c, x, v0, aux0, ref0, z, vp, fl, vo, auxo, refo, save, rec, T)


def _on_device(t: Tensor):
    """Make ``t``'s GPU current for a launch (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _launch_fwd(grid, cfg, c, x, v0, aux0, ref0, z, vp, fl, vo, auxo, refo, save, rec, T) -> None:
    _scan_fwd_kernel[grid](
        x, x if rec is None else rec, z, vp, fl, v0, v0 if aux0 is None else aux0, fl if ref0 is None else ref0,
        vo, vo if auxo is None else auxo, fl if refo is None else refo,
        c.p1, c.p2, c.p3, c.v_th, c.v_leak, c.v_reset, *c.periods, T, cfg.lanes, cfg.n_ref,
        MODEL=cfg.model, RESET=cfg.reset, REFRAC=cfg.refrac, SAVE=save, HAS_REC=rec is not None, BLOCK=cfg.block,
        num_warps=cfg.warps, enable_fp_fusion=False,
    )


def _backward(cfg: _Config, c: _Consts, gz: Tensor, vp: Tensor, fl: Tensor, gx: Tensor,
              gv: Tensor | None, gaux: Tensor | None, gvo: Tensor, gauxo: Tensor) -> None:
    """Launch the backward kernel over ``[T, L]`` saved tensors (``gvo``/``gauxo`` may alias ``gv``/``gaux``)."""
    T = gz.shape[0]
    grid = (triton.cdiv(cfg.lanes, cfg.block),)
    with _on_device(gz):
        _launch_bwd(grid, cfg, c, gz, vp, fl, gx, gv, gaux, gvo, gauxo, T)


def _strided_grad(gz: Tensor | None, like: Tensor) -> Tensor:
    """``dL/dz`` ``[T, L]`` as the backward kernel reads it: kept as a view when its lane stride is 0 or 1 (a
    stride-0 expansion from ``out.sum()`` or ``out.sum(0)`` is not copied: at the large benchmark size that copy was
    a whole extra ``[T, B, n]`` tensor), else made contiguous; None (no gradient) reads as a stride-0 zero."""
    if gz is None:
        return like.new_zeros(()).expand(like.shape)
    if gz.dim() == 2 and gz.stride(1) in (0, 1) and gz.stride(0) >= 0 and gz.dtype == like.dtype:
        return gz
    return gz.contiguous()


def _launch_bwd(grid, cfg, c, gz, vp, fl, gx, gv, gaux, gvo, gauxo, T) -> None:
    _scan_bwd_kernel[grid](
        gz, vp, fl, gx, gvo if gv is None else gv, gauxo if gaux is None else gaux, gvo, gauxo,
        c.p1, c.p2, c.p3, c.v_th, c.v_reset, *c.periods[:4], c.periods[5], T, cfg.lanes, (T - 1) * cfg.lanes,
        gz.stride(0), gz.stride(1), (T - 1) * gz.stride(0),
        cfg.scale, cfg.scale2, 0.0 if cfg.sparse is None else cfg.sparse,
        MODEL=cfg.model, RESET=cfg.reset, REFRAC=cfg.refrac, DETACH=cfg.detach, SURR=cfg.surr,
        SPARSE=cfg.sparse is not None, HAS_GV=gv is not None, HAS_GAUX=gaux is not None, BLOCK=cfg.block,
        num_warps=cfg.warps, enable_fp_fusion=False,
    )


def _flags(cfg: _Config, T: int, like: Tensor, save: bool) -> Tensor:
    """int8 per step and lane (active flags), allocated only when saved with refractoriness."""
    if save and cfg.refrac:
        return torch.empty((T, cfg.lanes), dtype=torch.int8, device=like.device)
    return torch.empty((1,), dtype=torch.int8, device=like.device)


class _ScanFunction(torch.autograd.Function):
    """Fused scan of ``x [T, L]`` from ``v0``, ``aux0`` (or None) and ``ref0`` (or None).

    Differentiable in ``x``, ``v0`` and ``aux0``. With ``inplace`` the saved membrane overwrites ``x`` and a
    backward that frees the graph writes ``dL/dx`` over it in turn (each element is read before it is written, by
    the same thread); a backward that retains the graph writes a new tensor.
    """

    @staticmethod
    def forward(ctx, x, v0, aux0, ref0, cfg, consts, save, inplace):  # type: ignore[override]
        T = x.shape[0]
        z = torch.empty_like(x)
        inplace = inplace and save
        vp = x if inplace else (torch.empty_like(x) if save else x.new_empty((1,)))
        fl = _flags(cfg, T, x, save)
        vo = torch.empty_like(v0)
        auxo = torch.empty_like(aux0) if aux0 is not None else None
        refo = torch.empty_like(ref0) if ref0 is not None else None
        _forward(cfg, consts, x, v0, aux0, ref0, z, vp, fl, vo, auxo, refo, save)
        if inplace:  # Triton's writes are invisible to autograd: any other saved use of x now fails loudly
            torch.autograd.graph.increment_version(x)
        ctx.cfg, ctx.consts, ctx.has_aux = cfg, consts, aux0 is not None
        ctx.inplace = inplace
        if save:
            ctx.save_for_backward(vp, fl)
        outs = [z, vo] + ([auxo] if auxo is not None else []) + ([refo] if refo is not None else [])
        if refo is not None:
            ctx.mark_non_differentiable(refo)
        return tuple(outs)

    @staticmethod
    def backward(ctx, gz, gv, *rest):  # type: ignore[override]
        cfg, consts = ctx.cfg, ctx.consts
        vp, fl = ctx.saved_tensors
        gaux = rest[0] if ctx.has_aux else None
        gz = _strided_grad(gz, vp)
        # dL/dx overwrites the saved membrane only when this backward frees the graph (a retained graph may be
        # back-propagated again and still needs the membrane)
        gx = vp if ctx.inplace and not _keep_graph() else torch.empty_like(vp)
        gvo = torch.empty((cfg.lanes,), dtype=vp.dtype, device=vp.device)
        gauxo = torch.empty_like(gvo) if ctx.has_aux else gvo
        _backward(cfg, consts, gz, vp, fl, gx, None if gv is None else gv.contiguous(),
                  None if gaux is None else gaux.contiguous(), gvo, gauxo)
        return gx, gvo, (gauxo if ctx.has_aux else None), None, None, None, None, None


class _RecurrentFunction(torch.autograd.Function):
    """Recurrent layer: per step ``z_{t-1} W^T`` (cuBLAS) then one fused step adding ``x_ff[t]`` (Triton)."""

    @staticmethod
    def forward(ctx, x_ff, w, z0, v0, aux0, ref0, cfg, consts, save):  # type: ignore[override]
        T, L = x_ff.shape[0], cfg.lanes
        B, H = z0.shape
        zs = torch.empty_like(x_ff)
        vp = torch.empty_like(x_ff) if save else x_ff.new_empty((1,))
        fl = _flags(cfg, T, x_ff, save)
        v = v0.clone()
        aux = aux0.clone() if aux0 is not None else None
        ref = ref0.clone() if ref0 is not None else None
        cur = torch.empty((B, H), dtype=x_ff.dtype, device=x_ff.device)
        wt = w.t()
        zprev = z0
        for t in range(T):
            torch.mm(zprev, wt, out=cur)  # the kernel adds x_ff[t] + cur, as the reference loop does
            _forward(cfg, consts, x_ff[t].view(1, L), v, aux, ref, zs[t].view(1, L),
                     vp[t].view(1, L) if save else vp, fl[t].view(1, L) if save and cfg.refrac else fl,
                     v, aux, ref, save, rec=cur.view(1, L))
            zprev = zs[t]
        ctx.cfg, ctx.consts, ctx.has_aux = cfg, consts, aux0 is not None
        if save:
            ctx.save_for_backward(vp, fl, zs, w, z0)
        outs = [zs, v] + ([aux] if aux is not None else []) + ([ref] if ref is not None else [])
        if ref is not None:
            ctx.mark_non_differentiable(ref)
        return tuple(outs)

    @staticmethod
    def backward(ctx, gzs, gv, *rest):  # type: ignore[override]
        cfg, consts = ctx.cfg, ctx.consts
        vp, fl, zs, w, z0 = ctx.saved_tensors
        T, B, H = zs.shape
        L = cfg.lanes
        gaux = rest[0] if ctx.has_aux else None
        gzs = torch.zeros_like(zs) if gzs is None else gzs.contiguous()
        gcur = torch.empty_like(zs)  # dL/dx_t = dL/dx_ff[t]
        gv = torch.zeros((L,), dtype=zs.dtype, device=zs.device) if gv is None else gv.contiguous().clone()
        gaux = (torch.zeros_like(gv) if gaux is None else gaux.contiguous().clone()) if ctx.has_aux else gv
        gz_t = torch.empty((B, H), dtype=zs.dtype, device=zs.device)
        for t in range(T - 1, -1, -1):
            if t == T - 1:
                gz_t.copy_(gzs[t])
            else:  # z_t also drives x_{t+1} through W_rec
                torch.addmm(gzs[t], gcur[t + 1], w, out=gz_t)
            _backward(cfg, consts, gz_t.view(1, L), vp[t].view(1, L),
                      fl[t].view(1, L) if cfg.refrac else fl, gcur[t].view(1, L), gv, gaux, gv, gaux)
        gw = gcur[0].t() @ z0
        if T > 1:
            gw = gw.addmm(gcur[1:].reshape(-1, H).t(), zs[:-1].reshape(-1, H))
        gz0 = gcur[0] @ w
        return gcur, gw, gz0, gv, (gaux if ctx.has_aux else None), None, None, None, None


# ----------------------------------------------------------------------------------------------------------------
# Entry points


def _config(model: str, spec: FireSpec, refrac: bool, sparse_backward: float | None, lanes: int) -> _Config | None:
    if model not in MODELS or not isinstance(spec, FireSpec) or type(spec.surrogate) is not Surrogate:
        return None  # a Surrogate subclass may differentiate otherwise than its name says
    surr = _SURROGATE_IDS.get(spec.surrogate.name)
    if surr is None or spec.reset not in _RESET_IDS or getattr(spec, "max_spikes", 1) != 1:
        return None  # several spikes per step (max_spikes > 1) are left to the reference scan
    scale = float(spec.surrogate.scale)
    block, warps = _launch_shape(lanes)
    return _Config(MODELS[model][0], _RESET_IDS[spec.reset], refrac, bool(spec.detach_reset), surr, scale,
                   0.5 * math.pi * scale, None if sparse_backward is None else float(sparse_backward),
                   int(spec.refractory), lanes, block, warps)


def _lane_param(f: Tensor, like: Tensor) -> tuple[Tensor, int]:
    """A param as a flat tensor and its period over the lanes of ``like`` (``[B, *features]``, flattened).

    A scalar has period 1; a param equal to the trailing dims of ``like`` (e.g. per neuron ``[n]``, repeated over
    the batch) has period ``numel``; anything else broadcastable is materialised per lane.
    """
    f = f.to(dtype=like.dtype, device=like.device)
    if f.numel() == 1:
        return f.reshape(1), 1
    dims = list(f.shape)
    while dims and dims[0] == 1:
        dims.pop(0)
    if dims and tuple(dims) == tuple(like.shape[len(like.shape) - len(dims):]):
        return f.reshape(-1).contiguous(), f.numel()
    return f.expand(like.shape).contiguous().view(-1), like.numel()


def _consts(model: str, params: NamedTuple, like: Tensor) -> _Consts | None:
    """Per-lane constants from a model's params, or None if a param needs grad or does not broadcast."""
    fields = [f for f in params if f is not None]
    if any(not isinstance(f, Tensor) or f.requires_grad for f in fields):
        return None
    try:
        if model == "if":
            (v_th, q_th), (v_reset, q_rs) = _lane_param(params.v_th, like), _lane_param(params.v_reset, like)
            return _Consts(v_th, v_th, v_th, v_th, v_th, v_reset, (q_th, q_th, q_th, q_th, q_th, q_rs))
        (alpha, q1), (v_th, q_th), (v_leak, q_lk), (v_reset, q_rs) = (
            _lane_param(params.alpha, like), _lane_param(params.v_th, like), _lane_param(params.v_leak, like),
            _lane_param(params.v_reset, like))
        p2, q2, p3, q3 = alpha, q1, alpha, q1
        if model == "cuba_lif":
            p2, q2 = _lane_param(params.beta, like)
        elif model == "adaptive_lif":
            (p2, q2), (p3, q3) = _lane_param(params.rho, like), _lane_param(params.b, like)
        return _Consts(alpha, p2, p3, v_th, v_leak, v_reset, (q1, q2, q3, q_th, q_lk, q_rs))
    except (RuntimeError, AttributeError):
        return None


def _state_parts(model: str, state: NamedTuple, shape: torch.Size, like: Tensor):
    """(v, aux, ref) flattened to ``[L]``, or None when the state does not fit the kernel."""
    v = getattr(state, "v", None)
    aux = getattr(state, "i", None) if model == "cuba_lif" else getattr(state, "a", None)
    ref = getattr(state, "ref", None)
    if not isinstance(v, Tensor) or v.shape != shape:
        return None
    if model in ("cuba_lif", "adaptive_lif") and (not isinstance(aux, Tensor) or aux.shape != shape):
        return None
    if ref is not None and (not isinstance(ref, Tensor) or ref.shape != shape or ref.is_floating_point()):
        return None
    v = v.to(like.dtype).contiguous().view(-1)
    aux = aux.to(like.dtype).contiguous().view(-1) if model in ("cuba_lif", "adaptive_lif") else None
    ref = ref.to(device=like.device, dtype=torch.int32).contiguous().view(-1) if ref is not None else None
    return v, aux, ref


def _final_state(model: str, shape: torch.Size, v: Tensor, aux: Tensor | None, ref: Tensor | None,
                 ref_dtype: torch.dtype | None) -> NamedTuple:
    v = v.view(shape)
    ref = ref.view(shape).to(ref_dtype) if ref is not None else None
    if model == "if":
        return if_neuron.IFState(v, ref)
    if model == "lif":
        return lif.LIFState(v, ref)
    if model == "cuba_lif":
        return cuba_lif.CubaLIFState(aux.view(shape), v, ref)
    return adaptive_lif.AdaptiveLIFState(aux.view(shape), v, ref)


def _supported_tensor(x: Tensor) -> bool:
    if x.dtype not in (torch.float32, torch.float64):
        return False
    return x.is_cuda or _interpreting()


def _prepare(model: str, spec: FireSpec, params: NamedTuple, state: NamedTuple, x: Tensor,
             sparse_backward: float | None):
    """``(consts, cfg, v0, aux0, ref0)`` for a launch over ``x [T, B, *features]``, or None when not covered."""
    consts = _consts(model, params, x[0])
    parts = _state_parts(model, state, x.shape[1:], x)
    if consts is None or parts is None:
        return None
    v0, aux0, ref0 = parts
    cfg = _config(model, spec, ref0 is not None, sparse_backward, v0.numel())
    if cfg is None:
        return None
    return consts, cfg, v0, aux0, ref0


def _final_from(model: str, shape: torch.Size, outs, state: NamedTuple, aux0, ref0) -> NamedTuple:
    """The final state from a Function's outputs ``(z, v, [aux], ..., [ref])``."""
    auxT = outs[2] if aux0 is not None else None
    refT = outs[-1] if ref0 is not None else None
    return _final_state(model, shape, outs[1], auxT, refT, state.ref.dtype if ref0 is not None else None)


def triton_scan(
    model: str, spec: FireSpec, params: NamedTuple, state: NamedTuple, x: Tensor, *,
    sparse_backward: float | None = None, inplace: bool = False,
) -> tuple[Tensor, NamedTuple] | None:
    """Run a spiking model over all time steps in one fused Triton kernel (and one for the backward pass).

    Equal to ``spikeforge.sim.scan.run(module.step, spec, params, state, x)`` for the model's dynamics module:
    identical spikes, and gradients (surrogate BPTT) w.r.t. ``x`` and the floating-point initial state.

    Args:
        model: ``"if"``, ``"lif"``, ``"cuba_lif"`` or ``"adaptive_lif"``.
        spec: firing spec (surrogate, reset, refractory steps, detach_reset).
        params: the model's per-step params (0-dim or broadcastable to ``x[0]``; none may require grad).
        state: the model's state at the start (tensors shaped like ``x[0]``; ``ref`` int or None).
        x: input currents.
        sparse_backward: if given, no gradient passes through the membrane where ``|v - v_th| >= sparse_backward``.
        inplace: save memory when the caller owns ``x`` (e.g. the fresh output of a linear layer that nothing else
            reads): the membrane saved for backward overwrites ``x`` and the input gradient then overwrites it in
            turn (unless the graph is retained), so the scan allocates no ``[T, B, ...]`` buffer besides the
            spikes. ``x`` is clobbered (its autograd version is bumped, so another saved use of it raises).
            Without gradients it changes nothing.

    Returns:
        ``(spikes, final_state)``, or None when the fused path cannot run it (no Triton, tensor not on CUDA
        unless ``TRITON_INTERPRET=1``, dtype other than float32/float64, a param requiring grad, empty sequence,
        shapes that do not match): the caller then uses the reference scan.

    Shape:
        x ``[T, B, *features]`` -> spikes ``[T, B, *features]``; state fields ``[B, *features]``.
    """
    if triton is None or not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] == 0 or x.numel() == 0:
        return None
    if not _supported_tensor(x) or model not in MODELS:
        return None
    shape = x.shape[1:]
    prep = _prepare(model, spec, params, state, x, sparse_backward)
    if prep is None:
        return None
    consts, cfg, v0, aux0, ref0 = prep
    T = x.shape[0]
    xf = x.contiguous().view(T, -1)
    save = torch.is_grad_enabled() and (x.requires_grad or v0.requires_grad
                                        or (aux0 is not None and aux0.requires_grad))
    outs = _ScanFunction.apply(xf, v0, aux0, ref0, cfg, consts, save, bool(inplace))
    return outs[0].view(x.shape), _final_from(model, shape, outs, state, aux0, ref0)


def triton_recurrent(
    model: str, spec: FireSpec, params: NamedTuple, state: NamedTuple, z0: Tensor, x_ff: Tensor,
    w_rec: Tensor, *, sparse_backward: float | None = None,
) -> tuple[Tensor, NamedTuple, Tensor] | None:
    """Recurrent spiking layer: ``x_t = x_ff[t] + z_{t-1} @ w_rec.T``, then one step of the model.

    Each step is one cuBLAS product plus one fused Triton step (forward and backward); ``dL/dw_rec`` is one
    product over all steps. Equal to a plain loop over ``model.step`` with ``x_ff[t] + z_{t-1} @ w_rec.t()``:
    the product is the same torch call and the sum is taken in the same order, so spikes are identical.

    Args:
        model, spec, params, state, sparse_backward: as in :func:`triton_scan` (state fields ``[B, H]``).
        z0: spikes of the step before the first, ``[B, H]``.
        x_ff: feed-forward input currents (``W_in u_t + b``), ``[T, B, H]``.
        w_rec: recurrent weights ``[H, H]``.

    Returns:
        ``(z [T, B, H], final_state, z_last [B, H])`` differentiable w.r.t. ``x_ff``, ``w_rec``, ``z0`` and the
        floating-point initial state; None when the fused path cannot run it (see :func:`triton_scan`).
    """
    if triton is None or not isinstance(x_ff, Tensor) or x_ff.dim() != 3 or x_ff.shape[0] == 0:
        return None
    if not _supported_tensor(x_ff) or model not in MODELS or x_ff.numel() == 0:
        return None
    T, B, H = x_ff.shape
    if not isinstance(w_rec, Tensor) or w_rec.shape != (H, H) or not isinstance(z0, Tensor) or z0.shape != (B, H):
        return None
    if w_rec.dtype != x_ff.dtype or z0.dtype != x_ff.dtype or w_rec.device != x_ff.device:
        return None
    shape = x_ff.shape[1:]
    prep = _prepare(model, spec, params, state, x_ff, sparse_backward)
    if prep is None:
        return None
    consts, cfg, v0, aux0, ref0 = prep
    xf = x_ff.contiguous()
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (xf, w_rec, z0, v0, aux0))
    outs = _RecurrentFunction.apply(xf, w_rec, z0.contiguous(), v0, aux0, ref0, cfg, consts, save)
    zs = outs[0]
    return zs, _final_from(model, shape, outs, state, aux0, ref0), zs[-1]
