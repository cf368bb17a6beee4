"""Latency (time-to-first-spike) coding: each input fires at most once, strong inputs early.

Inputs are intensities ``x`` in ``[0, 1]``; ``theta`` is ``threshold``; ``W = t_max - t_min`` is
the coding window. Spike times are continuous in :func:`latency_times` and rounded half up to a
step index, ``k = floor(t + 1/2)``, in :func:`latency`.

``mode="linear"``::

    t(x) = t_min + (1 - x) * W / (1 - theta)      normalize=True  (x = theta fires at t_max)
    t(x) = t_min + (1 - x) * W                    normalize=False

    inputs x < theta never spike (with the default theta = 0 every input spikes once).

``mode="log"`` -- the first threshold crossing of an RC membrane ``v(t) = x (1 - exp(-t / tau))``
driven by a constant input ``x`` from rest, which reaches ``theta`` at ``tau * ln(x / (x - theta))``::

    t(x) = t_min + tau * ln(x / (x - theta))                          normalize=False (tau in steps)
    t(x) = t_min + tau_n * ln(x (1 - theta) / (x - theta))            normalize=True
    tau_n = W / (2 ln(1 + theta))

    With normalize=True the RC time is shifted so that x = 1 fires exactly at t_min, and tau is
    chosen so that the midpoint input x = (1 + theta) / 2 fires at the middle of the window
    (as it does in linear mode). Inputs x <= theta never reach the threshold and never spike;
    inputs whose time falls after t_max are dropped (no spike) as well.

Times of inputs that do not spike are ``+inf`` in :func:`latency_times`.
"""

from __future__ import annotations

import math

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
from spikeforge.encode.rate import _as_float

__all__ = ["MODES", "Latency", "latency", "latency_times"]

MODES = ("linear", "log")


def _check_number(name: str, value: object) -> float:
    """Return ``value`` as float, raising unless it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpikeforgeError(f"{name} must be a finite number, got {describe(value)}.")
    return float(value)


def _check_settings(mode: str, threshold: float, tau: float) -> float:
    """Validate ``mode``, ``threshold`` and ``tau``; return the threshold as float."""
    if mode not in MODES:
        raise SpikeforgeError(f"mode must be one of {list(MODES)}, got {mode!r}.")
    check_positive("tau", tau)
    theta = _check_number("threshold", threshold)
    if mode == "linear" and not 0.0 <= theta < 1.0:
        raise SpikeforgeError(
            f"threshold must lie in [0, 1) for mode='linear' (inputs are intensities in [0, 1]), "
            f"got {theta}."
        )
    if mode == "log" and not 0.0 < theta < 1.0:
        raise SpikeforgeError(
            f"threshold must lie in (0, 1) for mode='log', got {theta}: the RC crossing time "
            f"tau*ln(x/(x-threshold)) is 0 for every input when threshold=0. Pass e.g. "
            f"threshold=0.01."
        )
    return theta


def _check_intensity(x: Tensor) -> Tensor:
    """Validate that ``x`` is a finite float tensor in [0, 1] laid out as [B, *features]."""
    check_min_rank("x", x, 1, "[B, *features]")
    x = _as_float(x)
    check_finite("x", x)
    bad = (x < 0) | (x > 1)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise SpikeforgeError(
            f"x must lie in [0, 1] for latency coding, but element {idx} of the {describe(x)} "
            f"is {x[idx].item()}. Rescale the data, e.g. x / x.max()."
        )
    return x


def _times(
    x: Tensor, t_min: float, t_max: float, mode: str, theta: float, tau: float, normalize: bool
) -> Tensor:
    """Continuous spike times of validated inputs (``+inf`` where no spike)."""
    window = t_max - t_min
    if mode == "linear":
        scale = window / (1.0 - theta) if normalize else window
        t = t_min + (1.0 - x) * scale
        silent = x < theta
    else:
        fires = x > theta
        xs = torch.where(fires, x, torch.ones_like(x))  # keep the log finite where silent
        if normalize:
            # ln(x (1 - theta) / (x - theta)) = ln(1 + theta (1 - x) / (x - theta))
            tau_n = window / (2.0 * math.log1p(theta))
            t = t_min + tau_n * torch.log1p(theta * (1.0 - xs) / (xs - theta))
        else:
            # ln(x / (x - theta)) = ln(1 + theta / (x - theta))
            t = t_min + tau * torch.log1p(theta / (xs - theta))
        silent = ~fires | (t > t_max)
    return torch.where(silent, torch.full_like(t, math.inf), t)


def latency_times(
    x: Tensor,
    *,
    t_min: float,
    t_max: float,
    mode: str = "linear",
    threshold: float = 0.0,
    tau: float = 1.0,
    normalize: bool = True,
) -> Tensor:
    """Continuous first-spike times of latency coding, for event-driven simulation.

    See the module docstring for the formulas of both modes.

    Args:
        x: Intensities in ``[0, 1]`` (integer data is converted to float).
        t_min: Time of the earliest spike (fired by ``x = 1``).
        t_max: End of the coding window (``>= t_min``); no spike is later than this.
        mode: ``"linear"`` or ``"log"`` (RC time to first spike).
        threshold: Inputs below it (``"linear"``) or at/below it (``"log"``) never spike.
            Must be in ``[0, 1)`` for ``"linear"`` and ``(0, 1)`` for ``"log"``.
        tau: RC time constant in time units; only used by ``mode="log"`` with
            ``normalize=False``.
        normalize: Stretch the code over the window (see module docstring).

    Returns:
        Float spike times with the dtype of ``x``; ``+inf`` where the input never spikes.

    Shape:
        - x: ``[B, *features]``
        - output: ``[B, *features]``

    Raises:
        SpikeforgeError: on a bad rank, values outside ``[0, 1]``, NaN/inf, or invalid settings.
    """
    x = _check_intensity(x)
    theta = _check_settings(mode, threshold, tau)
    t_min = _check_number("t_min", t_min)
    t_max = _check_number("t_max", t_max)
    if t_max < t_min:
        raise SpikeforgeError(f"t_max must be >= t_min={t_min}, got t_max={t_max}.")
    return _times(x, t_min, t_max, mode, theta, tau, normalize)


def latency(
    x: Tensor,
    steps: int,
    *,
    t_min: float = 0,
    t_max: float | None = None,
    mode: str = "linear",
    threshold: float = 0.0,
    tau: float = 1.0,
    normalize: bool = True,
) -> Tensor:
    """Latency coding: one spike per input at step ``floor(t(x) + 1/2)``, strong inputs first.

    See the module docstring for the formulas of both modes.

    Args:
        x: Intensities in ``[0, 1]`` (integer data is converted to float).
        steps: Number of time steps ``T`` (>= 1).
        t_min: Step of the earliest spike (fired by ``x = 1``), in ``[0, T - 1]``.
        t_max: End of the coding window in ``[t_min, T - 1]``; defaults to ``T - 1``.
        mode: ``"linear"`` or ``"log"`` (RC time to first spike).
        threshold: Inputs below it (``"linear"``) or at/below it (``"log"``) never spike.
            Must be in ``[0, 1)`` for ``"linear"`` and ``(0, 1)`` for ``"log"``.
        tau: RC time constant in steps; only used by ``mode="log"`` with ``normalize=False``.
        normalize: Stretch the code over the window (see module docstring).

    Returns:
        Float spike tensor with at most one spike per input (none where the input is silent).

    Shape:
        - x: ``[B, *features]``
        - output: ``[T, B, *features]``

    Raises:
        SpikeforgeError: on a bad rank, values outside ``[0, 1]``, NaN/inf, or invalid settings.
    """
    steps = check_positive_int("steps", steps)
    t_min = _check_number("t_min", t_min)
    if not 0 <= t_min <= steps - 1:
        raise SpikeforgeError(f"t_min must lie in [0, steps - 1] = [0, {steps - 1}], got {t_min}.")
    t_max = float(steps - 1) if t_max is None else _check_number("t_max", t_max)
    if not t_min <= t_max <= steps - 1:
        raise SpikeforgeError(
            f"t_max must lie in [t_min, steps - 1] = [{t_min}, {steps - 1}], got {t_max}."
        )
    t = latency_times(
        x, t_min=t_min, t_max=t_max, mode=mode, threshold=threshold, tau=tau, normalize=normalize
    )
    fires = torch.isfinite(t)
    index = torch.where(fires, torch.floor(t + 0.5), torch.zeros_like(t)).long()
    out = torch.zeros((steps, *t.shape), dtype=t.dtype, device=t.device)
    return out.scatter_(0, index.unsqueeze(0), fires.to(t.dtype).unsqueeze(0))


class Latency(nn.Module):
    """Module form of :func:`latency`; the settings are fixed (and checked) at construction.

    Args:
        steps: Number of time steps ``T``.
        t_min: Step of the earliest spike.
        t_max: End of the coding window; defaults to ``T - 1``.
        mode: ``"linear"`` or ``"log"``.
        threshold: Silencing threshold (see :func:`latency`).
        tau: RC time constant in steps (``mode="log"``, ``normalize=False``).
        normalize: Stretch the code over the window.

    Shape:
        - input: ``[B, *features]``
        - output: ``[T, B, *features]``
    """

    def __init__(
        self,
        steps: int,
        *,
        t_min: float = 0,
        t_max: float | None = None,
        mode: str = "linear",
        threshold: float = 0.0,
        tau: float = 1.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.steps = check_positive_int("steps", steps)
        _check_settings(mode, threshold, tau)
        self.t_min = t_min
        self.t_max = t_max
        self.mode = mode
        self.threshold = threshold
        self.tau = tau
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        """Encode ``x`` as one spike per input."""
        return latency(
            x,
            self.steps,
            t_min=self.t_min,
            t_max=self.t_max,
            mode=self.mode,
            threshold=self.threshold,
            tau=self.tau,
            normalize=self.normalize,
        )

    def extra_repr(self) -> str:
        return (
            f"steps={self.steps}, t_min={self.t_min}, t_max={self.t_max}, mode={self.mode!r}, "
            f"threshold={self.threshold}, tau={self.tau}, normalize={self.normalize}"
        )
