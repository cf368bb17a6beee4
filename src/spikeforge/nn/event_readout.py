r"""A non-spiking leaky-integrator read-out of spike times, in closed form.

The read-out neurons follow the event engine's current-based model without a threshold
(:mod:`spikeforge.sim.exact_times`): input spikes at :math:`t_{i,m}` with weights :math:`w_{ji}` give

.. math::

    v_j(t) = \sum_i w_{ji} \sum_m K(t - t_{i,m}),

a differentiable function of the weights and of the input spike times, so a loss on :math:`v` passes exact
gradients back to the spiking layer below (through EventProp or the exact spike-time rebuild there).
:class:`EventLI` evaluates :math:`v` on a fixed time grid; the max-membrane and integral losses of
:mod:`spikeforge.train.time_losses` read that grid. :math:`K` is a sum of exponentials (times ``s`` when
``tau_mem == tau_syn``), so the evaluation is separable: each spike is binned at the next grid point and a decay
matrix carries the bins forward (:func:`membrane_on_grid`), instead of evaluating every (spike, grid point) pair
(:func:`membrane_on_grid_direct`, the reference).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core.checks import SpikeforgeError, check_positive, check_positive_int, check_rank
from ..sim.exact_times import psp_kernel

__all__ = ["EventLI", "exponential_terms", "membrane_on_grid", "membrane_on_grid_direct"]


def membrane_on_grid(times: Tensor, weight: Tensor, grid: Tensor, *, tau_mem: float, tau_syn: float) -> Tensor:
    """Membrane of leaky integrators driven by spike times, at the times in ``grid`` (seconds).

    Shape: times ``[B, n_in, K]`` (``+inf`` = no spike), weight ``[n_out, n_in]``, grid ``[G]`` ->
    ``[B, n_out, G]``.
    """
    check_rank("times", times, 3, layout="[B, n_in, K]")
    if weight.shape[1] != times.shape[1]:
        raise SpikeforgeError(f"weight must be [n_out, n_in={times.shape[1]}], got {tuple(weight.shape)}.")
    terms = exponential_terms(tau_mem, tau_syn)
    if terms is None or grid.numel() == 0 or bool((grid[1:] < grid[:-1]).any()):
        return membrane_on_grid_direct(times, weight, grid, tau_mem=tau_mem, tau_syn=tau_syn)
    return _separable(times, weight, grid, terms)


def membrane_on_grid_direct(times: Tensor, weight: Tensor, grid: Tensor, *, tau_mem: float,
                            tau_syn: float) -> Tensor:
    """:func:`membrane_on_grid` by evaluating :math:`K` for every (spike, grid point) pair: ``[B, n_in, K, G]``
    work. The reference of the separable evaluation, and the path for nearly equal time constants."""
    s = grid[None, None, None, :] - times[:, :, :, None]  # [B, I, K, G]
    k = psp_kernel(s, tau_mem=tau_mem, tau_syn=tau_syn).sum(dim=2)  # [B, I, G]
    return torch.einsum("big,ji->bjg", k, weight)


#: time constants closer than this (relative) are not split into a difference of exponentials (it would cancel)
SPLIT_MIN_GAP = 0.05


def exponential_terms(tau_mem: float, tau_syn: float) -> list[tuple[float, int, float]] | None:
    r""":math:`K(s) = \sum_k c_k\, s^{p_k} e^{-s/\tau_k}` as ``[(c_k, p_k, tau_k)]``, or None where the time
    constants are so close (but not equal) that the difference of exponentials would cancel."""
    if tau_syn == 0:
        return [(1.0 / tau_mem, 0, tau_mem)]
    if tau_syn == tau_mem:
        return [(1.0 / tau_mem ** 2, 1, tau_mem)]
    if abs(tau_mem - tau_syn) < SPLIT_MIN_GAP * max(tau_mem, tau_syn):
        return None
    c = 1.0 / (tau_mem - tau_syn)
    return [(c, 0, tau_mem), (-c, 0, tau_syn)]


def _separable(times: Tensor, weight: Tensor, grid: Tensor, terms: list[tuple[float, int, float]]) -> Tensor:
    r"""Each exponential term is separable: :math:`e^{-(t_g - t)/\tau} = e^{-(t_g - t_h)/\tau}\,e^{-(t_h - t)/\tau}`
    with :math:`t_h` the first grid point at or after the spike. So every spike adds its weight column times
    :math:`e^{-(t_h - t)/\tau}` (at most 1) to bin :math:`h` (``[B, G, n_out]``), and one ``[G, G]``
    lower-triangular decay matrix carries the bins to every later grid point: ``B n_in K n_out + B G^2 n_out`` work
    instead of ``B n_in K G (1 + n_out)``, and nothing overflows. Exact up to rounding, differentiable in times and
    weights."""
    b, n_in, k = times.shape
    g, n_out = grid.numel(), weight.shape[0]
    t = times.reshape(b, n_in * k)
    valid = torch.isfinite(t) & (t < grid[-1])  # a spike at or after the last grid point adds nothing
    bins = torch.searchsorted(grid, torch.where(valid, t, grid[0]).contiguous(), right=False).clamp(max=g - 1)
    t_bin = grid[bins]
    lag = t_bin - torch.where(valid, t, t_bin)  # >= 0; 0 where not valid
    cols = weight.t().repeat_interleave(k, dim=0)  # [n_in * K, n_out]: the weight column of each spike slot
    index = bins.unsqueeze(-1).expand(b, n_in * k, n_out)
    gap = (grid[:, None] - grid[None, :]).clamp(min=0)  # [G, G]: t_g - t_h
    below = grid[:, None] >= grid[None, :]

    def carried(values: Tensor, decay: Tensor) -> Tensor:
        binned = grid.new_zeros(b, g, n_out).scatter_add(1, index, values.unsqueeze(-1) * cols)
        return torch.einsum("gh,bhj->bjg", decay, binned)

    out = None
    for c, power, tau in terms:
        a = torch.where(valid, torch.exp(-lag / tau), torch.zeros_like(lag))  # [B, n_in * K]
        decay = torch.where(below, torch.exp(-gap / tau), torch.zeros_like(gap))  # [G, G]
        v = carried(a, decay * gap if power else decay)
        if power:  # s e^{-s/tau} with s = (t_g - t_h) + (t_h - t)
            v = v + carried(a * lag, decay)
        out = c * v if out is None else out + c * v
    return out


class EventLI(nn.Module):
    """Leaky-integrator read-out of spike times (no threshold, no reset).

    Args:
        n_in, n_out: numbers of inputs and read-out neurons.
        tau_mem, tau_syn: time constants in seconds (``tau_syn = 0``: plain leaky integrator).
        t_max: end of the read-out window in seconds; the membrane is evaluated at ``steps`` evenly spaced times
            in ``(0, t_max]``.
        steps: grid points.
        init_scale: weights are drawn from ``N(0, (init_scale / sqrt(n_in))^2)``; default: such that one input
            spike of weight ``1/sqrt(n_in)`` gives a peak of order 1.
        generator: random generator for the initial weights.

    Shape:
        ``[B, n_in, K]`` -> ``[B, n_out, steps]`` (the membrane at ``self.grid``).
    """

    def __init__(self, n_in: int, n_out: int, *, tau_mem: float, tau_syn: float, t_max: float, steps: int = 100,
                 init_scale: float | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__()
        check_positive_int("n_in", n_in)
        check_positive_int("n_out", n_out)
        check_positive("tau_mem", tau_mem)
        check_positive("t_max", t_max)
        if tau_syn < 0:
            raise SpikeforgeError(f"tau_syn must be >= 0, got {tau_syn}.")
        self.n_in, self.n_out, self.steps = n_in, n_out, check_positive_int("steps", steps)
        self.tau_mem, self.tau_syn, self.t_max = float(tau_mem), float(tau_syn), float(t_max)
        if init_scale is None:  # peak of K, so that a unit input gives a peak near 1
            peak = float(psp_kernel(torch.linspace(0, 5 * max(tau_mem, tau_syn), 2001, dtype=torch.float64),
                                    tau_mem=self.tau_mem, tau_syn=self.tau_syn).max())
            init_scale = 1.0 / peak
        self.weight = nn.Parameter(torch.randn(n_out, n_in, generator=generator) * init_scale / math.sqrt(n_in))
        self.register_buffer("grid", torch.linspace(t_max / steps, t_max, steps), persistent=False)

    def forward(self, times: Tensor) -> Tensor:
        """The membrane on the grid."""
        return membrane_on_grid(times, self.weight, self.grid.to(times.dtype), tau_mem=self.tau_mem,
                                tau_syn=self.tau_syn)

    def extra_repr(self) -> str:
        return (f"n_in={self.n_in}, n_out={self.n_out}, tau_mem={self.tau_mem}, tau_syn={self.tau_syn}, "
                f"t_max={self.t_max}, steps={self.steps}")
