"""Post-training quantisation of a :class:`~.compile.FloatNet` to the Loihi integer formats.

Chip model per layer (Lava ``PyLifModelBitAcc``; see docs/targets/loihi.md): ``u = u (4096 - du - 1) / 4096
+ (a_in << 6)``, ``v = v (4096 - dv) / 4096 + u + bias``, spike on ``v > vth << 6``, reset ``v = 0``, where
``a_in = (sum_j w_ij s_j) << weight_exp`` of the previous step.

* **Decays.** ``du = round(4096 (1 - beta)) - 1`` with ``beta = exp(-dt/tau_syn)`` (CubaLIF), or 4095 (no
  current memory) for LIF, IF and LI; ``dv = round(4096 (1 - alpha))`` (at least 1) with ``alpha =
  exp(-dt/tau_mem)``, or 0 for IF. Both clipped to 0..4095.
* **Scale.** With the quantised factors ``cs = (du + 1)/4096`` and ``cm = dv/4096`` (IF: 1), the chip's
  ``u, v`` equal ``sigma cm I`` and ``sigma v`` of spikeforge's ``I = beta I + (1 - beta) x``, ``v = alpha v +
  (1 - alpha) I`` when an input ``x`` adds ``sigma cm cs x`` to ``u``. So a float weight ``W`` becomes
  ``w << weight_exp << 6 ~ sigma cm cs W``. One ``sigma`` per layer (input and recurrent matrices feed the
  same neurons): the largest for which the largest threshold fits ``vth_bits - threshold_headroom_bits``
  bits, every weight matrix fits ``weight_exp <= weight_exp_max`` and every bias fits mantissa and exponent.
  An LI layer (no threshold) takes the ``sigma`` that uses the full weight mantissa at ``weight_exp = 0``.
* **Weights**: per matrix, the smallest ``weight_exp`` (in ``weight_exp_min..weight_exp_max``) for which
  the mantissas fit; mantissas are rounded to the truncation grid (even numbers at 8 bits, mixed sign).
* **Thresholds** ``vth = round(sigma v_th / 64)``; LI gets the largest ``vth`` (it fires only if ``v``
  saturates). **Biases** ``sigma cm (v_leak + affine bias)`` as a 13-bit mantissa and the smallest 3-bit
  exponent that fits.
* Not exact: the chip starts at ``v = 0`` (spikeforge at ``v_leak``); an Affine bias enters ``v`` directly
  (same steady state, different transient); each layer adds one step of latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.checks import SpikeforgeError
from .spec import LoihiSpec

if TYPE_CHECKING:  # pragma: no cover
    from .compile import FloatLayer, FloatNet

__all__ = ["LoihiConfig", "LoihiLayerConfig", "decays_from_tau", "quantise"]


def _ro(a, n: int | tuple[int, ...], what: str) -> np.ndarray:
    a = np.ascontiguousarray(np.broadcast_to(np.asarray(a), n if isinstance(n, tuple) else (n,)), dtype=np.int64)
    a.setflags(write=False)
    return a


def _in(name: str, a: np.ndarray, lo: int, hi: int, where: str) -> None:
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        raise SpikeforgeError(f"{where}: {name} must lie in {lo}..{hi}, got {int(a.min())}..{int(a.max())}.")


@dataclass(frozen=True)
class LoihiLayerConfig:
    """One compartment group and the Dense process(es) into it: the integers Lava's processes take.

    ``weight [n, n_pre]`` and ``w_rec [n, n]`` are raw mantissas (mixed sign mode, -256..255; the emulator
    clips and truncates them as Lava's Dense does once), ``delay [n_pre]`` extra steps per presynaptic
    channel, ``du, dv, vth, bias_mant, bias_exp [n]``; ``refractory`` steps (0 = Lava's model).
    """

    name: str
    weight: np.ndarray
    weight_exp: int
    du: np.ndarray
    dv: np.ndarray
    vth: np.ndarray
    bias_mant: np.ndarray | int = 0
    bias_exp: np.ndarray | int = 0
    delay: np.ndarray | int = 0
    w_rec: np.ndarray | None = None
    weight_exp_rec: int = 0
    refractory: int = 0
    kind: str = "LIF"

    def __post_init__(self):
        w = np.asarray(self.weight)
        if w.ndim != 2:
            raise SpikeforgeError(f"LoihiLayerConfig {self.name!r}: weight must be [n, n_pre], got {w.shape}.")
        n, n_pre = w.shape
        object.__setattr__(self, "weight", _ro(w, (n, n_pre), "weight"))
        for key in ("du", "dv", "vth", "bias_mant", "bias_exp"):
            object.__setattr__(self, key, _ro(getattr(self, key), n, key))
        object.__setattr__(self, "delay", _ro(self.delay, n_pre, "delay"))
        if self.w_rec is not None:
            object.__setattr__(self, "w_rec", _ro(self.w_rec, (n, n), "w_rec"))
        object.__setattr__(self, "weight_exp", int(self.weight_exp))
        object.__setattr__(self, "weight_exp_rec", int(self.weight_exp_rec))
        object.__setattr__(self, "refractory", int(self.refractory))

    def validate(self, spec: LoihiSpec) -> None:
        """Raise unless every field fits ``spec``'s widths."""
        where = f"layer {self.name!r}"
        lo, _ = spec.weight_range
        hi = (1 << spec.weight_bits) - 1
        _in("weight", self.weight, lo, hi, where)
        if self.w_rec is not None:
            _in("w_rec", self.w_rec, lo, hi, where)
        for key in ("weight_exp", "weight_exp_rec"):
            _in(key, np.array([getattr(self, key)]), spec.weight_exp_min, spec.weight_exp_max, where)
        _in("du", self.du, 0, spec.max_decay, where)
        _in("dv", self.dv, 0, spec.max_decay, where)
        _in("vth", self.vth, 0, spec.max_vth, where)
        _in("bias_mant", self.bias_mant, *spec.bias_mant_range, where)
        _in("bias_exp", self.bias_exp, 0, spec.max_bias_exp, where)
        _in("delay", self.delay, 0, spec.max_delay, where)
        _in("refractory", np.array([self.refractory]), 0, spec.max_refractory, where)

    @property
    def size(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_pre(self) -> int:
        return int(self.weight.shape[1])


@dataclass(frozen=True)
class LoihiConfig:
    """A compiled Loihi network: a chain of :class:`LoihiLayerConfig` (layer ``l`` reads layer ``l - 1``'s
    spikes, layer 0 the input). ``info`` holds dt and the per-layer scales (not compared)."""

    spec: LoihiSpec
    n_in: int
    layers: tuple[LoihiLayerConfig, ...]
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise SpikeforgeError("LoihiConfig needs at least one layer.")
        prev = int(self.n_in)
        for layer in self.layers:
            if layer.n_pre != prev:
                raise SpikeforgeError(f"layer {layer.name!r} takes {layer.n_pre} inputs but the layer before "
                                      f"has {prev}.")
            layer.validate(self.spec)
            prev = layer.size

    @property
    def n_out(self) -> int:
        return self.layers[-1].size


def decays_from_tau(kind: str, tau_mem, tau_syn, dt: float, n: int, spec: LoihiSpec) -> tuple[np.ndarray, ...]:
    """``(du, dv)`` of a layer of ``kind`` (see the module docstring)."""
    unity, top = spec.decay_unity, spec.max_decay
    if kind == "CubaLIF":
        beta = np.exp(-dt / np.asarray(tau_syn, dtype=np.float64))
        du = np.clip(np.rint(unity * (1.0 - beta)) - spec.ds_offset, 0, top)
    else:
        du = np.full(n, top)
    if kind == "IF":
        dv = np.zeros(n)
    else:
        alpha = np.exp(-dt / np.asarray(tau_mem, dtype=np.float64))
        dv = np.clip(np.rint(unity * (1.0 - alpha)) - spec.dm_offset, 1, top)
    return (np.broadcast_to(du, (n,)).astype(np.int64), np.broadcast_to(dv, (n,)).astype(np.int64))


def _weights(w: np.ndarray, spec: LoihiSpec, where: str) -> tuple[np.ndarray, int]:
    """``w ~ mant << exp`` (``w`` in activation units) with the smallest exponent that fits."""
    lo, hi = spec.weight_range
    step = spec.weight_step
    peak = float(np.abs(w).max(initial=0.0))
    exp = spec.weight_exp_min
    while exp < spec.weight_exp_max and peak / 2.0 ** exp > hi + step / 2:
        exp += 1
    if peak / 2.0 ** exp > hi + step / 2:
        raise SpikeforgeError(f"{where}: the weights need an exponent above {spec.weight_exp_max} "
                              f"(weight_exp_max) at this threshold scale.")
    mant = np.clip(np.rint(w / 2.0 ** exp / step) * step, lo, hi)
    return mant.astype(np.int64), exp


def _bias(b: np.ndarray, spec: LoihiSpec, where: str) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = spec.bias_mant_range
    exp = np.zeros(b.shape, dtype=np.int64)
    while np.any((np.abs(b) / 2.0 ** exp > hi + 0.5) & (exp < spec.max_bias_exp)):
        exp = np.where((np.abs(b) / 2.0 ** exp > hi + 0.5) & (exp < spec.max_bias_exp), exp + 1, exp)
    if np.any(np.abs(b) / 2.0 ** exp > hi + 0.5):
        raise SpikeforgeError(f"{where}: a bias of {float(np.abs(b).max()):g} (chip units) does not fit the "
                              f"{spec.bias_mant_bits}-bit mantissa and {spec.bias_exp_bits}-bit exponent.")
    return np.clip(np.rint(b / 2.0 ** exp), lo, hi).astype(np.int64), exp


def _layer(layer: FloatLayer, dt: float, spec: LoihiSpec) -> tuple[LoihiLayerConfig, float]:
    n = layer.size
    du, dv = decays_from_tau(layer.kind, layer.tau_mem, layer.tau_syn, dt, n, spec)
    cs = (du + spec.ds_offset) / spec.decay_unity
    cm = np.ones(n) if layer.kind == "IF" else (dv + spec.dm_offset) / spec.decay_unity
    gain = cm * cs / (1 << spec.act_shift)  # activation units per float weight per unit sigma
    mats = [layer.weight] + ([layer.w_rec] if layer.w_rec is not None else [])
    hi_w = max(float(np.abs(gain[:, None] * m).max(initial=0.0)) for m in mats)
    w_top = spec.weight_range[1]
    drive = cm * (layer.v_leak + (layer.bias if layer.bias is not None else 0.0))
    candidates = []
    if layer.kind == "LI" or layer.v_th is None:
        if hi_w > 0:
            candidates.append(w_top / hi_w)
    else:
        th_max = float(layer.v_th.max(initial=0.0))
        if th_max > 0:
            target = (1 << (spec.vth_bits - spec.threshold_headroom_bits)) - 1
            candidates.append(target * (1 << spec.vth_shift) / th_max)
        if hi_w > 0:
            candidates.append(w_top * 2.0 ** spec.weight_exp_max / hi_w)
    peak_b = float(np.abs(drive).max(initial=0.0))
    if peak_b > 0:
        candidates.append(spec.bias_mant_range[1] * 2.0 ** spec.max_bias_exp / peak_b)
    sigma = min(candidates) if candidates else 1.0
    where = f"layer {layer.name!r}"
    w, w_exp = _weights(sigma * gain[:, None] * layer.weight, spec, f"{where} ({layer.weight_node})")
    w_rec, w_exp_rec = (None, 0)
    if layer.w_rec is not None:
        w_rec, w_exp_rec = _weights(sigma * gain[:, None] * layer.w_rec, spec, f"{where} (recurrent)")
    if layer.v_th is None or layer.kind == "LI":
        vth = np.full(n, spec.max_vth)
    else:
        vth = np.clip(np.rint(sigma * layer.v_th / (1 << spec.vth_shift)), 0, spec.max_vth)
    bias_mant, bias_exp = _bias(sigma * drive, spec, where)
    cfg = LoihiLayerConfig(name=layer.name, weight=w, weight_exp=w_exp, du=du, dv=dv, vth=vth.astype(np.int64),
                           bias_mant=bias_mant, bias_exp=bias_exp, delay=np.rint(layer.delay).astype(np.int64),
                           w_rec=w_rec, weight_exp_rec=w_exp_rec, refractory=layer.refractory, kind=layer.kind)
    return cfg, float(sigma)


def quantise(net: FloatNet, spec: LoihiSpec) -> LoihiConfig:
    """Quantise a checked :class:`FloatNet` to a :class:`LoihiConfig` (see the module docstring)."""
    layers, sigmas = [], {}
    for layer in net.layers:
        cfg, sigma = _layer(layer, net.dt, spec)
        layers.append(cfg)
        sigmas[layer.name] = sigma
    config = LoihiConfig(spec=spec, n_in=net.n_in, layers=tuple(layers), info={"dt": net.dt, "sigma": sigmas})
    if spec.check_activation:
        for cfg in config.layers:
            worst = 0
            for w, e in ((cfg.weight, cfg.weight_exp), (cfg.w_rec, cfg.weight_exp_rec)):
                if w is not None:
                    part = int(np.abs(w).sum(1).max(initial=0))
                    worst += part << e if e >= 0 else part >> -e
            if worst > spec.max_activation:
                raise SpikeforgeError(f"layer {cfg.name!r}: the worst-case activation {worst} exceeds "
                                      f"{spec.max_activation} (a_in is int16).")
    return config
