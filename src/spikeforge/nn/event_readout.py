r"""A non-spiking leaky-integrator read-out of spike times, in closed form.

The read-out neurons follow the event engine's current-based model without a threshold
(:mod:`spikeforge.sim.exact_times`): input spikes at :math:`t_{i,m}` with weights :math:`w_{ji}` give

.. math::

    v_j(t) = \sum_i w_{ji} \sum_m K(t - t_{i,m}),

a differentiable function of the weights and of the input spike times, so a loss on :math:`v` passes exact
gradients back to the spiking layer below (through EventProp or the exact spike-time rebuild there).
:class:`EventLI` evaluates :math:`v` on a fixed time grid; the max-membrane and integral losses of
:mod:`spikeforge.train.time_losses` read that grid.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core.checks import SpikeforgeError, check_positive, check_positive_int, check_rank
from ..sim.exact_times import psp_kernel

__all__ = ["EventLI", "membrane_on_grid"]


def membrane_on_grid(times: Tensor, weight: Tensor, grid: Tensor, *, tau_mem: float, tau_syn: float) -> Tensor:
    """Membrane of leaky integrators driven by spike times, at the times in ``grid`` (seconds).

    Shape: times ``[B, n_in, K]`` (``+inf`` = no spike), weight ``[n_out, n_in]``, grid ``[G]`` ->
    ``[B, n_out, G]``.
    """
    check_rank("times", times, 3, layout="[B, n_in, K]")
    if weight.shape[1] != times.shape[1]:
        raise SpikeforgeError(f"weight must be [n_out, n_in={times.shape[1]}], got {tuple(weight.shape)}.")
    s = grid[None, None, None, :] - times[:, :, :, None]  # [B, I, K, G]
    k = psp_kernel(s, tau_mem=tau_mem, tau_syn=tau_syn).sum(dim=2)  # [B, I, G]
    return torch.einsum("big,ji->bjg", k, weight)


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
