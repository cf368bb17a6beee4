"""Bit-accurate Loihi emulator (Lava ``PyDenseModelBitAcc`` + ``PyLifModelBitAcc``), batched in torch.

One-time setup, as Lava's Dense does on its first step: weights are clipped to the mixed-sign range
-256..255 and truncated, ``w = (w >> n) << n`` with ``n = 8 - num_weight_bits + 1``; ``VTH = vth << 6``;
``bias = bias_mant << bias_exp``. Per step ``t`` and layer (in chain order; facts section 2.5):

1. ``a_in = buf`` (+ ``buf_rec``): the Dense outputs computed at step ``t - 1``;
2. ``u = sign(uu) (|uu| >> 12)`` with ``uu = u (4096 - (du + 1))`` (rounds toward zero), then
   ``u += a_in << 6`` and Lava's wrap: ``if u > 2^23: u -= 2^24``, else ``if u <= -2^23: u += 2^24``;
3. ``v = sign(vv) (|vv| >> 12)`` with ``vv = v (4096 - dv)``; ``v = clip(v + u + bias, -(2^23 - 1),
   2^23 - 1)``;
4. refractory neurons (only when ``refractory > 0``; not in Lava's model) keep the ``v`` they had before
   step 3 and cannot spike; ``spike = v > VTH``; ``v[spike] = 0``;
5. ``buf = (W @ s_pre) << weight_exp`` (``>>``, an arithmetic shift, for a negative exponent) where
   ``s_pre[j]`` is the presynaptic spike of step ``t - delay[j]`` (the input, or the previous layer's
   spikes of this step); ``buf_rec`` likewise from this layer's own spikes of this step (no delay).

So a spike at step ``t`` reaches the next layer's ``u`` at step ``t + 1 + delay``. Products are exact:
``|u|, |v| < 2^24`` and decays ``< 2^12`` fit int64; the matrix products run in float64 (exact below 2^53;
spikes are 0/1 and mantissas at most 256).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ...core.checks import SpikeforgeError
from .quantise import LoihiConfig, LoihiLayerConfig

__all__ = ["LoihiEmulator"]


def _shift(x: Tensor, exp: Tensor | int) -> Tensor:
    """``x << exp`` for ``exp >= 0``, ``x >> -exp`` (arithmetic) otherwise; elementwise when ``exp`` is a tensor."""
    if isinstance(exp, int):
        return x << exp if exp >= 0 else torch.bitwise_right_shift(x, -exp)
    return torch.where(exp >= 0, x << exp.clamp(min=0), torch.bitwise_right_shift(x, (-exp).clamp(min=0)))


def _decay(x: Tensor, factor: Tensor, shift: int) -> Tensor:
    """``sign(x f) * (|x f| >> shift)``: Lava's decay, rounding toward zero."""
    p = x * factor
    return torch.sign(p) * torch.bitwise_right_shift(p.abs(), shift)


class _Layer:
    def __init__(self, cfg: LoihiLayerConfig, spec, device: torch.device):
        def t(a):
            return torch.as_tensor(np.array(a, dtype=np.int64), device=device)

        n_trunc = spec.weight_bits - spec.num_weight_bits + 1

        def weights(w):
            w = t(w).clamp(-(1 << spec.weight_bits), (1 << spec.weight_bits) - 1)
            w = (w >> n_trunc) << n_trunc
            return w.T.to(torch.float64).contiguous()  # [n_pre, n]

        self.cfg = cfg
        self.w = weights(cfg.weight)
        self.w_rec = weights(cfg.w_rec) if cfg.w_rec is not None else None
        self.exp, self.exp_rec = int(cfg.weight_exp), int(cfg.weight_exp_rec)
        self.fu = spec.decay_unity - (t(cfg.du) + spec.ds_offset)
        self.fv = spec.decay_unity - (t(cfg.dv) + spec.dm_offset)
        self.vth = t(cfg.vth) << spec.vth_shift
        self.bias = _shift(t(cfg.bias_mant), t(cfg.bias_exp))
        self.delay = t(cfg.delay)
        self.max_delay = int(self.delay.max()) if self.delay.numel() else 0
        self.refractory = int(cfg.refractory)
        self.shift, self.act_shift = spec.decay_bits, spec.act_shift
        self.max_uv = spec.max_uv

    def dense(self, s: Tensor, w: Tensor, exp: int) -> Tensor:
        return _shift((s.to(torch.float64) @ w).round().to(torch.int64), exp)

    def lif(self, u: Tensor, v: Tensor, ref: Tensor, a_in: Tensor) -> tuple[Tensor, ...]:
        m = self.max_uv
        uu = _decay(u, self.fu, self.shift) + (a_in << self.act_shift)
        u = torch.where(uu > m, uu - 2 * m, uu)
        u = torch.where(u <= -m, uu + 2 * m, u)
        v_new = (_decay(v, self.fv, self.shift) + u + self.bias).clamp(-(m - 1), m - 1)
        if self.refractory > 0:
            active = ref <= 0
            v_new = torch.where(active, v_new, v)
            s = (v_new > self.vth) & active
            ref = torch.where(s, torch.full_like(ref, self.refractory), (ref - 1).clamp(min=0))
        else:
            s = v_new > self.vth
        v_new = torch.where(s, torch.zeros_like(v_new), v_new)
        return u, v_new, s.to(torch.int64), ref


class LoihiEmulator:
    """Runs a :class:`LoihiConfig` on int64 torch tensors, batched over samples (CPU or GPU).

    Args:
        config: from :func:`~spikeforge.targets.loihi.compile` (or built directly).
        device: torch device for the computation (default CPU).
    """

    def __init__(self, config: LoihiConfig, device: str | torch.device | None = None):
        if not isinstance(config, LoihiConfig):
            raise SpikeforgeError(f"LoihiEmulator takes a LoihiConfig from compile(), got {type(config).__name__}.")
        self.config = config
        self.device = torch.device(device or "cpu")
        self._layers = [_Layer(cfg, config.spec, self.device) for cfg in config.layers]

    @torch.no_grad()
    def run(self, input_spikes: Tensor, record: bool = True) -> tuple[Tensor, dict[str, dict[str, Tensor]]]:
        """Run from reset (all states and buffers 0) on binary ``input_spikes [T, B, n_in]``.

        Returns:
            ``(spikes of the last layer [T, B, n_out] int64, record)``; ``record[layer name]`` (empty when
            ``record=False``) has int64 ``[T, B, n]`` tensors ``a_in``, ``u``, ``v`` (after reset) and
            ``spikes``: the states after each step.
        """
        cfg = self.config
        x = torch.as_tensor(input_spikes)
        if x.dim() != 3 or x.shape[2] != cfg.n_in:
            raise SpikeforgeError(f"input_spikes must be [T, B, {cfg.n_in}] binary spikes, got shape {tuple(x.shape)}.")
        if bool(((x != 0) & (x != 1)).any()):
            raise SpikeforgeError("input_spikes must be binary (0 or 1); graded spikes are not emulated.")
        x = x.to(self.device, torch.int64)
        steps, batch = x.shape[0], x.shape[1]
        dev = self.device

        def zeros(n):
            return torch.zeros(batch, n, dtype=torch.int64, device=dev)

        st = []
        for layer in self._layers:
            n, n_pre = layer.cfg.size, layer.cfg.n_pre
            st.append({"u": zeros(n), "v": zeros(n), "ref": zeros(n), "buf": zeros(n), "buf_rec": zeros(n),
                       "hist": torch.zeros(layer.max_delay + 1, batch, n_pre, dtype=torch.int64, device=dev)})
        rec: dict[str, dict[str, list[Tensor]]] = {
            layer.cfg.name: {"a_in": [], "u": [], "v": [], "spikes": []} for layer in self._layers} if record else {}
        outs = []
        for t in range(steps):
            pre = x[t]
            for layer, s in zip(self._layers, st, strict=True):
                a_in = s["buf"] + s["buf_rec"]
                s["u"], s["v"], spk, s["ref"] = layer.lif(s["u"], s["v"], s["ref"], a_in)
                # Dense: the next step's activation from the (delayed) presynaptic spikes of this step
                if layer.max_delay > 0:
                    s["hist"] = torch.cat([pre[None], s["hist"][:-1]], 0)
                    idx = layer.delay.view(1, 1, -1).expand(1, batch, -1)
                    delayed = torch.gather(s["hist"], 0, idx)[0]
                else:
                    delayed = pre
                s["buf"] = layer.dense(delayed, layer.w, layer.exp)
                if layer.w_rec is not None:
                    s["buf_rec"] = layer.dense(spk, layer.w_rec, layer.exp_rec)
                if record:
                    r = rec[layer.cfg.name]
                    r["a_in"].append(a_in)
                    r["u"].append(s["u"])
                    r["v"].append(s["v"])
                    r["spikes"].append(spk)
                pre = spk
            outs.append(pre)
        out = torch.stack(outs) if outs else torch.zeros(0, batch, cfg.n_out, dtype=torch.int64, device=dev)
        record_t = {name: {k: torch.stack(v) for k, v in r.items()} for name, r in rec.items() if steps}
        return out, record_t
