"""Post-training quantisation of a :class:`~.compile.FloatNet` to Xylo's integer formats.

* **Decays** become bit shifts ("dash"): ``dash = round(-log2(1 - exp(-dt/tau)))`` clipped to 0..15, the
  exact inverse of the chip's ``decay = 1 - 2^-dash`` (facts 1.2; ``~ log2(tau/dt)`` for ``tau >> dt``).
* **Scale.** With quantised decays ``a = 1 - 2^-dash_mem`` and ``b = 1 - 2^-dash_syn`` the chip computes
  ``Isyn = b (Isyn + w x)``, ``V = a V + Isyn``: the same impulse response as spikeforge's
  ``I = b I + (1 - b) x``, ``v = a v + (1 - a) I`` times the gain ``g = b / ((1 - b)(1 - a))`` (IF:
  ``b / (1 - b)``). So chip units are ``V = sigma * g * v`` for a per-group scale ``sigma``: one for all
  hidden neurons (input and recurrent weights feed the same currents), one for the outputs.
* **sigma** is the largest value for which the weights fit ``127 << max_weight_shift`` and every threshold
  and bias fits int16 -- and, when calibration ``peaks`` of the float model's states are given, for which the
  synaptic currents (before their decay) and membranes (before the reset) stay inside int16 with a margin.
* **Weights**: int8 with one left shift per matrix (``w_in``, ``w_rec``, ``w_out``), the smallest shift for
  which ``round(W sigma / 2^shift)`` fits int8. **Thresholds** ``round(v_th g sigma)`` (at least 1).
  **Biases** ``round((v_leak + affine bias) g sigma (1 - a))`` (the same steady state; the transient of an
  Affine bias differs since the chip adds it to Vmem, not to Isyn).
* Not exact: spikeforge fires on ``v > v_th``, Xylo on ``V >= th``; LIF/IF have no synaptic filter and are
  given ``dash_syn = spec.lif_dash_syn``; IF gets ``dash_mem = 15`` (the chip always leaks >= 1 LSB).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.checks import SpikeforgeError
from .spec import XyloSpec

if TYPE_CHECKING:  # pragma: no cover
    from .compile import FloatLayer, FloatNet

__all__ = ["XyloConfig", "dash_from_tau", "dequantise", "quantise", "tau_from_dash"]


def _ro(a: np.ndarray, dtype) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class XyloConfig:
    """A compiled Xylo network: exactly the integers the chip (and xylosim v2) is configured with.

    Shapes: ``w_in [n_in, N, S]``, ``w_rec [N, N, S]`` (pre, post, synapse), ``w_out [N, K, S_out]``,
    ``dash_mem [N]``, ``dash_syn [N, S]``, ``threshold [N]``, ``bias [N]`` and the ``*_out`` equivalents
    for the K output neurons. Arrays are read-only. ``info`` holds the scales and the hidden layers' index
    ranges (for reading recorded states back per layer).
    """

    spec: XyloSpec
    w_in: np.ndarray
    w_rec: np.ndarray
    w_out: np.ndarray
    weight_shift_in: int
    weight_shift_rec: int
    weight_shift_out: int
    dash_mem: np.ndarray
    dash_syn: np.ndarray
    threshold: np.ndarray
    bias: np.ndarray
    dash_mem_out: np.ndarray
    dash_syn_out: np.ndarray
    threshold_out: np.ndarray
    bias_out: np.ndarray
    has_bias: bool = True
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        for name, dtype in (("w_in", np.int8), ("w_rec", np.int8), ("w_out", np.int8), ("dash_mem", np.uint8),
                            ("dash_syn", np.uint8), ("threshold", np.int16), ("bias", np.int16),
                            ("dash_mem_out", np.uint8), ("dash_syn_out", np.uint8), ("threshold_out", np.int16),
                            ("bias_out", np.int16)):
            value = np.asarray(getattr(self, name))
            if value.dtype != dtype and not np.array_equal(value.astype(dtype).astype(np.int64),
                                                           value.astype(np.int64)):
                raise SpikeforgeError(f"XyloConfig.{name} does not fit {np.dtype(dtype).name}.")
            object.__setattr__(self, name, _ro(value, dtype))
        n_in, n, s = self.w_in.shape
        k = self.w_out.shape[1]
        expect = {"w_rec": (n, n, s), "w_out": (n, k, self.w_out.shape[2]), "dash_mem": (n,), "dash_syn": (n, s),
                  "threshold": (n,), "bias": (n,), "dash_mem_out": (k,), "dash_syn_out": (k, self.w_out.shape[2]),
                  "threshold_out": (k,), "bias_out": (k,)}
        for name, shape in expect.items():
            if getattr(self, name).shape != shape:
                raise SpikeforgeError(f"XyloConfig.{name} has shape {getattr(self, name).shape}, expected {shape}.")
        if int(max(self.dash_mem.max(initial=0), self.dash_syn.max(initial=0), self.dash_mem_out.max(initial=0),
                   self.dash_syn_out.max(initial=0))) > self.spec.max_dash:
            raise SpikeforgeError(f"a dash exceeds {self.spec.max_dash} ({self.spec.dash_bits} bits).")
        for name in ("weight_shift_in", "weight_shift_rec", "weight_shift_out"):
            v = int(getattr(self, name))
            if not 0 <= v <= self.spec.max_weight_shift:
                raise SpikeforgeError(
                    f"XyloConfig.{name}={v}; {self.spec.name} allows 0..{self.spec.max_weight_shift}.")

    @property
    def n_in(self) -> int:
        return int(self.w_in.shape[0])

    @property
    def n_hidden(self) -> int:
        return int(self.w_in.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.w_out.shape[1])

    @property
    def n_syn(self) -> int:
        return int(self.w_in.shape[2])

    @property
    def n_syn_out(self) -> int:
        return int(self.w_out.shape[2])


def dash_from_tau(tau: np.ndarray, dt: float, max_dash: int = 15) -> np.ndarray:
    """``round(-log2(1 - exp(-dt/tau)))`` clipped to ``0..max_dash``: chip decay ``1 - 2^-dash ~ exp(-dt/tau)``."""
    tau = np.asarray(tau, dtype=np.float64)
    with np.errstate(divide="ignore"):
        dash = -np.log2(-np.expm1(-dt / tau))
    return np.clip(np.rint(dash), 0, max_dash).astype(np.int64)


def tau_from_dash(dash: np.ndarray, dt: float) -> np.ndarray:
    """The time constant that a dash stands for: ``-dt / ln(1 - 2^-dash)`` (``dash = 0``: 0)."""
    dash = np.asarray(dash, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(dash > 0, -dt / np.log1p(-(2.0 ** -dash)), 0.0)


def _decays(layer: FloatLayer, dt: float, spec: XyloSpec) -> tuple[np.ndarray, ...]:
    """(dash_mem, dash_syn, gain g, leak factor 1 - a) per neuron."""
    n = layer.size
    if layer.kind == "IF":
        dm = np.full(n, spec.max_dash)
    else:
        dm = dash_from_tau(layer.tau_mem, dt, spec.max_dash)
    if layer.kind == "CubaLIF":
        ds = dash_from_tau(layer.tau_syn, dt, spec.max_dash)
    else:
        ds = np.full(n, spec.lif_dash_syn)
    one_minus_b = 2.0 ** -ds
    b = 1.0 - one_minus_b
    one_minus_a = 2.0 ** -dm
    if layer.kind == "IF":
        gain, leak = b / one_minus_b, np.ones(n)
    else:
        gain, leak = b / (one_minus_b * one_minus_a), one_minus_a
    gain = np.where(b > 0, gain, 1.0)  # dash_syn = 0 clears the current: no gain to match
    return dm, ds, gain, leak


def _group(layers: list[FloatLayer], mats: list[np.ndarray], dt: float, spec: XyloSpec,
           peaks: dict[str, tuple] | None = None, margin: float = 1.25) -> dict[str, Any]:
    """Choose sigma for neurons fed by ``mats``; return per-neuron integers and sigma."""
    parts = [_decays(layer, dt, spec) for layer in layers]
    gain = np.concatenate([p[2] for p in parts])
    leak = np.concatenate([p[3] for p in parts])
    th = np.concatenate([layer.v_th if layer.v_th is not None else np.full(layer.size, np.nan) for layer in layers])
    drive = np.concatenate([layer.v_leak + (layer.bias if layer.bias is not None else 0.0) for layer in layers])
    hi_w = max((float(np.abs(m).max()) for m in mats if m.size), default=0.0)
    state_max = spec.state_range[1]
    candidates = []
    if hi_w > 0:
        candidates.append(spec.weight_range[1] * 2 ** spec.max_weight_shift / hi_w)
    th_chip = np.abs(np.nan_to_num(th, nan=0.0)) * gain
    if th_chip.max(initial=0) > 0:
        candidates.append(state_max / th_chip.max())
    bias_chip = np.abs(drive) * gain * leak
    if bias_chip.max(initial=0) > 0:
        candidates.append(state_max / bias_chip.max())
    for layer, (_, ds, g, _) in zip(layers, parts, strict=True):
        if peaks and layer.name in peaks:
            # chip units per model unit: Isyn = sigma b/(1-b) I (the sum before the decay: sigma I/(1-b)),
            # Vmem = sigma g v (before the reset: up to v + v_th)
            p_i, p_v = (np.broadcast_to(np.asarray(p, dtype=np.float64), (layer.size,)) for p in peaks[layer.name])
            v_th = np.abs(layer.v_th) if layer.v_th is not None else 0.0
            need = np.maximum(p_i / 2.0 ** -ds, g * (p_v + v_th)).max(initial=0.0) * margin
            if need > 0:
                candidates.append(state_max / need)
    sigma = min(candidates) if candidates else 1.0
    lo_t, hi_t = spec.threshold_range
    threshold = np.where(np.isnan(th), hi_t, np.clip(np.rint(np.nan_to_num(th) * gain * sigma), 1, hi_t))
    bias = np.clip(np.rint(drive * gain * leak * sigma), *spec.bias_range)
    dm = np.concatenate([p[0] for p in parts])
    ds = np.concatenate([p[1] for p in parts])
    return {"sigma": float(sigma), "threshold": threshold.astype(np.int64), "bias": bias.astype(np.int64),
            "dash_mem": dm, "dash_syn": ds, "gain": gain}


def _int8(w: np.ndarray, sigma: float, spec: XyloSpec) -> tuple[np.ndarray, int]:
    """``w * sigma ~ q << shift`` with ``q`` int8 and the smallest shift that fits."""
    lo, hi = spec.weight_range
    scaled = w * sigma
    peak = float(np.abs(scaled).max(initial=0.0))
    shift = 0
    while shift < spec.max_weight_shift and peak / 2 ** shift > hi + 0.5:
        shift += 1
    return np.clip(np.rint(scaled / 2 ** shift), lo, hi).astype(np.int64), shift


def quantise(net: FloatNet, spec: XyloSpec, peaks: dict[str, tuple] | None = None, margin: float = 1.25) -> XyloConfig:
    """Quantise a checked :class:`FloatNet` to a :class:`XyloConfig` (see the module docstring).

    ``peaks`` (calibration, optional): per neuron layer name, ``(peak |I|, peak |v|)`` -- scalars or per neuron,
    in the model's units, as observed on sample data (:func:`spikeforge.train.qat.state_peaks`). ``sigma``
    then also keeps ``margin`` times those states inside int16, so that synaptic currents and membranes do not
    saturate where the float model does not. Without it only weights, thresholds and biases bound ``sigma``
    (a threshold may then use the whole int16 range, leaving no room above it)."""
    hidden, out = net.layers[:-1], net.layers[-1]
    sizes = [layer.size for layer in hidden]
    n, k, s = sum(sizes), out.size, spec.synapses_per_neuron
    starts = np.cumsum([0, *sizes])
    w_in_f = np.zeros((net.n_in, n))
    w_rec_f = np.zeros((n, n))
    for i, layer in enumerate(hidden):
        sl = slice(starts[i], starts[i + 1])
        if i == 0:
            w_in_f[:, sl] = layer.weight.T
        else:
            w_rec_f[starts[i - 1]:starts[i], sl] = layer.weight.T
        if layer.w_rec is not None:
            w_rec_f[sl, sl] += layer.w_rec.T
    w_out_f = np.zeros((n, k))
    w_out_f[starts[-2]:starts[-1], :] = out.weight.T

    hid = _group(hidden, [w_in_f, w_rec_f], net.dt, spec, peaks, margin)
    outg = _group([out], [w_out_f], net.dt, spec, peaks, margin)
    q_in, sh_in = _int8(w_in_f, hid["sigma"], spec)
    q_rec, sh_rec = _int8(w_rec_f, hid["sigma"], spec)
    q_out, sh_out = _int8(w_out_f, outg["sigma"], spec)

    def syn(q: np.ndarray, count: int) -> np.ndarray:
        full = np.zeros((*q.shape, count), dtype=np.int64)
        full[..., 0] = q
        return full

    info = {"dt": net.dt, "sigma_hidden": hid["sigma"], "sigma_out": outg["sigma"],
            "hidden_layers": {layer.name: (int(starts[i]), int(starts[i + 1])) for i, layer in enumerate(hidden)},
            "output_layer": out.name, "output_kind": out.kind}
    return XyloConfig(
        spec=spec, w_in=syn(q_in, s), w_rec=syn(q_rec, s), w_out=syn(q_out, spec.output_synapses),
        weight_shift_in=sh_in, weight_shift_rec=sh_rec, weight_shift_out=sh_out,
        dash_mem=hid["dash_mem"], dash_syn=np.repeat(hid["dash_syn"][:, None], s, axis=1),
        threshold=hid["threshold"], bias=hid["bias"],
        dash_mem_out=outg["dash_mem"], dash_syn_out=np.repeat(outg["dash_syn"][:, None], spec.output_synapses, 1),
        threshold_out=outg["threshold"], bias_out=outg["bias"], has_bias=spec.has_bias, info=info)


def dequantise(config: XyloConfig, net: FloatNet) -> dict[str, dict[str, np.ndarray | None]]:
    """The float values, in the model's own units, that the integers of ``config`` stand for.

    For each neuron layer of ``net`` (by name): ``weight`` ``[n, n_prev]`` (incoming), ``w_rec`` ``[n, n]``
    or None, ``v_th`` (None for LI), ``drive`` (``v_leak + bias``: the chip's bias undone), ``tau_mem``
    (None for IF) and ``tau_syn`` (CubaLIF only) -- the time constants whose ``exp(-dt/tau)`` equals the
    chip's decay ``1 - 2^-dash`` exactly. Quantise-then-dequantise is the forward pass of
    quantisation-aware training; it inverts :func:`quantise` up to its rounding and clipping.
    """
    spec, dt = config.spec, net.dt
    hidden, out = net.layers[:-1], net.layers[-1]
    sig_h, sig_o = config.info["sigma_hidden"], config.info["sigma_out"]
    w_in = config.w_in[..., 0].astype(np.float64) * 2.0 ** config.weight_shift_in / sig_h
    w_rec = config.w_rec[..., 0].astype(np.float64) * 2.0 ** config.weight_shift_rec / sig_h
    w_out = config.w_out[..., 0].astype(np.float64) * 2.0 ** config.weight_shift_out / sig_o
    ranges = config.info["hidden_layers"]

    def taus(layer: FloatLayer, dm: np.ndarray, ds: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        floor = dt / 64.0  # dash 0 (decay to zero in one step): exp(-64) ~ 0, but a positive time constant
        tau_mem = None if layer.kind == "IF" else np.maximum(tau_from_dash(dm, dt), floor)
        tau_syn = np.maximum(tau_from_dash(ds, dt), floor) if layer.kind == "CubaLIF" else None
        return tau_mem, tau_syn

    result: dict[str, dict[str, np.ndarray | None]] = {}
    prev = None
    for i, layer in enumerate(hidden):
        a, b = ranges[layer.name]
        _, _, gain, leak = _decays(layer, dt, spec)
        weight = w_in[:, a:b].T if i == 0 else w_rec[prev[0]:prev[1], a:b].T
        tau_mem, tau_syn = taus(layer, config.dash_mem[a:b], config.dash_syn[a:b, 0])
        result[layer.name] = {
            "weight": weight, "w_rec": w_rec[a:b, a:b].T if layer.w_rec is not None else None,
            "v_th": config.threshold[a:b] / (gain * sig_h) if layer.v_th is not None else None,
            "drive": config.bias[a:b] / (gain * leak * sig_h), "tau_mem": tau_mem, "tau_syn": tau_syn}
        prev = (a, b)
    _, _, gain, leak = _decays(out, dt, spec)
    tau_mem, tau_syn = taus(out, config.dash_mem_out, config.dash_syn_out[:, 0])
    result[out.name] = {
        "weight": w_out[prev[0]:prev[1], :].T, "w_rec": None,
        "v_th": config.threshold_out / (gain * sig_o) if out.v_th is not None else None,
        "drive": config.bias_out / (gain * leak * sig_o), "tau_mem": tau_mem, "tau_syn": tau_syn}
    return result
