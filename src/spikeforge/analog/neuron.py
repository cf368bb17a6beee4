r"""Analog neuron integration curves and per-neuron mismatch, as pure tensor functions.

A *time-domain* neuron (digital, or an analog one that integrates charge on a linear capacitor) realises
the membrane increment of the linear LIF equation exactly. A *voltage-domain* analog neuron integrates
through transistors whose gain depends on the membrane voltage: near the supply rails the output devices
lose headroom and the increment actually realised is compressed. A **transfer curve** maps the start-of-step
membrane :math:`v` and the linear increment :math:`\Delta` (what the linear neuron would add this step) to the
increment realised, :math:`c(v, \Delta)`:

* :class:`Linear`: :math:`c(v, \Delta) = \Delta` (time-domain integration).
* :class:`Rails`: a parameterised compression near the rails :math:`v_\mathrm{lo} < v_\mathrm{hi}`. The
  incremental gain at voltage :math:`v` is :math:`g(h) = 1 - e^{-h/w}`, where :math:`h` is the headroom to
  the rail in the direction of the increment (:math:`v_\mathrm{hi} - v` for :math:`\Delta \ge 0`,
  :math:`v - v_\mathrm{lo}` otherwise) and :math:`w = (v_\mathrm{hi} - v_\mathrm{lo})/s` with sharpness
  :math:`s`. Integrating :math:`dh/du = -g(h)` exactly over the linear increment :math:`u = |\Delta|` gives,
  with :math:`\mathrm{sp}(x) = \log(1 + e^x)`,

  .. math::

      h' = w\,\mathrm{sp}\!\left(\mathrm{sp}^{-1}(h/w) - |\Delta|/w\right), \qquad
      c(v, \Delta) = \operatorname{sign}(\Delta)\,(h - h').

  So :math:`h' > 0`: the membrane never crosses a rail, whatever the input (in exact arithmetic it never
  reaches it; in floating point it may land on the rail once the headroom left is below the resolution);
  the realised increment shrinks monotonically as :math:`v` approaches the rail it is pushed towards; and
  far from the rails it equals the linear one up to :math:`|c - \Delta| \le w\,e^{-D/w} / (1 - e^{-h/w})`,
  with :math:`D = h - |\Delta|` the headroom the linear neuron would have left. A membrane already at or
  beyond a rail (possible after a ``"subtract"`` reset) is not pushed further out (:math:`c = 0`);
  increments back inside act normally.
* :class:`Measured`: a measured incremental gain :math:`g(v)` given as a piecewise-linear table, held at its
  end values outside the table: :math:`c(v, \Delta) = g(v)\,\Delta` (gain read at the start of the step).

**Mismatch.** Fabricated neurons differ: :func:`mismatch` draws a fixed-pattern relative gain per neuron,
:math:`\gamma_n = \max(1 + \sigma\,\xi_n, 0)` with :math:`\xi_n \sim N(0, 1)`, and :func:`offset_mismatch`
an additive offset :math:`\sigma\,\xi_n` (e.g. for a threshold); both are reproducible from a
``torch.Generator``.

**Assumptions.** No specific circuit paper is confirmed for the current-mirror, voltage-domain neuron (see
``shared/docs/hardware-targets.md`` section 5.3): the :class:`Rails` form and its defaults
(:math:`v_\mathrm{lo} = -1`, :math:`v_\mathrm{hi} = 1.5`, :math:`s = 10`, in units of a threshold of 1)
are modelling assumptions, not measured values. Use :class:`Measured` with a measured curve where one exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.checks import SpikeforgeError, describe

__all__ = ["Linear", "Measured", "Rails", "mismatch", "offset_mismatch"]

_TINY = 1e-6  # smallest headroom / w kept away from 0 so that log(expm1(.)) stays finite (and its gradient)


@dataclass(frozen=True)
class Linear:
    """Time-domain (linear) integration: the realised increment is the linear one, ``c(v, dv) = dv``."""

    is_linear = True  # lets the dynamics take the exact linear path (class attribute, not a field)

    def __call__(self, v: Tensor, dv: Tensor) -> Tensor:
        """Realised membrane increment for start-of-step membrane ``v`` and linear increment ``dv``."""
        return dv


def _finite_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpikeforgeError(f"{name} must be a finite number, got {describe(value)}.")
    return float(value)


@dataclass(frozen=True)
class Rails:
    r"""Voltage-domain integration compressed near the supply rails (formula in the module docstring).

    Args:
        v_lo: lower rail (membrane units). ASSUMPTION: default -1.0.
        v_hi: upper rail, > ``v_lo``. ASSUMPTION: default 1.5 (above the default threshold 1.0).
        sharpness: :math:`s > 0`; the compression acts within about :math:`w = (v_\mathrm{hi} -
            v_\mathrm{lo})/s` of a rail. ASSUMPTION: default 10.0 (``w = 0.25``).
    """

    v_lo: float = -1.0
    v_hi: float = 1.5
    sharpness: float = 10.0

    is_linear = False

    def __post_init__(self) -> None:
        lo = _finite_float("Rails v_lo", self.v_lo)
        hi = _finite_float("Rails v_hi", self.v_hi)
        s = _finite_float("Rails sharpness", self.sharpness)
        if not lo < hi:
            raise SpikeforgeError(f"Rails needs v_lo < v_hi, got v_lo={lo!r}, v_hi={hi!r}.")
        if s <= 0:
            raise SpikeforgeError(f"Rails sharpness must be > 0, got {s!r}.")
        object.__setattr__(self, "v_lo", lo)
        object.__setattr__(self, "v_hi", hi)
        object.__setattr__(self, "sharpness", s)

    @property
    def bounds(self) -> tuple[float, float]:
        """The rails ``(v_lo, v_hi)``: the dynamics clip to them to absorb floating-point rounding."""
        return (self.v_lo, self.v_hi)

    @property
    def width(self) -> float:
        """Width :math:`w = (v_\\mathrm{hi} - v_\\mathrm{lo}) / s` of the compressed zone near each rail."""
        return (self.v_hi - self.v_lo) / self.sharpness

    def gain(self, v: Tensor, direction: int = 1) -> Tensor:
        """Incremental (small-signal) gain ``1 - exp(-h / w)`` at ``v`` for increments of sign ``direction``."""
        h = (self.v_hi - v) if direction >= 0 else (v - self.v_lo)
        return -torch.expm1(-h.clamp(min=0) / self.width)

    def _travel(self, h: Tensor, u: Tensor) -> Tensor:
        """Distance moved towards a rail from headroom ``h`` for a linear increment ``u >= 0``."""
        w = self.width
        a = (h / w).clamp(min=_TINY)
        inv_sp = a + torch.log(-torch.expm1(-a))  # softplus^{-1}(a) = log(expm1(a)), stable for large a
        h_new = w * torch.nn.functional.softplus(inv_sp - u / w)
        h0 = h.clamp(min=0)
        travel = torch.minimum(h0 - h_new, h0)  # h_new > 0 exactly; the minimum guards rounding only
        return torch.where(h > _TINY * w, travel, torch.zeros_like(h))

    def __call__(self, v: Tensor, dv: Tensor) -> Tensor:
        """Realised membrane increment for start-of-step membrane ``v`` and linear increment ``dv``."""
        up = dv >= 0
        u = dv.abs()
        rise = self._travel(self.v_hi - v, u)
        fall = self._travel(v - self.v_lo, u)
        return torch.where(up, rise, -fall)


def _as_floats(name: str, values: object) -> tuple[float, ...]:
    try:
        t = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise SpikeforgeError(f"{name} must be a 1-D sequence of numbers, got {describe(values)}.") from e
    if t.dim() != 1 or t.numel() < 2:
        raise SpikeforgeError(f"{name} must be 1-D with at least 2 entries, got shape {tuple(t.shape)}.")
    if not bool(torch.isfinite(t).all()):
        raise SpikeforgeError(f"{name} must be finite, got {t.tolist()}.")
    return tuple(float(x) for x in t.tolist())


@dataclass(frozen=True)
class Measured:
    """A measured incremental-gain curve: ``c(v, dv) = g(v) * dv`` with ``g`` interpolated piecewise-linearly.

    Args:
        v_points: membrane voltages of the table, strictly increasing (>= 2 entries).
        gain_points: incremental gain measured at each voltage (>= 0; 1 = linear). Outside the table the
            end values are held.

    Differentiable in ``v`` and ``dv`` (torch ops only); stored as tuples of floats so the curve is hashable.
    """

    v_points: Sequence[float]
    gain_points: Sequence[float]

    is_linear = False

    def __post_init__(self) -> None:
        vp = _as_floats("Measured v_points", self.v_points)
        gp = _as_floats("Measured gain_points", self.gain_points)
        if len(vp) != len(gp):
            raise SpikeforgeError(
                f"Measured needs as many gain_points as v_points, got {len(gp)} gains for {len(vp)} voltages."
            )
        if any(b <= a for a, b in zip(vp[:-1], vp[1:], strict=True)):
            raise SpikeforgeError(f"Measured v_points must be strictly increasing, got {list(vp)}.")
        if any(g < 0 for g in gp):
            raise SpikeforgeError(f"Measured gain_points must be >= 0, got {list(gp)}.")
        object.__setattr__(self, "v_points", vp)
        object.__setattr__(self, "gain_points", gp)

    def gain(self, v: Tensor) -> Tensor:
        """Incremental gain ``g(v)`` interpolated from the table (end values held outside it)."""
        vp = torch.tensor(self.v_points, dtype=v.dtype, device=v.device)
        gp = torch.tensor(self.gain_points, dtype=v.dtype, device=v.device)
        vc = v.clamp(vp[0], vp[-1])
        i = torch.searchsorted(vp, vc.detach().contiguous(), right=True).clamp(1, len(self.v_points) - 1)
        x0, x1, y0, y1 = vp[i - 1], vp[i], gp[i - 1], gp[i]
        return y0 + (y1 - y0) * (vc - x0) / (x1 - x0)

    def __call__(self, v: Tensor, dv: Tensor) -> Tensor:
        """Realised membrane increment for start-of-step membrane ``v`` and linear increment ``dv``."""
        return self.gain(v) * dv


def _shape(n: int | Sequence[int]) -> tuple[int, ...]:
    shape = (n,) if isinstance(n, int) and not isinstance(n, bool) else n
    try:
        shape = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        shape = ()
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise SpikeforgeError(f"n must be a positive int or a tuple of them (neuron shape), got {describe(n)}.")
    return shape


def _sigma(sigma: object) -> float:
    s = _finite_float("sigma", sigma)
    if s < 0:
        raise SpikeforgeError(f"sigma must be >= 0 (relative standard deviation), got {s!r}.")
    return s


def mismatch(n: int | Sequence[int], sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Per-neuron relative gains ``max(1 + sigma * N(0, 1), 0)`` (fixed-pattern mismatch), float32.

    Args:
        n: number (or shape) of neurons.
        sigma: relative standard deviation of the gain (0: all ones).
        generator: a seeded ``torch.Generator`` for a reproducible pattern (None: the global RNG).
    """
    shape = _shape(n)
    s = _sigma(sigma)
    if s >= 1:
        raise SpikeforgeError(f"sigma must be < 1 for a relative gain (else many gains clip at 0), got {s!r}.")
    xi = torch.randn(shape, generator=generator, dtype=torch.float32)
    return (1.0 + s * xi).clamp(min=0.0)


def offset_mismatch(n: int | Sequence[int], sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Per-neuron additive offsets ``sigma * N(0, 1)`` (e.g. threshold offsets), float32.

    Args:
        n: number (or shape) of neurons.
        sigma: standard deviation of the offset, in membrane units.
        generator: a seeded ``torch.Generator`` for a reproducible pattern (None: the global RNG).
    """
    shape = _shape(n)
    s = _sigma(sigma)
    return s * torch.randn(shape, generator=generator, dtype=torch.float32)
