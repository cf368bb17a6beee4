"""Argument checks whose errors teach: each names the argument, what was expected and what was got.

Every module of spikeforge validates user input through these helpers so that error messages have one
shape everywhere.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "SpikeforgeError",
    "check_dt",
    "check_finite",
    "check_in_range",
    "check_min_rank",
    "check_positive",
    "check_positive_int",
    "check_rank",
    "check_shape_tail",
    "describe",
]


class SpikeforgeError(ValueError):
    """Raised for invalid user input; the message says what was wrong and how to fix it."""


def describe(value: object) -> str:
    """Short human description of a value for error messages."""
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return repr(value)


def check_positive(name: str, value: float | Tensor) -> None:
    """Raise unless ``value`` (a number or every element of a tensor) is finite and > 0."""
    if isinstance(value, Tensor):
        bad = ~torch.isfinite(value) | (value <= 0)
        if bool(bad.any()):
            got = value[bad].flatten()[0].item()
            raise SpikeforgeError(
                f"{name} must be positive and finite (all elements > 0), got {got!r} in a "
                f"{describe(value)}."
            )
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SpikeforgeError(f"{name} must be a positive number, got {describe(value)}.")
    if not math.isfinite(value) or value <= 0:
        raise SpikeforgeError(f"{name} must be positive and finite, got {value!r}.")


def check_positive_int(name: str, value: object, *, allow_zero: bool = False) -> int:
    """Return ``value`` as int, raising unless it is an integer > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpikeforgeError(f"{name} must be an integer, got {describe(value)}.")
    low = 0 if allow_zero else 1
    if value < low:
        raise SpikeforgeError(f"{name} must be an integer >= {low}, got {value}.")
    return value


def check_in_range(name: str, value: float, low: float, high: float) -> None:
    """Raise unless ``low <= value <= high``."""
    if not isinstance(value, (int, float)) or not (low <= value <= high):
        raise SpikeforgeError(f"{name} must lie in [{low}, {high}], got {describe(value)}.")


def check_finite(name: str, x: Tensor) -> None:
    """Raise if ``x`` holds NaN or infinite values, saying where the first one is.

    Skipped for CUDA tensors while a CUDA graph is being captured (reading the answer back would synchronise
    the device, which capture forbids); the check runs when the same code runs outside a graph.
    """
    if not isinstance(x, Tensor):
        raise SpikeforgeError(f"{name} must be a torch.Tensor, got {describe(x)}.")
    if x.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    if not x.is_floating_point() or x.numel() == 0:
        return
    # A NaN or inf makes the sum non-finite: one reduction without a temporary as large as x. Only when the sum
    # is not finite (a bad element, or an overflow of finite ones) is every element tested.
    if bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all()):
        return
    idx = tuple(int(i) for i in (~torch.isfinite(x)).nonzero()[0])
    raise SpikeforgeError(f"{name} must be finite, but element {idx} of the {describe(x)} is {x[idx].item()}.")


def check_rank(name: str, x: Tensor, expected: int | Sequence[int], layout: str = "") -> None:
    """Raise unless ``x.dim()`` is ``expected`` (or one of several allowed ranks)."""
    allowed = (expected,) if isinstance(expected, int) else tuple(expected)
    if not isinstance(x, Tensor):
        raise SpikeforgeError(f"{name} must be a torch.Tensor, got {describe(x)}.")
    if x.dim() not in allowed:
        want = " or ".join(str(a) for a in allowed)
        hint = f" laid out as {layout}" if layout else ""
        raise SpikeforgeError(
            f"{name} must have rank {want}{hint}, got a tensor of shape {tuple(x.shape)} "
            f"(rank {x.dim()})."
        )


def check_min_rank(name: str, x: Tensor, min_rank: int, layout: str) -> None:
    """Raise unless ``x`` is a tensor of rank >= ``min_rank`` (laid out as ``layout``)."""
    if not isinstance(x, Tensor):
        raise SpikeforgeError(f"{name} must be a torch.Tensor laid out as {layout}, got {describe(x)}.")
    if x.dim() < min_rank:
        raise SpikeforgeError(
            f"{name} must have rank >= {min_rank} laid out as {layout}, got a tensor of shape "
            f"{tuple(x.shape)} (rank {x.dim()}). Add the missing dimensions, e.g. x.unsqueeze(0) "
            f"for a batch of one."
        )


def check_shape_tail(name: str, x: Tensor, tail: Sequence[int], layout: str = "") -> None:
    """Raise unless the trailing dimensions of ``x`` equal ``tail``."""
    tail = tuple(tail)
    got = tuple(x.shape[-len(tail):]) if tail else ()
    if x.dim() < len(tail) or got != tail:
        hint = f" ({layout})" if layout else ""
        raise SpikeforgeError(
            f"{name} must end with dimensions {tail}{hint}, got shape {tuple(x.shape)}."
        )


def check_dt(dt: float, **time_constants: float | Tensor) -> None:
    """Check ``dt`` > 0 and warn when it exceeds a time constant (the discretisation gets coarse)."""
    check_positive("dt", dt)
    for name, tau in time_constants.items():
        if tau is None:
            continue
        check_positive(name, tau)
        smallest = float(tau.min()) if isinstance(tau, Tensor) else float(tau)
        if dt > smallest:
            warnings.warn(
                f"dt={dt} is larger than {name}={smallest}; the decay exp(-dt/{name}) is below "
                f"{math.exp(-dt / smallest):.3f} per step and the dynamics are poorly resolved. "
                f"Use dt <= {name} (typically dt <= {name}/5).",
                stacklevel=3,
            )
