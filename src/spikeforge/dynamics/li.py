r"""Leaky integrator (LI) read-out: a LIF membrane that never fires (NIR ``LI`` with :math:`R = 1`).

.. math::

    v_t = v_\mathrm{leak} + \alpha\,(v_{t-1} - v_\mathrm{leak}) + (1 - \alpha)\,x_t,
    \qquad \alpha = e^{-\Delta t/\tau_\mathrm{mem}}

The output at every step is the membrane :math:`v_t` (read out by its maximum, mean or last value).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .common import decay
from .lif import integrate

__all__ = ["LIParams", "LIState", "init_state", "make_params", "step"]


class LIParams(NamedTuple):
    """Per-step parameters."""

    alpha: Tensor
    v_leak: Tensor


class LIState(NamedTuple):
    """Membrane potential."""

    v: Tensor


def make_params(*, tau_mem: Tensor | float, v_leak: Tensor | float, dt: float) -> LIParams:
    """Per-step parameters from physical ones (seconds)."""
    return LIParams(decay(tau_mem, dt), torch.as_tensor(v_leak))


def init_state(p: LIParams, like: Tensor, *, refractory: bool = False) -> LIState:
    """Resting state ``v = v_leak``."""
    return LIState(torch.zeros_like(like) + p.v_leak.to(like))


def step(spec: object, p: LIParams, s: LIState, x: Tensor) -> tuple[Tensor, LIState]:
    """One time step: returns the membrane ``v_t`` (as output) and the new state."""
    v = integrate(p.alpha, p.v_leak, s.v, x)
    return v, LIState(v)
