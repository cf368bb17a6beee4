r"""Analog LIF neuron: linear LIF increment passed through a transfer curve, with per-neuron gain mismatch.

The linear (time-domain) LIF of :mod:`spikeforge.dynamics.lif` adds, in one step,

.. math::

    \Delta_t = v_\mathrm{leak} + \alpha\,(v_{t-1} - v_\mathrm{leak}) + (1 - \alpha)\,x_t - v_{t-1},
    \qquad \alpha = e^{-\Delta t/\tau_\mathrm{mem}}.

A voltage-domain analog neuron realises a distorted increment. With a transfer curve :math:`c(v, \Delta)`
(see :mod:`spikeforge.analog.neuron`) and a per-neuron mismatch gain :math:`\gamma_n` (1: none):

.. math::

    v_t = v_{t-1} + c\!\left(v_{t-1},\, \gamma_n\,\Delta_t\right)

followed by firing, reset and refractoriness (:mod:`spikeforge.dynamics.common`). The gain scales the
linear increment *before* the curve, so a curve that keeps the membrane inside supply rails still does so
under mismatch (the rails are absolute; the mismatch is in the integrating current).

With no curve (``curve=None``, or a curve whose ``is_linear`` attribute is true) and no mismatch
(``gain=None``) the update is computed by :func:`spikeforge.dynamics.lif.integrate` itself, so the neuron
equals :mod:`spikeforge.dynamics.lif` bit for bit.

A curve with a ``bounds = (lo, hi)`` attribute (e.g. supply rails) promises never to carry the membrane
across them; the update is then clipped to them (never past the start-of-step value, so a membrane already
outside stays where it is) to absorb floating-point rounding of :math:`v + c`.

This module imports only :mod:`spikeforge.core`'s level: the curve travels in the parameters as a plain
callable ``curve(v, dv) -> realised dv``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ..core.checks import SpikeforgeError, describe
from .common import FireSpec, decay, fire
from .lif import LIFState, integrate

__all__ = ["AnalogLIFParams", "AnalogLIFState", "init_state", "make_params", "step"]

Curve = Callable[[Tensor, Tensor], Tensor]


class AnalogLIFParams(NamedTuple):
    """Per-step parameters: LIF tensors, the per-neuron gain (None: no mismatch) and the curve (None: linear)."""

    alpha: Tensor
    v_th: Tensor
    v_leak: Tensor
    v_reset: Tensor
    gain: Tensor | None = None
    curve: Curve | None = None


AnalogLIFState = LIFState
"""Membrane potential and refractory counter, as for the linear LIF."""


def make_params(
    *, tau_mem: Tensor | float, v_th: Tensor | float, v_leak: Tensor | float,
    v_reset: Tensor | float, dt: float, gain: Tensor | None = None, curve: Curve | None = None,
) -> AnalogLIFParams:
    """Per-step parameters from physical ones (seconds); ``curve(v, dv)`` gives the realised increment."""
    if curve is not None and not callable(curve):
        raise SpikeforgeError(f"curve must be callable as curve(v, dv) -> Tensor or None, got {describe(curve)}.")
    if getattr(curve, "is_linear", False):
        curve = None
    if gain is not None:
        gain = torch.as_tensor(gain)
        if not bool(torch.isfinite(gain).all()) or bool((gain < 0).any()):
            raise SpikeforgeError(f"gain must be finite and >= 0 per neuron, got {describe(gain)} "
                                  f"with min {gain.min().item()!r}.")
    return AnalogLIFParams(decay(tau_mem, dt), torch.as_tensor(v_th), torch.as_tensor(v_leak),
                           torch.as_tensor(v_reset), gain, curve)


def init_state(p: AnalogLIFParams, like: Tensor, *, refractory: bool) -> AnalogLIFState:
    """Resting state (``v = v_leak``) for inputs shaped like ``like`` ([B, *features])."""
    v = torch.zeros_like(like) + p.v_leak.to(like)
    ref = torch.zeros(like.shape, dtype=torch.int32, device=like.device) if refractory else None
    return AnalogLIFState(v, ref)


def step(spec: FireSpec, p: AnalogLIFParams, s: AnalogLIFState, x: Tensor) -> tuple[Tensor, AnalogLIFState]:
    """One time step: returns spikes ``z_t`` and the new state."""
    v_lin = integrate(p.alpha, p.v_leak, s.v, x)
    if p.curve is None and p.gain is None:
        v = v_lin
    else:
        dv = v_lin - s.v
        if p.gain is not None:
            dv = p.gain * dv
        v = s.v + (dv if p.curve is None else p.curve(s.v, dv))
        bounds = getattr(p.curve, "bounds", None)
        if bounds is not None:  # rounding guard only: such a curve never crosses its bounds in exact arithmetic
            lo, hi = bounds
            v = torch.minimum(torch.maximum(v, torch.clamp(s.v, max=lo)), torch.clamp(s.v, min=hi))
    f = fire(spec, v, p.v_th, p.v_reset, s.ref, s.v)
    return f.z, AnalogLIFState(f.v, f.ref)
