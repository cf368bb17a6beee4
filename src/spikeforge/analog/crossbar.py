"""Memristive crossbar synapses as pure tensor functions (see ``docs/analog.md``).

A weight matrix ``W`` (``[out, in]``, the layout of ``torch.nn.Linear``) is stored as a differential pair of
conductance arrays ``(G+, G-)`` in µS. Input ``i`` drives crossbar row ``i``; output ``j`` is read on column
``j``. Every non-ideality is a field of :class:`CrossbarConfig` whose default switches it off, so that
``CrossbarConfig()`` reproduces ``torch.nn.functional.linear`` exactly. The pipeline is

``program`` (mapping, levels, programming noise, stuck-at faults, drift exponents) ->
``read`` (drift at time ``t``, per-read noise) -> ``dac`` -> ``ir_drop`` -> product -> ``adc``.

Model parameters follow IBM aihwkit's ``PCMLikeNoiseModel`` (Nandakumar et al., ICECS 2019) and aihwkit's
``IOParameters``; the IR-drop model is a simplified assumption documented on :func:`ir_drop_factors`.
Randomness comes only from explicit ``torch.Generator`` objects, so results are reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from ..core.checks import SpikeforgeError, check_finite, check_rank, describe

__all__ = [
    "CrossbarConfig",
    "CrossbarState",
    "adc",
    "crossbar_matmul",
    "dac",
    "drift",
    "drift_exponent_stats",
    "from_pair",
    "ir_drop",
    "ir_drop_factors",
    "pcm_programming_sigma",
    "pcm_read_noise_sigma",
    "program",
    "read",
    "to_pair",
]

#: aihwkit ``PCMLikeNoiseModel`` reference maximum conductance (µS) of its polynomials.
PCM_G_MAX_REF = 25.0


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpikeforgeError(f"{name} must be a finite number, got {describe(value)}.")
    return float(value)


def _bits(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise SpikeforgeError(f"{name} must be None (ideal) or an integer >= 2, got {describe(value)}.")


@dataclass(frozen=True)
class CrossbarConfig:
    """Every crossbar non-ideality; each default is the "off" value (ideal crossbar).

    Args:
        g_min: lowest programmable conductance in µS (default 0). g_max: highest, in µS (default 25, the
            aihwkit PCM reference).
        w_max: weight mapped to ``g_max``; None: ``max |W|`` at programming time.
        levels: number of evenly spaced conductance levels in ``[g_min, g_max]`` per device; None: continuous.
        prog_noise: scale of the aihwkit PCM programming noise ``sigma_prog(g)``
            (:func:`pcm_programming_sigma`); 1 = aihwkit, 0 = off.
        p_sa0: probability that a device is stuck at ``g_min``. p_sa1: probability it is stuck at ``g_max``.
            Literature values of 1.75 % / 9.04 % (Chen et al. 2015) are unconfirmed; default 0 (off).
        drift_t: time since programming in seconds at which the array is read; None or 0: no drift. Drift
            follows ``G (t/t0)^-nu`` for ``t > t0`` (aihwkit applies none before ``t0``).
        drift_t0: drift reference time in seconds (aihwkit: 20 s).
        read_noise: relative standard deviation of the multiplicative per-read conductance noise
            ``G (1 + N(0, read_noise))``; 0 = off. :func:`pcm_read_noise_sigma` gives aihwkit's 1/f value.
        dac_bits: input DAC resolution (signed, ``2^(bits-1) - 1`` steps per sign, as aihwkit's
            ``inp_res = 1/(2^bits - 2)``); None: ideal. in_bound: input magnitude mapped to full scale
            (inputs beyond it clip when the DAC is on); also the input unit of ``out_bound``.
        adc_bits: output ADC resolution (same convention); None: ideal.
        out_bound: ADC full scale in normalised units of ``w_max * in_bound`` (aihwkit: 20); used only with
            ``adc_bits``.
        ir_drop: strength ``s`` of the row-dependent attenuation of :func:`ir_drop_factors`; 0 = off
            (assumption: simplified model, not aihwkit's).
    """

    g_min: float = 0.0
    g_max: float = PCM_G_MAX_REF
    w_max: float | None = None
    levels: int | None = None
    prog_noise: float = 0.0
    p_sa0: float = 0.0
    p_sa1: float = 0.0
    drift_t: float | None = None
    drift_t0: float = 20.0
    read_noise: float = 0.0
    dac_bits: int | None = None
    in_bound: float = 1.0
    adc_bits: int | None = None
    out_bound: float = 20.0
    ir_drop: float = 0.0

    def __post_init__(self) -> None:
        g_min, g_max = _number("g_min", self.g_min), _number("g_max", self.g_max)
        if g_min < 0 or g_max <= g_min:
            raise SpikeforgeError(
                f"g_min and g_max must satisfy 0 <= g_min < g_max (µS), got g_min={g_min!r}, g_max={g_max!r}."
            )
        if self.w_max is not None and _number("w_max", self.w_max) <= 0:
            raise SpikeforgeError(f"w_max must be None or > 0, got {self.w_max!r}.")
        if self.levels is not None and (isinstance(self.levels, bool) or not isinstance(self.levels, int)
                                        or self.levels < 2):
            raise SpikeforgeError(f"levels must be None (continuous) or an integer >= 2, got {describe(self.levels)}.")
        for name in ("prog_noise", "read_noise", "ir_drop"):
            if _number(name, getattr(self, name)) < 0:
                raise SpikeforgeError(f"{name} must be >= 0 (0 = off), got {getattr(self, name)!r}.")
        for name in ("p_sa0", "p_sa1"):
            p = _number(name, getattr(self, name))
            if not 0.0 <= p <= 1.0:
                raise SpikeforgeError(f"{name} must be a probability in [0, 1], got {p!r}.")
        if self.p_sa0 + self.p_sa1 > 1.0:
            raise SpikeforgeError(
                f"p_sa0 + p_sa1 must be <= 1, got {self.p_sa0!r} + {self.p_sa1!r} = {self.p_sa0 + self.p_sa1!r}."
            )
        if self.drift_t is not None and _number("drift_t", self.drift_t) < 0:
            raise SpikeforgeError(f"drift_t must be None, 0 (off) or a time > 0 in seconds, got {self.drift_t!r}.")
        for name in ("drift_t0", "in_bound", "out_bound"):
            if _number(name, getattr(self, name)) <= 0:
                raise SpikeforgeError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        _bits("dac_bits", self.dac_bits)
        _bits("adc_bits", self.adc_bits)

    @property
    def drifts(self) -> bool:
        """True when drift is on (``drift_t > drift_t0``; aihwkit applies no drift before ``t0``)."""
        return self.drift_t is not None and self.drift_t > self.drift_t0

    @property
    def ideal_programming(self) -> bool:
        """True when programming keeps the target weights exactly (no levels, noise or stuck devices)."""
        return self.levels is None and self.prog_noise == 0 and self.p_sa0 == 0 and self.p_sa1 == 0

    @classmethod
    def aihwkit_pcm(cls, t: float = 3600.0) -> CrossbarConfig:
        """aihwkit-like PCM preset read ``t`` seconds after programming: programming noise, drift, 1/f read
        noise at ``g_max`` (:func:`pcm_read_noise_sigma`), 7-bit DAC, 9-bit ADC with ``out_bound = 20``."""
        sigma = float(pcm_read_noise_sigma(torch.tensor(1.0, dtype=torch.float64), t))
        return cls(prog_noise=1.0, drift_t=t, read_noise=sigma, dac_bits=7, adc_bits=9, out_bound=20.0)

    def describe(self) -> str:
        """One line listing the fields that differ from the ideal defaults."""
        on = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if getattr(self, f.name) != f.default]
        return ", ".join(on) if on else "ideal"


@dataclass(frozen=True)
class CrossbarState:
    """A programmed array: conductances ``g_pos``/``g_neg`` (µS, ``[out, in]``), their drift exponents
    ``nu_pos``/``nu_neg``, the weight scale ``w_max`` and the programmed effective weight ``weight``."""

    g_pos: Tensor
    g_neg: Tensor
    nu_pos: Tensor
    nu_neg: Tensor
    w_max: float
    weight: Tensor


def _randn(like: Tensor, generator: torch.Generator) -> Tensor:
    z = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=generator.device)
    return z.to(like.device)


def _rand(like: Tensor, generator: torch.Generator) -> Tensor:
    u = torch.rand(like.shape, generator=generator, dtype=like.dtype, device=generator.device)
    return u.to(like.device)


def _check_generator(generator: object) -> None:
    if not isinstance(generator, torch.Generator):
        raise SpikeforgeError(
            f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), got {describe(generator)}."
        )


def pcm_programming_sigma(g: Tensor, g_max: float = PCM_G_MAX_REF) -> Tensor:
    """aihwkit PCM programming-noise standard deviation in µS at conductance ``g`` (µS):
    ``(0.26348 + 1.9650 g_rel - 1.1731 g_rel^2) * g_max / 25`` with ``g_rel = g / g_max``, floored at 0."""
    g_rel = g / g_max
    return ((0.26348 + 1.9650 * g_rel - 1.1731 * g_rel ** 2) * (g_max / PCM_G_MAX_REF)).clamp_min(0.0)


def drift_exponent_stats(g: Tensor, g_max: float = PCM_G_MAX_REF) -> tuple[Tensor, Tensor]:
    """aihwkit PCM drift-exponent mean and std at conductance ``g`` (µS), ``g_rel = g / g_max``:
    ``mu = clip(-0.0155 ln g_rel + 0.0244, 0.049, 0.1)``, ``sigma = clip(-0.0125 ln g_rel - 0.0059, 0.008, 0.045)``."""
    log_g = torch.log((g / g_max).clamp_min(1e-6))
    mu = (-0.0155 * log_g + 0.0244).clamp(0.049, 0.1)
    sigma = (-0.0125 * log_g - 0.0059).clamp(0.008, 0.045)
    return mu, sigma


def pcm_read_noise_sigma(g_rel: Tensor, t: float, t_read: float = 250e-9) -> Tensor:
    """aihwkit PCM 1/f read-noise relative std accumulated ``t`` seconds after programming:
    ``Q_s sqrt(ln((t + t_read) / (2 t_read)))`` with ``Q_s = min(0.0088 / g_rel^0.65, 0.2)``."""
    if _number("t", t) <= 0:
        raise SpikeforgeError(f"t must be a time > 0 in seconds, got {t!r}.")
    q_s = (0.0088 / g_rel.clamp_min(1e-12) ** 0.65).clamp_max(0.2)
    return q_s * math.sqrt(max(math.log((t + t_read) / (2 * t_read)), 0.0))


def to_pair(weight: Tensor, cfg: CrossbarConfig, w_max: float) -> tuple[Tensor, Tensor]:
    """Map weights to a differential pair: ``G± = g_min + clip(±W, 0, w_max) / w_max (g_max - g_min)``."""
    span = cfg.g_max - cfg.g_min
    g_pos = cfg.g_min + weight.clamp(0.0, w_max) * (span / w_max)
    g_neg = cfg.g_min + (-weight).clamp(0.0, w_max) * (span / w_max)
    return g_pos, g_neg


def from_pair(g_pos: Tensor, g_neg: Tensor, cfg: CrossbarConfig, w_max: float) -> Tensor:
    """Effective weight of a differential pair: ``(G+ - G-) w_max / (g_max - g_min)``."""
    return (g_pos - g_neg) * (w_max / (cfg.g_max - cfg.g_min))


def program(weight: Tensor, cfg: CrossbarConfig, generator: torch.Generator, *,
            w_max: float | None = None) -> CrossbarState:
    """Program ``weight`` (``[out, in]``) into a crossbar: mapping, level quantisation, programming noise
    (clamped to ``G >= 0``), stuck-at faults, and drift exponents ``nu ~ |N(mu(G), sigma(G))|``.

    The random numbers are always drawn in the same order (noise, faults, drift) whatever is switched on,
    so one effect's draws do not depend on the others. ``w_max`` overrides ``cfg.w_max``; when both are None
    it is ``max |W|`` (1 for an all-zero matrix).
    """
    check_rank("weight", weight, 2, layout="[out_features, in_features]")
    check_finite("weight", weight)
    if not weight.is_floating_point():
        raise SpikeforgeError(f"weight must be a floating-point tensor, got {describe(weight)}.")
    _check_generator(generator)
    weight = weight.detach()
    if w_max is None:
        w_max = cfg.w_max
    if w_max is None:
        w_max = float(weight.abs().max()) if weight.numel() else 1.0
        w_max = w_max if w_max > 0 else 1.0
    elif _number("w_max", w_max) <= 0:
        raise SpikeforgeError(f"w_max must be > 0, got {w_max!r}.")
    g_pos, g_neg = to_pair(weight, cfg, w_max)
    g = torch.stack([g_pos, g_neg])
    z_prog = _randn(g, generator)
    u_stuck = _rand(g, generator)
    z_nu = _randn(g, generator)
    if cfg.levels is not None:
        step = (cfg.g_max - cfg.g_min) / (cfg.levels - 1)
        g = cfg.g_min + torch.round((g - cfg.g_min) / step) * step
    if cfg.prog_noise > 0:
        g = (g + cfg.prog_noise * pcm_programming_sigma(g, cfg.g_max) * z_prog).clamp_min(0.0)
    if cfg.p_sa0 > 0 or cfg.p_sa1 > 0:
        g = torch.where(u_stuck < cfg.p_sa0, torch.full_like(g, cfg.g_min), g)
        sa1 = (u_stuck >= cfg.p_sa0) & (u_stuck < cfg.p_sa0 + cfg.p_sa1)
        g = torch.where(sa1, torch.full_like(g, cfg.g_max), g)
    mu, sigma = drift_exponent_stats(g, cfg.g_max)
    nu = (mu + sigma * z_nu).abs()
    if cfg.ideal_programming:
        eff = weight.clamp(-w_max, w_max)
    else:
        eff = from_pair(g[0], g[1], cfg, w_max)
    return CrossbarState(g[0], g[1], nu[0], nu[1], float(w_max), eff)


def drift(g: Tensor, nu: Tensor, t: float | None, t0: float = 20.0) -> Tensor:
    """PCM conductance drift ``G (t / t0)^-nu`` for ``t > t0``; unchanged for ``t`` None or ``<= t0``."""
    if t is None or t <= t0:
        return g
    return g * torch.pow(torch.as_tensor(t / t0, dtype=g.dtype, device=g.device), -nu)


def read(state: CrossbarState, cfg: CrossbarConfig, generator: torch.Generator) -> Tensor:
    """Effective weight ``[out, in]`` seen by one read: drift to ``cfg.drift_t``, then per-device
    multiplicative read noise ``G (1 + N(0, cfg.read_noise))``. Returns ``state.weight`` when both are off."""
    if not cfg.drifts and cfg.read_noise == 0:
        return state.weight
    _check_generator(generator)
    g_pos = drift(state.g_pos, state.nu_pos, cfg.drift_t, cfg.drift_t0)
    g_neg = drift(state.g_neg, state.nu_neg, cfg.drift_t, cfg.drift_t0)
    if cfg.read_noise > 0:
        g_pos = g_pos * (1 + cfg.read_noise * _randn(g_pos, generator))
        g_neg = g_neg * (1 + cfg.read_noise * _randn(g_neg, generator))
    return from_pair(g_pos, g_neg, cfg, state.w_max)


def _quantise(x: Tensor, bits: int | None, bound: float) -> Tensor:
    if bits is None:
        return x
    step = bound / (2 ** (bits - 1) - 1)
    return torch.round(x.clamp(-bound, bound) / step) * step


def dac(x: Tensor, bits: int | None, bound: float = 1.0) -> Tensor:
    """Signed input DAC: clip to ``±bound``, round to steps of ``bound / (2^(bits-1) - 1)``; None: ``x``."""
    _bits("bits", bits)
    return _quantise(x, bits, bound)


def adc(y: Tensor, bits: int | None, bound: float) -> Tensor:
    """Signed output ADC: clip to ``±bound``, round to steps of ``bound / (2^(bits-1) - 1)``; None: ``y``."""
    _bits("bits", bits)
    return _quantise(y, bits, bound)


def ir_drop_factors(n_rows: int, strength: float, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """Voltage attenuation of each crossbar row (assumption, a simplified model):
    ``a_i = 1 / (1 + strength (i + 1) / n_rows)`` for row ``i = 0 .. n_rows - 1``.

    Row ``i`` sits ``i + 1`` wire segments from the driver, so its line resistance grows with ``i``; the
    device sees the divided voltage. ``strength`` is the whole line's wire resistance relative to a device
    (``n_rows R_wire G``); the last row is attenuated by ``1 / (1 + strength)``; 0 gives exactly 1."""
    i = torch.arange(1, n_rows + 1, dtype=dtype, device=device)
    return 1.0 / (1.0 + strength * i / n_rows)


def ir_drop(x: Tensor, strength: float) -> Tensor:
    """Attenuate the row inputs ``x[..., i]`` by :func:`ir_drop_factors`; ``strength = 0`` returns ``x``."""
    if strength == 0:
        return x
    return x * ir_drop_factors(x.shape[-1], strength, dtype=x.dtype, device=x.device)


def crossbar_matmul(x: Tensor, state: CrossbarState, cfg: CrossbarConfig, generator: torch.Generator,
                    bias: Tensor | None = None) -> Tensor:
    """One analog matrix-vector product ``y = ADC(IRdrop((G+ - G-)^T DAC(x)))`` in weight units, plus a
    digital ``bias`` after the ADC. ``x`` is ``[..., in]``, the result ``[..., out]``. One read (one draw of
    read noise) serves the whole batch. With every effect off it equals ``F.linear(x, W, bias)`` exactly."""
    if not isinstance(x, Tensor):
        raise SpikeforgeError(f"x must be a torch.Tensor [..., in_features], got {describe(x)}.")
    n_out, n_in = state.weight.shape
    if x.dim() < 1 or x.shape[-1] != n_in:
        raise SpikeforgeError(
            f"x must end with in_features={n_in} (the crossbar's rows), got shape {tuple(x.shape)}."
        )
    w = read(state, cfg, generator)
    x = ir_drop(dac(x, cfg.dac_bits, cfg.in_bound), cfg.ir_drop)
    if cfg.adc_bits is None:
        return torch.nn.functional.linear(x, w, bias)
    unit = state.w_max * cfg.in_bound
    y = adc(torch.nn.functional.linear(x, w) / unit, cfg.adc_bits, cfg.out_bound) * unit
    return y if bias is None else y + bias
