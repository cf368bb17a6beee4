r"""Sparse spike arithmetic: the synaptic product of a dense layer computed from the active inputs only.

For an input :math:`x \in \mathbb{R}^{N \times I}` (``N = T * B`` samples) and weights
:math:`W \in \mathbb{R}^{O \times I}`,

.. math::

    y_n = b + \sum_{i : x_{ni} \ne 0} x_{ni}\, W_{:, i}, \qquad
    \frac{\partial L}{\partial W_{:, i}} = \sum_{n : x_{ni} \ne 0} x_{ni}\, g_n, \qquad
    \frac{\partial L}{\partial b} = \sum_n g_n,

with :math:`g = \partial L / \partial y`. For binary spikes :math:`x_{ni} = 1` and each output row is
the sum of the weight columns of the inputs that spiked; with density :math:`d` the work drops from
:math:`N I O` multiply-adds to :math:`d N I O` additions, and the input itself is not kept for the
backward pass (only the flat ``int64`` positions of its non-zeros). The gradient with respect to ``x`` is
the dense ``g W`` and is computed only when ``x`` requires it.

On CPU both sums run in one C++ call each (``csrc/sparse.cpp``, compiled on first use like the fused scans
of :mod:`spikeforge.kernels.cpu_scan`): work is split by tiles of output columns, each thread keeps its tile of
``W`` (or of the gradient) in a private contiguous buffer that stays in cache, and the rows a few non-zeros ahead
are prefetched. One parallel region per call also keeps the kernels fast on a loaded machine, where each extra
parallel region can wait for a scheduler time slice. Elsewhere (CUDA, or no C++ compiler) both sums are "bags" of
rows for :func:`torch.nn.functional.embedding_bag`, column block by column block.

:func:`choose` settles dense versus sparse for one call: sparse when the input is binary (every non-zero
equals 1) and its density is below a per-device threshold. On CPU the threshold was measured (the sparse
product wins up to 30-45 % density at the benchmark sizes; the default 0.25 keeps a margin); on CUDA the
default is 0, i.e. always dense, because cuBLAS is faster than gathering at the densities of interest.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.checks import SpikeforgeError, describe

__all__ = [
    "DEFAULT_THRESHOLDS",
    "SparseInput",
    "choose",
    "default_threshold",
    "find_active",
    "grad_nonzeros",
    "sparse_linear",
]

# Density below which "auto" uses the sparse product, per device type. Measured crossover on CPU (2-core AMD EPYC,
# fp32, C++ path, docs/performance.md): ~0.45 (fwd+bwd) at N=8000, I=O=1024; ~0.33 (fwd+bwd) and ~0.3 (forward
# alone) at N=16000, I=O=256. 0.25 keeps a margin for narrow layers.
DEFAULT_THRESHOLDS: dict[str, float] = {"cpu": 0.25, "cuda": 0.0}

#: the input gradient ``grad @ W`` is formed from the non-zeros of ``grad`` below this density (CPU; measured
#: crossover with MKL's dense product on 2 cores, see docs/kernels.md)
IGRAD_DENSITY = 0.2
#: weight gradient from a sparse output gradient: the outer product of the non-zeros of ``grad`` and of the input
#: (scalar scattered additions) runs when their count times this factor is below the row method's ``nnz(x) * out``
#: vectorised additions; measured on 2 cores (see docs/kernels.md)
WGRAD_OUTER_COST = 10.0
#: a gradient this narrow (e.g. of a 10-class read-out layer) goes through the non-zero kernels whatever its density:
#: MKL's product with an inner dimension of 10 is several times slower than adding 10 rows of W per sample
NARROW_OUT = 16
_SAMPLE = 1 << 16  # elements sampled for the cheap density estimate
_FWD_TABLE_BYTES = 1 << 19  # forward: W^T column block gathered from (bytes); 512 KiB measured best
_BWD_TABLE_BYTES = 1 << 20  # weight gradient: g column block gathered from (bytes); 1 MiB measured best
_SUPPORTED = (torch.float32, torch.float64)
_CPP = Path(__file__).resolve().parent / "csrc" / "sparse.cpp"
# status: None (not tried), True (loaded) or the reason it failed; enabled: False forces the embedding_bag path.
_NATIVE: dict = {"status": None, "enabled": True}
_INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
             torch.bfloat16: torch.int16}


class SparseInput(NamedTuple):
    """The non-zeros of a 2-D input ``[N, I]``.

    Attributes:
        index: flat row-major position of each non-zero (``int64``, sorted).
        values: the non-zero values, or None when all equal 1 (binary spikes).
        shape: ``(N, I)`` of the input.
    """

    index: Tensor
    values: Tensor | None
    shape: tuple[int, int]

    @property
    def density(self) -> float:
        """Fraction of non-zero entries."""
        n, i = self.shape
        return self.index.numel() / max(1, n * i)

    @property
    def rows(self) -> Tensor:
        """Sample of each non-zero (``int64``)."""
        return torch.div(self.index, self.shape[1], rounding_mode="floor")

    @property
    def cols(self) -> Tensor:
        """Input of each non-zero (``int64``)."""
        return self.index - self.rows * self.shape[1]


def default_threshold(device: torch.device | str) -> float:
    """Density threshold below which ``"auto"`` picks the sparse product on ``device``."""
    return DEFAULT_THRESHOLDS.get(torch.device(device).type, 0.0)


def find_active(x: Tensor) -> SparseInput:
    """Coordinates and values of the non-zeros of ``x``.

    Shape:
        x ``[N, I]``.
    """
    if x.dim() != 2:
        raise SpikeforgeError(f"x must be a 2-D tensor [N, in_features], got {describe(x)}.")
    flat = x.reshape(-1)
    # Searching the bit patterns is faster than comparing floats; a -0.0 is then "active" with value -0.0,
    # which keeps results exact (and makes the input count as non-binary).
    bits = _INT_VIEW.get(flat.dtype)
    idx = (flat.view(bits) if bits is not None else flat).nonzero().squeeze(1)
    vals = flat.index_select(0, idx)
    binary = bool((vals == 1).all())
    return SparseInput(idx, None if binary else vals, (x.shape[0], x.shape[1]))


def choose(x: Tensor, threshold: float | None = None) -> SparseInput | None:
    """Decide dense or sparse for one product; returns the active inputs when sparse wins, else None.

    Sparse is chosen when ``x`` is a float32/float64 tensor whose non-zeros all equal one value (spikes: 1; spikes
    after dropout in training: ``1/(1-p)``) and whose density is below ``threshold`` (default
    :func:`default_threshold` of ``x``'s device). A strided sample
    of ``x`` estimates the density first, so a clearly dense input costs one cheap pass and no index
    extraction; the exact density and the binary check come from the non-zeros themselves.

    Shape:
        x ``[N, I]``.
    """
    thr = default_threshold(x.device) if threshold is None else float(threshold)
    if thr <= 0.0 or x.dtype not in _SUPPORTED or x.dim() != 2 or x.numel() == 0:
        return None
    flat = x.reshape(-1)
    step = max(1, flat.numel() // _SAMPLE)
    estimate = int(torch.count_nonzero(flat[::step])) / flat[::step].numel()
    if estimate > 1.5 * thr + 0.01:
        return None
    active = find_active(x)
    if active.density >= thr:
        return None
    if active.values is not None and not (bool(torch.isfinite(active.values[0]))
                                          and bool((active.values == active.values[0]).all())):
        return None  # not (scaled) spikes: real-valued (or non-finite) inputs stay on the dense product
    return active


def _block(table_rows: int, width: int, target_bytes: int, element_size: int, minimum: int) -> int:
    """Columns per block so that a ``[table_rows, block]`` table is about ``target_bytes`` (a power of 2)."""
    cols = max(1, target_bytes // max(1, table_rows * element_size))
    cols = 1 << (cols.bit_length() - 1)
    return min(width, max(minimum, cols))


def _offsets(index: Tensor, bags: int) -> Tensor:
    """Start of each bag in a sorted ``index``."""
    counts = torch.bincount(index, minlength=bags)
    return torch.cumsum(counts, 0) - counts


def _bag_sum(indices: Tensor, offsets: Tensor, table: Tensor, weights: Tensor | None,
             target_bytes: int, minimum: int, out: Tensor | None = None) -> Tensor:
    """``out[k] = sum_{j in bag k} w_j table[indices[j]]``, column block by column block.

    ``out`` (``[bags, width]``, any strides) receives the result when given.
    """
    bags, width = offsets.numel(), table.shape[1]
    block = _block(table.shape[0], width, target_bytes, table.element_size(), minimum)
    if block >= width and out is None:
        return F.embedding_bag(indices, table.contiguous(), offsets, mode="sum", per_sample_weights=weights)
    out = table.new_empty(bags, width) if out is None else out
    for s in range(0, width, block):
        part = table[:, s:s + block].contiguous()
        out[:, s:s + block] = F.embedding_bag(indices, part, offsets, mode="sum", per_sample_weights=weights)
    return out


def _native() -> bool:
    """True when the C++ kernels are compiled and loaded (built on first call; a failure warns once)."""
    from . import cpu_scan

    return cpu_scan.load_library(_NATIVE, lambda: cpu_scan.compile_library(_CPP, "spikeforge_sparse"),
                                 "sparse C++ kernels", "embedding_bag")


def _use_native(t: Tensor, inputs: int) -> bool:
    """C++ path for CPU float32/float64, unless a thread's [inputs, 128] tile buffer would exceed 64 MiB."""
    small = inputs * 128 * t.element_size() <= 1 << 26
    return t.device.type == "cpu" and t.dtype in _SUPPORTED and small and _NATIVE["enabled"] and _native()


def _forward(active: SparseInput, weight: Tensor, bias: Tensor | None) -> Tensor:
    n, i = active.shape
    if _use_native(weight, i):
        empty = weight.new_empty(0)
        vals = empty if active.values is None else active.values.contiguous()
        b = empty if bias is None else bias.detach().contiguous()
        return torch.ops.spikeforge_sparse.sparse_fwd(active.index, vals, weight.detach().contiguous(), b, n)
    offsets = _offsets(active.rows, n)
    wt = weight.t()  # [I, O]: row i holds the weights leaving input i
    y = _bag_sum(active.cols, offsets, wt, active.values, _FWD_TABLE_BYTES, 64)
    if bias is not None:
        y += bias
    return y


def _weight_grad(active: SparseInput, grad: Tensor) -> Tensor:
    """``grad^T x`` from the non-zeros of ``x``: one bag of rows of ``grad`` per input; when ``grad`` is sparse too
    (sparse backward), the outer product of both sets of non-zeros where that is cheaper."""
    if _use_native(grad, active.shape[1]):
        vals = grad.new_empty(0) if active.values is None else active.values.contiguous()
        nz = _grad_nonzeros(grad)
        if nz is not None:
            return torch.ops.spikeforge_sparse.csr_wgrad(*nz, grad, active.index, vals, active.shape[1],
                                                         WGRAD_OUTER_COST)
        return torch.ops.spikeforge_sparse.sparse_wgrad(active.index, vals, grad, active.shape[1])
    cols, perm = torch.sort(active.cols, stable=True)
    rows = active.rows.index_select(0, perm)
    vals = None if active.values is None else active.values.index_select(0, perm)
    offsets = _offsets(cols, active.shape[1])
    gw = grad.new_empty(grad.shape[1], active.shape[1])  # [O, I], the weight's layout; filled through its transpose
    _bag_sum(rows, offsets, grad, vals, _BWD_TABLE_BYTES, 32, out=gw.t())
    return gw


def _input_grad(grad: Tensor, weight: Tensor) -> Tensor:
    """``grad @ weight``; from the non-zeros of ``grad`` when it is sparse (sparse backward leaves most of the
    output gradient exactly zero), else the dense product."""
    if _use_native(grad, weight.shape[1]):
        nz = _grad_nonzeros(grad)
        if nz is not None:
            return torch.ops.spikeforge_sparse.csr_igrad(*nz, weight.detach().contiguous())
    return grad @ weight


def _bias_grad(grad: Tensor) -> Tensor:
    """``grad.sum(0)``; from the non-zeros of ``grad`` when they were found for the other gradients."""
    nz = _grad_nonzeros(grad, search=False)
    if nz is not None:
        return torch.ops.spikeforge_sparse.csr_colsum(*nz, grad.shape[1])
    return grad.sum(0)


def grad_nonzeros(grad: Tensor, max_density: float = IGRAD_DENSITY) -> tuple[Tensor, Tensor, Tensor] | None:
    """The non-zeros of a 2-D gradient by rows (CSR: ``rowptr`` int64 ``[N + 1]``, ``cols`` int32, ``vals``) when at
    most ``max_density`` of it is non-zero and the C++ kernels run; else None (one vectorised counting pass spent).

    Under sparse backward the gradient reaching a ``Linear`` layer is exactly zero outside the next neuron layer's
    band; the layer's input, weight and bias gradients are then formed from these non-zeros.
    """
    if grad.dim() != 2 or grad.device.type != "cpu" or grad.dtype not in _SUPPORTED or not _native():
        return None
    rowptr, cols, vals = torch.ops.spikeforge_sparse.grad_csr(grad.contiguous(), int(max_density * grad.numel()))
    return None if rowptr.numel() == 0 else (rowptr, cols, vals)


# The last gradient whose non-zeros were searched: (weak reference, its version, the result). The input, weight and
# bias gradients of one layer are formed from the same output gradient; the search runs once for them. A weak
# reference (not id()) so that a new tensor at a freed one's address never matches; the version counter so that an
# in-place change in between does not either.
_LAST_NZ: list = [(None, -1, None)]


# The input gradient last returned by a compact sparse-backward scan (cpu_scan._BandScanFunction): (the tensor, its
# version, the sorted flat positions of its in-band entries, the only ones that can be non-zero). The Linear layer
# before the neuron layer receives this gradient (as a view of another shape) and takes its non-zeros from these
# positions instead of searching the whole tensor. Held strongly (the Python object of a gradient dies as soon as
# the backward function returns it; only its memory flows on), so no other tensor can take its memory while noted;
# dropped once used and at the end of the backward pass.
_BAND_GRAD: list = [(None, -1, None)]


def note_band_gradient(grad: Tensor, positions: Tensor) -> None:
    """Record, during a backward pass, that ``grad`` (contiguous) is zero outside the sorted flat ``positions``
    (int64), for the backward of the layer that receives it (:func:`_grad_nonzeros`)."""
    _BAND_GRAD[0] = (grad, grad._version, positions)
    torch.autograd.Variable._execution_engine.queue_callback(_forget_band)


def _forget_band() -> None:
    _BAND_GRAD[0] = (None, -1, None)


def _band_nonzeros(grad: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """CSR of a 2-D ``grad`` laid over the memory of the gradient noted by :func:`note_band_gradient` (the same
    start, size, dtype and version: a view of it, or itself), from the noted positions; else None."""
    noted, version, pos = _BAND_GRAD[0]
    if (noted is None or grad.dim() != 2 or not grad.is_contiguous() or grad.data_ptr() != noted.data_ptr()
            or grad.numel() != noted.numel() or grad._version != version or grad.dtype != noted.dtype):
        return None
    rows, width = grad.shape
    return (*torch.ops.spikeforge_scan.band_rows(pos, width, rows), grad.reshape(-1).index_select(0, pos))


def _grad_nonzeros(grad: Tensor, *, search: bool = True) -> tuple[Tensor, Tensor, Tensor] | None:
    ref, version, nz = _LAST_NZ[0]
    if ref is not None and ref() is grad and version == grad._version:
        return nz
    if not search:
        return None
    nz = _band_nonzeros(grad)
    if nz is None:
        dense_ok = grad.dim() == 2 and grad.shape[1] <= NARROW_OUT
        nz = grad_nonzeros(grad, 1.0 if dense_ok else IGRAD_DENSITY) if grad.is_contiguous() else None
    _LAST_NZ[0] = (weakref.ref(grad), grad._version, nz)
    return nz


def _forget_nonzeros() -> None:
    _LAST_NZ[0] = (None, -1, None)
    _forget_band()


class _SparseLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, active: SparseInput):
        ctx.active = active
        ctx.has_bias = bias is not None
        ctx.save_for_backward(weight)
        return _forward(active, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (weight,) = ctx.saved_tensors
        grad = grad.contiguous()
        gx = _input_grad(grad, weight) if ctx.needs_input_grad[0] else None
        gw = _weight_grad(ctx.active, grad) if ctx.needs_input_grad[1] else None
        gb = _bias_grad(grad) if ctx.has_bias and ctx.needs_input_grad[2] else None
        _forget_nonzeros()
        return gx, gw, gb, None


def sparse_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, *,
                  active: SparseInput | None = None) -> Tensor:
    """``x @ weight.T + bias`` computed from the non-zeros of ``x``; equal to the dense product.

    Args:
        x: input, typically binary spikes.
        weight: ``[out, in]`` weights.
        bias: ``[out]`` bias or None.
        active: the non-zeros of ``x`` when already found (e.g. by :func:`choose`); found here otherwise.

    Returns:
        ``[N, out]``. Gradients flow to ``weight`` and ``bias`` from the active inputs only, and to ``x``
        (dense ``grad @ weight``) when ``x`` requires it.

    Shape:
        x ``[N, in]``, weight ``[out, in]``, bias ``[out]`` -> ``[N, out]``.
    """
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise SpikeforgeError(
            f"sparse_linear needs x [N, in] and weight [out, in] with the same in; got x {describe(x)} and "
            f"weight {describe(weight)}."
        )
    if x.dtype != weight.dtype or x.device != weight.device:
        raise SpikeforgeError(
            f"x and weight must share dtype and device, got x {x.dtype} on {x.device} and weight "
            f"{weight.dtype} on {weight.device}."
        )
    if active is None:
        active = find_active(x)
    elif tuple(active.shape) != tuple(x.shape):
        raise SpikeforgeError(f"active was found for an input of shape {active.shape}, got x {describe(x)}.")
    return _SparseLinear.apply(x, weight, bias, active)
