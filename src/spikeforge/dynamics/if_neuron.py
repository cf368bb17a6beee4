r"""Integrate-and-fire (IF) neuron, no leak.

.. math::

    v_t = v_{t-1} + x_t

followed by firing, reset and refractoriness (:mod:`spikeforge.dynamics.common`). ``x_t`` is the charge
delivered in one step; this equals NIR's ``IF`` (:math:`\dot v = R\,I`) with :math:`R = 1/\Delta t`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .common import FireSpec, fire

__all__ = ["IFParams", "IFState", "init_state", "make_params", "step"]


class IFParams(NamedTuple):
    """Per-step parameters."""

    v_th: Tensor
    v_reset: Tensor


class IFState(NamedTuple):
    """Membrane potential and refractory counter (None without refractoriness)."""

    v: Tensor
    ref: Tensor | None = None


def make_params(*, v_th: Tensor | float, v_reset: Tensor | float, dt: float) -> IFParams:
    """Per-step parameters (``dt`` is accepted for a uniform signature; IF has no time constant)."""
    return IFParams(torch.as_tensor(v_th), torch.as_tensor(v_reset))


def init_state(p: IFParams, like: Tensor, *, refractory: bool) -> IFState:
    """Resting state (``v = 0``) for inputs shaped like ``like``."""
    ref = torch.zeros(like.shape, dtype=torch.int32, device=like.device) if refractory else None
    return IFState(torch.zeros_like(like), ref)


def step(spec: FireSpec, p: IFParams, s: IFState, x: Tensor) -> tuple[Tensor, IFState]:
    """One time step: returns spikes and the new state."""
    v = s.v + x
    f = fire(spec, v, p.v_th, p.v_reset, s.ref, s.v)
    return f.z, IFState(f.v, f.ref)
