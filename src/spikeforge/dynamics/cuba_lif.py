r"""Current-based LIF neuron: a synaptic current filters the input, the membrane integrates it.

Continuous form (NIR ``CubaLIF`` with :math:`R = 1`, :math:`w_\mathrm{in} = 1`):
:math:`\tau_\mathrm{syn}\,\dot I = -I + x`, :math:`\tau_\mathrm{mem}\,\dot v = (v_\mathrm{leak} - v) + I`.

Discrete update (exponential Euler, current first), with :math:`\beta = e^{-\Delta t/\tau_\mathrm{syn}}`
and :math:`\alpha = e^{-\Delta t/\tau_\mathrm{mem}}`:

.. math::

    I_t = \beta\,I_{t-1} + (1 - \beta)\,x_t, \qquad
    v_t = v_\mathrm{leak} + \alpha\,(v_{t-1} - v_\mathrm{leak}) + (1 - \alpha)\,I_t

followed by firing, reset and refractoriness. Both stages have DC gain 1.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .common import FireSpec, decay, fire
from .lif import integrate

__all__ = ["CubaLIFParams", "CubaLIFState", "init_state", "make_params", "step"]


class CubaLIFParams(NamedTuple):
    """Per-step parameters."""

    alpha: Tensor
    beta: Tensor
    v_th: Tensor
    v_leak: Tensor
    v_reset: Tensor


class CubaLIFState(NamedTuple):
    """Synaptic current, membrane potential, refractory counter (or None)."""

    i: Tensor
    v: Tensor
    ref: Tensor | None = None


def make_params(
    *, tau_mem: Tensor | float, tau_syn: Tensor | float, v_th: Tensor | float,
    v_leak: Tensor | float, v_reset: Tensor | float, dt: float,
) -> CubaLIFParams:
    """Per-step parameters from physical ones (seconds)."""
    return CubaLIFParams(decay(tau_mem, dt), decay(tau_syn, dt), torch.as_tensor(v_th),
                         torch.as_tensor(v_leak), torch.as_tensor(v_reset))


def init_state(p: CubaLIFParams, like: Tensor, *, refractory: bool) -> CubaLIFState:
    """Resting state (``I = 0``, ``v = v_leak``)."""
    v = torch.zeros_like(like) + p.v_leak.to(like)
    ref = torch.zeros(like.shape, dtype=torch.int32, device=like.device) if refractory else None
    return CubaLIFState(torch.zeros_like(like), v, ref)


def step(
    spec: FireSpec, p: CubaLIFParams, s: CubaLIFState, x: Tensor
) -> tuple[Tensor, CubaLIFState]:
    """One time step: returns spikes and the new state."""
    i = p.beta * s.i + (1.0 - p.beta) * x
    v = integrate(p.alpha, p.v_leak, s.v, i)
    f = fire(spec, v, p.v_th, p.v_reset, s.ref, s.v)
    return f.z, CubaLIFState(i, f.v, f.ref)
