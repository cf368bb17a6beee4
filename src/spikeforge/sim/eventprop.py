r"""EventProp (Wunderlich & Pehle 2021, Sci. Rep. 11:12829): exact gradients of spike times of an event-driven
current-based LIF layer (:mod:`spikeforge.sim.event`) with respect to its weights and its input spike times.

The forward pass keeps only the output spike times and, per spike, the synaptic current at the spike and at the
end of its refractory period; memory grows with the number of spikes, not with simulated time. The backward
pass integrates the adjoint :math:`\lambda = (\lambda_V, \lambda_I)` backward in time, in closed form between
events (its equation :math:`\dot\lambda = -A^\top\lambda` is linear):

.. math::

    \lambda_V(t - \Delta) = e^{-\Delta/\tau_m}\lambda_V(t), \qquad
    \lambda_I(t - \Delta) = e^{-\Delta/\tau_s}\lambda_I(t) + g(\Delta)\,\lambda_V(t),

with :math:`g` the PSP gain of :mod:`spikeforge.dynamics.cuba_lif_exact`. :math:`\lambda` is the sensitivity
of the loss to the state, :math:`\delta L = \lambda \cdot \delta x`. It is 0 after a neuron's last spike and
:math:`\lambda_V = 0` while the membrane is held (refractory). At the :math:`k`-th output spike, with
:math:`G_k = \partial L/\partial t_k` (the incoming gradient, plus in a recurrent layer the effect of the spike
as an input to the layer), :math:`\dot V^- = (I(t_k) - \vartheta)/\tau_m` and
:math:`\dot V^+ = I(r_k)/\tau_m` at the release :math:`r_k = t_k + t_\mathrm{ref}`:

.. math::

    \lambda_V(t_k^-) = \frac{\dot V^+\,\lambda_V(r_k^+) - G_k}{\dot V^-}, \qquad \lambda_I \text{ continuous}.

An input spike of weight :math:`w` at :math:`t_i` (adding :math:`w/\tau_s` to ``I``) then gives

.. math::

    \frac{\partial L}{\partial w} = \frac{\lambda_I(t_i)}{\tau_s}, \qquad
    \frac{\partial L}{\partial t_i} = -\frac{w}{\tau_s}\left(\frac{\lambda_V(t_i)}{\tau_m}
        - \frac{\lambda_I(t_i)}{\tau_s}\right),

the latter being what the layer below receives as :math:`G` for its own spikes (multi-layer EventProp).
(Wunderlich & Pehle write :math:`-\tau_s\sum\lambda_I`: their adjoint has another sign and scaling and their
synaptic jump is :math:`w`, not :math:`w/\tau_s`; the constants here are pinned by finite-difference tests.)

Feed-forward layers are differentiated without a loop over events (one loop over the spike index); recurrent
layers loop over all events of a sample in reverse. Padded (``inf``) times get zero gradient. A crossing that
only grazes the threshold has :math:`\dot V^- \to 0` and an unbounded gradient; :math:`\dot V^-` is floored at
``sqrt(eps) * v_th / tau_mem`` so that no ``inf``/NaN appears. EventProp needs ``tau_syn > 0``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.checks import SpikeforgeError
from ..dynamics import cuba_lif_exact as ex
from . import event
from .event import EventParams, SpikeRecord

__all__ = ["EventPropFunction", "eventprop"]


def eventprop(times_in: Tensor, weight: Tensor, *, tau_mem: Tensor | float, tau_syn: Tensor | float,
              v_th: Tensor | float = 1.0, t_ref: float = 0.0, max_spikes: int = 1, t_max: float = math.inf,
              weight_rec: Tensor | None = None) -> Tensor:
    """Output spike times like :func:`spikeforge.sim.event.simulate`, differentiable (EventProp) with respect to
    ``times_in``, ``weight`` and ``weight_rec``.

    Shape:
        times_in ``[B, n_in, K_in]``, weight ``[n_out, n_in]``, weight_rec ``[n_out, n_out]`` ->
        ``[B, n_out, max_spikes]``.
    """
    event.check_layer(times_in, weight, weight_rec)
    p = event.make_params(weight.shape[0], weight, tau_mem=tau_mem, tau_syn=tau_syn, v_th=v_th, t_ref=t_ref,
                          max_spikes=max_spikes, t_max=t_max)
    if event.is_plain(p) or (isinstance(p.tau_syn, Tensor) and bool((p.tau_syn == 0).any())):
        raise SpikeforgeError("EventProp needs tau_syn > 0 (with tau_syn = 0 a spike time equals an input time "
                              "and its weight gradient vanishes); got tau_syn = 0. Use a synaptic time constant.")
    return EventPropFunction.apply(times_in, weight, weight_rec, p)


class EventPropFunction(torch.autograd.Function):
    """``(times_in, weight, weight_rec or None, params) -> spike times`` with the EventProp backward."""

    @staticmethod
    def forward(ctx, times_in: Tensor, weight: Tensor, weight_rec: Tensor | None,  # type: ignore[override]
                p: EventParams) -> Tensor:
        if weight_rec is None:
            rec = event.run_feedforward(times_in.detach(), weight.detach(), p)
        else:
            rec = event.run_recurrent(times_in.detach(), weight.detach(), weight_rec.detach(), p)
        ctx.save_for_backward(times_in, weight, weight_rec, rec.times, rec.i_spike, rec.i_release)
        ctx.p = p
        return rec.times

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        times_in, weight, weight_rec, t_out, i_spike, i_release = ctx.saved_tensors
        rec = SpikeRecord(t_out, i_spike, i_release)
        grad = torch.where(torch.isfinite(t_out), grad, torch.zeros_like(grad))
        if weight_rec is None:
            g_t, g_w = backward_feedforward(times_in, weight, rec, grad, ctx.p)
            g_rec = None
        else:
            g_t, g_w, g_rec = backward_events(times_in, weight, weight_rec, rec, grad, ctx.p)
        return g_t, g_w, g_rec, None


def _floor_vdot(vdot: Tensor, v_th: Tensor | float, tau_mem: Tensor | float) -> Tensor:
    floor = math.sqrt(torch.finfo(vdot.dtype).eps) * v_th / tau_mem
    return torch.maximum(vdot, torch.as_tensor(floor, dtype=vdot.dtype, device=vdot.device).expand_as(vdot))


def _back(lv: Tensor, li: Tensor, dt: Tensor, tm: Tensor | float, ts: Tensor | float) -> tuple[Tensor, Tensor]:
    """Adjoint ``dt`` seconds earlier: the transpose of the forward propagator."""
    d = torch.clamp(dt, min=0)
    d = torch.where(torch.isfinite(d), d, torch.zeros_like(d))
    e_m = torch.exp(-d / tm)
    e_s = torch.exp(-d / ts)
    return e_m * lv, e_s * li + ex.psp_gain(d, tm, ts) * lv


def spike_adjoints(rec: SpikeRecord, grad: Tensor, p: EventParams) -> tuple[Tensor, Tensor]:
    r"""Adjoint :math:`(\lambda_V, \lambda_I)` just before every output spike of a feed-forward layer (0 for
    missing spikes), by the jump rule, from the last spike backwards.

    Shape:
        ``[B, n_out, max_spikes]`` each.
    """
    tm, ts, th = event._col(p.tau_mem), event._col(p.tau_syn), event._col(p.v_th)
    tm1 = tm.reshape(-1) if isinstance(tm, Tensor) else tm
    ts1 = ts.reshape(-1) if isinstance(ts, Tensor) else ts
    th1 = th.reshape(-1) if isinstance(th, Tensor) else th
    t = rec.times
    k_max = t.shape[-1]
    lv_all, li_all = torch.zeros_like(t), torch.zeros_like(t)
    lv_next = torch.zeros_like(t[..., 0])
    li_next = torch.zeros_like(lv_next)
    for k in range(k_max - 1, -1, -1):
        has = torch.isfinite(t[..., k])
        if k + 1 < k_max:
            has_next = torch.isfinite(t[..., k + 1])
            release = t[..., k] + p.t_ref
            gap = torch.where(has_next, t[..., k + 1] - release, torch.zeros_like(release))
            lv_r, li_r = _back(lv_next, li_next, gap, tm1, ts1)
            lv_r = torch.where(has_next, lv_r, torch.zeros_like(lv_r))
            li_r = torch.where(has_next, li_r, torch.zeros_like(li_r))
        else:
            lv_r, li_r = torch.zeros_like(lv_next), torch.zeros_like(li_next)
        li_k = li_r * math.exp(-p.t_ref / ts1) if isinstance(ts1, float) else li_r * torch.exp(-p.t_ref / ts1)
        vdot_minus = _floor_vdot((rec.i_spike[..., k] - th1) / tm1, th1, tm1)
        lv_k = (lv_r * rec.i_release[..., k] / tm1 - grad[..., k]) / vdot_minus
        lv_k = torch.where(has, lv_k, torch.zeros_like(lv_k))
        li_k = torch.where(has, li_k, torch.zeros_like(li_k))
        lv_all[..., k], li_all[..., k] = lv_k, li_k
        lv_next, li_next = lv_k, li_k
    return lv_all, li_all


def backward_feedforward(times_in: Tensor, weight: Tensor, rec: SpikeRecord, grad: Tensor,
                         p: EventParams) -> tuple[Tensor, Tensor]:
    """Gradients of a feed-forward layer with respect to its input times and weights: the registered engine of
    :func:`spikeforge.sim.event.feedforward_kernel` (e.g. the C++ CPU kernel) where one covers the call, else
    vectorised over events (in the engine's batch chunks).

    Shape:
        ``[B, n_in, K_in]`` and ``[n_out, n_in]``.
    """
    kernel = event.feedforward_kernel(times_in, weight, p)
    if kernel is not None:
        b, n_in, k_in = times_in.shape
        ev = event.merge_events(times_in.detach())
        g_ev, g_w = kernel.backward(ev.t, ev.src, weight, rec.times, rec.i_spike, rec.i_release, grad, p)
        g_t = g_ev.new_zeros(b, n_in * k_in).scatter_(1, ev.order, g_ev).reshape(b, n_in, k_in)
        return g_t, g_w
    chunks = event.batch_chunks(times_in, weight.shape[0])
    if len(chunks) == 1:
        return _backward_feedforward(times_in, weight, rec, grad, p)
    g_t, g_w = [], torch.zeros_like(weight)
    for c in chunks:
        gt_c, gw_c = _backward_feedforward(times_in[c], weight, SpikeRecord(*(f[c] for f in rec)), grad[c], p)
        g_t.append(gt_c)
        g_w = g_w + gw_c
    return torch.cat(g_t, 0), g_w


def _backward_feedforward(times_in: Tensor, weight: Tensor, rec: SpikeRecord, grad: Tensor,
                          p: EventParams) -> tuple[Tensor, Tensor]:
    b, n_in, k_in = times_in.shape
    n_out = weight.shape[0]
    tm, ts = event._col(p.tau_mem), event._col(p.tau_syn)
    lv_k, li_k = spike_adjoints(rec, grad, p)
    ev = event.merge_events(times_in.detach())
    e = ev.t.shape[-1]
    finite = torch.isfinite(ev.t).unsqueeze(1)
    t_ev = ev.t.unsqueeze(1).expand(b, n_out, e)
    # the next output spike after each event, and the release of the one before it
    k = torch.searchsorted(rec.times.contiguous(), t_ev.contiguous(), right=True)  # [B, n_out, E]
    inf = torch.full_like(rec.times[..., :1], math.inf)
    t_pad = torch.cat([rec.times, inf], -1)
    zero = torch.zeros_like(inf)
    t_next = torch.gather(t_pad, -1, k)
    lv_n = torch.gather(torch.cat([lv_k, zero], -1), -1, k)
    li_n = torch.gather(torch.cat([li_k, zero], -1), -1, k)
    t_prev = torch.gather(torch.cat([-inf, rec.times], -1), -1, k)
    live = finite & torch.isfinite(t_next)
    rho = torch.maximum(t_ev, t_prev + p.t_ref)
    lv_rho, li_rho = _back(lv_n, li_n, torch.where(live, t_next - rho, torch.zeros_like(rho)), tm, ts)
    held = rho > t_ev
    lv = torch.where(live & ~held, lv_rho, torch.zeros_like(lv_rho))
    li_decay = torch.exp(-torch.where(live, rho - t_ev, torch.zeros_like(rho)) / ts)
    li = torch.where(live, li_rho * li_decay, torch.zeros_like(li_rho))
    w_ev = weight.detach().t()[ev.src].transpose(1, 2)  # [B, n_out, E]
    g_w = torch.zeros((b, n_out, n_in), dtype=weight.dtype, device=weight.device)
    g_w.scatter_add_(2, ev.src.unsqueeze(1).expand(b, n_out, e), li / ts)
    g_ev = (-(w_ev / ts) * (lv / tm - li / ts)).sum(1)  # [B, E]
    g_ev = torch.where(finite[:, 0], g_ev, torch.zeros_like(g_ev))
    g_t = g_ev.new_zeros(b, n_in * k_in).scatter_(1, ev.order, g_ev).reshape(b, n_in, k_in)
    return g_t, g_w.sum(0)


def backward_events(times_in: Tensor, weight: Tensor, weight_rec: Tensor | None, rec: SpikeRecord, grad: Tensor,
                    p: EventParams) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gradients by integrating the adjoint backward over every event of each sample (input spikes, output
    spikes, releases), vectorised over the batch. Handles recurrent layers (``weight_rec``) and, with
    ``weight_rec=None``, feed-forward ones (a reference for :func:`backward_feedforward`).

    Shape:
        ``[B, n_in, K_in]``, ``[n_out, n_in]``, ``[n_out, n_out]`` (or None).
    """
    b, n_in, k_in = times_in.shape
    n_out, k_out = rec.times.shape[1], rec.times.shape[2]
    dev, dt_ = times_in.device, times_in.dtype
    tm, ts, th = p.tau_mem, p.tau_syn, p.v_th
    ev = event.merge_events(times_in.detach())
    e = ev.t.shape[-1]
    # one list per sample: inputs (type 0), spikes (1), releases (2); equal times run release, spike, input
    t_spk = rec.times.reshape(b, -1)
    ids = torch.arange(n_out * k_out, device=dev).expand(b, -1)
    all_t = torch.cat([ev.t, t_spk, t_spk + p.t_ref], 1)
    all_ty = torch.cat([torch.zeros_like(ev.src), torch.ones_like(ids), torch.full_like(ids, 2)], 1)
    all_id = torch.cat([torch.arange(e, device=dev).expand(b, -1), ids, ids], 1)
    all_t, order = torch.sort(all_t, dim=1, stable=True)
    all_ty, all_id = all_ty.gather(1, order), all_id.gather(1, order)
    rows = torch.arange(b, device=dev)
    neurons = torch.arange(n_out, device=dev)
    lv = torch.zeros((b, n_out), dtype=dt_, device=dev)
    li = torch.zeros_like(lv)
    lv_rel = torch.zeros_like(lv)
    t_cur = torch.full((b,), math.inf, dtype=dt_, device=dev)
    g_w = torch.zeros((b, n_out, n_in), dtype=dt_, device=dev)
    g_rec = torch.zeros((b, n_out, n_out), dtype=dt_, device=dev) if weight_rec is not None else None
    g_ev = torch.zeros((b, e), dtype=dt_, device=dev)
    w_t = weight.detach().t()  # [n_in, n_out]
    wr_t = weight_rec.detach().t() if weight_rec is not None else None
    for s in range(all_t.shape[1] - 1, -1, -1):
        t_s, ty, idx = all_t[:, s], all_ty[:, s], all_id[:, s]
        ok = torch.isfinite(t_s)
        if not bool(ok.any()):
            continue
        dt = torch.where(ok & torch.isfinite(t_cur), t_cur - t_s, torch.zeros_like(t_s)).unsqueeze(1)
        lv_new, li_new = _back(lv, li, dt, tm, ts)
        lv = torch.where(ok.unsqueeze(1), lv_new, lv)
        li = torch.where(ok.unsqueeze(1), li_new, li)
        t_cur = torch.where(ok, t_s, t_cur)
        n = torch.div(idx, k_out, rounding_mode="floor").clamp(max=n_out - 1)
        kk = idx % k_out
        mine = neurons.unsqueeze(0) == n.unsqueeze(1)  # [B, n_out]
        # release: remember lambda_V after it, then the held membrane has lambda_V = 0
        is_rel = (ok & (ty == 2)).unsqueeze(1) & mine
        lv_rel = torch.where(is_rel, lv, lv_rel)
        lv = torch.where(is_rel, torch.zeros_like(lv), lv)
        # input spike
        is_in = ok & (ty == 0)
        src = ev.src[rows, idx.clamp(max=e - 1)]
        w_in = w_t[src]  # [B, n_out]
        g_w.scatter_add_(2, src.view(b, 1, 1).expand(b, n_out, 1),
                         torch.where(is_in.unsqueeze(1), li / ts, torch.zeros_like(li)).unsqueeze(2))
        g_in = (-(w_in / ts) * (lv / tm - li / ts)).sum(1)
        g_ev[rows, idx.clamp(max=e - 1)] += torch.where(is_in, g_in, torch.zeros_like(g_in))
        # output spike
        is_sp = ok & (ty == 1)
        if not bool(is_sp.any()):
            continue
        g_k = grad.reshape(b, -1)[rows, idx.clamp(max=n_out * k_out - 1)]
        if weight_rec is not None:
            lv_post = torch.where(mine, lv_rel if p.t_ref == 0 else torch.zeros_like(lv), lv)
            w_r = wr_t[n]  # [B, n_out]: weights from neuron n to every neuron
            g_k = g_k + (-(w_r / ts) * (lv_post / tm - li / ts)).sum(1)
            g_rec.scatter_add_(2, n.view(b, 1, 1).expand(b, n_out, 1),
                               torch.where(is_sp.unsqueeze(1), li / ts, torch.zeros_like(li)).unsqueeze(2))
        i_k = rec.i_spike[rows, n, kk]
        i_r = rec.i_release[rows, n, kk]
        tm_n = tm[n] if isinstance(tm, Tensor) else tm
        th_n = th[n] if isinstance(th, Tensor) else th
        vdot = _floor_vdot((i_k - th_n) / tm_n, th_n, tm_n)
        lv_k = (lv_rel[rows, n] * i_r / tm_n - g_k) / vdot
        lv = torch.where(is_sp.unsqueeze(1) & mine, lv_k.unsqueeze(1), lv)
    g_t = g_ev.new_zeros(b, n_in * k_in).scatter_(1, ev.order, g_ev).reshape(b, n_in, k_in)
    return g_t, g_w.sum(0), (g_rec.sum(0) if g_rec is not None else None)
