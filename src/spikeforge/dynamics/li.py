r"""Leaky integrator (LI) read-out: a LIF membrane that never fires (NIR ``LI`` with :math:`R = 1`).

.. math::

    v_t = v_\mathrm{leak} + \alpha\,(v_{t-1} - v_\mathrm{leak}) + (1 - \alpha)\,x_t,
    \qquad \alpha = e^{-\Delta t/\tau_\mathrm{mem}}

The output at every step is the membrane :math:`v_t` (read out by its maximum, mean or last value).

The update is linear, so a whole sequence has a closed form (:func:`run`): with :math:`u_t = v_t - v_\mathrm{leak}`,

.. math::

    u_t = \alpha^{t+1} u_{-1} + \sum_{s \le t} \alpha^{t-s} (1 - \alpha)\,x_s,

evaluated chunk by chunk (``C`` steps: one ``[C, C]`` lower-triangular decay matrix times the chunk's inputs, the
last membrane carried into the next chunk), i.e. a few matrix products instead of ``3 T`` small operations
and their autograd nodes. It equals the step-by-step :func:`step` loop up to float rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .common import decay
from .lif import integrate

__all__ = ["CHUNK", "LIParams", "LIState", "init_state", "make_params", "run", "step"]

#: time steps per chunk of :func:`run` (its work is ``C`` multiply-adds per input element)
CHUNK = 32


class LIParams(NamedTuple):
    """Per-step parameters."""

    alpha: Tensor
    v_leak: Tensor


class LIState(NamedTuple):
    """Membrane potential."""

    v: Tensor


def make_params(*, tau_mem: Tensor | float, v_leak: Tensor | float, dt: float) -> LIParams:
    """Per-step parameters from physical ones (seconds)."""
    return LIParams(decay(tau_mem, dt), torch.as_tensor(v_leak))


def init_state(p: LIParams, like: Tensor, *, refractory: bool = False) -> LIState:
    """Resting state ``v = v_leak``."""
    return LIState(torch.zeros_like(like) + p.v_leak.to(like))


def step(spec: object, p: LIParams, s: LIState, x: Tensor) -> tuple[Tensor, LIState]:
    """One time step: returns the membrane ``v_t`` (as output) and the new state."""
    v = integrate(p.alpha, p.v_leak, s.v, x)
    return v, LIState(v)


def run(p: LIParams, s: LIState, x: Tensor, *, chunk: int = CHUNK) -> tuple[Tensor, LIState]:
    """The membrane at every step of a whole sequence in closed form (see the module doc); differentiable with
    respect to ``x``, the initial state and the parameters.

    Shape:
        x ``[T, B, *size]`` -> membrane ``[T, B, *size]``; ``alpha``/``v_leak`` scalars or broadcastable to
        ``[B, *size]``.
    """
    t_all = x.shape[0]
    if t_all == 0:
        return x.new_zeros(x.shape), s
    alpha, v_leak = p.alpha.to(x), p.v_leak.to(x)
    y = (1.0 - alpha) * x  # [T, B, *size]
    u = s.v - v_leak
    c = min(chunk, t_all)
    k = torch.arange(c, device=x.device, dtype=x.dtype)
    lag = k.unsqueeze(1) - k.unsqueeze(0)  # [C, C]: t - s
    below = lag >= 0
    if alpha.dim() == 0:  # one decay: [C, C] @ [C, B * n]
        decay_mat = torch.where(below, alpha ** lag.clamp(min=0), torch.zeros_like(lag))
        carry = (alpha ** (k + 1)).reshape(c, *([1] * (x.dim() - 1)))  # [C, 1, ...]

        def mix(yc: Tensor, n: int) -> Tensor:
            return (decay_mat[:n, :n] @ yc.reshape(n, -1)).reshape(yc.shape)
    else:  # per-neuron decay (the same for every sample): a batched [C, C] @ [C, B] per neuron
        shape = torch.broadcast_shapes(alpha.shape, y.shape[1:])
        a = alpha.expand(shape)[0].reshape(-1)  # [N]
        pw = a.unsqueeze(0) ** lag.clamp(min=0).unsqueeze(-1)  # [C, C, N]
        decay_mat = torch.where(below.unsqueeze(-1), pw, torch.zeros_like(pw)).permute(2, 0, 1)  # [N, C, C]
        carry = (a.unsqueeze(0) ** (k + 1).unsqueeze(-1)).reshape(c, 1, *shape[1:])  # [C, 1, *size]
        y, u = y.expand(t_all, *shape), u.expand(shape)

        def mix(yc: Tensor, n: int) -> Tensor:
            flat = yc.reshape(n, shape[0], -1).permute(2, 0, 1)  # [N, C, B]
            return torch.bmm(decay_mat[:, :n, :n], flat).permute(1, 2, 0).reshape(n, *shape)

    outs = []
    for start in range(0, t_all, c):
        yc = y[start:start + c]
        n = yc.shape[0]
        u = mix(yc, n) + carry[:n] * u
        outs.append(u)
        u = u[-1]
    v = torch.cat(outs) + v_leak
    return v, LIState(v[-1])
