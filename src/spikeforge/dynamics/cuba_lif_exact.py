r"""Exact-time pieces of the current-based LIF neuron (:mod:`spikeforge.dynamics.cuba_lif`) for event-driven
simulation: free evolution between events, time to the next threshold crossing, and the jumps at input events
and at spikes. Time is in seconds.

Model (``v_leak = 0``, no input between events):

.. math::

    \tau_\mathrm{syn}\,\dot I = -I, \qquad \tau_\mathrm{mem}\,\dot V = -V + I .

An input spike of weight :math:`w` is an impulse of area :math:`w` (the time-stepped model has DC gain 1):
:math:`I \mathrel{+}= w/\tau_\mathrm{syn}`; with :math:`\tau_\mathrm{syn} = 0` (plain LIF) it is
:math:`V \mathrel{+}= w/\tau_\mathrm{mem}`. The neuron spikes when :math:`V` reaches :math:`\vartheta` from below
and :math:`V` is reset to 0 (``I`` is untouched).

Free evolution over :math:`\Delta` (:func:`evolve`):
:math:`I(\Delta) = I_0 e^{-\Delta/\tau_s}`, :math:`V(\Delta) = V_0 e^{-\Delta/\tau_m} + g(\Delta) I_0` with

.. math::

    g(\Delta) = \frac{\tau_s}{\tau_m - \tau_s}\left(e^{-\Delta/\tau_m} - e^{-\Delta/\tau_s}\right)
              = \frac{\Delta}{\tau_m} e^{-\Delta/\tau_m}\,\frac{1 - e^{-x}}{x},\quad
              x = \Delta\left(\frac1{\tau_s} - \frac1{\tau_m}\right),

evaluated in the second (cancellation-free) form when :math:`|x| < 1`, so ``tau_mem == tau_syn`` needs no
special case. :math:`V` has at most one extremum between events (:func:`peak_time`), so a crossing exists in a
window iff :math:`V` at the window's end or at the peak inside it reaches :math:`\vartheta`; the first crossing
(:func:`crossing_time`) is then found

* for ``tau_mem == tau_syn`` in closed form with the Lambert W function (:func:`crossing_lambert`),
* for ``tau_mem == 2 tau_syn`` from a quadratic in :math:`u = e^{-t/\tau_m}` (:func:`crossing_quadratic`),
* otherwise with a bracketed Newton-type iteration (Halley steps, bisection fallback) to float tolerance
  (:func:`crossing_newton`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "crossing_lambert",
    "crossing_newton",
    "crossing_quadratic",
    "crossing_time",
    "evolve",
    "input_jump",
    "lambert_w0",
    "peak_time",
    "psp_gain",
    "spike_reset",
    "v_dot",
    "v_at",
]

CROSSING_METHODS = ("auto", "lambert", "quadratic", "newton")


def _t(x: Tensor | float, like: Tensor) -> Tensor:
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


def _finite_span(dt: Tensor, tau_mem: Tensor, tau_syn: Tensor) -> Tensor:
    """``dt`` clamped to 800 time constants (every exponential is exactly 0 there) so that ``inf`` gives 0."""
    cap = 800.0 * torch.maximum(tau_mem, tau_syn)
    return torch.minimum(dt, cap)


def psp_gain(dt: Tensor, tau_mem: Tensor | float, tau_syn: Tensor | float) -> Tensor:
    r""":math:`g(\Delta)`: membrane potential after ``dt`` seconds caused by a unit synaptic current at 0.

    Zero for ``tau_syn == 0``. ``dt = inf`` gives 0.
    """
    if isinstance(tau_mem, float) and isinstance(tau_syn, float):  # fast paths for scalar time constants
        if tau_syn == 0:
            return torch.zeros_like(dt)
        d = torch.clamp(dt, max=800.0 * max(tau_mem, tau_syn))
        if tau_mem == tau_syn:
            return (d / tau_mem) * torch.exp(-d / tau_mem)
        if abs(tau_mem - tau_syn) > 0.5 * min(tau_mem, tau_syn):  # no cancellation worth a second form
            return tau_syn / (tau_mem - tau_syn) * (torch.exp(-d / tau_mem) - torch.exp(-d / tau_syn))
    tau_mem, tau_syn = _t(tau_mem, dt), _t(tau_syn, dt)
    if bool((tau_syn == 0).all()):
        return torch.zeros_like(dt + tau_mem)
    d = _finite_span(dt, tau_mem, tau_syn)
    safe_s = torch.where(tau_syn > 0, tau_syn, torch.ones_like(tau_syn))
    delta = 1.0 / safe_s - 1.0 / tau_mem
    x = d * delta
    small = x.abs() < 1.0
    xs = torch.where(small & (x != 0), x, torch.ones_like(x))
    phi = torch.where(x == 0, torch.ones_like(x), -torch.expm1(-xs) / xs)
    stable = (d / tau_mem) * torch.exp(-d / tau_mem) * phi
    denom = torch.where(small, torch.ones_like(tau_mem - safe_s), tau_mem - safe_s)
    direct = safe_s / denom * (torch.exp(-d / tau_mem) - torch.exp(-d / safe_s))
    g = torch.where(small, stable, direct)
    return torch.where(tau_syn > 0, g, torch.zeros_like(g))


def evolve(i: Tensor, v: Tensor, dt: Tensor, tau_mem: Tensor | float,
           tau_syn: Tensor | float) -> tuple[Tensor, Tensor]:
    """Free evolution of ``(I, V)`` over ``dt`` seconds (no input, no threshold).

    Shape:
        all arguments broadcast together.
    """
    if isinstance(tau_mem, float) and isinstance(tau_syn, float):
        d = torch.clamp(dt, max=800.0 * max(tau_mem, tau_syn))
        e_s = torch.exp(-d / tau_syn) if tau_syn > 0 else torch.zeros_like(d)
        return i * e_s, v * torch.exp(-d / tau_mem) + psp_gain(d, tau_mem, tau_syn) * i
    tau_mem, tau_syn = _t(tau_mem, v), _t(tau_syn, v)
    d = _finite_span(dt, tau_mem, tau_syn)
    safe_s = torch.where(tau_syn > 0, tau_syn, torch.ones_like(tau_syn))
    e_s = torch.where(tau_syn > 0, torch.exp(-d / safe_s), torch.zeros_like(d * safe_s))
    i_new = i * e_s
    v_new = v * torch.exp(-d / tau_mem) + psp_gain(d, tau_mem, tau_syn) * i
    return i_new, v_new


def v_at(i: Tensor, v: Tensor, dt: Tensor, tau_mem: Tensor | float, tau_syn: Tensor | float) -> Tensor:
    """Membrane potential ``dt`` seconds after the state ``(I, V)`` (free evolution)."""
    return evolve(i, v, dt, tau_mem, tau_syn)[1]


def v_dot(i: Tensor, v: Tensor, tau_mem: Tensor | float) -> Tensor:
    r""":math:`\dot V = (I - V)/\tau_\mathrm{mem}`."""
    return (i - v) / _t(tau_mem, v)


def input_jump(i: Tensor, v: Tensor, w: Tensor, tau_mem: Tensor | float,
               tau_syn: Tensor | float) -> tuple[Tensor, Tensor]:
    """State right after an input spike of weight ``w`` (an impulse of area ``w``)."""
    tau_mem, tau_syn = _t(tau_mem, v), _t(tau_syn, v)
    syn = tau_syn > 0
    safe_s = torch.where(syn, tau_syn, torch.ones_like(tau_syn))
    i_new = i + torch.where(syn, w / safe_s, torch.zeros_like(w / safe_s))
    v_new = v + torch.where(syn, torch.zeros_like(w / tau_mem), w / tau_mem)
    return i_new, v_new


def spike_reset(i: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """State right after a spike: ``V = 0``, ``I`` unchanged (reset to zero == subtract the threshold)."""
    return i, torch.zeros_like(v)


def peak_time(i: Tensor, v: Tensor, tau_mem: Tensor | float, tau_syn: Tensor | float) -> Tensor:
    r"""Time (>= 0) at which the free membrane is largest: 0 when it falls from the start, ``inf`` when it rises
    for ever (towards 0 from below), else the unique zero of :math:`\dot V`.

    With :math:`\Delta\tau = \tau_m - \tau_s` and :math:`\psi(x) = \log(1+x)/x`:
    :math:`t^* = \tau_m\,[\psi(\Delta\tau/\tau_s) - (V_0/I_0)\,\psi(V_0 \Delta\tau / (\tau_s I_0))]`.
    """
    if isinstance(tau_mem, float) and isinstance(tau_syn, float):
        return _peak_time_scalar(i, v, tau_mem, tau_syn)
    tau_mem, tau_syn = _t(tau_mem, v), _t(tau_syn, v)
    rising = (i > v) & (i > 0) & (tau_syn > 0)
    safe_i = torch.where(rising, i, torch.ones_like(i))
    safe_s = torch.where(tau_syn > 0, tau_syn, torch.ones_like(tau_syn))
    dtau = tau_mem - safe_s
    ratio = v / safe_i
    a = dtau / safe_s
    b = ratio * a
    ok = rising & (b > -1)
    b_safe = torch.where(ok, b, torch.zeros_like(b))

    def psi(x: Tensor) -> Tensor:
        xs = torch.where(x == 0, torch.ones_like(x), x)
        return torch.where(x == 0, torch.ones_like(x), torch.log1p(xs) / xs)

    t = tau_mem * (psi(a) - ratio * psi(b_safe))
    t = torch.where(ok, t.clamp(min=0), torch.full_like(t, math.inf))
    return torch.where(rising, t, torch.zeros_like(t))


def _peak_time_scalar(i: Tensor, v: Tensor, tau_mem: float, tau_syn: float) -> Tensor:
    """:func:`peak_time` for scalar time constants (fewer operations)."""
    if tau_syn == 0:
        return torch.zeros_like(v)
    rising = (i > v) & (i > 0)
    ratio = v / torch.where(rising, i, torch.ones_like(i))
    if tau_mem == tau_syn:
        t = tau_mem * (1.0 - ratio)
    else:
        a = (tau_mem - tau_syn) / tau_syn
        b = ratio * a
        ok = b > -1
        b_safe = torch.where(ok & (b != 0), b, torch.ones_like(b))
        psi_b = torch.where(b == 0, torch.ones_like(b), torch.log1p(b_safe) / b_safe)
        t = tau_mem * (math.log1p(a) / a - ratio * psi_b)
        t = torch.where(ok, t, torch.full_like(t, math.inf))
    return torch.where(rising, t.clamp(min=0), torch.zeros_like(t))


def lambert_w0(z: Tensor) -> Tensor:
    """Principal branch :math:`W_0(z)` for ``z`` in ``[-1/e, 0]`` (clamped into it): branch-point series
    start, then Halley iterations."""
    z = z.clamp(min=-1.0 / math.e, max=0.0)
    p = torch.sqrt((2.0 * (math.e * z + 1.0)).clamp(min=0))
    series = -1.0 + p * (1.0 + p * (-1.0 / 3 + p * (11.0 / 72 + p * (-43.0 / 540 + p * 769.0 / 17280))))
    w = torch.where(z > -0.25, z * (1.0 - z), series)
    for _ in range(8):
        ew = torch.exp(w)
        f = w * ew - z
        wp1 = w + 1.0
        wp1s = torch.where(wp1.abs() < 1e-300, torch.full_like(wp1, 1e-300), wp1)
        denom = ew * wp1s - (w + 2.0) * f / (2.0 * wp1s)
        denom = torch.where(denom == 0, torch.ones_like(denom), denom)
        w = w - torch.where(f == 0, torch.zeros_like(f), f / denom)
        w = w.clamp(min=-1.0, max=0.0)
    eps = torch.finfo(z.dtype).eps
    return torch.where(p < eps ** 0.2, series, w)


def _bracket(i, v, v_th, tau_mem, tau_syn, horizon):
    """Upper end of the crossing bracket and whether a crossing lies in ``[0, horizon]``."""
    hi = torch.minimum(peak_time(i, v, tau_mem, tau_syn), horizon)
    hit = (v >= v_th) | (v_at(i, v, hi, tau_mem, tau_syn) >= v_th)
    return hi, hit


def crossing_lambert(i: Tensor, v: Tensor, v_th: Tensor, tau: Tensor) -> Tensor:
    r"""First crossing for ``tau_mem == tau_syn == tau``: :math:`V = (V_0 + I_0 s/\tau) e^{-s/\tau}`, so
    :math:`s/\tau = -W_0(z) - V_0/I_0` with :math:`z = -(\vartheta/I_0)\,e^{-V_0/I_0}`. Assumes a crossing
    exists (``I_0 > 0``)."""
    safe_i = torch.where(i > 0, i, torch.ones_like(i))
    a = v / safe_i
    z = -torch.exp(torch.log(v_th / safe_i) - a)
    return (tau * (-lambert_w0(z) - a)).clamp(min=0)


def crossing_quadratic(i: Tensor, v: Tensor, v_th: Tensor, tau_mem: Tensor) -> Tensor:
    r"""First crossing for ``tau_mem == 2 tau_syn``: with :math:`u = e^{-s/\tau_m}`,
    :math:`V = (V_0 + I_0) u - I_0 u^2`; the crossing is the larger root :math:`u < 1`. Assumes a crossing
    exists (``I_0 > 0``, ``V_0 + I_0 > 0``)."""
    safe_i = torch.where(i > 0, i, torch.ones_like(i))
    p = v + safe_i
    disc = (p * p - 4.0 * safe_i * v_th).clamp(min=0)
    u = (p + torch.sqrt(disc)) / (2.0 * safe_i)
    u = u.clamp(min=torch.finfo(u.dtype).tiny, max=1.0)
    return -tau_mem * torch.log(u)


def crossing_newton(i: Tensor, v: Tensor, v_th: Tensor, tau_mem: Tensor | float, tau_syn: Tensor | float, hi: Tensor,
                    *, max_iter: int = 100) -> Tensor:
    r"""First crossing in the bracket ``[0, hi]`` on which ``V`` rises monotonically from below ``v_th`` to at
    least ``v_th``: Halley steps (Newton's method with the curvature
    :math:`\ddot V = -(I/\tau_s + \dot V)/\tau_m`, cubically convergent), replaced by bisection whenever they
    leave the shrinking bracket, until the step or the residual is at float resolution."""
    lo = torch.zeros_like(hi)
    hi = torch.where(torch.isfinite(hi), hi, torch.zeros_like(hi))
    x = lo.clone()
    eps = torch.finfo(x.dtype).eps
    v_th = _t(v_th, v)
    f_tol = 4 * eps * (v_th.abs() + v.abs() + i.abs())  # rounding level of V from this state
    for it in range(max_iter):
        ii, vv = evolve(i, v, x, tau_mem, tau_syn)
        f = vv - v_th
        fp = v_dot(ii, vv, tau_mem)
        fpp = -(ii / tau_syn + fp) / tau_mem
        below = f < 0
        lo = torch.where(below, x, lo)
        hi = torch.where(below, hi, x)
        denom = 2.0 * fp * fp - f * fpp
        ok = (fp > 0) & (denom > 0)
        xn = x - 2.0 * f * fp / torch.where(ok, denom, torch.ones_like(denom))
        bad = ~ok | ~(xn >= lo) | ~(xn <= hi) | ~torch.isfinite(xn)  # (a converged step may land on lo)
        xn = torch.where(bad, 0.5 * (lo + hi), xn)
        xn = torch.where(f == 0, x, xn)
        step = (xn - x).abs()
        x = xn
        # done when the step is at the resolution of x, or V - v_th at the resolution of V (near-tangent
        # crossings, where the root is only that well defined and the iteration slows down)
        done = (step <= 4 * eps * (x.abs() + tau_mem)) | (f.abs() <= f_tol)
        if it % 2 == 1 and bool(done.all()):
            break
    return x


def crossing_time(i: Tensor, v: Tensor, v_th: Tensor | float, tau_mem: Tensor | float, tau_syn: Tensor | float,
                  *, horizon: Tensor | float = math.inf, method: str = "auto") -> Tensor:
    """Time (seconds, >= 0) from the state ``(I, V)`` to the first upward crossing of ``v_th`` within
    ``[0, horizon]`` under free evolution; ``inf`` when there is none. 0 when ``V >= v_th`` already.

    Args:
        method: ``"auto"`` (closed form where ``tau_mem`` equals ``tau_syn`` or ``2 tau_syn``, else Newton),
            or one of ``"lambert"``, ``"quadratic"``, ``"newton"`` to force a solver (the closed forms are only
            valid for their time-constant ratio).

    Shape:
        all arguments broadcast together; with ``tau_syn == 0`` the membrane only decays, so the only
        crossing is an immediate one.
    """
    if method not in CROSSING_METHODS:
        raise ValueError(f"method must be one of {CROSSING_METHODS}, got {method!r}.")
    scalar = isinstance(tau_mem, float) and isinstance(tau_syn, float)
    v_th, horizon = _t(v_th, v), _t(horizon, v)
    if scalar:
        shape = torch.broadcast_shapes(i.shape, v.shape, v_th.shape, horizon.shape)
        tm, ts = tau_mem, tau_syn
    else:
        tau_mem, tau_syn = _t(tau_mem, v), _t(tau_syn, v)
        shape = torch.broadcast_shapes(i.shape, v.shape, v_th.shape, tau_mem.shape, tau_syn.shape, horizon.shape)
        tm, ts = tau_mem.expand(shape), tau_syn.expand(shape)
    i, v, v_th, horizon = (x.expand(shape) for x in (i, v, v_th, horizon))
    already = (v >= v_th) & (horizon >= 0)
    out = torch.full_like(v, math.inf)
    if scalar and ts == 0:
        return torch.where(already, torch.zeros_like(out), out)
    hi, hit = _bracket(i, v, v_th, tm, ts, horizon)
    todo = hit & ~already & (horizon >= 0)
    if not scalar:
        todo = todo & (ts > 0)
    if bool(todo.any()):
        i_, v_, th_, hi_ = (x[todo] for x in (i, v, v_th, hi))
        tm_, ts_ = (tm, ts) if scalar else (tm[todo], ts[todo])
        if method == "auto":
            s = _crossing_auto(i_, v_, th_, tm_, ts_, hi_)
        elif method == "lambert":
            s = crossing_lambert(i_, v_, th_, _t(tm_, v_))
        elif method == "quadratic":
            s = crossing_quadratic(i_, v_, th_, _t(tm_, v_))
        else:
            s = crossing_newton(i_, v_, th_, tm_, ts_, hi_)
        out[todo] = torch.minimum(s, hi_)
    return torch.where(already, torch.zeros_like(out), out)


def _crossing_auto(i: Tensor, v: Tensor, v_th: Tensor, tm: Tensor | float, ts: Tensor | float,
                   hi: Tensor) -> Tensor:
    """Closed form where the time-constant ratio allows one, Newton elsewhere (per element)."""
    if isinstance(tm, float) and isinstance(ts, float):
        if tm == ts:
            return crossing_lambert(i, v, v_th, _t(tm, v))
        if tm == 2.0 * ts:
            return crossing_quadratic(i, v, v_th, _t(tm, v))
        return crossing_newton(i, v, v_th, tm, ts, hi)
    s = torch.empty_like(v)
    eq, two = tm == ts, tm == 2.0 * ts
    rest = ~(eq | two)
    if bool(eq.any()):
        s[eq] = crossing_lambert(i[eq], v[eq], v_th[eq], tm[eq])
    if bool(two.any()):
        s[two] = crossing_quadratic(i[two], v[two], v_th[two], tm[two])
    if bool(rest.any()):
        s[rest] = crossing_newton(i[rest], v[rest], v_th[rest], tm[rest], ts[rest], hi[rest])
    return s
