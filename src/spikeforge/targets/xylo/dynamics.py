"""Bit-accurate Xylo emulator (xylosim v2 ``XyloLayer::evolve``), batched over samples in torch.

Per step, exactly as xylosim v2 (facts section 1.4):

1. input events ``min(in, 15)`` per channel, then hidden spike counts of the previous step (``<= 31``), are
   added to the hidden synaptic currents, one saturating int16 addition per event, in the order input
   channel 0..n_in-1, then hidden neuron 0..N-1; the same hidden counts are added to the output currents;
   each weight is ``int16(w << shift)``;
2. hidden neurons: ``Isyn -= decay(Isyn, dash_syn)``; ``dv = sat(int16(-decay(V, dash_mem)) + sum(Isyn))``;
   ``dv = sat(dv + bias)`` when biases are on; ``V = sat(V + dv)``; then ``while V >= th and n < 31:
   n += 1; V -= th`` (int16 wrap, no saturation); ``decay(v, d) = v >> d`` (arithmetic), at least 1 LSB
   toward 0;
3. output neurons the same with a cap of 1 spike.

Saturating additions do not commute, so step 1 is computed as a plain (exact, float matmul) sum where
the partial sums provably stay within int16 (current + all positive contributions <= 32767 and current +
all negative ones >= -32768), and otherwise, for those entries only, by composing the per-event maps
``x -> clamp(x + a)`` in order (a clamp-add composed with a clamp-add is again one; a tree reduction; a few
entries on CPU one addition after another in Python). The hidden and output synapses are one product; the
states are kept as ``[neurons, samples]``; the spike loop is in closed form for positive thresholds.
Alias neurons and hibernation are not emulated (the compiled configs have no aliases).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from ...core.checks import SpikeforgeError
from .quantise import XyloConfig

__all__ = ["XyloEmulator"]

_LO, _HI = -32768, 32767


def _wrap16(x: Tensor) -> Tensor:
    return ((x + 32768) & 0xFFFF) - 32768


def _decay(v: Tensor, dash: Tensor) -> Tensor:
    """``v >> dash`` (arithmetic), at least one LSB toward 0. A negative ``v`` shifts to <= -1 already, so
    ``max(v >> dash, min(v, 1))`` is the xylosim rule in three operations."""
    return torch.maximum(torch.bitwise_right_shift(v, dash), v.clamp(max=1))


def _compose_clamp_adds(x: Tensor, a: Tensor) -> Tensor:
    """``x [F]`` after the saturating additions ``a [F, C]`` in column order (exact, log2(C) steps).

    ``x -> clamp(x + a)`` is kept as ``(a, lo, hi)``, meaning ``min(max(x + a, lo), hi)``; two of them in order
    compose to ``(a1 + a2, max(lo1 + a2, lo2), min(max(hi1 + a2, lo2), hi2))``."""
    if a.shape[1] % 2:
        a = torch.cat([a, a.new_zeros(a.shape[0], 1)], 1)
    a1, a2 = a[:, 0::2], a[:, 1::2]
    lo, hi, a = (a2 + _LO).clamp(min=_LO), (a2 + _HI).clamp(_LO, _HI), a1 + a2  # first level: lo1 = lo2 = _LO etc.
    while a.shape[1] > 1:
        if a.shape[1] % 2:
            pad = a.new_zeros(a.shape[0], 1)
            a, lo, hi = torch.cat([a, pad], 1), torch.cat([lo, pad + _LO], 1), torch.cat([hi, pad + _HI], 1)
        a1, a2 = a[:, 0::2], a[:, 1::2]
        l2, h2 = lo[:, 1::2], hi[:, 1::2]
        lo, hi, a = torch.maximum(lo[:, 0::2] + a2, l2), torch.minimum(torch.maximum(hi[:, 0::2] + a2, l2), h2), a1 + a2
    return torch.minimum(torch.maximum(x + a[:, 0], lo[:, 0]), hi[:, 0])


def _clamp_adds_py(x: Tensor, a: Tensor) -> Tensor:
    """:func:`_compose_clamp_adds` one addition after another in Python, faster for a few entries on CPU."""
    res = []
    a_np = a.numpy()
    for xv, row in zip(x.tolist(), a_np, strict=True):
        for av in row[row != 0].tolist():  # zero additions are no-ops: xv stays within int16
            xv = min(max(xv + av, _LO), _HI)
        res.append(xv)
    return torch.tensor(res, dtype=x.dtype, device=x.device)


def _sum_and_check(state: Tensor, prod: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Plain sum of the contributions ``prod [2M, B]`` (positive rows, then negative rows) onto ``state [M, B]``,
    the state plus all positive and plus all negative contributions, and one flag: may a partial sum of some
    entry leave int16 (pure; torch.compile-able)."""
    sf = state.to(prod.dtype)  # exact in the product's float type (its bound was checked); not mixed: faster
    hi = sf + prod[:m]
    lo = sf + prod[m:]
    return (hi + prod[m:]).to(torch.int32), hi, lo, (hi.amax() > _HI) | (lo.amin() < _LO)


class _Synapses:
    """Saturating delivery of spike counts ``[C, B]`` (each at most ``caps[c]``) through int16 weights
    ``[C, M]`` onto states ``[M, B]`` (samples along the last axis throughout).

    The sums are matrix products in float32 when every possible partial sum is below 2^24 in magnitude
    (then float32 is exact), else float64 (exact below 2^53; the worst case on Xylo is ~1e9). On CPU a
    sparse (CSR) product is used when fewer than a quarter of the weights are non-zero (fan-in <= 63) and
    there are enough targets for it to pay. When a partial sum may leave int16, the entries where it does are
    recomputed from their own non-zero sources only (at most ``small`` contributions in all: in Python).
    """

    def __init__(self, w: Tensor, caps: Tensor, compiled: bool = False, chunk: int = 1 << 22):
        self.w = w  # int32 [C, M], already shifted and wrapped to int16
        self.c, self.m = w.shape
        self.chunk = chunk
        self._buf = None  # the products, reused from step to step
        self._ws: dict[str, Tensor] | None = None  # the sums, likewise (eager mode)
        self.compiled = compiled
        self.small = 8192  # on CPU, this many contributions or fewer are added one by one in Python (no op overheads)
        self._sum = torch.compile(_sum_and_check, dynamic=False) if compiled else _sum_and_check
        bound = int((caps[:, None].long() * w.abs().long()).sum(0).max()) if w.numel() else 0
        self.dtype = torch.float32 if bound + 32768 < (1 << 24) else torch.float64  # state + sums exact
        both_t = torch.cat([w.clamp(min=0), w.clamp(max=0)], 1).T.contiguous().to(self.dtype)  # [2M, C]
        density = float((w != 0).float().mean()) if w.numel() else 1.0
        self.sparse = w.device.type == "cpu" and density < 0.25 and 2 * self.m >= 256
        if self.sparse:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                self.wt = both_t.to_sparse_csr()
        else:
            self.wt = both_t
        # per target m: its non-zero sources in ascending order, padded with source C (count 0, weight 0)
        nz = (w != 0).T  # [M, C]
        k = max(1, int(nz.sum(1).max())) if w.numel() else 1
        k = 1 << (k - 1).bit_length()  # a power of two: no padding in the tree reduction
        order = torch.sort((~nz).to(torch.int8), dim=1, stable=True).indices[:, :k]  # non-zero sources first
        keep = torch.gather(nz, 1, order)
        if order.shape[1] < k:  # fewer sources than k: pad with source 0, not kept
            order = torch.cat([order, order.new_zeros(order.shape[0], k - order.shape[1])], 1)
            keep = torch.cat([keep, keep.new_zeros(keep.shape[0], k - keep.shape[1])], 1)
        self.src = torch.where(keep, order, torch.full_like(order, self.c))
        self.val = torch.where(keep, torch.gather(w.T, 1, order), torch.zeros_like(order, dtype=w.dtype))

    def __call__(self, state: Tensor, padded: Tensor) -> Tensor:
        """``state [M, B]`` after the counts ``padded [C + 1, B]`` (float; its last row zero)."""
        if self.c == 0 or self.m == 0:
            return state
        counts = padded[:self.c]
        counts = counts if counts.dtype == self.dtype else counts.to(self.dtype)
        if self._buf is None or self._buf.shape[1] != counts.shape[1]:
            self._buf = torch.empty(2 * self.m, counts.shape[1], dtype=self.dtype, device=counts.device)
        prod = torch.mm(self.wt, counts, out=self._buf)
        if self.compiled:
            out, hi, lo, flag = self._sum(state, prod, self.m)
        else:  # the same sums into buffers kept from step to step (no fresh memory per step), result in `state`
            ws = self._workspace(state)
            m = self.m
            ws["sf"].copy_(state)
            hi, lo = torch.add(ws["sf"], prod[:m], out=ws["hi"]), torch.add(ws["sf"], prod[m:], out=ws["lo"])
            flag = (hi.amax() > _HI) | (lo.amin() < _LO)
            out = None
        fixed = None
        if bool(flag):
            rows = ((hi.amax(1) > _HI) | (lo.amin(1) < _LO)).nonzero()[:, 0]  # the targets concerned first
            r_idx, b_idx = ((hi[rows] > _HI) | (lo[rows] < _LO)).nonzero(as_tuple=True)
            m_idx = rows[r_idx]
            cnt = padded.T  # [B, C + 1]
            step = max(1, self.chunk // self.src.shape[1])
            parts = []
            for i in range(0, b_idx.numel(), step):
                bi, mi = b_idx[i:i + step], m_idx[i:i + step]
                contrib = torch.gather(cnt[bi], 1, self.src[mi]).to(torch.int32) * self.val[mi]
                parts.append(_compose_clamp_adds(state[mi, bi], contrib) if contrib.numel() > self.small or
                             contrib.device.type != "cpu" else _clamp_adds_py(state[mi, bi], contrib))
            fixed = (m_idx, b_idx, torch.cat(parts))
        if out is None:
            state.copy_(torch.add(hi, prod[self.m:], out=ws["hi"]))  # float -> int32: exact whole numbers
            out = state
        if fixed is not None:
            out[fixed[0], fixed[1]] = fixed[2]
        return out

    def _workspace(self, state: Tensor) -> dict[str, Tensor]:
        if self._ws is None or self._ws["sf"].shape != state.shape or self._ws["sf"].device != state.device:
            self._ws = {key: torch.empty(state.shape, dtype=self.dtype, device=state.device)
                        for key in ("sf", "hi", "lo")}
        return self._ws


def _integrate(isyn: Tensor, v: Tensor, dash_syn: Tensor, dash_mem: Tensor, bias: Tensor, th: Tensor,
               th_f: Tensor, cap: Tensor, has_bias: bool, int_div: bool, wrap: bool) -> tuple[Tensor, Tensor, Tensor]:
    """One neuron update for positive thresholds, ``isyn [N, S, B]``, ``v [N, B]`` (pure; torch.compile-able).

    The spike loop ``while V >= th and n < cap: n += 1; V -= th`` in closed form: with ``th > 0`` and
    ``V <= 32767`` no subtraction wraps, so ``n = clamp(floor(V / th), 0, cap)`` and ``V -= n * th``.
    ``wrap16(-decay(V))`` differs from ``-decay(V)`` only for ``V = -32768`` and ``dash = 0`` (``wrap``)."""
    isyn = isyn - _decay(isyn, dash_syn)
    isum = isyn[:, 0] + isyn[:, 1] if isyn.shape[1] == 2 else isyn.sum(1, dtype=torch.int32)
    dec = _decay(v, dash_mem)
    dv = (_wrap16(-dec) + isum if wrap else isum - dec).clamp(_LO, _HI)
    if has_bias:
        dv = (dv + bias).clamp(_LO, _HI)
    v = (v + dv).clamp(_LO, _HI)
    if int_div:
        n = torch.div(v.clamp(min=0), th, rounding_mode="floor").clamp(max=cap)
    else:
        # floor(v / th) in float32 is exact here: 0 <= v < 2^24, so the quotient's rounding error is below 1/th
        n = (v.clamp(min=0).float() / th_f).to(torch.int32).clamp(max=cap)  # truncation = floor for v >= 0
    return isyn, torch.addcmul(v, n, th, value=-1), n


class _Neurons:
    """Neuron parameters as columns ``[N, 1]`` (``[N, S, 1]`` for the synapses), broadcast over samples."""

    _ws: dict[str, Tensor] | None = None

    def _step_inplace(self, isyn: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`_integrate` (positive thresholds, no ``dash_mem = 0``) with every temporary in a kept buffer:
        fresh memory every step made the emulator's speed depend on the allocator (up to 2x)."""
        if self._ws is None or self._ws["a"].shape != isyn.shape or self._ws["a"].device != isyn.device:
            self._ws = {"a": torch.empty_like(isyn), "b": torch.empty_like(isyn),
                        **{k: torch.empty_like(v) for k in ("d", "e", "n")}, "f": torch.empty(v.shape, device=v.device)}
        ws = self._ws
        a, b = ws["a"], ws["b"]
        torch.bitwise_right_shift(isyn, self.dash_syn, out=a)
        torch.clamp(isyn, max=1, out=b)
        isyn.sub_(torch.maximum(a, b, out=a))                      # isyn -= decay(isyn, dash_syn)
        d, e, n = ws["d"], ws["e"], ws["n"]
        torch.bitwise_right_shift(v, self.dash_mem, out=d)
        torch.clamp(v, max=1, out=e)
        torch.maximum(d, e, out=d)                                  # d = decay(v, dash_mem)
        if isyn.shape[1] == 2:
            torch.add(isyn[:, 0], isyn[:, 1], out=e)
        else:
            torch.sum(isyn, 1, dtype=torch.int32, out=e)
        e.sub_(d).clamp_(_LO, _HI)                                  # dv
        if self.has_bias:
            e.add_(self.bias).clamp_(_LO, _HI)
        v.add_(e).clamp_(_LO, _HI)
        torch.clamp(v, min=0, out=e)
        torch.div(e, self.th_f, out=ws["f"])                        # exact floor for 0 <= v < 2^24 (see _integrate)
        n.copy_(ws["f"]).clamp_(max=self.cap)                       # float -> int truncates: floor for v >= 0
        v.addcmul_(n, self.th, value=-1)
        return isyn, v, n

    def __init__(self, dash_mem, dash_syn, threshold, bias, has_bias: bool, cap, device, compiled: bool):
        def t(a):
            return torch.as_tensor(np.asarray(a).astype("int32"), device=device).unsqueeze(-1)

        self.dash_mem, self.dash_syn = t(dash_mem), t(dash_syn)
        self.th, self.bias = t(threshold), t(bias)
        self.has_bias, self.cap = has_bias, t(cap)  # spike caps per neuron
        self.cap_max = int(self.cap.max()) if self.cap.numel() else 0
        self.positive = bool((self.th > 0).all())
        self.wrap = bool((self.dash_mem == 0).any())
        self.th_f = self.th.float()
        self.compiled = compiled and self.positive
        # integer division when compiled: a compiler may turn a float division into a reciprocal multiply
        self._integrate = torch.compile(_integrate, dynamic=False) if self.compiled else _integrate

    def step(self, isyn: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The update of :func:`_integrate`; eager with positive thresholds: in place, into kept buffers (``isyn``
        and ``v`` are overwritten; the returned counts are a buffer valid until the next step)."""
        th = self.th
        if self.positive and not self.compiled and not self.wrap:
            return self._step_inplace(isyn, v)
        if self.positive:
            return self._integrate(isyn, v, self.dash_syn, self.dash_mem, self.bias, th, self.th_f, self.cap,
                                   self.has_bias, self.compiled, self.wrap)
        # zero or negative thresholds: the loop itself, with int16 wrap
        isyn = isyn - _decay(isyn, self.dash_syn)
        dv = (_wrap16(-_decay(v, self.dash_mem)) + isyn.sum(1, dtype=torch.int32)).clamp(_LO, _HI)
        if self.has_bias:
            dv = (dv + self.bias).clamp(_LO, _HI)
        v = (v + dv).clamp(_LO, _HI)
        n = torch.zeros_like(v)
        for _ in range(self.cap_max):
            fire = (v >= th) & (n < self.cap)
            if not bool(fire.any()):
                break
            n = n + fire
            v = torch.where(fire, _wrap16(v - th), v)
        return isyn, v, n


class XyloEmulator:
    """Runs a :class:`XyloConfig` on integer torch tensors, batched over samples (CPU or GPU).

    Args:
        config: from :func:`~spikeforge.targets.xylo.compile` (or built directly).
        device: torch device for the computation (default CPU).
        compiled: run the elementwise parts of a step through ``torch.compile`` (fused kernels; needs a C++
            compiler on CPU or Triton on GPU; some seconds of compilation). Results are identical (integer
            division is used in the compiled neuron update). On one CPU thread it gains ~10%
            (bench/emulator_speed.py); not measured on GPU.
    """

    def __init__(self, config: XyloConfig, device: str | torch.device | None = None, compiled: bool = False):
        if not isinstance(config, XyloConfig):
            raise SpikeforgeError(f"XyloEmulator takes a XyloConfig from compile(), got {type(config).__name__}.")
        self.config = config
        self.device = torch.device(device or "cpu")
        spec = config.spec

        def shifted(w, shift):
            return _wrap16(torch.as_tensor(w.astype("int32"), device=self.device) << shift)

        n, s, k, so = config.n_hidden, config.n_syn, config.n_out, config.n_syn_out
        caps_in = torch.full((config.n_in,), spec.max_input_spikes, device=self.device)
        caps_hid = torch.full((n,), spec.max_hidden_spikes, device=self.device)
        # hidden and output neurons are updated together, as N + K neurons with S = max(n_syn, n_syn_out)
        # synapses each (the extra ones have no weights and stay 0), and fed by one product (both take the
        # previous step's hidden spikes): input channels, then hidden neurons onto all N + K neurons' synapses
        self.n_syn = sm = max(s, so)
        w = torch.zeros(config.n_in + n, n + k, sm, dtype=torch.int32, device=self.device)
        w[:config.n_in, :n, :s] = shifted(config.w_in, config.weight_shift_in).reshape(config.n_in, n, s)
        w[config.n_in:, :n, :s] = shifted(config.w_rec, config.weight_shift_rec).reshape(n, n, s)
        w[config.n_in:, n:, :so] = shifted(config.w_out, config.weight_shift_out).reshape(n, k, so)
        self._syn = _Synapses(w.reshape(config.n_in + n, (n + k) * sm), torch.cat([caps_in, caps_hid]), compiled)
        dash_syn = np.zeros((n + k, sm), dtype=np.int64)
        dash_syn[:n, :s] = np.asarray(config.dash_syn).reshape(n, s)
        dash_syn[n:, :so] = np.asarray(config.dash_syn_out).reshape(k, so)
        self._neurons = _Neurons(
            np.concatenate([np.asarray(config.dash_mem).reshape(n), np.asarray(config.dash_mem_out).reshape(k)]),
            dash_syn,
            np.concatenate([np.asarray(config.threshold).reshape(n), np.asarray(config.threshold_out).reshape(k)]),
            np.concatenate([np.asarray(config.bias).reshape(n), np.asarray(config.bias_out).reshape(k)]),
            config.has_bias, np.array([spec.max_hidden_spikes] * n + [spec.max_output_spikes] * k), self.device,
            compiled)
        self.in_cap = spec.max_input_spikes

    @torch.no_grad()
    def run(self, input_spikes: Tensor, record: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """Run from reset on ``input_spikes [T, B, n_in]`` (non-negative event counts, capped at 15).

        Returns:
            ``(output spikes [T, B, K] int32, record)``; ``record`` (empty when ``record=False``) has int32
            tensors ``vmem``, ``isyn``, ``isyn2`` (two synapses only), ``spikes`` (hidden, ``[T, B, N]``) and
            ``vmem_out``, ``isyn_out``, ``isyn2_out`` (``[T, B, K]``): the states after each step, as
            xylosim records them (transposed views of ``[T, N, B]`` buffers, not contiguous).
        """
        cfg = self.config
        x = torch.as_tensor(input_spikes)
        if x.dim() != 3 or x.shape[2] != cfg.n_in:
            raise SpikeforgeError(f"input_spikes must be [T, B, {cfg.n_in}] event counts, got shape {tuple(x.shape)}.")
        if x.is_floating_point() or bool((x < 0).any()):
            raise SpikeforgeError("input_spikes must be non-negative integer event counts.")
        x = x.to(self.device, torch.int32).clamp(max=self.in_cap)
        steps, batch = x.shape[0], x.shape[1]
        n_in, n, s, k, so = cfg.n_in, cfg.n_hidden, cfg.n_syn, cfg.n_out, cfg.n_syn_out
        dev = self.device
        # samples along the last axis: the sparse product reads contiguous count rows, parameters broadcast as
        # columns; counts [input events of this step; hidden spikes of the previous step; a zero row]
        xs = x.permute(0, 2, 1).to(torch.float32).contiguous()
        counts = torch.zeros(n_in + n + 1, batch, dtype=torch.float32, device=dev)
        sm = self.n_syn
        syn = torch.zeros((n + k) * sm, batch, dtype=torch.int32, device=dev)
        v = torch.zeros(n + k, batch, dtype=torch.int32, device=dev)
        out = torch.empty(steps, k, batch, dtype=torch.int32, device=dev)
        sizes = {"vmem": n, "isyn": n, "isyn2": n if s > 1 else 0, "spikes": n, "vmem_out": k, "isyn_out": k,
                 "isyn2_out": k if so > 1 else 0}
        rec = {key: torch.empty(steps, size, batch, dtype=torch.int32, device=dev)
               for key, size in sizes.items() if record and size}
        for t in range(steps):
            counts[:n_in].copy_(xs[t])
            syn = self._syn(syn, counts)
            i3, v, spikes = self._neurons.step(syn.view(n + k, sm, batch), v)
            syn = i3.reshape((n + k) * sm, batch)
            counts[n_in:n_in + n].copy_(spikes[:n])
            out[t] = spikes[n:]
            if record:
                rec["vmem"][t] = v[:n]
                rec["isyn"][t] = i3[:n, 0]
                rec["spikes"][t] = spikes[:n]
                rec["vmem_out"][t] = v[n:]
                rec["isyn_out"][t] = i3[n:, 0]
                if s > 1:
                    rec["isyn2"][t] = i3[:n, 1]
                if so > 1:
                    rec["isyn2_out"][t] = i3[n:, 1]
        # [T, B, .] views of the [T, ., B] buffers (no copy)
        return out.transpose(1, 2).contiguous(), {key: val.transpose(1, 2) for key, val in rec.items()}
