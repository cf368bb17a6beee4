r"""Event-driven engine: exact spike times of current-based LIF layers driven by input spike times.

The neuron (:mod:`spikeforge.dynamics.cuba_lif_exact`): :math:`\tau_s \dot I = -I`, :math:`\tau_m \dot V = -V + I`,
an input spike of weight :math:`w` adds :math:`w/\tau_s` to ``I`` (``tau_syn = 0``: adds :math:`w/\tau_m` to
``V``); at :math:`V = \vartheta` the neuron spikes, ``V`` is reset to 0 and held there for ``t_ref`` seconds.
A neuron emits at most ``max_spikes`` spikes: after that it is silent (later crossings are neither recorded nor,
in a recurrent layer, transmitted). Spikes after ``t_max`` are dropped. All times are in seconds.

Feed-forward layers are simulated without a loop over events. Since ``I`` never resets and ``V`` is linear,
after the last reset (at the end ``r`` of a refractory period, or at the spike) the membrane is
:math:`V(t) = V_\mathrm{in}(t) - V_\mathrm{in}(r)\,e^{-(t-r)/\tau_m}`, with :math:`V_\mathrm{in}` the membrane
the inputs alone would give. :math:`(I_\mathrm{in}, V_\mathrm{in})` right after every input event come from
two decaying prefix sums over the merged, sorted events (evaluated with ``logcumsumexp``, so long simulations
do not overflow). For each spike index (a Python loop of ``max_spikes`` iterations) every inter-event interval
is tested at once for a crossing (``V`` has at most one extremum per interval), and only the first interval
with one is solved. Recurrent layers loop over events (the next event per sample, vectorised over the batch).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..core.checks import SpikeforgeError, check_positive, check_positive_int, check_rank, describe
from ..dynamics import cuba_lif_exact as ex

__all__ = ["EventParams", "SpikeRecord", "check_times", "make_params", "run", "simulate"]


class EventParams(NamedTuple):
    """Layer parameters: floats, or ``[n_out]`` tensors for per-neuron values (seconds for times)."""

    tau_mem: Tensor | float
    tau_syn: Tensor | float
    v_th: Tensor | float
    t_ref: float
    t_max: float
    max_spikes: int


class SpikeRecord(NamedTuple):
    """What one layer's forward leaves for EventProp: spike times, and the synaptic current at each spike and
    at the end of its refractory period (where the membrane is released). All ``[B, n_out, max_spikes]``;
    entries of missing spikes are ``inf`` (times) and 0 (currents)."""

    times: Tensor
    i_spike: Tensor
    i_release: Tensor


def check_times(name: str, times: Tensor) -> None:
    """Check an input spike-time tensor ``[B, n, K]``: rank, floating, no NaN, >= 0, sorted along ``K``."""
    check_rank(name, times, 3, layout="[B, n_in, K_in] (spike times in seconds, +inf = no spike)")
    if not times.is_floating_point():
        raise SpikeforgeError(f"{name} must be a floating-point tensor of spike times, got {describe(times)}.")
    if bool(torch.isnan(times).any()):
        idx = tuple(int(i) for i in torch.isnan(times).nonzero()[0])
        raise SpikeforgeError(f"{name} must not contain NaN (use +inf for 'no spike'), got NaN at {idx}.")
    if bool((times < 0).any()):
        idx = tuple(int(i) for i in (times < 0).nonzero()[0])
        raise SpikeforgeError(
            f"{name} must be >= 0 seconds (+inf for 'no spike'), got {times[idx].item()} at {idx}."
        )
    if times.shape[-1] > 1:
        bad = times[..., 1:] < times[..., :-1]
        if bool(bad.any()):
            idx = tuple(int(i) for i in bad.nonzero()[0])
            nxt = idx[:-1] + (idx[-1] + 1,)
            raise SpikeforgeError(
                f"{name} must be sorted ascending along the last dimension (pad with +inf at the end), got "
                f"element {nxt} = {times[nxt].item()} after element {idx} = {times[idx].item()}. "
                f"Use torch.sort(times, dim=-1).values."
            )


def _param(name: str, value: Tensor | float, n_out: int, like: Tensor, *, allow_zero: bool = False) -> Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, n_out)):
        raise SpikeforgeError(f"{name} must be a number or a tensor of shape [n_out] = [{n_out}], got "
                              f"{describe(value)}.")
    if allow_zero:
        if bool((~torch.isfinite(t) | (t < 0)).any()):
            raise SpikeforgeError(f"{name} must be finite and >= 0 seconds, got {describe(value)}: {t.tolist()}.")
    else:
        check_positive(name, t)
    return t.reshape(-1) if t.dim() else float(t)


def make_params(n_out: int, like: Tensor, *, tau_mem: Tensor | float, tau_syn: Tensor | float,
                v_th: Tensor | float, t_ref: float, max_spikes: int, t_max: float) -> EventParams:
    """Validate the physical parameters and bring them to the dtype and device of ``like``."""
    tm = _param("tau_mem", tau_mem, n_out, like)
    ts = _param("tau_syn", tau_syn, n_out, like, allow_zero=True)
    if isinstance(ts, Tensor) and bool((ts == 0).any()) and not bool((ts == 0).all()):
        raise SpikeforgeError(f"tau_syn must be either 0 for every neuron (plain LIF) or > 0 for every neuron, "
                              f"got {ts.tolist()}.")
    th = _param("v_th", v_th, n_out, like)
    if isinstance(t_ref, bool) or not isinstance(t_ref, (int, float)) or not (0 <= t_ref < math.inf):
        raise SpikeforgeError(f"t_ref must be a finite number of seconds >= 0, got {describe(t_ref)}.")
    check_positive_int("max_spikes", max_spikes)
    if isinstance(t_max, bool) or not isinstance(t_max, (int, float)) or not t_max > 0:
        raise SpikeforgeError(f"t_max must be a number of seconds > 0 (or inf), got {describe(t_max)}.")
    return EventParams(tm, ts, th, float(t_ref), float(t_max), int(max_spikes))


def simulate(times_in: Tensor, weight: Tensor, *, tau_mem: Tensor | float, tau_syn: Tensor | float,
             v_th: Tensor | float = 1.0, t_ref: float = 0.0, max_spikes: int = 1, t_max: float = math.inf,
             weight_rec: Tensor | None = None) -> Tensor:
    """Output spike times of a layer of current-based LIF neurons (exact, event-driven; no autograd).

    Args:
        times_in: input spike times in seconds, sorted ascending along the last dim, padded with ``+inf``.
        weight: ``[n_out, n_in]`` input weights (impulse areas).
        tau_mem, tau_syn: time constants in seconds (numbers or ``[n_out]``); ``tau_syn = 0``: plain LIF.
        v_th: threshold (> 0). t_ref: refractory period (seconds). max_spikes: spikes kept per neuron.
        t_max: end of the simulation (seconds). weight_rec: ``[n_out, n_out]`` recurrent weights (or None).

    Returns:
        spike times, sorted, padded with ``+inf``.

    Shape:
        times_in ``[B, n_in, K_in]``, weight ``[n_out, n_in]`` -> ``[B, n_out, max_spikes]``.
    """
    with torch.no_grad():
        return run(times_in, weight, tau_mem=tau_mem, tau_syn=tau_syn, v_th=v_th, t_ref=t_ref,
                   max_spikes=max_spikes, t_max=t_max, weight_rec=weight_rec).times


def check_layer(times_in: Tensor, weight: Tensor, weight_rec: Tensor | None) -> None:
    """Check ranks, shapes, dtypes and devices of a layer's inputs."""
    check_times("times_in", times_in)
    check_rank("weight", weight, 2, layout="[n_out, n_in]")
    if weight.shape[1] != times_in.shape[1]:
        raise SpikeforgeError(
            f"weight must have shape [n_out, n_in] with n_in = times_in.shape[1] = {times_in.shape[1]}, got "
            f"weight of shape {tuple(weight.shape)} (n_in = {weight.shape[1]})."
        )
    if weight.dtype != times_in.dtype or weight.device != times_in.device:
        raise SpikeforgeError(f"weight must have the dtype and device of times_in ({times_in.dtype}, "
                              f"{times_in.device}), got {weight.dtype} on {weight.device}.")
    if weight_rec is not None:
        n = weight.shape[0]
        check_rank("weight_rec", weight_rec, 2, layout="[n_out, n_out]")
        if tuple(weight_rec.shape) != (n, n):
            raise SpikeforgeError(f"weight_rec must have shape [n_out, n_out] = [{n}, {n}], got "
                                  f"{tuple(weight_rec.shape)}.")
        if weight_rec.dtype != times_in.dtype or weight_rec.device != times_in.device:
            raise SpikeforgeError(f"weight_rec must have the dtype and device of times_in ({times_in.dtype}, "
                                  f"{times_in.device}), got {weight_rec.dtype} on {weight_rec.device}.")


def run(times_in: Tensor, weight: Tensor, *, tau_mem: Tensor | float, tau_syn: Tensor | float,
        v_th: Tensor | float = 1.0, t_ref: float = 0.0, max_spikes: int = 1, t_max: float = math.inf,
        weight_rec: Tensor | None = None) -> SpikeRecord:
    """Like :func:`simulate`, returning the full :class:`SpikeRecord` (what EventProp needs)."""
    check_layer(times_in, weight, weight_rec)
    p = make_params(weight.shape[0], weight, tau_mem=tau_mem, tau_syn=tau_syn, v_th=v_th, t_ref=t_ref,
                    max_spikes=max_spikes, t_max=t_max)
    times_in, weight = times_in.detach(), weight.detach()
    if times_in.shape[1] * times_in.shape[2] == 0:  # no input events: no spikes
        t = torch.full((times_in.shape[0], weight.shape[0], p.max_spikes), math.inf, dtype=weight.dtype,
                       device=weight.device)
        return SpikeRecord(t, torch.zeros_like(t), torch.zeros_like(t))
    if weight_rec is None:
        return run_feedforward(times_in, weight, p)
    return run_recurrent(times_in, weight, weight_rec.detach(), p)


# ----------------------------------------------------------------------------------------------- merged events


class Events(NamedTuple):
    """Input spikes of a batch merged per sample and sorted: times ``[B, E]`` (+inf padding), source ``[B, E]``,
    and the sort order (to scatter per-event gradients back to ``[B, n_in, K_in]``)."""

    t: Tensor
    src: Tensor
    order: Tensor


def merge_events(times_in: Tensor) -> Events:
    """Merge ``[B, n_in, K_in]`` spike times into one sorted event list per sample.

    Trailing columns where every sample has only padding (``+inf``) are dropped, so ``E`` is the largest number
    of real input spikes of any sample (at least 1): a latency-coded image of 784 pixels of which ~100 fire costs
    ~100 events, not 784. ``order`` then indexes only the kept events.
    """
    b, _, k = times_in.shape
    t, order = torch.sort(times_in.reshape(b, -1), dim=-1, stable=True)
    if t.shape[-1] > 1:
        keep = max(1, int(torch.isfinite(t).sum(-1).max()))
        t, order = t[:, :keep], order[:, :keep]
    return Events(t, torch.div(order, k, rounding_mode="floor"), order)


def _decay_scan(u: Tensor, t: Tensor, tau: Tensor) -> Tensor:
    r""":math:`x_e = \sum_{i \le e} u_i\,e^{-(t_e - t_i)/\tau}` along the last dim, without overflow.

    A plain cumulative sum of :math:`u_i e^{(t_i - t_0)/\tau}` when the span is short enough not to overflow;
    otherwise positive and negative parts are summed separately with ``logcumsumexp``. ``t`` must be finite and
    sorted.

    Shape:
        u ``[B, n, E]``, t ``[B, 1, E]``, tau broadcastable to ``[B, n, 1]``.
    """
    s = (t - t[..., :1]) / tau
    limit = 60.0 if u.dtype in (torch.float32, torch.float16, torch.bfloat16) else 600.0
    if bool((s[..., -1] <= limit).all()):  # fast path: exp(s) cannot overflow
        return torch.cumsum(u * torch.exp(s), -1) * torch.exp(-s)
    neg_inf = torch.tensor(-math.inf, dtype=u.dtype, device=u.device)
    pos = torch.where(u > 0, torch.log(u.clamp(min=torch.finfo(u.dtype).tiny)) + s, neg_inf)
    neg = torch.where(u < 0, torch.log((-u).clamp(min=torch.finfo(u.dtype).tiny)) + s, neg_inf)
    return torch.exp(torch.logcumsumexp(pos, -1) - s) - torch.exp(torch.logcumsumexp(neg, -1) - s)


def input_states(ev: Events, weight: Tensor, p: EventParams) -> tuple[Tensor, Tensor, Tensor]:
    """``(I_in, V_in)`` right after every input event from the inputs alone (no threshold), and the weights
    per event.

    Shape:
        ``[B, n_out, E]`` each.
    """
    finite = torch.isfinite(ev.t)
    last = torch.where(finite, ev.t, torch.zeros_like(ev.t)).amax(-1, keepdim=True)
    tf = torch.where(finite, ev.t, last).unsqueeze(1)  # [B, 1, E], padding moved to the last finite time
    w = weight.t()[ev.src].transpose(1, 2)  # [B, n_out, E]
    w = torch.where(finite.unsqueeze(1), w, torch.zeros_like(w))
    tm, ts = _col(p.tau_mem), _col(p.tau_syn)
    if is_plain(p):
        return torch.zeros_like(w), _decay_scan(w / tm, tf, tm), w
    i_in = _decay_scan(w / ts, tf, ts)
    gap = torch.diff(tf, dim=-1, prepend=tf[..., :1])
    i_prev = torch.nn.functional.pad(i_in[..., :-1], (1, 0))
    v_in = _decay_scan(ex.psp_gain(gap, tm, ts) * i_prev, tf, tm)
    return i_in, v_in, w


# ------------------------------------------------------------------------------------------------ feed-forward


def _col(x: Tensor | float) -> Tensor | float:
    """A per-neuron parameter as a column ``[n_out, 1]`` (to broadcast with ``[B, n_out, E]``)."""
    return x.reshape(-1, 1) if isinstance(x, Tensor) else x


def is_plain(p: EventParams) -> bool:
    """Whether the layer is a plain LIF (``tau_syn == 0``: inputs jump the membrane)."""
    return bool((p.tau_syn == 0).all()) if isinstance(p.tau_syn, Tensor) else p.tau_syn == 0


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    return torch.gather(x, -1, idx.unsqueeze(-1)).squeeze(-1)


#: largest ``[B, n_out, E]`` work tensor (elements) of the feed-forward engine; bigger batches run in chunks
CHUNK_ELEMENTS = 1 << 24


def batch_chunks(times_in: Tensor, n_out: int) -> list[slice]:
    """Batch slices small enough that ``[chunk, n_out, E]`` tensors stay under :data:`CHUNK_ELEMENTS`."""
    b = times_in.shape[0]
    per_sample = max(1, n_out * times_in.shape[1] * times_in.shape[2])
    size = max(1, CHUNK_ELEMENTS // per_sample)
    return [slice(i, min(i + size, b)) for i in range(0, b, size)]


#: faster feed-forward engines registered from above by :func:`register_kernel` (``spikeforge.kernels.cpu_event``
#: registers its C++ CPU kernel when ``spikeforge.kernels`` is imported, which ``import spikeforge`` does; this
#: package sits below ``kernels`` and does not import it). The first whose ``covers`` accepts a call runs it.
KERNELS: list = []


def register_kernel(kernel) -> None:
    """Add a feed-forward engine: an object with ``covers(times_in, weight, p) -> bool``,
    ``forward(t, src, weight, p) -> (times, i_spike, i_release)`` and
    ``backward(t, src, weight, times, i_spike, i_release, grad, p) -> (grad per merged event [B, E], grad_weight)``
    (``t``, ``src``: :func:`merge_events`'s sorted events and their sources). Registering one twice is a no-op."""
    if kernel not in KERNELS:
        KERNELS.append(kernel)


def feedforward_kernel(times_in: Tensor, weight: Tensor, p: EventParams):
    """The first registered engine (:data:`KERNELS`) that covers this call, or None (the PyTorch engine runs)."""
    return next((k for k in KERNELS if k.covers(times_in, weight, p)), None)


def run_feedforward(times_in: Tensor, weight: Tensor, p: EventParams) -> SpikeRecord:
    """Feed-forward layer: a registered engine (:data:`KERNELS`, e.g. the C++ CPU kernel) where one covers the call,
    else vectorised over events (loop over the spike index only), in batch chunks."""
    kernel = feedforward_kernel(times_in, weight, p)
    if kernel is not None:
        ev = merge_events(times_in)
        return SpikeRecord(*kernel.forward(ev.t, ev.src, weight, p))
    chunks = batch_chunks(times_in, weight.shape[0])
    if len(chunks) == 1:
        return _run_feedforward(times_in, weight, p)
    parts = [_run_feedforward(times_in[c], weight, p) for c in chunks]
    return SpikeRecord(*(torch.cat(f, 0) for f in zip(*parts, strict=True)))


def _run_feedforward(times_in: Tensor, weight: Tensor, p: EventParams) -> SpikeRecord:
    b, n_out = times_in.shape[0], weight.shape[0]
    ev = merge_events(times_in)
    e = ev.t.shape[-1]
    i_in, v_in, _ = input_states(ev, weight, p)
    tm, ts, th = _col(p.tau_mem), _col(p.tau_syn), _col(p.v_th)
    plain = is_plain(p)
    t_ev = ev.t.unsqueeze(1).expand(b, n_out, e)
    inf = torch.full((b, 1, 1), math.inf, dtype=ev.t.dtype, device=ev.t.device)
    t_end = torch.cat([ev.t.unsqueeze(1), inf], -1)[..., 1:].expand(b, n_out, e).clamp(max=p.t_max)
    idx = torch.arange(e, device=ev.t.device)
    fin_ev = torch.isfinite(t_ev)

    k_out = p.max_spikes
    out_t = torch.full((b, n_out, k_out), math.inf, dtype=ev.t.dtype, device=ev.t.device)
    out_is, out_ir = torch.zeros_like(out_t), torch.zeros_like(out_t)
    e_abs = torch.full((b, n_out), -1, dtype=torch.long, device=ev.t.device)
    r = torch.full((b, n_out), -math.inf, dtype=ev.t.dtype, device=ev.t.device)
    d = torch.zeros((b, n_out), dtype=ev.t.dtype, device=ev.t.device)
    i_rel = torch.zeros_like(d)
    alive = torch.ones((b, n_out), dtype=torch.bool, device=ev.t.device)
    for k in range(k_out):
        rr = r.unsqueeze(-1)
        start = torch.maximum(t_ev, rr)
        at_reset = idx == e_abs.unsqueeze(-1)
        valid = (idx >= e_abs.unsqueeze(-1)) & (start < t_end) & fin_ev & alive.unsqueeze(-1)
        if plain:  # V jumps at events only: a spike happens at the first event that lifts V over threshold
            since = (t_ev - rr).clamp(min=0)  # inf before the first reset (r = -inf): no correction
            v0 = v_in - d.unsqueeze(-1) * torch.exp(-since / tm)
            fires = (idx > e_abs.unsqueeze(-1)) & (t_ev >= rr) & (t_ev <= p.t_max) & fin_ev
            hit = fires & alive.unsqueeze(-1) & (v0 >= th)
        else:
            # interval e_abs starts at the release r with (I(r), 0); later ones at their event, with the reset's
            # decaying correction -V_in(r) exp(-(t - r)/tau_mem)
            i0 = torch.where(at_reset, i_rel.unsqueeze(-1), i_in)
            since = (t_ev - rr).clamp(min=0)  # inf before the first reset (r = -inf): no correction
            v0 = torch.where(at_reset, torch.zeros_like(v_in), v_in - d.unsqueeze(-1) * torch.exp(-since / tm))
            span = t_end - start  # (meaningless where not valid; masked by `valid`)
            hi = torch.minimum(ex.peak_time(i0, v0, tm, ts), span)
            hit = valid & (ex.v_at(i0, v0, hi, tm, ts) >= th)
        found = hit.any(-1)
        first = hit.to(torch.int8).argmax(-1)  # first interval holding a crossing
        s0 = _gather(start, first)
        if plain:
            t_k = s0
            i_k = torch.zeros_like(s0)
        else:
            i0k, v0k, spk = _gather(i0, first), _gather(v0, first), _gather(span, first)
            tm_k, ts_k = p.tau_mem, p.tau_syn
            tau_s = ex.crossing_time(i0k, v0k, p.v_th, tm_k, ts_k, horizon=spk)
            t_k = s0 + tau_s
            i_k = ex.evolve(i0k, v0k, tau_s.clamp(max=spk), tm_k, ts_k)[0]
        found = found & torch.isfinite(t_k) & (t_k <= p.t_max)
        alive = alive & found
        t_k = torch.where(found, t_k, torch.full_like(t_k, math.inf))
        out_t[..., k] = t_k
        out_is[..., k] = torch.where(found, i_k, torch.zeros_like(i_k))
        # reset: the membrane is released at r = t_k + t_ref; events before r are absorbed into the reset
        r = torch.where(found, t_k + p.t_ref, r)
        n_before = torch.searchsorted(ev.t.contiguous(), r.contiguous(), right=False) - 1
        e_new = torch.maximum(first, n_before).clamp(min=0)
        e_abs = torch.where(found, e_new, e_abs)
        lag = (r - _gather(t_ev, e_abs.clamp(min=0))).clamp(min=0)
        lag = torch.where(found, lag, torch.zeros_like(lag))
        i_e, v_e = _gather(i_in, e_abs.clamp(min=0)), _gather(v_in, e_abs.clamp(min=0))
        i_r, v_r = ex.evolve(i_e, v_e, lag, p.tau_mem, p.tau_syn)
        out_ir[..., k] = torch.where(found, i_r, torch.zeros_like(i_r))
        d = torch.where(found, v_r, d)
        i_rel = torch.where(found, i_r, i_rel)
        if not bool(alive.any()):
            break
    return SpikeRecord(out_t, out_is, out_ir)


# --------------------------------------------------------------------------------------------------- recurrent


def _advance(i: Tensor, v: Tensor, r: Tensor, t_cur: Tensor, t_new: Tensor, p: EventParams,
             rel_i: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Free evolution of every neuron from ``t_cur`` to ``t_new`` ([B, 1]); membranes held at 0 until their
    release time ``r``. Returns ``(I, V)`` at ``t_new`` and, for neurons released inside the step, ``I`` at
    their release (else ``rel_i`` unchanged)."""
    dt = (t_new - t_cur).clamp(min=0)
    held_start = r > t_cur
    released = held_start & (r <= t_new)
    # neurons held at the start: I evolves to the release (or t_new), V stays 0, then free from the release
    to_rel = torch.where(held_start, torch.minimum(r, t_new) - t_cur, dt)
    i_mid, v_mid = ex.evolve(i, v, to_rel, p.tau_mem, p.tau_syn)
    v_mid = torch.where(held_start, torch.zeros_like(v_mid), v_mid)
    rest = torch.where(held_start, t_new - torch.minimum(r, t_new), torch.zeros_like(dt))
    i_out, v_out = ex.evolve(i_mid, v_mid, rest, p.tau_mem, p.tau_syn)
    rel_i = torch.where(released, i_mid, rel_i)
    return i_out, v_out, rel_i


def run_recurrent(times_in: Tensor, weight: Tensor, weight_rec: Tensor, p: EventParams) -> SpikeRecord:
    """Recurrent layer: a loop over events, each sample advancing to its own next event (input or spike)."""
    b, n_out = times_in.shape[0], weight.shape[0]
    dev, dt_ = times_in.device, times_in.dtype
    ev = merge_events(times_in)
    e = ev.t.shape[-1]
    plain = is_plain(p)
    i = torch.zeros((b, n_out), dtype=dt_, device=dev)
    v = torch.zeros_like(i)
    r = torch.full_like(i, -math.inf)
    rel_i = torch.zeros_like(i)
    count = torch.zeros((b, n_out), dtype=torch.long, device=dev)
    t_cur = torch.zeros((b, 1), dtype=dt_, device=dev)
    ptr = torch.zeros((b,), dtype=torch.long, device=dev)
    out_t = torch.full((b, n_out, p.max_spikes), math.inf, dtype=dt_, device=dev)
    out_is, out_ir = torch.zeros_like(out_t), torch.zeros_like(out_t)
    last_k = torch.full((b, n_out), -1, dtype=torch.long, device=dev)
    rows = torch.arange(b, device=dev)
    w_t = weight.t()  # [n_in, n_out]
    active = torch.ones((b,), dtype=torch.bool, device=dev)
    for _ in range(e + n_out * p.max_spikes + 1):
        t_next = torch.where(ptr < e, ev.t[rows, ptr.clamp(max=max(e - 1, 0))], torch.full_like(t_cur[:, 0], math.inf))
        end = t_next.clamp(max=p.t_max).unsqueeze(1)
        can = (count < p.max_spikes) & active.unsqueeze(1)
        if plain:
            t_c = torch.where(can & (r <= t_cur) & (v >= p.v_th), t_cur.expand_as(v), torch.full_like(v, math.inf))
        else:
            s0 = torch.maximum(t_cur, r)
            i0, v0, _ = _advance(i, v, r, t_cur, s0, p, rel_i)
            tau = ex.crossing_time(i0, v0, p.v_th, p.tau_mem, p.tau_syn, horizon=(end - s0))
            t_c = torch.where(can & (end >= s0), s0 + tau, torch.full_like(v, math.inf))
        n_spk = t_c.argmin(-1)  # (Tensor.min(dim) is slow on tiny tensors with several threads)
        t_spk = t_c.gather(1, n_spk.unsqueeze(1)).squeeze(1)
        is_spike = active & torch.isfinite(t_spk) & (t_spk <= end[:, 0])
        is_input = active & ~is_spike & (ptr < e) & (t_next <= p.t_max)
        active = is_spike | is_input
        if not bool(active.any()):
            break
        t_new = torch.where(is_spike, t_spk, torch.where(is_input, t_next, t_cur[:, 0])).unsqueeze(1)
        i_n, v_n, rel_n = _advance(i, v, r, t_cur, t_new, p, rel_i)
        act = active.unsqueeze(1)
        i, v, rel_i = torch.where(act, i_n, i), torch.where(act, v_n, v), torch.where(act, rel_n, rel_i)
        t_cur = torch.where(act, t_new, t_cur)
        # releases that happened record I(release) for the spike they belong to
        k_rel = last_k.clamp(min=0)
        done_rel = (last_k >= 0) & (r <= t_cur)
        cur = out_ir.gather(-1, k_rel.unsqueeze(-1)).squeeze(-1)
        out_ir.scatter_(-1, k_rel.unsqueeze(-1), torch.where(done_rel, rel_i, cur).unsqueeze(-1))
        # a spike: record, reset, deliver the recurrent input
        sb = rows[is_spike]
        if sb.numel():
            nb = n_spk[is_spike]
            kb = count[sb, nb]
            out_t[sb, nb, kb] = t_spk[is_spike]
            out_is[sb, nb, kb] = i[sb, nb]
            v[sb, nb] = 0.0
            r[sb, nb] = t_spk[is_spike] + p.t_ref
            rel_i[sb, nb] = i[sb, nb]
            out_ir[sb, nb, kb] = i[sb, nb]
            count[sb, nb] += 1
            last_k[sb, nb] = kb
            i, v = _deliver(i, v, r, t_cur, sb, weight_rec.t()[nb], p, plain)
        ib = rows[is_input]
        if ib.numel():
            i, v = _deliver(i, v, r, t_cur, ib, w_t[ev.src[ib, ptr[ib]]], p, plain)
            ptr[ib] += 1
    return SpikeRecord(out_t, out_is, out_ir)


def _deliver(i: Tensor, v: Tensor, r: Tensor, t_cur: Tensor, rows: Tensor, w: Tensor, p: EventParams,
             plain: bool) -> tuple[Tensor, Tensor]:
    """Add an input of weights ``w`` ([len(rows), n_out]) to samples ``rows``; held membranes ignore it."""
    i, v = i.clone(), v.clone()
    if plain:
        free = r[rows] <= t_cur[rows]
        v[rows] = v[rows] + torch.where(free, w / p.tau_mem, torch.zeros_like(w))
    else:
        i[rows] = i[rows] + w / p.tau_syn
    return i, v
