r"""Adaptive LIF with an after-hyperpolarising (AHP) current.

Each spike adds :math:`b` to an AHP current :math:`a` that decays with :math:`\tau_\mathrm{ahp}` and is
subtracted from the input, so a neuron that fired recently is harder to drive: a memory over
:math:`\tau_\mathrm{ahp}`, much longer than :math:`\tau_\mathrm{mem}` (the LSTM-like AHP neuron of the
seeds). With :math:`\rho = e^{-\Delta t/\tau_\mathrm{ahp}}` and :math:`\alpha = e^{-\Delta t/\tau_\mathrm{mem}}`:

.. math::

    a_t^- = \rho\,a_{t-1}, \qquad
    v_t = v_\mathrm{leak} + \alpha\,(v_{t-1} - v_\mathrm{leak}) + (1 - \alpha)\,(x_t - a_t^-), \qquad
    z_t = \text{fire}(v_t), \qquad a_t = a_t^- + b\,z_t

with firing, reset and refractoriness as in :mod:`spikeforge.dynamics.common`. :math:`b \ge 0` gives
adaptation, :math:`b < 0` facilitation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .common import FireSpec, decay, fire
from .lif import integrate

__all__ = ["AdaptiveLIFParams", "AdaptiveLIFState", "init_state", "make_params", "step"]


class AdaptiveLIFParams(NamedTuple):
    """Per-step parameters."""

    alpha: Tensor
    rho: Tensor
    b: Tensor
    v_th: Tensor
    v_leak: Tensor
    v_reset: Tensor


class AdaptiveLIFState(NamedTuple):
    """AHP current, membrane potential, refractory counter (or None)."""

    a: Tensor
    v: Tensor
    ref: Tensor | None = None


def make_params(
    *, tau_mem: Tensor | float, tau_ahp: Tensor | float, b: Tensor | float, v_th: Tensor | float,
    v_leak: Tensor | float, v_reset: Tensor | float, dt: float,
) -> AdaptiveLIFParams:
    """Per-step parameters from physical ones (seconds)."""
    return AdaptiveLIFParams(decay(tau_mem, dt), decay(tau_ahp, dt), torch.as_tensor(b),
                             torch.as_tensor(v_th), torch.as_tensor(v_leak),
                             torch.as_tensor(v_reset))


def init_state(p: AdaptiveLIFParams, like: Tensor, *, refractory: bool) -> AdaptiveLIFState:
    """Resting state (no AHP current, ``v = v_leak``)."""
    v = torch.zeros_like(like) + p.v_leak.to(like)
    ref = torch.zeros(like.shape, dtype=torch.int32, device=like.device) if refractory else None
    return AdaptiveLIFState(torch.zeros_like(like), v, ref)


def step(
    spec: FireSpec, p: AdaptiveLIFParams, s: AdaptiveLIFState, x: Tensor
) -> tuple[Tensor, AdaptiveLIFState]:
    """One time step: returns spikes and the new state."""
    a = p.rho * s.a
    v = integrate(p.alpha, p.v_leak, s.v, x - a)
    f = fire(spec, v, p.v_th, p.v_reset, s.ref, s.v)
    return f.z, AdaptiveLIFState(a + p.b * f.z, f.v, f.ref)
