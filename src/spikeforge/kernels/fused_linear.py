r"""A ``Linear`` layer and the spiking neuron layer after it, fused over time in chunks (CPU).

Unfused, ``Linear -> neuron`` materialises the synaptic current ``[T, B, out]`` for all steps at once, and the
neuron's fused scan (:mod:`spikeforge.kernels.cpu_scan`) keeps one saved value per step and neuron (the membrane)
besides its spikes for the backward pass. Here time is cut into chunks of ``Tc`` steps:

* **forward**, chunk by chunk: the chunk's current (the sparse product of :mod:`spikeforge.kernels.sparse` from
  the input's non-zeros, or the dense product), the existing fused scan op on it (``scan_fwd_into``, its
  membrane overwrites the current) carrying the neuron state from the chunk before, its spikes copied into the
  output. Kept for backward: the input's
  non-zeros (flat ``int64`` positions, and their values unless binary; the input itself for a dense input), the
  weights, and the neuron state at each chunk boundary (``K x B x out`` values for ``K`` chunks). Neither the
  current nor the membrane of all steps is ever held, nor a second copy of the spikes.
* **backward**, chunks in reverse: recompute the chunk's current and, from the saved boundary state, its scan
  forward (``scan_fwd_into``: the membrane overwrites the current), run the existing scan backward op
  (``scan_bwd``, whose gradient overwrites the membrane) with the adjoint of the state carried from the chunk
  after, then add the chunk's weight and bias gradients (the sparse weight-gradient helper, or one ``addmm``) and
  form its input gradient when the input needs one.

The spikes equal the unfused path bit for bit (each row of the sparse product is summed in the same fixed order
whatever the number of rows, and the scan of a chunk started from the carried state is the scan of the whole
sequence); gradients equal it up to float rounding (the weight gradient is summed chunk by chunk).
The price is a second sparse product in the backward pass; the memory a forward + backward adds falls to about
the output spikes, the saved non-zeros and a few chunk-sized buffers. :class:`spikeforge.nn.Sequential` uses this
path for a ``Linear`` directly followed by a fused-capable neuron layer (see its ``fuse`` argument).

**Parallelism.** Chunking multiplies the number of kernel calls, and each multi-threaded call is a parallel region
whose threads meet at its end: on a loaded machine every meeting can wait for a scheduler time slice (measured on
2 shared cores: 16 chunks made a forward + backward 5x slower than the unfused path). Output neurons are
independent, so instead the output neurons are split into column blocks (:func:`column_blocks`, one per intra-op
thread, whole 128-wide tiles of the sparse kernels) and each block runs the whole chunk loop in its own thread
with one intra-op thread: the threads meet once per forward and once per backward. Spikes do not depend on the
split; the weight and bias gradients of a block are its own rows. When the input needs a gradient (every block
adds to it) the backward runs as one block.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..dynamics.common import FireSpec
from . import cpu_scan
from .cpu_scan import _final_state, _flat_ref, _grads_or_zeros, _prepare, _Setup, _wants_grad
from .sparse import (
    SparseInput,
    _bias_grad,
    _forget_nonzeros,
    _forward,
    _grad_nonzeros,
    _input_grad,
    _use_native,
    _weight_grad,
)

__all__ = ["AUTO_MAX_ACTIVE", "BLOCK_COLS", "CHUNKS", "BandChain", "MIN_CHUNK_ROWS", "chunk_steps", "column_blocks",
           "fused_linear_scan"]

#: chunks a sequence is cut into by default: the chunk buffers (the chunk's current and spikes, and the gradient
#: of the spikes in backward) then add an eighth of the output or so to memory.
CHUNKS = 16
#: fewest samples (time steps x batch) per chunk by default: each chunk's sparse product and weight gradient pay a
#: fixed pass over the weights (packing, zeroing the per-thread tiles), which this amortises.
MIN_CHUNK_ROWS = 1024
#: ``Sequential(fuse="auto")`` fuses only inputs with at most this many active inputs per sample (time step x batch
#: element) on average: the backward's second sparse product costs that many row additions per sample, against the
#: scan's one pass. Measured on 2 cores: 26 active per sample (T=2000, B=8, 256 -> 256) runs as fast as unfused or
#: faster; 102 (T=500, B=16, 1024 -> 1024) costs about 30 % more time for 30 % less memory.
AUTO_MAX_ACTIVE = 64
#: narrowest block of output neurons given its own thread (the sparse kernels' tile width)
BLOCK_COLS = 128
#: None, or the number of blocks of output neurons to use whatever the thread count (tests)
BLOCKS: int | None = None


def chunk_steps(steps: int, batch: int, n_in: int) -> int:
    """Default time steps per chunk: ``steps / CHUNKS`` rounded up, but at least :data:`MIN_CHUNK_ROWS` samples
    (and at least ``n_in``, so that the per-chunk pass over the weights stays a small part of the product)."""
    by_count = -(-steps // CHUNKS)
    by_rows = -(-max(MIN_CHUNK_ROWS, n_in) // max(1, batch))
    return max(1, min(steps, max(by_count, by_rows)))


class _Plan(NamedTuple):
    """How the chunks' currents are formed: ``index``/``values`` (sparse) or the input ``x2`` (dense)."""

    bounds: tuple[int, ...]  # time steps where the chunks start, and T at the end
    batch: int
    n_in: int
    index: Tensor | None  # sorted flat positions of the non-zeros of x2 [T*B, I]
    values: Tensor | None  # their values (None: binary)
    pos: tuple[int, ...]  # start of each chunk in index (sparse only)


def _current(plan: _Plan, k: int, x2: Tensor | None, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The synaptic current of chunk ``k``, ``[Tc * B, out]`` (contiguous)."""
    r0, r1 = plan.bounds[k] * plan.batch, plan.bounds[k + 1] * plan.batch
    if plan.index is None:
        return F.linear(x2[r0:r1], weight, bias)
    return _forward(_chunk_active(plan, k), weight, bias)


def _chunk_active(plan: _Plan, k: int) -> SparseInput:
    """The non-zeros of chunk ``k`` as a :class:`SparseInput` of its own rows (the index is chunk-relative)."""
    r0, r1 = plan.bounds[k] * plan.batch, plan.bounds[k + 1] * plan.batch
    lo, hi = plan.pos[k], plan.pos[k + 1]
    values = None if plan.values is None else plan.values[lo:hi]
    return SparseInput(plan.index[lo:hi], values, (r1 - r0, plan.n_in))


def column_blocks(n_out: int, threads: int | None = None) -> tuple[int, ...]:
    """Where the output neurons are split into blocks that run in their own threads (``n_out`` at the end).

    One block per intra-op thread (:func:`torch.get_num_threads`), each at least :data:`BLOCK_COLS` wide; a
    single block runs in the calling thread. :data:`BLOCKS` overrides the count.
    """
    threads = torch.get_num_threads() if threads is None else threads
    count = BLOCKS if BLOCKS is not None else min(threads, n_out // BLOCK_COLS)
    count = max(1, min(int(count), n_out))
    if count == 1:
        return (0, n_out)
    unit = BLOCK_COLS if n_out >= count * BLOCK_COLS else 1  # block edges on whole tiles of the sparse kernels
    edges = [round(n_out * j / count / unit) * unit for j in range(count)] + [n_out]
    return tuple(sorted(set(edges)))


def _in_threads(tasks: list[Callable[[], None]]) -> None:
    """Run the tasks concurrently, one thread each, the intra-op threads shared out between them.

    Each worker sets its own intra-op thread count (thread-local for torch's OpenMP and MKL backends) after its
    lazy initialisation; that call also changes the process-wide default for threads started later, which this
    thread restores once every worker has set its own. Exceptions re-raise here.
    """
    if len(tasks) == 1:
        tasks[0]()
        return
    threads = torch.get_num_threads()
    each = max(1, threads // len(tasks))
    ready = threading.Barrier(len(tasks) + 1)
    errors: list[BaseException] = []

    def work(task: Callable[[], None]) -> None:
        torch.get_num_threads()  # this thread's lazy initialisation first, so that it keeps the setting below
        torch.set_num_threads(each)
        ready.wait()
        try:
            with torch.no_grad():  # grad mode is thread-local: no graph in the workers
                task()
        except BaseException as err:  # re-raised in the calling thread
            errors.append(err)

    workers = [threading.Thread(target=work, args=(task,), daemon=True) for task in tasks]
    for w in workers:
        w.start()
    try:
        ready.wait()
    finally:
        torch.set_num_threads(threads)  # the process-wide default the workers changed (this thread's is unchanged)
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


class _Block:
    """Output neurons ``[o0, o1)`` of a ``[B, out]`` layer: their slice of flat ``[*, B * out]`` tensors."""

    def __init__(self, o0: int, o1: int, batch: int, n_out: int) -> None:
        self.o0, self.o1, self.batch, self.n_out = o0, o1, batch, n_out
        self.whole = o0 == 0 and o1 == n_out

    def take(self, t: Tensor) -> Tensor:
        """This block's neurons of ``t`` (``[..., B * out]``) as a new contiguous ``[..., B * width]`` tensor."""
        lead = t.shape[:-1]
        part = t.reshape(*lead, self.batch, self.n_out)[..., self.o0:self.o1]
        return part.clone(memory_format=torch.contiguous_format).reshape(*lead, -1)

    def view_of(self, t: Tensor) -> Tensor:
        """Writable view of this block's neurons in ``t`` (``[..., B * out]``, contiguous) as ``[..., B, width]``."""
        return t.view(*t.shape[:-1], self.batch, self.n_out)[..., self.o0:self.o1]

    def put(self, t: Tensor, value: Tensor) -> None:
        """Write ``value`` (``[..., B * width]``) into this block's neurons of ``t``."""
        self.view_of(t).copy_(value.view(*value.shape[:-1], self.batch, self.o1 - self.o0))


def _forward_block(plan: _Plan, blk: _Block, x2: Tensor | None, weight: Tensor, bias: Tensor | None, table: Tensor,
                   setup: _Setup, state: tuple[Tensor, Tensor, Tensor], z: Tensor, starts) -> None:
    """The forward of one block of output neurons over all chunks: spikes into ``z``, final state into ``state``,
    the state at each chunk start into ``starts`` (``[K, N]`` tensors, or None)."""
    w = weight[blk.o0:blk.o1]
    b = None if bias is None else bias[blk.o0:blk.o1]
    tab, (v, aux, ref) = blk.take(table), (blk.take(t) if t.numel() else t for t in state)
    for k in range(len(plan.bounds) - 1):
        t0, t1 = plan.bounds[k], plan.bounds[k + 1]
        if starts is not None:
            for saved, now in zip(starts, (v, aux, ref), strict=True):
                if saved is not None:
                    blk.put(saved[k], now)
        cur = _current(plan, k, x2, w, b).view(t1 - t0, -1)  # becomes the membrane (not needed)
        zc = torch.ops.spikeforge_scan.scan_fwd_into(cur, tab, v, aux, ref, setup.code, setup.reset, setup.refr)
        blk.put(z[t0:t1], zc)
    for out, now in zip(state, (v, aux, ref), strict=True):
        if out.numel():
            blk.put(out, now)


def _run_forward(plan: _Plan, x2: Tensor | None, weight: Tensor, bias: Tensor | None, table: Tensor,
                 setup: _Setup, v: Tensor, aux: Tensor, ref: Tensor, keep: bool):
    """Forward over all chunks, blocks of output neurons in parallel; ``v``, ``aux``, ``ref`` are updated in place.
    Returns the spikes ``[T, N]`` and, with ``keep``, the state at every chunk start (``[K, N]``; the second state
    variable None without one, the counters None without refractoriness)."""
    steps, n, chunks = plan.bounds[-1], v.numel(), len(plan.bounds) - 1
    z = weight.new_empty(steps, n)
    starts = None
    if keep:
        starts = (v.new_empty(chunks, n), v.new_empty(chunks, n) if setup.aux_name else None,
                  ref.new_empty(chunks, n) if ref.numel() else None)
    edges = column_blocks(weight.shape[0])
    batch, n_out = plan.batch, weight.shape[0]
    with torch.no_grad():
        _in_threads([functools.partial(_forward_block, plan, _Block(o0, o1, batch, n_out), x2, weight, bias, table,
                                       setup, (v, aux, ref), z, starts)
                     for o0, o1 in itertools.pairwise(edges)])
    return z, starts


class _FusedLinearScan(torch.autograd.Function):
    """``Linear`` + fused neuron scan in time chunks; input ``x2`` ``[T*B, I]``, state flat ``[N]``."""

    @staticmethod
    def forward(ctx, x2, weight, bias, v0, aux0, ref0, table, setup, plan):  # type: ignore[override]
        v, aux, ref = v0.clone(), aux0.clone(), ref0.clone()
        z, (vb, ab, rb) = _run_forward(plan, None if plan.index is not None else x2, weight, bias, table, setup,
                                       v, aux, ref, keep=True)
        dense_x = x2 if plan.index is None else None
        ctx.save_for_backward(dense_x, weight, bias, table, vb, ab, rb, plan.index, plan.values)
        ctx.setup, ctx.plan = setup, plan._replace(index=None, values=None)  # the tensors are in saved_tensors
        ctx.mark_non_differentiable(ref)
        return z, v, aux, ref

    @staticmethod
    def backward(ctx, gz, gv, gaux, gref):  # type: ignore[override]
        return _backward(ctx, gz, gv, gaux)


def _backward_block(plan: _Plan, blk: _Block, x2: Tensor | None, weight: Tensor, bias: Tensor | None, table: Tensor,
                    setup: _Setup, saved, gz: Tensor, adjoint: tuple[Tensor, Tensor], grads) -> None:
    """The backward of one block of output neurons, chunks in reverse: recompute the chunk's current and scan from
    the saved state at its start, run the scan backward with the carried adjoint, add the gradients."""
    s, (vb, ab, rb), (gw, gb, gx) = setup, saved, grads
    w = weight[blk.o0:blk.o1]
    b = None if bias is None else bias[blk.o0:blk.o1]
    tab = blk.take(table)
    gv, gaux = (blk.take(g) for g in adjoint)
    no_ref = vb.new_empty(0, dtype=torch.int32)
    for k in reversed(range(len(plan.bounds) - 1)):
        t0, t1 = plan.bounds[k], plan.bounds[k + 1]
        r0, r1 = t0 * plan.batch, t1 * plan.batch
        v = blk.take(vb[k])
        aux = blk.take(ab[k]) if ab is not None else torch.zeros_like(v)
        ref0 = blk.take(rb[k]) if rb is not None else no_ref
        cur = _current(plan, k, x2, w, b)  # [rows, width]; becomes the membrane, then its gradient
        cv = cur.view(t1 - t0, -1)
        zc = torch.ops.spikeforge_scan.scan_fwd_into(cv, tab, v, aux, ref0.clone(), s.code, s.reset, s.refr)
        if blk.whole or (gz.stride(0) == 0 and gz.stride(1) == 0):  # read through its strides (e.g. `out.sum()`'s
            gzc = gz[t0:t1, :cv.shape[1]]  # gradient, one value expanded: any block of it is the same)
        else:
            gzc = blk.take(gz[t0:t1])
        torch.ops.spikeforge_scan.scan_bwd(gzc, cv, zc, tab, ref0, gv, gaux, s.code, s.reset, s.refr, s.detach,
                                           s.surr, s.scale, s.band, True)
        del zc, gzc
        # the Linear's own gradient helpers (they share one search for the non-zeros of a sparse gradient)
        if gx is not None:
            gx[r0:r1] = _input_grad(cur, w)
        if gw is not None:
            if plan.index is not None:
                gw[blk.o0:blk.o1].add_(_weight_grad(_chunk_active(plan, k), cur))
            else:
                gw[blk.o0:blk.o1].addmm_(cur.t(), x2[r0:r1])
        if gb is not None:
            gb[blk.o0:blk.o1].add_(_bias_grad(cur))
        _forget_nonzeros()
    for full, part in zip(adjoint, (gv, gaux), strict=True):
        blk.put(full, part)


def _backward(ctx, gz: Tensor | None, gv: Tensor | None, gaux: Tensor | None) -> tuple:
    """Blocks of output neurons in parallel (one block when the input needs a gradient: every block adds to it)."""
    x2, weight, bias, table, vb, ab, rb, index, values = ctx.saved_tensors
    s, plan = ctx.setup, ctx.plan._replace(index=index, values=values)
    steps, n = plan.bounds[-1], vb.shape[1]
    gz = weight.new_zeros(()).expand(steps, n) if gz is None else gz
    adjoint = (_grads_or_zeros(gv, vb[0]), _grads_or_zeros(gaux, vb[0]))
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    gw = torch.zeros_like(weight) if need_w else None
    gb = torch.zeros_like(bias) if need_b else None
    gx = weight.new_empty(steps * plan.batch, plan.n_in) if need_x else None
    n_out = weight.shape[0]
    edges = (0, n_out) if need_x else column_blocks(n_out)
    with torch.no_grad():
        _in_threads([functools.partial(_backward_block, plan, _Block(o0, o1, plan.batch, n_out), x2, weight, bias,
                                       table, s, (vb, ab, rb), gz, adjoint, (gw, gb, gx))
                     for o0, o1 in itertools.pairwise(edges)])
    gv, gaux = adjoint
    return gx, gw, gb, gv, (gaux if s.aux_name else None), None, None, None, None


def _covered(x: Tensor, weight: Tensor, bias: Tensor | None, spec: FireSpec | None) -> bool:
    """Whether ``x [T, B, in]``, ``weight [out, in]`` and ``bias`` fit a fused CPU call (one dtype, one spike per
    step)."""
    if x.dim() != 3 or weight.dim() != 2 or x.shape[2] != weight.shape[1] or x.device.type != "cpu":
        return False
    if x.dtype != weight.dtype or weight.device != x.device or getattr(spec, "max_spikes", 1) != 1:
        return False
    return bias is None or (bias.dtype == x.dtype and bias.device == x.device)


def fused_linear_scan(model: str, spec: FireSpec, params: NamedTuple, state: NamedTuple, x: Tensor, weight: Tensor,
                      bias: Tensor | None, *, active: SparseInput | None, sparse_backward: float | None = None,
                      chunk: int | None = None) -> tuple[Tensor, NamedTuple] | None:
    """``Linear(x)`` followed by a spiking neuron layer, fused over time in chunks on the CPU (module doc).

    Args:
        model, spec, params, state, sparse_backward: as :func:`spikeforge.kernels.cpu_scan.fused_scan`; ``state``
            is the neuron state at the start (``[B, out]`` tensors).
        x: input ``[T, B, in]`` (typically binary spikes).
        weight, bias: ``[out, in]`` and ``[out]`` (or None), same dtype as ``x``.
        active: the non-zeros of ``x.reshape(T * B, in)`` (:func:`spikeforge.kernels.sparse.choose` or
            ``find_active``): the currents are formed from them and they are kept for backward. Consumed: its
            ``index`` is rewritten in place (positions within each chunk), so that no copy is held. None: the
            dense product, chunk by chunk, keeping ``x`` for backward.
        chunk: time steps per chunk; None: :func:`chunk_steps`.

    Returns:
        ``(spikes [T, B, out], final_state)``, differentiable w.r.t. ``x``, ``weight``, ``bias`` and the initial
        state; None when the case is not covered (non-CPU tensors, a model or state the fused scan does not take,
        several spikes per step, kernels not built), so that the caller runs the layers one after the other.

    Shape:
        x ``[T, B, in]``, weight ``[out, in]`` -> spikes ``[T, B, out]``.
    """
    if not _covered(x, weight, bias, spec):
        return None
    steps, batch, n_in = x.shape
    n_out = weight.shape[0]
    like = weight.new_zeros(()).expand(steps, batch, n_out)  # the shape of the current, never materialised
    prep = _prepare(model, spec, params, state, like, sparse_backward)
    if prep is None or not cpu_scan.build():
        return None
    setup, table, v0, aux0, ref = prep
    n = batch * n_out
    vf, af = v0.reshape(n).contiguous(), aux0.expand(batch, n_out).reshape(n).contiguous()
    rf = _flat_ref(ref, n)
    tc = chunk_steps(steps, batch, n_in) if chunk is None else max(1, int(chunk))
    bounds = (*range(0, steps, tc), steps)
    x2 = x.reshape(steps * batch, n_in)
    if active is not None:
        index, span = active.index, tc * batch * n_in  # chunk k holds the flat positions [k span, (k+1) span)
        pos = tuple(torch.searchsorted(index, torch.tensor(bounds, dtype=index.dtype) * (batch * n_in)).tolist())
        if len(bounds) > 2:
            index.remainder_(span)  # in place (the caller's index is consumed): positions within each chunk
        plan = _Plan(bounds, batch, n_in, index, active.values, pos)
    else:
        plan = _Plan(bounds, batch, n_in, None, None, ())
    if _wants_grad(x, weight, bias, v0, aux0 if setup.aux_name else None):
        z, v, aux, ref_out = _FusedLinearScan.apply(x2, weight, bias, vf, af, rf, table, setup, plan)
    else:
        v, aux, ref_out = vf.clone(), af.clone(), rf
        z, _ = _run_forward(plan, x2 if active is None else None, weight, bias, table, setup, v, aux, ref_out,
                            keep=False)
    return z.view(steps, batch, n_out), _final_state(setup, v, aux, ref_out, state, (batch, n_out))


# ---- chains of Linear -> compact sparse-backward scan ---------------------------------------------------------------

class _Stage:
    """One ``Linear -> IF/LIF`` of a :class:`BandChain` (the neuron layer under sparse backward, compact scan): its
    input's non-zeros, parameters and flat state, and its forward's results (spikes ``z [T, N]``, final membrane,
    the scan's saved tensors: compact ``(pos, vhb, offsets)`` or dense ``(vh,)``), plus the dropout factor applied
    to its spikes (``keep [B, out]``) when the next stage or the tail reads them."""

    __slots__ = ("active", "weight", "bias", "v0", "table", "setup", "n_out", "z", "v", "saved", "keep", "finish")

    @property
    def compact(self) -> bool:
        return len(self.saved) == 3


class BandChain:
    """``Linear -> IF/LIF [-> Dropout] -> Linear -> IF/LIF ... [-> Dropout -> Linear]`` under sparse backward, on the
    CPU, whose backward never forms a dense gradient between the layers (:class:`_BandChainFunction`).

    Unfused, each ``Linear``'s backward forms the whole input gradient ``g W`` (``[T * B, in]``), a dropout
    multiplies all of it by its mask, and the sparse-backward scan below reads it back at its in-band neuron-steps
    only (a few percent). Here the scan's in-band values are formed directly: the gradient reaching a layer's spikes
    is computed at the in-band positions of that layer alone, as a sampled product (``csr_sddmm``: for each wanted
    ``(sample, neuron)`` the non-zeros of the row of the gradient above times the column of ``W``), times the
    dropout mask there, and handed to the scan's backward as ``[nnz]`` values (``scan_bwd_band_vals``). Each
    stage's weight and bias gradients come from its in-band values (``csr_wgrad_outer``, ``csr_colsum``); a
    crowded block (more than ``cpu_scan.BAND_SCAN_MAX`` of its steps in the band) runs the dense layout for its
    stage, which then receives and passes dense gradients. An optional tail ``Linear`` (e.g. the read-out) on the
    last stage's (dropped-out) spikes ends the chain; its input gradient is sampled the same way.

    Built by :class:`spikeforge.nn.Sequential` one layer at a time (the next layer's input, and so whether it can
    join, is known only after the forward of the layers before): :meth:`add_stage`, :meth:`drop`, :meth:`set_input`,
    :meth:`add_tail`, then :meth:`finish`, which records the whole chain as one autograd function. Spikes, states
    and outputs equal the unfused layers bit for bit; so do the sampled gradients (each is ``csr_igrad``'s sum at
    that position, times the mask).
    """

    def __init__(self, x: Tensor, active: SparseInput) -> None:
        self.steps, self.batch = x.shape[:2]
        self.x2 = x.reshape(self.steps * self.batch, x.shape[2])
        self.active: SparseInput | None = active  # non-zeros of the next stage's input
        self.top = x.detach()  # the next layer's input, [T, B, n], no graph
        self.stages: list[_Stage] = []
        self.tail: tuple | None = None  # (weight, bias, active, current)

    def add_stage(self, model: str, spec: FireSpec, params: NamedTuple, state: NamedTuple, weight: Tensor,
                  bias: Tensor | None, sparse_backward: float | None) -> bool:
        """Run ``Linear(top) -> neuron`` (the non-zeros of ``top`` set by :meth:`set_input` or the constructor) and
        make its spikes the new top; False (nothing run) when the case is not covered: not the compact
        sparse-backward scan, no non-zeros, non-CPU tensors, refractoriness, kernels not built, or (first stage) no
        gradient recorded."""
        active, x = self.active, self.top
        if active is None:
            return False
        if not cpu_scan.compact_band(model, spec, sparse_backward) or not _covered(x, weight, bias, spec):
            return False
        steps, batch, n_in = x.shape
        n_out = weight.shape[0]
        if not _use_native(weight, n_in):
            return False
        like = weight.new_zeros(()).expand(steps, batch, n_out)
        prep = _prepare(model, spec, params, state, like, sparse_backward)
        if prep is None or not cpu_scan.build():
            return False
        setup, table, v0, aux0, ref = prep
        n = batch * n_out
        rf = _flat_ref(ref, n)
        if rf.numel() > 0 or (not self.stages and not _wants_grad(self.x2, weight, bias, v0)):
            return False
        st = _Stage()
        st.active, st.weight, st.bias, st.table, st.setup, st.n_out = active, weight, bias, table, setup, n_out
        st.v0, st.keep = v0.reshape(n).contiguous(), None
        af = aux0.expand(batch, n_out).reshape(n).contiguous()
        st.finish = lambda v: _final_state(setup, v, af, rf, state, (batch, n_out))
        with torch.no_grad():
            cur = _forward(active, weight, bias)  # [T * B, out]: the current, a temporary (the dense layout's membrane)
            st.z, st.v, st.saved = cpu_scan._band_forward(cur.view(-1, n), st.v0, table, setup, True)
        self.stages.append(st)
        self.top, self.active = st.z.view(steps, batch, n_out), None
        return True

    def drop(self, keep: Tensor | None) -> Tensor:
        """Apply a dropout factor ``keep [B, out]`` (:meth:`spikeforge.nn.Dropout.keep_mask`; None: identity) to the
        last stage's spikes; returns the new top."""
        if keep is not None:
            st = self.stages[-1]
            st.keep = keep.contiguous()
            self.top = self.top * st.keep
        return self.top

    def set_input(self, active: SparseInput | None) -> None:
        """The non-zeros of ``top`` (``Linear.route``), for the next stage or the tail."""
        self.active = active

    def add_tail(self, weight: Tensor, bias: Tensor | None) -> bool:
        """End the chain with ``Linear(top)`` (its output leaves the chain as a current); False when not covered."""
        x, active = self.top, self.active
        if not self.stages or active is None or not _covered(x, weight, bias, None):
            return False
        if not _use_native(weight, x.shape[2]):
            return False
        with torch.no_grad():
            cur = _forward(active, weight, bias)
        self.tail = (weight, bias, active, cur)
        return True

    def finish(self) -> tuple[list[tuple[Tensor, NamedTuple]], Tensor | None]:
        """Record the chain as one autograd function: ``([(spikes [T, B, out], final state) per stage], tail
        current [T, B, out] or None)``."""
        inputs: list = []
        for st in self.stages:
            inputs += [st.weight, st.bias, st.v0]
        if self.tail is not None:
            inputs += [self.tail[0], self.tail[1]]
        outs = _BandChainFunction.apply(self, self.x2, *inputs)
        steps, batch = self.steps, self.batch
        results = []
        for k, st in enumerate(self.stages):
            z, v = outs[2 * k], outs[2 * k + 1]
            results.append((z.view(steps, batch, st.n_out), st.finish(v)))
            st.finish = None
        tail = outs[-1].view(steps, batch, -1) if self.tail is not None else None
        return results, tail


def _rows(st: _Stage, rows: int) -> tuple[Tensor, Tensor]:
    """A compact stage's in-band entries as a CSR without values over its ``[T * B, out]`` current."""
    return torch.ops.spikeforge_scan.band_rows(st.saved[0], st.n_out, rows)


def _sampled(nz: tuple[Tensor, Tensor, Tensor], weight: Tensor, below: _Stage, rows: tuple[Tensor, Tensor],
             batch: int) -> Tensor:
    """The gradient ``(g W) * keep`` at the in-band entries of the stage below (``rows``), from the non-zeros
    ``nz`` of ``g``."""
    keep = weight.new_empty(0) if below.keep is None else below.keep
    return torch.ops.spikeforge_sparse.csr_sddmm(*nz, weight.detach().contiguous(), *rows, keep, batch)


def _dense_below(g_nz: tuple | None, g: Tensor | None, weight: Tensor, below: _Stage, batch: int) -> Tensor:
    """The gradient ``(g W) * keep`` in full, ``[T * B, in]``."""
    if g_nz is not None:
        gx = torch.ops.spikeforge_sparse.csr_igrad(*g_nz, weight.detach().contiguous())
    else:
        gx = g @ weight.detach()
    if below.keep is not None:
        gx = (gx.view(-1, batch, below.n_out) * below.keep).view(gx.shape)
    return gx


class _BandChainFunction(torch.autograd.Function):
    """The backward of a :class:`BandChain` (its forward ran in the builder; this records it). Inputs: the chain's
    input ``[T * B, in]`` and per stage ``weight, bias, v0``, then the tail's ``weight, bias``; outputs: per stage
    the spikes ``[T, N]`` and the final membrane ``[N]``, then the tail's current ``[T * B, out]``."""

    @staticmethod
    def forward(ctx, chain, x2, *inputs):  # type: ignore[override]
        ctx.chain = chain
        ctx.set_materialize_grads(False)  # outputs without a gradient (most spikes, states) arrive as None
        outs = []
        for st in chain.stages:
            outs += [st.z, st.v]
        if chain.tail is not None:
            outs.append(chain.tail[3])
        weights = [st.weight for st in chain.stages] + ([chain.tail[0]] if chain.tail is not None else [])
        # the weights for the version check (they must not change before the backward), the spikes for their shape;
        # the chain (held by ctx) must not hold the outputs itself: output -> node -> ctx -> chain -> output is a
        # cycle that the garbage collector cannot see through the node, and every step would leak its tensors
        ctx.n_weights = len(weights)
        ctx.save_for_backward(*weights, *[st.z for st in chain.stages])
        for st in chain.stages:
            st.z = st.v = None
        chain.top = None
        if chain.tail is not None:
            chain.tail = (*chain.tail[:3], None)
        return tuple(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable  # computed without a graph: a second derivative raises
    def backward(ctx, *grads):  # type: ignore[override]
        chain: BandChain = ctx.chain
        zs = ctx.saved_tensors[ctx.n_weights:]  # (raises if a weight was modified in place)
        stages, batch = chain.stages, chain.batch
        rows = chain.x2.shape[0]
        need = ctx.needs_input_grad
        out: list = [None] * (2 + 3 * len(stages) + (2 if chain.tail is not None else 0))
        band_rows: dict[int, tuple[Tensor, Tensor]] = {}

        def rows_of(k: int) -> tuple[Tensor, Tensor]:
            if k not in band_rows:
                band_rows[k] = _rows(stages[k], rows)
            return band_rows[k]

        def plus_external(k: int, g: Tensor, compact: bool) -> Tensor:
            """Add the gradient the spikes of stage k received from outside the chain (e.g. a rate penalty)."""
            ext = grads[2 * k]
            if ext is None:
                return g
            ext = ext.reshape(-1)
            return g + (ext.index_select(0, stages[k].saved[0]) if compact else ext.view(g.shape))

        def incoming(k: int, g_nz, g, weight) -> tuple[Tensor, bool]:
            """The gradient reaching stage k's spikes from the layer above (``g``/its non-zeros, ``weight``):
            ``([nnz] at its in-band entries, True)`` for a compact stage, else ``([T, N], False)``."""
            below = stages[k]
            if below.compact and g_nz is not None:
                return plus_external(k, _sampled(g_nz, weight, below, rows_of(k), batch), True), True
            dense = _dense_below(g_nz, g, weight, below, batch).view(zs[k].shape)
            return plus_external(k, dense, False), False

        with torch.no_grad():
            top = len(stages) - 1
            if chain.tail is not None and grads[-1] is not None:
                w_t, _, active_t, _ = chain.tail
                g = grads[-1].contiguous()
                base = 2 + 3 * len(stages)
                if need[base]:
                    out[base] = _weight_grad(active_t, g)
                if need[base + 1]:
                    out[base + 1] = _bias_grad(g)
                g_nz = _grad_nonzeros(g)
                _forget_nonzeros()
                gz, compact = incoming(top, g_nz, g, w_t)
            else:
                gz = grads[2 * top]
                gz, compact = (zs[top].new_zeros(()).expand(zs[top].shape) if gz is None else gz), False
            for k in range(top, -1, -1):
                st, s = stages[k], stages[k].setup
                z = zs[k]
                gv = _grads_or_zeros(grads[2 * k + 1], z[0])
                base = 2 + 3 * k
                if st.compact:
                    pos, vhb, offsets = st.saved
                    vals = torch.ops.spikeforge_scan.scan_bwd_band_vals(gz, pos, vhb, offsets, z, st.table, gv,
                                                                        s.code, s.reset, s.detach, s.surr, s.scale)
                    nz, g = (*rows_of(k), vals), None
                    if need[base]:
                        xv = st.weight.new_empty(0) if st.active.values is None else st.active.values.contiguous()
                        out[base] = torch.ops.spikeforge_sparse.csr_wgrad_outer(*nz, st.active.index, xv, st.n_out,
                                                                                st.active.shape[1])
                    if need[base + 1] and st.bias is not None:
                        out[base + 1] = torch.ops.spikeforge_sparse.csr_colsum(*nz, st.n_out)
                else:
                    if compact:  # cannot happen: a dense stage is always handed a dense gradient
                        raise AssertionError("band chain: compact gradient for a dense stage")
                    g = cpu_scan._band_dense_backward(gz.contiguous(), st.saved[0], z, st.table, s,
                                                      gv).view(rows, st.n_out)
                    if need[base]:
                        out[base] = _weight_grad(st.active, g)
                    if need[base + 1] and st.bias is not None:
                        out[base + 1] = _bias_grad(g)
                    nz = _grad_nonzeros(g)
                    _forget_nonzeros()
                out[base + 2] = gv if need[base + 2] else None
                if k > 0:
                    gz, compact = incoming(k - 1, nz, g, st.weight)
                elif need[1]:
                    out[1] = (torch.ops.spikeforge_sparse.csr_igrad(*nz, st.weight.detach().contiguous())
                              if nz is not None else g @ st.weight.detach())
        return tuple(out)
