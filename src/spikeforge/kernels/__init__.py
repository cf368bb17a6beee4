"""Fused kernels: a neuron layer's whole time loop in one call, forward and backward.

Two entry points, each dispatching on the device of the input:

* :func:`fused_scan` — a neuron layer (``"if"``, ``"lif"``, ``"cuba_lif"``, ``"adaptive_lif"``);
* :func:`fused_recurrent` — a recurrent layer, where the product with ``W_rec`` stays inside the loop.

CPU tensors go to :mod:`spikeforge.kernels.cpu_scan` (C++ compiled on first use and cached), CUDA tensors to
``spikeforge.kernels.triton_scan`` when Triton is installed. Both return None for any case they do not cover
(or when they cannot be built), and the caller then runs the reference scan (:mod:`spikeforge.sim.scan`), to
which every fused path is pinned by equivalence tests. :func:`graphed` captures a whole model's forward and
backward as CUDA graphs (for small GPU workloads, where launches dominate). See ``docs/kernels.md``.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from ..core.checks import SpikeforgeError
from ..dynamics.common import FireSpec
from . import cpu_event, cpu_scan  # noqa: F401  (cpu_event registers the C++ event engine with sim.event)
from .cpu_scan import check_band
from .graphs import graphed

__all__ = ["MODELS", "check_band", "fused_recurrent", "fused_scan", "graphed"]

#: model names the fused kernels understand (the dynamics module of each).
MODELS = tuple(cpu_scan.MODELS)


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise SpikeforgeError(f"model must be one of {MODELS} for the fused kernels, got {model!r}.")


def fused_scan(model: str, spec: FireSpec, params: NamedTuple, state: NamedTuple, x: Tensor, *,
               sparse_backward: float | None = None, inplace: bool = False) -> tuple[Tensor, NamedTuple] | None:
    """Run a neuron model over all steps of ``x`` in one fused kernel for ``x``'s device.

    Args:
        model: ``"if"``, ``"lif"``, ``"cuba_lif"`` or ``"adaptive_lif"``.
        spec: firing spec. params, state: the model's dynamics NamedTuples. x: input currents.
        sparse_backward: None (exact gradients) or a band ``b`` > 0: the surrogate derivative is zero where
            ``|v - v_th| >= b`` and the backward skips those neurons.
        inplace: the caller owns ``x`` and never reads it again: the membrane saved for backward overwrites it
            (memory of one ``[T, B, ...]`` buffer less; ``x``'s autograd version is bumped).

    Returns:
        ``(spikes, final_state)`` or None when no fused kernel covers the case (run the reference scan then).

    Shape:
        x ``[T, B, *features]`` -> spikes ``[T, B, *features]``.
    """
    _check_model(model)
    band = check_band(sparse_backward)
    if spec.max_spikes != 1:
        return None  # several spikes per step: the reference scan
    if x.is_cuda:
        try:
            from .triton_scan import triton_scan
        except ImportError:
            return None
        return triton_scan(model, spec, params, state, x, sparse_backward=band, inplace=inplace)
    if x.device.type == "cpu":
        return cpu_scan.fused_scan(model, spec, params, state, x, sparse_backward=band, inplace=inplace)
    return None


def fused_recurrent(model: str, spec: FireSpec, params: NamedTuple, state: NamedTuple, z0: Tensor, x_ff: Tensor,
                    w_rec: Tensor, *, sparse_backward: float | None = None):
    """Recurrent layer ``x_t = x_ff[t] + z_{t-1} @ w_rec.T`` fused over time for ``x_ff``'s device.

    Returns:
        ``(spikes [T, B, H], final neuron state, last spikes [B, H])`` or None (run the reference then).

    Shape:
        x_ff ``[T, B, H]``, z0 ``[B, H]``, w_rec ``[H, H]``.
    """
    _check_model(model)
    band = check_band(sparse_backward)
    if spec.max_spikes != 1:
        return None
    if x_ff.is_cuda:
        try:
            from .triton_scan import triton_recurrent
        except ImportError:
            return None
        return triton_recurrent(model, spec, params, state, z0, x_ff, w_rec, sparse_backward=band)
    if x_ff.device.type == "cpu":
        return cpu_scan.fused_recurrent(model, spec, params, state, z0, x_ff, w_rec, sparse_backward=band)
    return None
