r"""What every spiking model shares: the decay factor, firing, reset and refractoriness.

Each model file writes its own sub-threshold integration; firing is the same for all:

.. math::

    z_t = H(v_t - \vartheta)\,[r_t = 0], \qquad
    v_t \leftarrow \mathrm{reset}(v_t, z_t), \qquad
    r_{t+1} = \begin{cases} n_\mathrm{ref} & z_t = 1 \\ \max(r_t - 1, 0) & \text{else} \end{cases}

with the reset chosen once, when the neuron is built:

* ``"subtract"``: :math:`v \leftarrow v - z\,\vartheta` (keeps the overshoot),
* ``"value"``: :math:`v \leftarrow (1 - z)\,v + z\,v_\mathrm{reset}`,
* ``"none"``: :math:`v` unchanged.

While a neuron is refractory (:math:`r_t > 0`) its membrane is held and it cannot fire.

**Several spikes per step** (``max_spikes = K > 1``, as digital chips such as Xylo emit up to 31): a neuron
driven far above threshold emits :math:`n_t = \min(\lfloor v_t/\vartheta \rfloor, K)` spikes when
:math:`v_t > \vartheta` (else 0), and ``"subtract"`` removes :math:`n_t\,\vartheta`. The first spike carries
the surrogate gradient; the extra ones, :math:`n_t - 1`, pass the slope :math:`1/\vartheta` of
:math:`v/\vartheta` straight through where they are between 1 and :math:`K - 1`. With :math:`\vartheta \le 0`
only one spike is emitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from ..core.checks import SpikeforgeError, check_positive, check_positive_int
from ..core.surrogate import Surrogate

__all__ = ["RESET_MODES", "FireSpec", "decay", "fire", "refractory_steps"]

RESET_MODES = ("subtract", "value", "none")


def decay(tau: Tensor | float, dt: float) -> Tensor:
    r"""Per-step decay :math:`\exp(-\Delta t/\tau)` of a time constant ``tau`` (seconds)."""
    tau = torch.as_tensor(tau)
    return torch.exp(-dt / tau)


def refractory_steps(t_ref: float, dt: float) -> int:
    """Number of whole steps covered by a refractory period ``t_ref`` (seconds), rounded."""
    if t_ref < 0 or not math.isfinite(t_ref):
        raise SpikeforgeError(f"refractory must be a finite duration >= 0 seconds, got {t_ref!r}.")
    check_positive("dt", dt)
    return int(round(t_ref / dt))


def _reset_subtract(v: Tensor, z: Tensor, v_th: Tensor, v_reset: Tensor) -> Tensor:
    return v - z * v_th


def _reset_value(v: Tensor, z: Tensor, v_th: Tensor, v_reset: Tensor) -> Tensor:
    return v - z * (v - v_reset)


def _reset_none(v: Tensor, z: Tensor, v_th: Tensor, v_reset: Tensor) -> Tensor:
    return v


_RESETS = {"subtract": _reset_subtract, "value": _reset_value, "none": _reset_none}


@dataclass(frozen=True)
class FireSpec:
    """How a spiking model fires; settled when the neuron is built.

    Args:
        surrogate: spike function (Heaviside forward, surrogate derivative backward).
        reset: ``"subtract"``, ``"value"`` or ``"none"``.
        refractory: refractory period in whole time steps (0: none).
        detach_reset: stop gradients through the reset term (recommended for surrogate training;
            Zenke & Vogels 2021).
        max_spikes: spikes a neuron may emit in one step (1: binary spikes; see the module docstring).
    """

    surrogate: Surrogate = field(default_factory=Surrogate)
    reset: str = "subtract"
    refractory: int = 0
    detach_reset: bool = True
    max_spikes: int = 1

    def __post_init__(self) -> None:
        if self.reset not in _RESETS:
            raise SpikeforgeError(f"reset must be one of {RESET_MODES}, got {self.reset!r}.")
        check_positive_int("refractory (steps)", self.refractory, allow_zero=True)
        check_positive_int("max_spikes", self.max_spikes)
        object.__setattr__(self, "_reset_fn", _RESETS[self.reset])


def _extra_spikes(v: Tensor, v_th: Tensor, z: Tensor, max_spikes: int) -> Tensor:
    """Spikes beyond the first, ``clamp(floor(v / v_th) - 1, 0, K - 1)`` where the first fired and ``v_th > 0``,
    with the straight-through slope ``1 / v_th`` inside that range."""
    fired = (z.detach() > 0) & (v_th > 0)
    ratio = v / torch.where(v_th > 0, v_th, torch.ones_like(v_th))
    extra = (torch.floor(ratio.detach()) - 1).clamp(0, max_spikes - 1)
    inside = fired & (ratio.detach() >= 2) & (ratio.detach() < max_spikes)
    slope = (ratio - ratio.detach()) * inside.to(v.dtype)
    return torch.where(fired, extra, torch.zeros_like(extra)) + slope


class Fired(NamedTuple):
    """Result of :func:`fire`: spikes, membrane after reset, refractory counter (or None)."""

    z: Tensor
    v: Tensor
    ref: Tensor | None


def fire(
    spec: FireSpec,
    v: Tensor,
    v_th: Tensor,
    v_reset: Tensor,
    ref: Tensor | None,
    v_before: Tensor,
) -> Fired:
    """Spike, reset and refractoriness after a model has integrated ``v_before -> v``.

    ``v_before`` is the membrane at the start of the step: refractory neurons keep it.
    """
    if ref is not None:
        active = ref <= 0
        v = torch.where(active, v, v_before)
        z = spec.surrogate(v - v_th) * active.to(v.dtype)
    else:
        z = spec.surrogate(v - v_th)
    z_first = z
    if spec.max_spikes > 1:
        z = z + _extra_spikes(v, v_th, z, spec.max_spikes)
    # "value" resets once however many spikes were emitted; "subtract" removes one threshold per spike
    zr = z_first if spec.reset == "value" else z
    zr = zr.detach() if spec.detach_reset else zr
    v = spec._reset_fn(v, zr, v_th, v_reset)  # type: ignore[attr-defined]
    if ref is not None:
        ref = torch.where(z.detach() > 0, torch.full_like(ref, spec.refractory), (ref - 1).clamp(min=0))
    return Fired(z, v, ref)
