"""Rate codings: a static value becomes a spike probability (Poisson) or a constant input current.

Equations, for a static input ``x`` of shape ``[B, *features]`` and ``T = steps``:

* Poisson (Bernoulli per step) coding, with independent uniform draws ``u_t ~ U[0, 1)``::

      p     = clamp(gain * x, 0, 1)
      z_t   = 1[u_t < p]                    t = 0 .. T-1

  so ``E[z_t] = p`` and the expected spike count over ``T`` steps is ``T * p``.

* Constant-current ("direct") coding repeats the analogue value on every step::

      c_t = x                               t = 0 .. T-1

  and leaves it to the first neuron layer to turn the current into spikes.

* Event-count coding (what an event-driven chip such as Xylo takes: a whole number of input events per
  channel and step, at most ``max_events``) spreads the rate ``r = clamp(gain * x, 0, max_events)`` over the
  steps by cumulative rounding (sigma-delta), so the count over the first ``t`` steps is ``round(t r)``::

      n_t = round((t + 1) r) - round(t r)              t = 0 .. T-1

  Each step gets ``floor(r)`` or ``ceil(r)`` events, and the whole sequence resolves ``x`` to
  ``1 / (gain T)`` rather than ``1 / gain``.

Randomness comes only from the optional ``generator`` keyword, so a seeded ``torch.Generator``
reproduces the same spike trains.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from spikeforge.core.checks import (
    SpikeforgeError,
    check_finite,
    check_min_rank,
    check_positive,
    check_positive_int,
    describe,
)

__all__ = ["ConstantCurrent", "EventCounts", "Poisson", "constant_current", "event_counts", "poisson"]


def _as_float(x: Tensor) -> Tensor:
    """Return ``x`` as a floating-point tensor (integer data such as uint8 images is converted)."""
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _check_generator(generator: torch.Generator | None, x: Tensor) -> None:
    """Raise unless ``generator`` is None or lives on the same device type as ``x``."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise SpikeforgeError(
            f"generator must be a torch.Generator or None, got {describe(generator)}."
        )
    if generator.device.type != x.device.type:
        raise SpikeforgeError(
            f"generator must live on the same device as x ({x.device.type}), got a generator on "
            f"{generator.device.type}. Create it with torch.Generator(device=x.device)."
        )


def poisson(
    x: Tensor,
    steps: int,
    *,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Poisson (Bernoulli-per-step) rate coding of a static input.

    Every element fires on each step independently with probability ``clamp(gain * x, 0, 1)``.
    Values above 1 after the gain saturate at one spike per step.

    Args:
        x: Non-negative, finite intensities (integer data is converted to float).
        steps: Number of time steps ``T`` (>= 1).
        gain: Positive factor applied to ``x`` before clamping to a probability.
        generator: Optional random generator (same device as ``x``) for reproducible spikes.

    Returns:
        Float spike tensor of zeros and ones, with the dtype of ``x`` (default float for integers).

    Shape:
        - x: ``[B, *features]``
        - output: ``[T, B, *features]``

    Raises:
        SpikeforgeError: if ``x`` has rank 0, holds NaN/inf or negative values, or if ``steps``,
            ``gain`` or ``generator`` are invalid.
    """
    check_min_rank("x", x, 1, "[B, *features]")
    steps = check_positive_int("steps", steps)
    check_positive("gain", gain)
    _check_generator(generator, x)
    x = _as_float(x)
    check_finite("x", x)
    if bool((x < 0).any()):
        idx = tuple(int(i) for i in (x < 0).nonzero()[0])
        raise SpikeforgeError(
            f"x must be non-negative (an intensity or rate), but element {idx} of the "
            f"{describe(x)} is {x[idx].item()}. Shift or rescale the data to [0, 1] first."
        )
    p = (gain * x).clamp(0.0, 1.0)
    u = torch.rand((steps, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return (u < p).to(x.dtype)


def constant_current(x: Tensor, steps: int) -> Tensor:
    """Direct coding: repeat the analogue input on every time step.

    The result is a new tensor (not a view), and gradients flow back to ``x``.

    Args:
        x: Finite input values (integer data is converted to float).
        steps: Number of time steps ``T`` (>= 1).

    Returns:
        ``x`` repeated ``T`` times along a new leading time axis.

    Shape:
        - x: ``[B, *features]``
        - output: ``[T, B, *features]``

    Raises:
        SpikeforgeError: if ``x`` has rank 0 or holds NaN/inf, or if ``steps`` is not an int >= 1.
    """
    check_min_rank("x", x, 1, "[B, *features]")
    steps = check_positive_int("steps", steps)
    x = _as_float(x)
    check_finite("x", x)
    return x.unsqueeze(0).repeat(steps, *([1] * x.dim()))


def event_counts(x: Tensor, steps: int, *, gain: float = 15.0, max_events: int = 15) -> Tensor:
    """Event-count coding: ``r = clamp(gain * x, 0, max_events)`` events per channel and step on average,
    spread by cumulative rounding, ``n_t = round((t + 1) r) - round(t r)`` (see the module docstring).

    The counts are whole numbers held in a float tensor, so the same sequence feeds a float model and an
    integer chip emulator (``.to(torch.int64)``) with identical values. Xylo takes at most 15 events per
    input channel and step (``max_events=15``); a binary spike input is ``max_events=1``. Rounding has no
    gradient: use it for inputs, not inside a network.

    Args:
        x: Non-negative, finite intensities (integer data is converted to float).
        steps: Number of time steps ``T`` (>= 1).
        gain: Events per step for an input of 1.0 (before clamping).
        max_events: Largest count per channel and step (>= 1).

    Shape:
        - x: ``[B, *features]``
        - output: ``[T, B, *features]``

    Raises:
        SpikeforgeError: if ``x`` has rank 0, holds NaN/inf or negative values, or if ``steps``, ``gain``
            or ``max_events`` are invalid.
    """
    check_min_rank("x", x, 1, "[B, *features]")
    steps = check_positive_int("steps", steps)
    check_positive("gain", gain)
    max_events = check_positive_int("max_events", max_events)
    x = _as_float(x)
    check_finite("x", x)
    if bool((x < 0).any()):
        idx = tuple(int(i) for i in (x < 0).nonzero()[0])
        raise SpikeforgeError(
            f"x must be non-negative (an intensity), but element {idx} of the {describe(x)} is "
            f"{x[idx].item()}. Shift or rescale the data to [0, 1] first."
        )
    r = (gain * x).clamp(0.0, float(max_events)).to(torch.float64)
    t = torch.arange(steps + 1, dtype=torch.float64, device=x.device).view(-1, *([1] * x.dim()))
    cum = torch.floor(t * r + 0.5)  # round half up, the same on every platform
    return (cum[1:] - cum[:-1]).to(x.dtype)


class EventCounts(nn.Module):
    """Module form of :func:`event_counts`.

    Shape:
        - input: ``[B, *features]``
        - output: ``[T, B, *features]``
    """

    def __init__(self, steps: int, *, gain: float = 15.0, max_events: int = 15) -> None:
        super().__init__()
        self.steps = check_positive_int("steps", steps)
        check_positive("gain", gain)
        self.gain = float(gain)
        self.max_events = check_positive_int("max_events", max_events)

    def forward(self, x: Tensor) -> Tensor:
        """Encode ``x`` as event counts."""
        return event_counts(x, self.steps, gain=self.gain, max_events=self.max_events)

    def extra_repr(self) -> str:
        return f"steps={self.steps}, gain={self.gain}, max_events={self.max_events}"


class Poisson(nn.Module):
    """Module form of :func:`poisson`; the settings are fixed at construction.

    Args:
        steps: Number of time steps ``T``.
        gain: Factor applied to the input before clamping to a probability.
        generator: Optional random generator used on every call.

    Shape:
        - input: ``[B, *features]``
        - output: ``[T, B, *features]``
    """

    def __init__(
        self, steps: int, *, gain: float = 1.0, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.steps = check_positive_int("steps", steps)
        check_positive("gain", gain)
        self.gain = gain
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        """Encode ``x`` as Poisson spike trains."""
        return poisson(x, self.steps, gain=self.gain, generator=self.generator)

    def extra_repr(self) -> str:
        return f"steps={self.steps}, gain={self.gain}"


class ConstantCurrent(nn.Module):
    """Module form of :func:`constant_current`.

    Args:
        steps: Number of time steps ``T``.

    Shape:
        - input: ``[B, *features]``
        - output: ``[T, B, *features]``
    """

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = check_positive_int("steps", steps)

    def forward(self, x: Tensor) -> Tensor:
        """Repeat ``x`` on every time step."""
        return constant_current(x, self.steps)

    def extra_repr(self) -> str:
        return f"steps={self.steps}"
