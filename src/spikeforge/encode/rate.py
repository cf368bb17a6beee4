"""Rate codings: a static value becomes a spike probability (Poisson) or a constant input current.

Equations, for a static input ``x`` of shape ``[B, *features]`` and ``T = steps``:

* Poisson (Bernoulli per step) coding, with independent uniform draws ``u_t ~ U[0, 1)``::

      p     = clamp(gain * x, 0, 1)
      z_t   = 1[u_t < p]                    t = 0 .. T-1

  so ``E[z_t] = p`` and the expected spike count over ``T`` steps is ``T * p``.

* Constant-current ("direct") coding repeats the analogue value on every step::

      c_t = x                               t = 0 .. T-1

  and leaves it to the first neuron layer to turn the current into spikes.

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

__all__ = ["ConstantCurrent", "Poisson", "constant_current", "poisson"]


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
