r"""Spike function with surrogate gradients.

The forward pass is the Heaviside step :math:`z = H(x)` with :math:`H(x) = 1` for :math:`x > 0`
(strictly above threshold) and 0 otherwise. The backward pass replaces :math:`\delta(x)` by the
derivative of a smooth *primitive* :math:`\sigma_s(x)` that rises from 0 to 1 around :math:`x = 0`;
``scale`` (:math:`s`) sets its steepness (larger is sharper). Each surrogate is a primitive plus its
hand-written derivative; a test checks the derivative against autograd of the primitive.

==================  =====================================================  ==========================
name                primitive :math:`\sigma_s(x)`                          derivative
==================  =====================================================  ==========================
``fast_sigmoid``    :math:`\tfrac12 + \tfrac12\, sx/(1+s|x|)`               :math:`\tfrac{s}{2}(1+s|x|)^{-2}`
``superspike``      alias of ``fast_sigmoid`` (Zenke & Ganguli 2018)
``arctan``          :math:`\tfrac12 + \arctan(\pi s x/2)/\pi`              :math:`\tfrac{s}{2}/(1+(\pi s x/2)^2)`
``sigmoid``         :math:`\mathrm{sigmoid}(s x)`                          :math:`s\,\sigma(1-\sigma)`
``triangle``        piecewise quadratic, flat outside :math:`|x|>1/s`      :math:`s\max(0, 1-s|x|)`
``boxcar``          :math:`\mathrm{clamp}(s x + \tfrac12, 0, 1)`           :math:`s\,[|x| < 1/(2s)]`
``straight_through``:math:`x` (identity; the gradient passes unchanged)    :math:`1`
==================  =====================================================  ==========================

``straight_through`` ignores ``scale``: its derivative is 1 everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import SpikeforgeError, check_positive

__all__ = ["SURROGATES", "Surrogate", "heaviside", "surrogate"]


def heaviside(x: Tensor) -> Tensor:
    """Hard threshold ``1.0 where x > 0 else 0.0`` in the dtype of ``x``."""
    return (x > 0).to(x.dtype)


def _fast_sigmoid(x: Tensor, s: float) -> Tensor:
    return 0.5 + 0.5 * (s * x) / (1.0 + (s * x).abs())


def _fast_sigmoid_d(x: Tensor, s: float) -> Tensor:
    return 0.5 * s / (1.0 + (s * x).abs()) ** 2


def _arctan(x: Tensor, s: float) -> Tensor:
    return 0.5 + torch.atan(0.5 * math.pi * s * x) / math.pi


def _arctan_d(x: Tensor, s: float) -> Tensor:
    return 0.5 * s / (1.0 + (0.5 * math.pi * s * x) ** 2)


def _sigmoid(x: Tensor, s: float) -> Tensor:
    return torch.sigmoid(s * x)


def _sigmoid_d(x: Tensor, s: float) -> Tensor:
    sig = torch.sigmoid(s * x)
    return s * sig * (1.0 - sig)


def _triangle(x: Tensor, s: float) -> Tensor:
    u = (s * x).clamp(-1.0, 1.0)
    return 0.5 + u - 0.5 * u * u.abs()


def _triangle_d(x: Tensor, s: float) -> Tensor:
    return s * (1.0 - (s * x).abs()).clamp(min=0.0)


def _boxcar(x: Tensor, s: float) -> Tensor:
    return (s * x + 0.5).clamp(0.0, 1.0)


def _boxcar_d(x: Tensor, s: float) -> Tensor:
    return s * ((s * x).abs() < 0.5).to(x.dtype)


def _identity(x: Tensor, s: float) -> Tensor:
    return x


def _ones(x: Tensor, s: float) -> Tensor:
    return torch.ones_like(x)


_Fn = Callable[[Tensor, float], Tensor]

#: name -> (primitive, derivative). The one table of surrogate shapes.
SURROGATES: dict[str, tuple[_Fn, _Fn]] = {
    "fast_sigmoid": (_fast_sigmoid, _fast_sigmoid_d),
    "superspike": (_fast_sigmoid, _fast_sigmoid_d),
    "arctan": (_arctan, _arctan_d),
    "sigmoid": (_sigmoid, _sigmoid_d),
    "triangle": (_triangle, _triangle_d),
    "boxcar": (_boxcar, _boxcar_d),
    "straight_through": (_identity, _ones),
}


class _SpikeFunction(torch.autograd.Function):
    """Heaviside forward, ``grad * derivative(x)`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, derivative: _Fn, scale: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.derivative = derivative
        ctx.scale = scale
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ctx.derivative(x, ctx.scale), None, None


@dataclass(frozen=True)
class Surrogate:
    """A spike function: Heaviside forward, the derivative of a smooth primitive backward.

    Args:
        name: one of :data:`SURROGATES`.
        scale: steepness ``s`` of the primitive (> 0).

    Calling it on ``x = v - threshold`` returns spikes (0./1.) of the same shape and dtype.
    """

    name: str = "fast_sigmoid"
    scale: float = 10.0

    def __post_init__(self) -> None:
        if self.name not in SURROGATES:
            raise SpikeforgeError(
                f"surrogate name must be one of {sorted(SURROGATES)}, got {self.name!r}."
            )
        check_positive("surrogate scale", self.scale)

    def primitive(self, x: Tensor) -> Tensor:
        """The smooth step whose derivative is used in the backward pass."""
        return SURROGATES[self.name][0](x, self.scale)

    def derivative(self, x: Tensor) -> Tensor:
        """Hand-written derivative of :meth:`primitive`."""
        return SURROGATES[self.name][1](x, self.scale)

    def __call__(self, x: Tensor) -> Tensor:
        return _SpikeFunction.apply(x, SURROGATES[self.name][1], float(self.scale))


def surrogate(spec: str | Surrogate | dict | None = None, scale: float | None = None) -> Surrogate:
    """Build a :class:`Surrogate` from a name, a dict ``{"name": ..., "scale": ...}`` or itself.

    ``scale``, when given, overrides the steepness of any of these forms.
    """
    if spec is None:
        return Surrogate() if scale is None else Surrogate(scale=scale)
    if isinstance(spec, Surrogate):
        return spec if scale is None else Surrogate(spec.name, scale)
    if isinstance(spec, str):
        return Surrogate(spec) if scale is None else Surrogate(spec, scale)
    if isinstance(spec, dict):
        unknown = set(spec) - {"name", "scale"}
        if unknown:
            raise SpikeforgeError(
                f"surrogate has unknown key(s) {sorted(unknown)}; expected 'name' and 'scale'."
            )
        return Surrogate(**spec) if scale is None else Surrogate(**{**spec, "scale": scale})
    raise SpikeforgeError(
        f"surrogate must be a name, a dict or a Surrogate, got {type(spec).__name__}."
    )
