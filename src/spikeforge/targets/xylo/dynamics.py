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

Saturating additions do not commute, so step 1 is computed as a plain (exact, float64 matmul) sum where
the partial sums provably stay within int16 (current + all positive contributions <= 32767 and current +
all negative ones >= -32768), and otherwise, for those entries only, by composing the per-event maps
``x -> clamp(x + a)`` in order (a clamp-add composed with a clamp-add is again one; a tree reduction).
Alias neurons and hibernation are not emulated (the compiled configs have no aliases).
"""

from __future__ import annotations

import warnings

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
    """``x [F]`` after the saturating additions ``a [F, C]`` in column order (exact, log2(C) steps)."""
    lo = torch.full_like(a, _LO)
    hi = torch.full_like(a, _HI)
    while a.shape[1] > 1:
        if a.shape[1] % 2:
            pad = a.new_zeros(a.shape[0], 1)
            a, lo, hi = torch.cat([a, pad], 1), torch.cat([lo, pad + _LO], 1), torch.cat([hi, pad + _HI], 1)
        a1, a2 = a[:, 0::2], a[:, 1::2]
        l1, l2 = lo[:, 0::2], lo[:, 1::2]
        h1, h2 = hi[:, 0::2], hi[:, 1::2]
        a = a1 + a2
        lo = torch.maximum(l1 + a2, l2)
        hi = torch.minimum(torch.maximum(h1 + a2, l2), h2)
    return torch.minimum(torch.maximum(x + a[:, 0], lo[:, 0]), hi[:, 0])


def _sum_and_check(state: Tensor, pn: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Plain sum of the contributions and where a partial sum may leave int16 (pure; torch.compile-able)."""
    pos, neg = pn[:, :m].to(torch.int32), pn[:, m:].to(torch.int32)
    return state + pos + neg, (state + pos > _HI) | (state + neg < _LO)


class _Synapses:
    """Saturating delivery of spike counts ``[B, C]`` (each at most ``caps[c]``) through int16 weights
    ``[C, M]`` onto states ``[B, M]``.

    The sums are matrix products in float32 when every possible partial sum is below 2^24 in magnitude
    (then float32 is exact), else float64 (exact below 2^53; the worst case on Xylo is ~1e9). On CPU a
    sparse (CSR) product is used when fewer than a quarter of the weights are non-zero (fan-in <= 63).
    Entries whose partial sums may leave int16 are recomputed from their own non-zero sources only.
    """

    def __init__(self, w: Tensor, caps: Tensor, compiled: bool = False, chunk: int = 1 << 22):
        self.w = w  # int32 [C, M], already shifted and wrapped to int16
        self.c, self.m = w.shape
        self.chunk = chunk
        self._sum = torch.compile(_sum_and_check, dynamic=False) if compiled else _sum_and_check
        bound = int((caps[:, None].long() * w.abs().long()).sum(0).max()) if w.numel() else 0
        self.dtype = torch.float32 if bound < (1 << 24) else torch.float64
        both = torch.cat([w.clamp(min=0), w.clamp(max=0)], 1).to(self.dtype)
        density = float((w != 0).float().mean()) if w.numel() else 1.0
        self.sparse = w.device.type == "cpu" and density < 0.25
        if self.sparse:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                self.wt = both.T.contiguous().to_sparse_csr()
        else:
            self.wf = both
        # per target m: its non-zero sources in ascending order, padded with source C (count 0, weight 0)
        nz = (w != 0).T  # [M, C]
        k = max(1, int(nz.sum(1).max())) if w.numel() else 1
        order = torch.sort((~nz).to(torch.int8), dim=1, stable=True).indices[:, :k]  # non-zero sources first
        keep = torch.gather(nz, 1, order)
        self.src = torch.where(keep, order, torch.full_like(order, self.c))
        self.val = torch.where(keep, torch.gather(w.T, 1, order), torch.zeros_like(order, dtype=w.dtype))

    def _products(self, counts: Tensor) -> Tensor:
        c = counts.to(self.dtype)
        if self.sparse:
            return (self.wt @ c.T).T
        return c @ self.wf

    def __call__(self, state: Tensor, counts: Tensor) -> Tensor:
        if self.c == 0 or self.m == 0:
            return state
        out, bad = self._sum(state, self._products(counts), self.m)
        if bool(bad.any()):
            b_idx, m_idx = bad.nonzero(as_tuple=True)
            padded = torch.cat([counts, counts.new_zeros(counts.shape[0], 1)], 1).to(torch.int32)
            step = max(1, self.chunk // self.src.shape[1])
            fixed = []
            for i in range(0, b_idx.numel(), step):
                bi, mi = b_idx[i:i + step], m_idx[i:i + step]
                contrib = torch.gather(padded[bi], 1, self.src[mi]) * self.val[mi]
                fixed.append(_compose_clamp_adds(state[bi, mi], contrib))
            out[b_idx, m_idx] = torch.cat(fixed)
        return out


def _integrate(isyn: Tensor, v: Tensor, dash_syn: Tensor, dash_mem: Tensor, bias: Tensor, th: Tensor,
               th_f: Tensor, cap: int, has_bias: bool, int_div: bool) -> tuple[Tensor, Tensor, Tensor]:
    """One neuron update for positive thresholds (pure; torch.compile-able)."""
    isyn = isyn - _decay(isyn, dash_syn)
    dv = (_wrap16(-_decay(v, dash_mem)) + isyn.sum(-1, dtype=torch.int32)).clamp(_LO, _HI)
    if has_bias:
        dv = (dv + bias).clamp(_LO, _HI)
    v = (v + dv).clamp(_LO, _HI)
    if int_div:
        n = torch.div(v.clamp(min=0), th, rounding_mode="floor").clamp(max=cap)
    else:
        # floor(v / th) in float32 is exact here: |v| < 2^15, so the quotient's rounding error is below 1/th
        n = (v.clamp(min=0).float() / th_f).floor().clamp(max=cap).to(torch.int32)
    return isyn, v - n * th, n


class _Neurons:
    def __init__(self, dash_mem, dash_syn, threshold, bias, has_bias: bool, cap: int, device, compiled: bool):
        def t(a):
            return torch.as_tensor(a.astype("int32"), device=device)

        self.dash_mem, self.dash_syn = t(dash_mem), t(dash_syn)
        self.th, self.bias = t(threshold), t(bias)
        self.has_bias, self.cap = has_bias, cap
        self.positive = bool((self.th > 0).all())
        self.th_f = self.th.float()
        self.compiled = compiled and self.positive
        # integer division when compiled: a compiler may turn a float division into a reciprocal multiply
        self._integrate = torch.compile(_integrate, dynamic=False) if self.compiled else _integrate

    def step(self, isyn: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        th = self.th
        if self.positive:
            return self._integrate(isyn, v, self.dash_syn, self.dash_mem, self.bias, th, self.th_f, self.cap,
                                   self.has_bias, self.compiled)
        # zero or negative thresholds: the loop itself, with int16 wrap
        isyn = isyn - _decay(isyn, self.dash_syn)
        dv = (_wrap16(-_decay(v, self.dash_mem)) + isyn.sum(-1, dtype=torch.int32)).clamp(_LO, _HI)
        if self.has_bias:
            dv = (dv + self.bias).clamp(_LO, _HI)
        v = (v + dv).clamp(_LO, _HI)
        n = torch.zeros_like(v)
        for _ in range(self.cap):
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
        w_hid = torch.cat([shifted(config.w_in, config.weight_shift_in).reshape(config.n_in, n * s),
                           shifted(config.w_rec, config.weight_shift_rec).reshape(n, n * s)], 0)
        caps_in = torch.full((config.n_in,), spec.max_input_spikes, device=self.device)
        caps_hid = torch.full((n,), spec.max_hidden_spikes, device=self.device)
        self._hidden_syn = _Synapses(w_hid, torch.cat([caps_in, caps_hid]), compiled)
        self._out_syn = _Synapses(shifted(config.w_out, config.weight_shift_out).reshape(n, k * so), caps_hid,
                                  compiled)
        self._hidden = _Neurons(config.dash_mem, config.dash_syn, config.threshold, config.bias, config.has_bias,
                                spec.max_hidden_spikes, self.device, compiled)
        self._out = _Neurons(config.dash_mem_out, config.dash_syn_out, config.threshold_out, config.bias_out,
                             config.has_bias, spec.max_output_spikes, self.device, compiled)
        self.in_cap = spec.max_input_spikes

    @torch.no_grad()
    def run(self, input_spikes: Tensor, record: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """Run from reset on ``input_spikes [T, B, n_in]`` (non-negative event counts, capped at 15).

        Returns:
            ``(output spikes [T, B, K] int32, record)``; ``record`` (empty when ``record=False``) has int32
            tensors ``vmem``, ``isyn``, ``isyn2`` (two synapses only), ``spikes`` (hidden, ``[T, B, N]``) and
            ``vmem_out``, ``isyn_out``, ``isyn2_out`` (``[T, B, K]``): the states after each step, as
            xylosim records them.
        """
        cfg = self.config
        x = torch.as_tensor(input_spikes)
        if x.dim() != 3 or x.shape[2] != cfg.n_in:
            raise SpikeforgeError(f"input_spikes must be [T, B, {cfg.n_in}] event counts, got shape {tuple(x.shape)}.")
        if x.is_floating_point() or bool((x < 0).any()):
            raise SpikeforgeError("input_spikes must be non-negative integer event counts.")
        x = x.to(self.device, torch.int32).clamp(max=self.in_cap)
        steps, batch = x.shape[0], x.shape[1]
        n, s, k, so = cfg.n_hidden, cfg.n_syn, cfg.n_out, cfg.n_syn_out
        dev = self.device
        isyn = torch.zeros(batch, n * s, dtype=torch.int32, device=dev)
        v = torch.zeros(batch, n, dtype=torch.int32, device=dev)
        iout = torch.zeros(batch, k * so, dtype=torch.int32, device=dev)
        vout = torch.zeros(batch, k, dtype=torch.int32, device=dev)
        spikes = torch.zeros(batch, n, dtype=torch.int32, device=dev)
        outs, rec = [], {key: [] for key in ("vmem", "isyn", "isyn2", "spikes", "vmem_out", "isyn_out", "isyn2_out")}
        for t in range(steps):
            isyn = self._hidden_syn(isyn, torch.cat([x[t], spikes], 1))
            iout = self._out_syn(iout, spikes)
            i3, v, spikes = self._hidden.step(isyn.view(batch, n, s), v)
            isyn = i3.reshape(batch, n * s)
            o3, vout, ospk = self._out.step(iout.view(batch, k, so), vout)
            iout = o3.reshape(batch, k * so)
            outs.append(ospk)
            if record:
                rec["vmem"].append(v)
                rec["isyn"].append(i3[..., 0])
                rec["spikes"].append(spikes)
                rec["vmem_out"].append(vout)
                rec["isyn_out"].append(o3[..., 0])
                if s > 1:
                    rec["isyn2"].append(i3[..., 1])
                if so > 1:
                    rec["isyn2_out"].append(o3[..., 1])
        out = torch.stack(outs) if outs else torch.zeros(0, batch, k, dtype=torch.int32, device=dev)
        record_t = {key: torch.stack(val) for key, val in rec.items() if record and val}
        return out, record_t
