r"""Losses on spike times ``[B, C, K]`` (``+inf`` = no spike) and on read-out membranes ``[B, C, G]``.

Each returns one value per sample (``[B]``), like :mod:`spikeforge.train.losses`.

* :func:`ttfs_cross_entropy` -- time-to-first-spike cross-entropy (Fast & Deep, EventProp):

  .. math:: L = -\log\frac{e^{-t_{l}/\tau_0}}{\sum_c e^{-t_c/\tau_0}} + \alpha\,(e^{t_{l}/\tau_1} - 1)

  with :math:`t_c` the first spike of output :math:`c` and :math:`l` the label. Both papers use this regulariser on
  the label neuron's first spike (Göltz et al. 2021, eq. for the loss with :math:`\tau_1 = \beta\tau_s`;
  Wunderlich & Pehle 2021, the Yin-Yang loss). A missing spike counts as a spike at ``t_max`` (no gradient),
  so a silent network has a finite loss.
* :func:`spike_count_cross_entropy` -- cross-entropy on spike counts in ``[0, window]``. Counts are piecewise
  constant in the spike times, so EventProp alone gives them no gradient; here the count of each neuron carries
  the straight-through time gradient :math:`\partial n/\partial t_k = -1/\mathrm{window}` (an earlier spike
  counts "more", a spike pushed past the window end leaves the count).
* :func:`max_membrane_cross_entropy` -- cross-entropy on :math:`\max_t v_c(t)` of a non-spiking read-out (the
  EventProp MNIST loss), read on a time grid (:class:`~spikeforge.nn.event_readout.EventLI`).
* :func:`integral_cross_entropy` -- Nowotny, Turner & Knight's loss shaping (arXiv 2212.01232): cross-entropy on
  :math:`\int_0^T f(t)\,v_c(t)\,dt` with a weighting :math:`f` (``"none"``: 1; ``"linear"``: :math:`1 - t/T`;
  ``"exp"``: :math:`e^{-t/\tau_w}`; ``"sigmoid"``: :math:`1/(1 + e^{(t - T/2)/\tau_w})`), scaled by
  ``1/T``. The integral depends on every spike that reaches the read-out at any time, so gradients keep flowing
  when a max or first-spike loss would have none (a spike can be moved without being created or deleted).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.checks import SpikeforgeError, check_positive, check_rank

__all__ = [
    "WEIGHTINGS",
    "first_spike_times",
    "integral_cross_entropy",
    "integral_logits",
    "max_membrane_cross_entropy",
    "spike_count_cross_entropy",
    "spike_counts",
    "time_weighting",
    "ttfs_cross_entropy",
]

WEIGHTINGS = ("none", "linear", "exp", "sigmoid")


def _labels(labels: Tensor, b: int) -> None:
    if labels.shape != (b,):
        raise SpikeforgeError(f"labels must have shape [B] = [{b}], got {tuple(labels.shape)}.")


def first_spike_times(times: Tensor, *, t_max: float) -> Tensor:
    """First spike of every neuron, ``t_max`` where it has none (finite, zero gradient there).

    Shape: ``[B, C, K]`` -> ``[B, C]``.
    """
    check_rank("times", times, 3, layout="[B, C, K] (+inf = no spike)")
    first = times[:, :, 0] if times.shape[2] else times.new_full(times.shape[:2], math.inf)
    return torch.where(torch.isfinite(first) & (first < t_max), first, torch.full_like(first, t_max))


def ttfs_cross_entropy(times: Tensor, labels: Tensor, *, tau_0: float, t_max: float, alpha: float = 0.0,
                       tau_1: float = math.inf) -> Tensor:
    """Time-to-first-spike cross-entropy with the Fast & Deep / EventProp regulariser (module docstring).

    Args:
        times: output spike times (seconds, sorted per neuron, ``+inf`` = none).
        labels: class indices.
        tau_0: softmax temperature (seconds). t_max: time that stands in for a missing spike.
        alpha, tau_1: regulariser weight and time constant (``alpha = 0``: none).

    Shape: times ``[B, C, K]``, labels ``[B]`` -> ``[B]``.
    """
    check_positive("tau_0", tau_0)
    check_positive("t_max", t_max)
    t = first_spike_times(times, t_max=t_max)
    _labels(labels, t.shape[0])
    loss = F.cross_entropy(-t / tau_0, labels, reduction="none")
    if alpha:
        check_positive("tau_1", tau_1)
        t_label = t.gather(1, labels[:, None]).squeeze(1)
        loss = loss + alpha * torch.expm1(t_label / tau_1)
    return loss


def spike_counts(times: Tensor, *, window: float) -> Tensor:
    """Spikes per neuron in ``[0, window]``, with the straight-through gradient ``-1/window`` per spike time.

    Shape: ``[B, C, K]`` -> ``[B, C]``.
    """
    check_rank("times", times, 3, layout="[B, C, K] (+inf = no spike)")
    check_positive("window", window)
    inside = torch.isfinite(times) & (times <= window)
    t = torch.where(inside, times, torch.zeros_like(times))
    soft = (t.detach() - t) / window  # value 0, gradient -1/window
    return (inside.to(times.dtype) + torch.where(inside, soft, torch.zeros_like(soft))).sum(dim=2)


def spike_count_cross_entropy(times: Tensor, labels: Tensor, *, window: float, scale: float = 1.0) -> Tensor:
    """Cross-entropy on ``scale *`` :func:`spike_counts`. Shape: ``[B, C, K]``, ``[B]`` -> ``[B]``."""
    n = spike_counts(times, window=window)
    _labels(labels, n.shape[0])
    return F.cross_entropy(scale * n, labels, reduction="none")


def max_membrane_cross_entropy(v: Tensor, labels: Tensor, *, scale: float = 1.0) -> Tensor:
    """Cross-entropy on ``scale * max_t v``. Shape: v ``[B, C, G]``, labels ``[B]`` -> ``[B]``."""
    check_rank("v", v, 3, layout="[B, C, G] (membrane on a time grid)")
    _labels(labels, v.shape[0])
    return F.cross_entropy(scale * v.amax(dim=2), labels, reduction="none")


def time_weighting(grid: Tensor, kind: str, *, t_max: float, tau_w: float | None = None) -> Tensor:
    """The weighting function ``f(t)`` of :func:`integral_cross_entropy` on ``grid``. Shape: ``[G]`` -> ``[G]``."""
    if kind not in WEIGHTINGS:
        raise SpikeforgeError(f"weighting must be one of {list(WEIGHTINGS)}, got {kind!r}.")
    tau = t_max / 4 if tau_w is None else tau_w
    check_positive("tau_w", tau)
    if kind == "none":
        return torch.ones_like(grid)
    if kind == "linear":
        return (1 - grid / t_max).clamp_min(0)
    if kind == "exp":
        return torch.exp(-grid / tau)
    return torch.sigmoid(-(grid - t_max / 2) / tau)


def integral_cross_entropy(v: Tensor, grid: Tensor, labels: Tensor, *, weighting: str = "exp",
                           tau_w: float | None = None, scale: float = 1.0) -> Tensor:
    """Loss shaping: cross-entropy on ``scale/T * integral f(t) v(t) dt`` (trapezoidal rule on ``grid``).

    Args:
        v: read-out membrane on ``grid``. grid: increasing times (seconds); ``T = grid[-1]``.
        labels: class indices. weighting: ``none``, ``linear``, ``exp`` or ``sigmoid`` (module docstring).
        tau_w: time constant of the weighting (default ``T/4``). scale: logit scale.

    Shape: v ``[B, C, G]``, grid ``[G]``, labels ``[B]`` -> ``[B]``.
    """
    logits = integral_logits(v, grid, weighting=weighting, tau_w=tau_w)
    _labels(labels, v.shape[0])
    return F.cross_entropy(scale * logits, labels, reduction="none")


def integral_logits(v: Tensor, grid: Tensor, *, weighting: str = "exp", tau_w: float | None = None) -> Tensor:
    """``1/T * integral f(t) v(t) dt`` by the trapezoidal rule. Shape: v ``[B, C, G]``, grid ``[G]`` -> ``[B, C]``."""
    check_rank("v", v, 3, layout="[B, C, G] (membrane on a time grid)")
    if grid.dim() != 1 or grid.shape[0] != v.shape[2] or grid.shape[0] < 2:
        raise SpikeforgeError(f"grid must be 1-D with G = {v.shape[2]} >= 2 points, got {tuple(grid.shape)}.")
    t_max = float(grid[-1])
    f = time_weighting(grid, weighting, t_max=t_max, tau_w=tau_w).to(v)
    return torch.trapezoid(v * f, grid.to(v), dim=2) / t_max
