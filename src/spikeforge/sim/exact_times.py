r"""Exact spike-time gradients through the implicit spike-time equations (multi-spike Fast & Deep).

Model (the event engine's, :mod:`spikeforge.sim.event`): current-based LIF with :math:`v_\mathrm{leak} = 0`,

.. math::

    \tau_\mathrm{syn}\,\dot I = -I, \qquad \tau_\mathrm{mem}\,\dot V = -V + I,

an input spike of weight :math:`w` at :math:`t_i` makes :math:`I` jump by :math:`w/\tau_\mathrm{syn}`; the neuron
fires when :math:`V` reaches :math:`\vartheta` and :math:`V` is reset to 0, i.e. :math:`\vartheta` is subtracted.
Before the next spike the membrane is therefore a closed form of the input times and the neuron's own earlier
spike times :math:`t_1 < t_2 < \dots`:

.. math::

    V(t) = \sum_i w_i \sum_m K(t - t_{i,m}) - \vartheta \sum_{k' < k} e^{-(t - t_{k'})/\tau_\mathrm{mem}},
    \qquad K(s) = \frac{e^{-s/\tau_\mathrm{syn}} - e^{-s/\tau_\mathrm{mem}}}{\tau_\mathrm{syn} - \tau_\mathrm{mem}}
    \;(s > 0)

(:math:`K(s) = s\,e^{-s/\tau}/\tau^2` when :math:`\tau_\mathrm{syn} = \tau_\mathrm{mem} = \tau`). With a
refractory time :math:`t_\mathrm{ref} > 0` the membrane is held at 0 until :math:`t_r = t_{k-1} + t_\mathrm{ref}`
while :math:`I` keeps integrating, so :math:`V(t) = V_\mathrm{lin}(t) - e^{-(t - t_r)/\tau_\mathrm{mem}}
V_\mathrm{lin}(t_r)` with :math:`V_\mathrm{lin}` the first sum above.

Each spike time solves :math:`V(t_k; w, t_\mathrm{in}, t_{<k}) = \vartheta`. The implicit function theorem gives
:math:`\partial t_k/\partial\theta = -(\partial V/\partial\theta)/\dot V(t_k)` for every parameter or input time
:math:`\theta`, the earlier spikes :math:`t_{<k}` included. :func:`exact_spike_times` builds exactly this graph:

.. math::

    t_k = \hat t_k - \frac{V(\hat t_k) - \mathrm{sg}[V(\hat t_k)]}{\mathrm{sg}[\dot V(\hat t_k^-)]},
    \qquad \dot V(\hat t_k^-) = \frac{I(\hat t_k) - \vartheta}{\tau_\mathrm{mem}},

where :math:`\hat t_k` are the engine's (detached) spike times and sg stops gradients. Its value is exactly
:math:`\hat t_k`; its gradient is the exact one. The earlier spikes enter through their own rebuilt, differentiable
times, so the chain :math:`t_1 \to t_2 \to \dots` (and, in a recurrent layer, the chain through other neurons'
spikes) is included: the rebuild is repeated as a fixed-point sweep, once per link of the longest causal chain
(``max_spikes`` sweeps feed-forward; the number of spikes in the layer, recurrent), after which the triangular
system is solved exactly.

Reference: J. Göltz, L. Kriener et al., "Fast and energy-efficient neuromorphic deep learning with first-spike
times", Nat. Mach. Intell. 3, 823 (2021), extended here to several spikes per neuron.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.checks import SpikeforgeError, check_rank
from ..dynamics import cuba_lif_exact as ex
from .event import simulate

__all__ = ["exact", "exact_spike_times", "psp_current", "psp_kernel"]

#: smallest membrane slope (in units of v_th / tau_mem) used to divide by at a threshold crossing; a grazing
#: crossing (slope -> 0) has an unbounded true gradient, which this bounds.
MIN_SLOPE = 1e-3


def _positive(s: Tensor) -> tuple[Tensor, Tensor]:
    """``(s where s > 0 else 0, mask)``: safe arguments for the kernels (no inf, no NaN gradients)."""
    mask = s > 0
    return torch.where(mask, s, torch.zeros_like(s)), mask


def psp_kernel(s: Tensor, *, tau_mem: float, tau_syn: float) -> Tensor:
    r"""Membrane response :math:`K(s)` to an input of unit weight arriving ``s`` seconds ago (0 for ``s <= 0``).

    Shape: any -> same.
    """
    s, mask = _positive(s)
    if tau_syn == 0:
        k = torch.exp(-s / tau_mem) / tau_mem
    else:  # I jumps by 1/tau_syn; the engine's cancellation-free g(s) (also for tau_syn == tau_mem)
        k = ex.psp_gain(s, tau_mem, tau_syn) / tau_syn
    return torch.where(mask, k, torch.zeros_like(k))


def psp_current(s: Tensor, *, tau_syn: float) -> Tensor:
    r"""Synaptic current :math:`e^{-s/\tau_\mathrm{syn}}/\tau_\mathrm{syn}` of a unit input ``s`` seconds ago.

    Shape: any -> same.
    """
    s, mask = _positive(s)
    return torch.where(mask, torch.exp(-s / tau_syn) / tau_syn, torch.zeros_like(s))


def _summed(fn, t_eval: Tensor, times: Tensor, weight: Tensor) -> Tensor:
    """``sum_i weight[j, i] sum_m fn(t_eval[b, j, k] - times[b, i, m])``.

    Shape: t_eval ``[B, J, K]``, times ``[B, I, M]``, weight ``[J, I]`` -> ``[B, J, K]``.
    """
    s = t_eval[:, :, :, None, None] - times[:, None, None, :, :]  # [B, J, K, I, M]
    return torch.einsum("bjki,ji->bjk", fn(s).sum(dim=-1), weight)


def _check(times_out: Tensor, times_in: Tensor, weight: Tensor, weight_rec: Tensor | None) -> None:
    check_rank("times_out", times_out, 3, layout="[B, n_out, max_spikes]")
    check_rank("times_in", times_in, 3, layout="[B, n_in, K_in]")
    check_rank("weight", weight, 2, layout="[n_out, n_in]")
    b, n_out, _ = times_out.shape
    if times_in.shape[0] != b or weight.shape != (n_out, times_in.shape[1]):
        raise SpikeforgeError(
            f"shapes do not fit: times_out {tuple(times_out.shape)} [B, n_out, K], times_in "
            f"{tuple(times_in.shape)} [B, n_in, K_in], weight {tuple(weight.shape)} must be [n_out, n_in] = "
            f"[{n_out}, {times_in.shape[1]}] with the same B.")
    if weight_rec is not None and weight_rec.shape != (n_out, n_out):
        raise SpikeforgeError(f"weight_rec must be [n_out, n_out] = [{n_out}, {n_out}], got {tuple(weight_rec.shape)}.")


def exact_spike_times(
    times_out: Tensor,
    times_in: Tensor,
    weight: Tensor,
    *,
    tau_mem: float,
    tau_syn: float,
    v_th: float = 1.0,
    t_ref: float = 0.0,
    weight_rec: Tensor | None = None,
) -> Tensor:
    """Differentiable spike times, equal in value to ``times_out``, with exact gradients.

    Args:
        times_out: the layer's spike times from the event engine (sorted per neuron, ``+inf`` padded); detached.
        times_in: input spike times (``+inf`` padded), may require grad.
        weight: input weights; may require grad.
        tau_mem, tau_syn: time constants in seconds (``tau_syn > 0``).
        v_th: threshold. t_ref: refractory time in seconds (membrane held at 0, current keeps integrating).
        weight_rec: recurrent weights ``[n_out, n_out]`` (the layer's own spikes are also its inputs), or None.

    Returns:
        Spike times equal to ``times_out``, differentiable w.r.t. ``weight``, ``weight_rec`` and ``times_in``;
        missing spikes stay ``+inf`` with zero gradient.

    Shape:
        times_out ``[B, n_out, K]``, times_in ``[B, n_in, K_in]``, weight ``[n_out, n_in]`` -> ``[B, n_out, K]``.
    """
    _check(times_out, times_in, weight, weight_rec)
    if tau_syn <= 0:
        raise SpikeforgeError(
            f"the exact spike-time gradient needs tau_syn > 0, got {tau_syn}: with tau_syn = 0 a plain LIF fires only "
            "at input arrival times, where the membrane jumps and its slope is undefined; use gradient='eventprop'.")
    t_hat = times_out.detach()
    fired = torch.isfinite(t_hat)
    t_hat = torch.where(fired, t_hat, torch.zeros_like(t_hat))  # finite placeholders; masked at the end
    kernel = lambda s: psp_kernel(s, tau_mem=tau_mem, tau_syn=tau_syn)  # noqa: E731
    current = lambda s: psp_current(s, tau_syn=tau_syn)  # noqa: E731
    b, n_out, k_out = t_hat.shape

    def layer_times(t: Tensor) -> Tensor:
        """The layer's own spikes as inputs of the recurrent weights: ``[B, n_out, K]``, +inf where missing."""
        return torch.where(fired, t, torch.full_like(t, math.inf))

    with torch.no_grad():  # the slope just before each spike (detached)
        i_now = _summed(current, t_hat, times_in.detach(), weight.detach())
        if weight_rec is not None:
            i_now = i_now + _summed(current, t_hat, layer_times(t_hat), weight_rec.detach())
        slope = ((i_now - v_th) / tau_mem).clamp_min(MIN_SLOPE * abs(v_th) / tau_mem)
    v_ext = _summed(kernel, t_hat, times_in, weight)  # external inputs: fixed over the sweeps
    # k' < k on the same neuron: [K, K] mask of earlier own spikes
    earlier = torch.ones(k_out, k_out, dtype=torch.bool, device=t_hat.device).tril(-1)
    sweeps = k_out if weight_rec is None else max(1, int(fired.sum(dim=(1, 2)).max()))
    t = t_hat
    for _ in range(sweeps):
        v = v_ext
        if weight_rec is not None:
            v = v + _summed(kernel, t_hat, layer_times(t), weight_rec)
        if k_out > 1:
            v = v - _reset(t_hat, t, fired, earlier, times_in, weight, weight_rec, layer_times,
                           kernel=kernel, tau_mem=tau_mem, v_th=v_th, t_ref=t_ref)
        t = t_hat - (v - v.detach()) / slope
    return torch.where(fired, t, torch.full_like(t, math.inf))


def _reset(t_hat: Tensor, t: Tensor, fired: Tensor, earlier: Tensor, times_in: Tensor, weight: Tensor,
           weight_rec: Tensor | None, layer_times, *, kernel, tau_mem: float, v_th: float, t_ref: float) -> Tensor:
    """What the neuron's earlier spikes remove from the membrane at ``t_hat``. Shape: ``[B, n_out, K]``."""
    if t_ref == 0:  # subtract v_th at each earlier spike, decaying with tau_mem
        ds, _ = _positive(t_hat[:, :, :, None] - t[:, :, None, :])  # [B, J, K, K']
        mask = earlier & fired[:, :, None, :]
        return v_th * torch.where(mask, torch.exp(-ds / tau_mem), torch.zeros_like(ds)).sum(dim=-1)
    # refractory: V = V_lin(t) - exp(-(t - t_r)/tau_mem) V_lin(t_r), t_r = t_{k-1} + t_ref
    prev = torch.cat([torch.zeros_like(t[:, :, :1]), t[:, :, :-1]], dim=2)
    has_prev = torch.cat([torch.zeros_like(fired[:, :, :1]), fired[:, :, :-1]], dim=2)
    t_r = prev + t_ref
    v_r = _summed(kernel, t_r, times_in, weight)
    if weight_rec is not None:
        v_r = v_r + _summed(kernel, t_r, layer_times(t), weight_rec)
    ds, _ = _positive(t_hat - t_r)
    return torch.where(has_prev, torch.exp(-ds / tau_mem) * v_r, torch.zeros_like(v_r))


def _scalar(name: str, value: float | Tensor) -> float:
    if isinstance(value, Tensor):
        if value.numel() and bool((value == value.reshape(-1)[0]).all()):
            return float(value.reshape(-1)[0])
        raise SpikeforgeError(f"gradient='exact' needs one {name} for the whole layer, got per-neuron values "
                              f"{value.tolist()}; use gradient='eventprop' for per-neuron time constants.")
    return float(value)


def exact(times: Tensor, weight: Tensor, *, tau_mem: float | Tensor, tau_syn: float | Tensor, v_th: float = 1.0,
          t_ref: float = 0.0, max_spikes: int = 1, t_max: float = math.inf, weight_rec: Tensor | None = None) -> Tensor:
    """A layer with exact spike-time gradients: the event engine's spike times
    (:func:`spikeforge.sim.event.simulate`), rebuilt by :func:`exact_spike_times`. The ``"exact"`` entry of
    :data:`spikeforge.nn.events.GRADIENTS`.

    Shape: times ``[B, n_in, K_in]``, weight ``[n_out, n_in]`` -> ``[B, n_out, max_spikes]``.
    """
    tau_mem, tau_syn = _scalar("tau_mem", tau_mem), _scalar("tau_syn", tau_syn)
    out = simulate(times.detach(), weight.detach(), tau_mem=tau_mem, tau_syn=tau_syn, v_th=v_th, t_ref=t_ref,
                   max_spikes=max_spikes, t_max=t_max,
                   weight_rec=None if weight_rec is None else weight_rec.detach())
    return exact_spike_times(out, times, weight, tau_mem=tau_mem, tau_syn=tau_syn, v_th=v_th, t_ref=t_ref,
                             weight_rec=weight_rec)
