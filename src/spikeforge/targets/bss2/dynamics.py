r"""Noise-accurate emulator of a BrainScaleS-2-like chip (facts section 3.4, the emulator contract), batched in torch.

**Neuron** (per neuron circuit, hardware time in us, voltages in nominal CADC units):

.. math::

    \tau_s^{e,i}\,\dot I_{e,i} = -I_{e,i} + \textstyle\sum_k J_k\,\delta(t - t_k), \qquad
    \tau_m\,\dot v = (E_l - v) + I_e - I_i + \sigma\,\xi(t)

``v > theta`` emits a spike, sets ``v = reset`` and holds it there for the refractory time.

**Integration** with a step ``h = dt_hw / S`` (``S`` sub-steps per model step, ``h <= spec.h_us``), exponential
Euler, current first -- the same scheme as spikeforge's CubaLIF (:mod:`spikeforge.dynamics.cuba_lif`):
``I = beta I + J``, ``v = E_l + alpha (v - E_l) + (1 - alpha)(I_e - I_i)`` with ``alpha = exp(-h/tau_m)``,
``beta = exp(-h/tau_s)``, then threshold test, reset and refractory counter exactly as
:mod:`spikeforge.dynamics.common` (``reset="value"``). An event's jump is set so that its charge ``sum_k J beta^k h``
equals the physical charge whatever ``h`` (``J = Q (1 - beta) / h``; ``h -> 0`` gives the continuous ``Q/tau_s``).
Hence with ``S = 1``, no mismatch and no noise the emulator *is* spikeforge's float CubaLIF (and with
``tau_syn = 0``, its LIF and LI); with ``S > 1`` it converges to the continuous-time chip.

**Events and time.** The float model's input at step ``t`` (1-based) arrives at the first sub-step of that step
(hardware time ``(t - 1) dt_hw``); a spike emitted in sub-step ``k`` reaches the next layer in sub-step ``k``
(feed-forward chains without delay, as the float model; the chip's sub-microsecond routing delay is not
modelled). Spike counts per model step sum the sub-steps of that step.

**Mismatch and noise** (:class:`NoiseModel`; all magnitudes are *assumptions*, facts 3.3 gives none): fixed pattern
drawn once per chip instance from a generator seeded by ``instance`` (:class:`FixedPattern`), temporal noise
drawn per run. **CapMem**: each neuron parameter is a 10-bit code; the chip turns codes into analog values with
its own mismatch (voltage ``= cv code (1 + g) + o``, time constant ``= K (1 + e) / code``, synaptic gain
``= code / 512 (1 + e)``), and programs codes from targets through its calibration (nominal maps until
:mod:`.calibrate` has measured better ones).

**Observation**: the CADC samples every ``spec.cadc_period_us`` the membrane as the threshold comparator sees it
(before a reset in that sub-step, *assumption*), ``cadc = clip(round(g_c v + o_c + noise), 0, 255)``; the trace
is converted back to float units with the layer's trace offset and scale and interpolated linearly onto the
model's ``dt`` grid (hxtorch, facts 3.2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ...core.checks import SpikeforgeError, check_rank
from ..observe import LayerObservation
from .quantise import BSS2Config, LayerConfig
from .spec import BSS2, BSS2Spec

__all__ = ["CODE_NAMES", "Analog", "BSS2Chip", "Calibration", "FixedPattern", "NoiseModel", "Probe", "integrate"]

#: The per-neuron CapMem parameters (10-bit codes) the emulator models.
CODE_NAMES = ("leak", "reset", "threshold", "tau_mem", "tau_syn_exc", "tau_syn_inh", "refractory", "gm_exc",
              "gm_inh")
_VOLTS = ("leak", "reset", "threshold")
_TAUS = ("tau_mem", "tau_syn_exc", "tau_syn_inh")
_GM_UNITY = 512.0
_CALIBRATIONS: dict = {}


@dataclass(frozen=True)
class NoiseModel:
    """Magnitudes of fixed-pattern mismatch (per chip instance) and temporal noise (per run).

    Every default is an *assumption* (facts 3.3: no numbers could be confirmed); see docs/targets/bss2.md.

    Attributes:
        tau_rel: relative std of tau_mem, tau_syn_exc, tau_syn_inh (per neuron).
        volt_offset: std (CADC units) of the offset of leak, reset and threshold (per neuron and parameter).
        volt_gain_rel: relative std of the CapMem code -> voltage gain (per neuron and parameter).
        refractory_rel: relative std of the refractory time.
        syn_gain_rel: relative std of the synaptic input strength per neuron (excitatory and inhibitory).
        synapse_rel: relative std of each synapse's DAC gain.
        cadc_offset, cadc_gain_rel: per-neuron CADC offset (LSB) and relative gain std.
        membrane_noise: stationary std (CADC units) of the free membrane's temporal noise.
        cadc_noise: std (LSB) of the read-out noise per CADC sample.
        spike_jitter_us: std of a Gaussian jitter of each spike's time (hardware us; 0: none).
    """

    tau_rel: float = 0.05
    volt_offset: float = 5.0
    volt_gain_rel: float = 0.02
    refractory_rel: float = 0.03
    syn_gain_rel: float = 0.05
    synapse_rel: float = 0.03
    cadc_offset: float = 2.0
    cadc_gain_rel: float = 0.02
    membrane_noise: float = 0.5
    cadc_noise: float = 1.0
    spike_jitter_us: float = 0.0

    @classmethod
    def ideal(cls) -> NoiseModel:
        """No mismatch and no noise."""
        return cls(**{f.name: 0.0 for f in dataclasses.fields(cls)})

    def fixed_off(self) -> NoiseModel:
        """The same temporal noise without fixed-pattern mismatch."""
        return dataclasses.replace(self, tau_rel=0.0, volt_offset=0.0, volt_gain_rel=0.0, refractory_rel=0.0,
                                   syn_gain_rel=0.0, synapse_rel=0.0, cadc_offset=0.0, cadc_gain_rel=0.0)


@dataclass(frozen=True)
class FixedPattern:
    """One chip instance's hidden mismatch (float64, CPU). Only the emulator reads it; calibration never does."""

    volt_gain: Tensor     # [3, N] multiplicative, leak/reset/threshold
    volt_offset: Tensor   # [3, N] CADC units
    tau: Tensor           # [3, N] multiplicative, tau_mem/tau_syn_exc/tau_syn_inh
    refractory: Tensor    # [N] multiplicative
    gm: Tensor            # [2, N] multiplicative, exc/inh
    synapse: Tensor       # [rows, synapse_rows, neurons_per_row] multiplicative
    cadc_gain: Tensor     # [N]
    cadc_offset: Tensor   # [N]

    @classmethod
    def draw(cls, spec: BSS2Spec, noise: NoiseModel, instance: int) -> FixedPattern:
        """Draw the mismatch of chip ``instance`` (the same standard normals for every ``noise``, scaled by it)."""
        g = torch.Generator().manual_seed(int(instance) * 7919 + 104729)
        n = spec.n_neurons

        def rel(shape, sigma):
            return (1.0 + sigma * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(min=0.5)

        return cls(volt_gain=rel((3, n), noise.volt_gain_rel),
                   volt_offset=noise.volt_offset * torch.randn((3, n), generator=g, dtype=torch.float64),
                   tau=rel((3, n), noise.tau_rel), refractory=rel((n,), noise.refractory_rel),
                   gm=rel((2, n), noise.syn_gain_rel),
                   synapse=rel((spec.rows, spec.synapse_rows, spec.neurons_per_row), noise.synapse_rel),
                   cadc_gain=rel((n,), noise.cadc_gain_rel),
                   cadc_offset=noise.cadc_offset * torch.randn((n,), generator=g, dtype=torch.float64))


@dataclass
class Calibration:
    """What the chip believes about each neuron's CapMem -> effect maps, in CADC *reading* units (float64, [N]).

    ``volt_gain/volt_offset [3, N]``: reading = gain * code + offset (leak, reset, threshold);
    ``tau_k [3, N]``: tau (us) = k / code; ``gm [2, N]``: synaptic strength per code relative to nominal;
    ``refractory_step [N]``: us per refractory code. :meth:`nominal` is the design values (uncalibrated chip);
    :func:`~.calibrate.calibrate` measures better ones.
    """

    volt_gain: Tensor
    volt_offset: Tensor
    tau_k: Tensor
    gm: Tensor
    refractory_step: Tensor

    @classmethod
    def nominal(cls, spec: BSS2Spec) -> Calibration:
        n = spec.n_neurons
        one = torch.ones(n, dtype=torch.float64)
        return cls(volt_gain=torch.stack([one * spec.capmem_volt_per_code] * 3), volt_offset=torch.zeros(3, n,
                   dtype=torch.float64), tau_k=torch.stack([one * spec.tau_mem_code_us, one * spec.tau_syn_code_us,
                                                           one * spec.tau_syn_code_us]),
                   gm=torch.stack([one, one]), refractory_step=one * spec.refractory_step_us)

    def codes(self, spec: BSS2Spec, idx: Tensor, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        """CapMem codes (int64, clipped to 0..1023) that reach ``targets`` (per neuron ``idx``) by these maps.

        ``targets``: ``leak, reset, threshold`` (CADC units; ``inf`` threshold: the highest code), ``tau_mem,
        tau_syn_exc, tau_syn_inh, refractory`` (us; tau 0: the highest code), ``gm_exc, gm_inh`` (relative
        strength, 1 = nominal)."""
        top = spec.max_code
        out = {}
        for j, name in enumerate(_VOLTS):
            t = targets[name].to(torch.float64)
            c = (t - self.volt_offset[j, idx]) / self.volt_gain[j, idx]
            out[name] = torch.where(torch.isinf(t), torch.full_like(c, top), c)
        for j, name in enumerate(_TAUS):
            t = targets[name].to(torch.float64)
            out[name] = torch.where(t > 0, self.tau_k[j, idx] / t.clamp(min=1e-12), torch.full_like(t, top))
        out["refractory"] = targets["refractory"].to(torch.float64) / self.refractory_step[idx]
        out["gm_exc"] = targets["gm_exc"].to(torch.float64) * _GM_UNITY / self.gm[0, idx]
        out["gm_inh"] = targets["gm_inh"].to(torch.float64) * _GM_UNITY / self.gm[1, idx]
        lo = {name: 1 for name in (*_TAUS, "gm_exc", "gm_inh")}
        return {k: torch.nan_to_num(v, posinf=top).round().clamp(lo.get(k, 0), top).to(torch.int64)
                for k, v in out.items()}


class Analog(NamedTuple):
    """Effective analog parameters of a set of neurons ([N] each; true voltages in nominal CADC units, us)."""

    leak: Tensor
    reset: Tensor
    threshold: Tensor
    tau_mem: Tensor
    tau_syn_exc: Tensor
    tau_syn_inh: Tensor
    refractory: Tensor
    gm_exc: Tensor
    gm_inh: Tensor


def analog_values(spec: BSS2Spec, fp: FixedPattern, idx: Tensor, codes: dict[str, Tensor]) -> Analog:
    """What the chip's circuits do with ``codes`` (for neurons ``idx``): the hidden CapMem -> analog maps."""
    c = {k: v.to(torch.float64) for k, v in codes.items()}
    volts = [spec.capmem_volt_per_code * c[name] * fp.volt_gain[j, idx] + fp.volt_offset[j, idx]
             for j, name in enumerate(_VOLTS)]
    taus = [k * fp.tau[j, idx] / c[name].clamp(min=1) for j, (name, k) in
            enumerate(zip(_TAUS, (spec.tau_mem_code_us, spec.tau_syn_code_us, spec.tau_syn_code_us), strict=True))]
    ref = spec.refractory_step_us * c["refractory"] * fp.refractory[idx]
    return Analog(*volts, *taus, ref, c["gm_exc"] / _GM_UNITY * fp.gm[0, idx], c["gm_inh"] / _GM_UNITY * fp.gm[1, idx])


class Probe(NamedTuple):
    """What a probe run returns (only what the hardware exposes): CADC readings ``[M, B, N]`` at ``times_us``
    ``[M]``, and per neuron and sample the spike ``count``, ``first_us`` and ``last_us`` spike time (-1: none)."""

    cadc: Tensor
    times_us: Tensor
    count: Tensor
    first_us: Tensor
    last_us: Tensor


def integrate(leak: Tensor, reset: Tensor, threshold: Tensor, alpha: Tensor, beta: Tensor, n_ref: Tensor,
              drive: Tensor | None, steps: int, batch: int, *, sample_at: list[int], noise_std: Tensor | None = None,
              generator: torch.Generator | None = None, raster: bool = True, times: bool = False,
              drive_at: Tensor | None = None):
    """The sub-step loop (module docstring) for ``N`` neurons and ``B`` samples.

    Args:
        leak, reset, threshold, alpha: ``[N]``; beta: ``[2, N]`` (excitatory, inhibitory); n_ref: ``[N]``
            refractory sub-steps.
        drive: ``[K_d, 2, B or 1, N]`` current jumps (excitatory, inhibitory); row ``i`` applies at sub-step
            ``drive_at[i]`` (default ``i``).
        steps: sub-steps to run; batch: B.
        sample_at: sub-steps whose membrane (before that sub-step's reset) is recorded; ``-1``: the initial state.
        noise_std: ``[N]`` per-sub-step membrane noise std (None: none).
        raster: return the spikes ``[steps, B, N]``; times: return count/first/last spike sub-step ``[B, N]``.

    Returns:
        ``(raster or None, samples [M, B, N], (count, first, last) or None)``.
    """
    n = leak.shape[0]
    v = leak.expand(batch, n).clone()
    cur_e, cur_i = v.new_zeros(batch, n), v.new_zeros(batch, n)
    b_e, b_i = beta[0], beta[1]
    spiking = bool(torch.isfinite(threshold).any())
    has_ref = bool((n_ref > 0).any())
    ref = v.new_zeros(batch, n)
    noise = None
    if noise_std is not None:
        noise = torch.randn(steps, batch, n, generator=generator, device=v.device, dtype=v.dtype)
        noise *= noise_std
    one_minus = 1.0 - alpha
    at = {} if drive is None else (
        {int(k): i for i, k in enumerate(drive_at.tolist())} if drive_at is not None else
        {k: k for k in range(drive.shape[0])})
    want = {}
    for m, k in enumerate(sample_at):
        want.setdefault(int(k), []).append(m)
    samples: list[Tensor | None] = [None] * len(sample_at)
    for m in want.get(-1, []):
        samples[m] = v.clone()
    spikes = v.new_zeros(steps, batch, n) if raster else None
    if times:
        count = v.new_zeros(batch, n)
        first = v.new_full((batch, n), -1.0)
        last = v.new_full((batch, n), -1.0)
    for k in range(steps):
        cur_e = cur_e * b_e
        cur_i = cur_i * b_i
        i = at.get(k)
        if i is not None:
            cur_e = cur_e + drive[i, 0]
            cur_i = cur_i + drive[i, 1]
        v_new = leak + alpha * (v - leak) + one_minus * (cur_e - cur_i)
        if noise is not None:
            v_new = v_new + noise[k]
        if not spiking:  # a read-out: no threshold, reset or refractoriness
            for m in want.get(k, []):
                samples[m] = v_new
            v = v_new
            continue
        if has_ref:
            held = ref > 0.5
            v_new = torch.where(held, reset, v_new)
            z = (v_new > threshold) & ~held
        else:
            z = v_new > threshold
        for m in want.get(k, []):
            samples[m] = v_new
        v = torch.where(z, reset, v_new)
        if has_ref:
            ref = torch.where(z, n_ref, ref - 1.0)
        if raster:
            spikes[k] = z
        if times:
            zf = z.to(v.dtype)
            count += zf
            first = torch.where(z & (first < 0), torch.full_like(first, k), first)
            last = torch.where(z, torch.full_like(last, k), last)
    stats = (count, first, last) if times else None
    return spikes, torch.stack(samples) if samples else v.new_zeros(0, batch, n), stats


class BSS2Chip:
    """One emulated chip instance: fixed-pattern mismatch drawn once from ``instance``, a calibration, and runs.

    Args:
        spec: the chip (``BSS2`` or a variant), or a :class:`BSS2Config` (its spec is used).
        instance: which chip; the same instance always has the same mismatch.
        noise: mismatch and noise magnitudes (:class:`NoiseModel`; ``NoiseModel.ideal()`` for none).
        calibrated: calibrate the chip when built (:func:`~.calibrate.calibrate`, a few seconds) -- otherwise
            it is programmed through the nominal CapMem maps, as an uncalibrated chip.
        ideal_readout: read the membrane exactly at every model step (no CADC: no sampling period, quantisation,
            offset, gain or noise) instead of through the CADC.
        device, dtype: where and in which precision runs happen.
        seed: seeds the per-run temporal noise (each run draws new noise; None: from torch's global generator).
        compile_kwargs: passed to :func:`~.compile.compile` by :meth:`observe` (``lif_tau_syn_us``,
            ``weight_scale``, ``readout_range``).
    """

    def __init__(self, spec: BSS2Spec | BSS2Config = BSS2, *, instance: int = 0, noise: NoiseModel | None = None,
                 calibrated: bool = True, ideal_readout: bool = False, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32, seed: int | None = None, **compile_kwargs) -> None:
        self.spec = spec.spec if isinstance(spec, BSS2Config) else spec
        self.instance = int(instance)
        self.noise = NoiseModel() if noise is None else noise
        self.ideal_readout = bool(ideal_readout)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.compile_kwargs = compile_kwargs
        self._fp = FixedPattern.draw(self.spec, self.noise, self.instance)
        self.calibration = Calibration.nominal(self.spec)
        seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else int(seed)
        self._gen = torch.Generator(device=self.device).manual_seed(seed)
        self.config: BSS2Config | None = None
        if calibrated and self._has_mismatch():
            key = (self.spec, self.noise, self.instance)
            if key not in _CALIBRATIONS:  # like a nightly calibration per setup: measured once per process
                from .calibrate import calibrate

                _CALIBRATIONS[key] = calibrate(self, apply=False).calibration
            self.calibration = dataclasses.replace(_CALIBRATIONS[key])

    def _has_mismatch(self) -> bool:
        n = self.noise
        return any(getattr(n, f) != 0 for f in ("tau_rel", "volt_offset", "volt_gain_rel", "refractory_rel",
                                                "syn_gain_rel", "cadc_offset", "cadc_gain_rel"))

    # ------------------------------------------------------------------------------------------------ programming

    def effective(self, idx: Tensor, codes: dict[str, Tensor]) -> Analog:
        """The analog parameters neurons ``idx`` take with ``codes``: the emulator's hidden truth (for tests and
        benchmarks that judge a calibration; calibration itself only probes)."""
        return analog_values(self.spec, self._fp, idx, codes)

    def cadc_of(self, idx: Tensor, v: Tensor) -> Tensor:
        """The CADC reading (before quantisation and noise) of true voltage ``v`` on neurons ``idx`` (hidden truth)."""
        return self._fp.cadc_gain[idx] * v + self._fp.cadc_offset[idx]

    def _layer_codes(self, layer: LayerConfig) -> tuple[Tensor, dict[str, Tensor]]:
        idx = torch.as_tensor(layer.neuron_row * self.spec.neurons_per_row + layer.columns)
        f = lambda a: torch.tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
        one = torch.ones(layer.size, dtype=torch.float64)
        targets = dict(leak=f(layer.leak), reset=f(layer.reset), threshold=f(layer.threshold),
                       tau_mem=f(layer.tau_mem_us), tau_syn_exc=f(layer.tau_syn_us), tau_syn_inh=f(layer.tau_syn_us),
                       refractory=f(layer.refractory_us), gm_exc=one, gm_inh=one)
        return idx, self.calibration.codes(self.spec, idx, targets)

    def _weights(self, layer: LayerConfig, a: Analog, h: float) -> Tensor:
        """``[2, n_pre, N]``: current jump per presynaptic event (exc, inh) in the sub-step scheme."""
        row = layer.neuron_row
        syn = self._fp.synapse[row]
        cols = torch.tensor(layer.columns)
        w = torch.as_tensor(layer.weight.astype(np.float64)).T  # [n_pre, N]
        out = []
        for sign, rows, gm, tau in ((1, layer.exc_rows, a.gm_exc, a.tau_syn_exc),
                                    (-1, layer.inh_rows, a.gm_inh, a.tau_syn_inh)):
            mag = (sign * w).clamp(min=0)
            r = torch.tensor(rows)
            g = syn[r.clamp(min=0)][:, cols] * (r >= 0)[:, None]
            tgt = torch.tensor(layer.tau_syn_us)
            ratio = torch.where(tgt > 0, tau / tgt.clamp(min=1e-12), torch.ones_like(tau))
            frac = torch.where(tau > 0, -torch.expm1(-h / tau.clamp(min=1e-12)), torch.ones_like(tau))
            out.append(mag * g * (layer.charge_per_lsb * gm * ratio * frac / h)[None, :])
        return torch.stack(out)

    # ------------------------------------------------------------------------------------------------ running

    def substeps(self, dt_us: float) -> int:
        """Sub-steps per model step: the fewest with ``h <= spec.h_us``."""
        return max(1, int(np.ceil(dt_us / self.spec.h_us - 1e-9)))

    def _sample_plan(self, steps: int, s: int, dt_us: float) -> tuple[list[int], np.ndarray]:
        """Sub-steps at which the CADC samples, and their times (us)."""
        if self.ideal_readout:
            return [t * s - 1 for t in range(1, steps + 1)], np.arange(1, steps + 1) * dt_us
        h = dt_us / s
        period = self.spec.cadc_period_us
        m = int(np.ceil(steps * dt_us / period - 1e-9))
        times = np.arange(m + 1) * period
        subs = [int(round(t / h)) - 1 for t in times]
        return subs, times

    def _readout(self, idx: Tensor, v: Tensor) -> Tensor:
        """CADC readings of true membranes ``v [M, B, N]``: offset, gain, noise, rounding, clipping."""
        dev, dt = v.device, v.dtype
        g = self._fp.cadc_gain[idx].to(dev, dt)
        o = self._fp.cadc_offset[idx].to(dev, dt)
        r = g * v + o
        if self.noise.cadc_noise > 0:
            r = r + self.noise.cadc_noise * torch.randn(r.shape, generator=self._gen, device=dev, dtype=dt)
        return r.round().clamp(0, self.spec.max_cadc)

    def _jitter(self, z: Tensor, h: float) -> Tensor:
        sigma = self.noise.spike_jitter_us / h
        if sigma <= 0 or not bool(z.any()):
            return z
        k, b, n = z.nonzero(as_tuple=True)
        shift = (sigma * torch.randn(k.shape, generator=self._gen, device=z.device, dtype=z.dtype)).round().long()
        k2 = (k + shift).clamp(0, z.shape[0] - 1)
        out = torch.zeros_like(z)
        out.index_put_((k2, b, n), z[k, b, n], accumulate=True)
        return out

    def run(self, config: BSS2Config, x: Tensor) -> list[LayerObservation]:
        """Program the chip with ``config`` and run ``x`` ``[T, B, n_in]`` (spike counts per model step).

        Returns:
            one :class:`~spikeforge.targets.observe.LayerObservation` per layer: spike counts ``[T, B, N]`` and the
            membrane in the float model's units on its ``dt`` grid (from the CADC, or exact with
            ``ideal_readout``).
        """
        check_rank("x", x, 3, layout="[T, B, n_in]")
        if x.shape[-1] != config.n_in:
            raise SpikeforgeError(f"x has {x.shape[-1]} input channels; the compiled network takes {config.n_in}.")
        if config.spec != self.spec:
            raise SpikeforgeError("the config was compiled for another spec than this chip's; compile with chip.spec.")
        dev, dt = self.device, self.dtype
        steps, batch = int(x.shape[0]), int(x.shape[1])
        dt_us = config.dt_us
        s = self.substeps(dt_us)
        h = dt_us / s
        sample_at, sample_t = self._sample_plan(steps, s, dt_us)
        sample_t = np.asarray(sample_t, dtype=np.float64)
        total = max(steps * s, max(sample_at) + 1)
        grid = np.arange(1, steps + 1) * dt_us
        j1 = np.clip(np.searchsorted(sample_t, grid, side="left"), 1, max(len(sample_t) - 1, 1))
        j0 = j1 - 1
        span = np.where(sample_t[j1] > sample_t[j0], sample_t[j1] - sample_t[j0], 1.0)
        wgt = torch.as_tensor(np.clip((grid - sample_t[j0]) / span, 0.0, 1.0), dtype=dt, device=dev)[:, None, None]
        j0t, j1t = torch.as_tensor(j0, device=dev), torch.as_tensor(j1, device=dev)
        pre = x.to(dev, dt)
        pre_at = torch.arange(steps, device=dev) * s  # input events: first sub-step of each model step
        obs = []
        for layer in config.layers:
            idx, codes = self._layer_codes(layer)
            a = self.effective(idx, codes)
            instant = torch.tensor(layer.tau_syn_us) == 0  # idealised instantaneous synapse (not a chip setting)
            a = a._replace(tau_syn_exc=torch.where(instant, 0.0, a.tau_syn_exc),
                           tau_syn_inh=torch.where(instant, 0.0, a.tau_syn_inh))
            w = self._weights(layer, a, h).to(dev, dt)  # [2, n_pre, N]
            drive = torch.einsum("kbp,spn->ksbn", pre, w)
            tau_m = a.tau_mem
            alpha = torch.exp(-h / tau_m)
            beta = torch.stack([torch.where(t > 0, torch.exp(-h / t.clamp(min=1e-12)), torch.zeros_like(t))
                                for t in (a.tau_syn_exc, a.tau_syn_inh)])
            n_ref = torch.round(a.refractory / h)
            sig = self.noise.membrane_noise
            noise_std = (sig * torch.sqrt(1 - alpha**2)).to(dev, dt) if sig > 0 else None
            spiking = layer.spiking
            thr = a.threshold if spiking else torch.full_like(a.threshold, float("inf"))
            c = lambda t: t.to(dev, dt)  # noqa: E731
            raster, samples, _ = integrate(c(a.leak), c(a.reset), c(thr), c(alpha), c(beta), c(n_ref), drive,
                                           total, batch, sample_at=sample_at, noise_std=noise_std,
                                           generator=self._gen, drive_at=pre_at)
            raster = self._jitter(raster, h)
            counts = raster[: steps * s].reshape(steps, s, batch, -1).sum(1)
            if self.ideal_readout:
                trace = samples
                offset = torch.as_tensor(layer.origin, dtype=dt, device=dev)
                v_grid = trace
            else:
                readings = self._readout(idx, samples)
                v_grid = readings[j0t] * (1 - wgt) + readings[j1t] * wgt
                offset = torch.as_tensor(layer.origin, dtype=dt, device=dev)
            v = torch.tensor(layer.v_leak, dtype=dt, device=dev) + (v_grid - offset) / layer.k
            obs.append(LayerObservation(counts if spiking else torch.zeros_like(counts), v))
            pre, pre_at = raster, None
        return obs

    def output(self, config_or_graph, x: Tensor) -> Tensor:
        """Deployment: the network's output sequence ``[T, B, K]`` as the chip gives it -- the last layer's membrane
        (an LI read-out, through the CADC) or its spike counts -- for the float model's own read-out (max, mean,
        last, spike count) to turn into a prediction. ``config_or_graph``: a :class:`BSS2Config` or a graph."""
        if isinstance(config_or_graph, BSS2Config):
            config, obs = config_or_graph, self.run(config_or_graph, x)
        else:
            obs = self.observe(config_or_graph, x)
            config = self.config
        return obs[-1].spikes if config.layers[-1].spiking else obs[-1].v

    def observe(self, graph, x: Tensor) -> list[LayerObservation]:
        """Compile ``graph`` for this chip's spec (:func:`~.compile.compile`) and :meth:`run` ``x`` ``[T, B, n_in]``."""
        from .compile import compile as compile_bss2

        self.config = compile_bss2(graph, self.spec, **self.compile_kwargs)
        return self.run(self.config, torch.as_tensor(x).detach())

    # ------------------------------------------------------------------------------------------------ probing

    def probe(self, codes: dict[str, Tensor], *, duration_us: float, batch: int = 1,
              events: list[tuple[float, str, int]] = (), synapse_unit: float = 1.0, rows: int = 8) -> Probe:
        """Run all neurons with per-neuron ``codes`` (``[N]`` int each) and record what the hardware exposes.

        ``events``: ``(time_us, "exc"|"inh", weight)``: at ``time_us`` each neuron receives an event of weight
        ``weight`` through each of ``rows`` synapse rows of its array (one per row; the per-synapse DAC mismatch
        averages over them), of current jump ``synapse_unit * weight * gm`` per row (CADC units).
        """
        spec = self.spec
        idx = torch.arange(spec.n_neurons)
        a = self.effective(idx, codes)
        h = spec.h_us
        steps = int(np.ceil(duration_us / h - 1e-9))
        dev, dt = self.device, self.dtype
        syn = self._fp.synapse[:, :rows, :].sum(1).reshape(-1)  # [N]: row-major halves -> neuron index
        drive, drive_at = None, None
        if events:
            ks = sorted({int(round(t / h)) for t, _, _ in events})
            drive = torch.zeros(len(ks), 2, 1, spec.n_neurons, dtype=torch.float64)
            for t, kind, weight in events:
                i = ks.index(int(round(t / h)))
                j = 0 if kind == "exc" else 1
                gm, tau = (a.gm_exc, a.tau_syn_exc) if j == 0 else (a.gm_inh, a.tau_syn_inh)
                frac = -torch.expm1(-h / tau) * tau / h  # charge-preserving jump of the sub-step scheme
                drive[i, j, 0] += synapse_unit * weight * gm * syn * frac
            drive, drive_at = drive.to(dev, dt), torch.as_tensor(ks)
        period = spec.cadc_period_us
        m = int(np.floor(duration_us / period + 1e-9))
        times = np.arange(m + 1) * period
        sample_at = [int(round(t / h)) - 1 for t in times]
        alpha = torch.exp(-h / a.tau_mem)
        beta = torch.stack([torch.exp(-h / a.tau_syn_exc), torch.exp(-h / a.tau_syn_inh)])
        sig = self.noise.membrane_noise
        noise_std = (sig * torch.sqrt(1 - alpha**2)).to(dev, dt) if sig > 0 else None
        c = lambda t: t.to(dev, dt)  # noqa: E731
        _, samples, (count, first, last) = integrate(
            c(a.leak), c(a.reset), c(a.threshold), c(alpha), c(beta), c(torch.round(a.refractory / h)), drive,
            max(steps, max(sample_at) + 1), batch, sample_at=sample_at, noise_std=noise_std, generator=self._gen,
            raster=False, times=True, drive_at=drive_at)
        readings = self._readout(idx, samples)
        to_us = lambda k: torch.where(k >= 0, (k + 1) * h, k)  # noqa: E731 - end of the sub-step
        return Probe(readings, torch.as_tensor(times), count, to_us(first), to_us(last))
