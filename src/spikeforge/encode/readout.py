"""Read-outs: reduce a network's output sequence over time to one value per sample and class.

For spikes ``z_t`` or membrane potentials ``v_t``, ``t = 0 .. T-1``, with step ``dt``::

    spike_count      = sum_t z_t
    max_membrane     = max_t v_t
    mean_membrane    = (1 / T) sum_t v_t
    first_spike_time = sum_t (t dt) z_t S_t + t_none S_T,     S_t = prod_{s < t} (1 - z_s)

``S_t`` is the probability-like "nothing fired before t" factor, so for binary spikes only the
first spike's term survives and the result is its index times ``dt``, or ``t_none`` (``T dt`` by
default, or the ``no_spike`` value) when the neuron never fires. Written as a product of smooth
terms, the first-spike time lets surrogate gradients of ``z`` flow back through every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from spikeforge.core.checks import SpikeforgeError, check_finite, check_min_rank, check_positive, describe

__all__ = [
    "READOUTS",
    "FirstSpikeTime",
    "MaxMembrane",
    "MeanMembrane",
    "SpikeCount",
    "decode",
    "first_spike_time",
    "max_membrane",
    "mean_membrane",
    "spike_count",
]

_LAYOUT = "[T, B, C] (or [T, B, *features])"


def spike_count(z: Tensor) -> Tensor:
    """Number of spikes of each output neuron over the sequence.

    Args:
        z: Output spikes (or surrogate spikes); differentiable.

    Returns:
        The sum over time.

    Shape:
        - z: ``[T, B, C]`` (more generally ``[T, B, *features]``)
        - output: ``[B, C]`` (``[B, *features]``)
    """
    check_min_rank("z", z, 2, _LAYOUT)
    return z.sum(dim=0)


def max_membrane(v: Tensor) -> Tensor:
    """Largest membrane potential of each output neuron over the sequence.

    Args:
        v: Membrane potentials; the gradient flows to the step of the maximum.

    Returns:
        The maximum over time.

    Shape:
        - v: ``[T, B, C]`` (more generally ``[T, B, *features]``)
        - output: ``[B, C]`` (``[B, *features]``)
    """
    check_min_rank("v", v, 2, _LAYOUT)
    return v.amax(dim=0)


def mean_membrane(v: Tensor) -> Tensor:
    """Time-averaged membrane potential of each output neuron.

    Args:
        v: Membrane potentials (floating point).

    Returns:
        The mean over time.

    Shape:
        - v: ``[T, B, C]`` (more generally ``[T, B, *features]``)
        - output: ``[B, C]`` (``[B, *features]``)
    """
    check_min_rank("v", v, 2, _LAYOUT)
    if not v.is_floating_point():
        raise SpikeforgeError(f"v must be a floating-point tensor, got {describe(v)}.")
    return v.mean(dim=0)


def first_spike_time(z: Tensor, *, dt: float = 1.0, no_spike: float | None = None) -> Tensor:
    """Time of each output neuron's first spike, differentiable through the spikes.

    Computed as ``sum_t (t dt) z_t prod_{s<t}(1 - z_s) + t_none prod_t (1 - z_t)``; for binary
    ``z`` this is exactly ``index * dt`` of the first spike, or ``t_none`` for a silent neuron.

    Args:
        z: Output spikes in ``[0, 1]`` (binary in the forward pass, typically with a surrogate
            gradient).
        dt: Time step; times are ``index * dt``.
        no_spike: Time reported for neurons that never fire; defaults to ``T * dt``.

    Returns:
        First-spike times as floats.

    Shape:
        - z: ``[T, B, C]`` (more generally ``[T, B, *features]``)
        - output: ``[B, C]`` (``[B, *features]``)

    Raises:
        SpikeforgeError: on a rank below 2, NaN/inf in ``z``, a non-positive ``dt`` or a
            non-finite ``no_spike``.
    """
    check_min_rank("z", z, 2, _LAYOUT)
    check_finite("z", z)
    check_positive("dt", dt)
    if not z.is_floating_point():
        z = z.to(torch.get_default_dtype())
    steps = z.shape[0]
    if no_spike is None:
        no_spike = steps * dt
    elif (
        isinstance(no_spike, bool)
        or not isinstance(no_spike, (int, float))
        or not math.isfinite(no_spike)
    ):
        raise SpikeforgeError(f"no_spike must be a finite number or None, got {describe(no_spike)}.")
    survive = torch.cumprod(1.0 - z, dim=0)  # S_{t+1} = prod_{s<=t} (1 - z_s)
    before = torch.cat([torch.ones_like(survive[:1]), survive[:-1]], dim=0)  # S_t
    times = torch.arange(steps, dtype=z.dtype, device=z.device) * dt
    times = times.reshape(steps, *([1] * (z.dim() - 1)))
    return (times * z * before).sum(dim=0) + no_spike * survive[-1]


READOUTS: dict[str, Callable[..., Tensor]] = {
    "spike_count": spike_count,
    "max_membrane": max_membrane,
    "mean_membrane": mean_membrane,
    "first_spike_time": first_spike_time,
}


def decode(name: str) -> Callable[..., Tensor]:
    """Return the read-out function called ``name``.

    Args:
        name: One of ``"spike_count"``, ``"max_membrane"``, ``"mean_membrane"``,
            ``"first_spike_time"``.

    Returns:
        The function, e.g. ``decode("spike_count")(z)``.

    Raises:
        SpikeforgeError: for an unknown name, listing the valid ones.
    """
    if not isinstance(name, str) or name not in READOUTS:
        raise SpikeforgeError(
            f"name must be one of {sorted(READOUTS)} (the read-out to use), got {describe(name)}."
        )
    return READOUTS[name]


class SpikeCount(nn.Module):
    """Module form of :func:`spike_count`. Shape: ``[T, B, C]`` -> ``[B, C]``."""

    def forward(self, z: Tensor) -> Tensor:
        """Count spikes over time."""
        return spike_count(z)


class MaxMembrane(nn.Module):
    """Module form of :func:`max_membrane`. Shape: ``[T, B, C]`` -> ``[B, C]``."""

    def forward(self, v: Tensor) -> Tensor:
        """Maximum membrane potential over time."""
        return max_membrane(v)


class MeanMembrane(nn.Module):
    """Module form of :func:`mean_membrane`. Shape: ``[T, B, C]`` -> ``[B, C]``."""

    def forward(self, v: Tensor) -> Tensor:
        """Mean membrane potential over time."""
        return mean_membrane(v)


class FirstSpikeTime(nn.Module):
    """Module form of :func:`first_spike_time`; ``dt`` and ``no_spike`` are fixed at construction.

    Args:
        dt: Time step.
        no_spike: Time reported for neurons that never fire; defaults to ``T * dt``.

    Shape:
        - input: ``[T, B, C]``
        - output: ``[B, C]``
    """

    def __init__(self, *, dt: float = 1.0, no_spike: float | None = None) -> None:
        super().__init__()
        check_positive("dt", dt)
        self.dt = dt
        self.no_spike = no_spike

    def forward(self, z: Tensor) -> Tensor:
        """First-spike time of each neuron."""
        return first_spike_time(z, dt=self.dt, no_spike=self.no_spike)

    def extra_repr(self) -> str:
        return f"dt={self.dt}, no_spike={self.no_spike}"
