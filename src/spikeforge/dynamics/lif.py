r"""Leaky integrate-and-fire (LIF) neuron.

Continuous form (NIR ``LIF`` with :math:`R = 1`):
:math:`\tau_\mathrm{mem}\,\dot v = (v_\mathrm{leak} - v) + x`.

Exact update for an input held constant over one step of length :math:`\Delta t`
(zero-order hold), with :math:`\alpha = e^{-\Delta t/\tau_\mathrm{mem}}`:

.. math::

    v_t = v_\mathrm{leak} + \alpha\,(v_{t-1} - v_\mathrm{leak}) + (1 - \alpha)\,x_t

followed by firing, reset and refractoriness (:mod:`spikeforge.dynamics.common`). The DC gain is 1: a
constant input :math:`x` drives the membrane towards :math:`v_\mathrm{leak} + x`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .common import FireSpec, decay, fire

__all__ = ["LIFParams", "LIFState", "init_state", "integrate", "make_params", "step"]


class LIFParams(NamedTuple):
    """Per-step parameters (tensors broadcastable to the neuron shape)."""

    alpha: Tensor
    v_th: Tensor
    v_leak: Tensor
    v_reset: Tensor


class LIFState(NamedTuple):
    """Membrane potential and refractory counter (None without refractoriness)."""

    v: Tensor
    ref: Tensor | None = None


def make_params(
    *, tau_mem: Tensor | float, v_th: Tensor | float, v_leak: Tensor | float,
    v_reset: Tensor | float, dt: float,
) -> LIFParams:
    """Per-step parameters from physical ones (seconds)."""
    return LIFParams(decay(tau_mem, dt), torch.as_tensor(v_th), torch.as_tensor(v_leak),
                     torch.as_tensor(v_reset))


def integrate(alpha: Tensor, v_leak: Tensor, v: Tensor, x: Tensor) -> Tensor:
    """Sub-threshold update of a leaky membrane over one step (shared with the LI read-out)."""
    return v_leak + alpha * (v - v_leak) + (1.0 - alpha) * x


def init_state(p: LIFParams, like: Tensor, *, refractory: bool) -> LIFState:
    """Resting state (``v = v_leak``) for inputs shaped like ``like`` ([B, *features])."""
    v = torch.zeros_like(like) + p.v_leak.to(like)
    ref = torch.zeros(like.shape, dtype=torch.int32, device=like.device) if refractory else None
    return LIFState(v, ref)


def step(spec: FireSpec, p: LIFParams, s: LIFState, x: Tensor) -> tuple[Tensor, LIFState]:
    """One time step: returns spikes ``z_t`` and the new state."""
    v = integrate(p.alpha, p.v_leak, s.v, x)
    f = fire(spec, v, p.v_th, p.v_reset, s.ref, s.v)
    return f.z, LIFState(f.v, f.ref)
