"""calix-like calibration of an emulated chip instance, through what the hardware exposes only.

Every measurement is a :meth:`~.dynamics.BSS2Chip.probe` run: per-neuron CapMem codes in, CADC readings and
spike counts/times out. The chip's hidden mismatch (:class:`~.dynamics.FixedPattern`) is never read here; the
result is a :class:`~.dynamics.Calibration` -- per neuron, measured CapMem -> effect maps -- from which the chip
computes the codes for any target (the calibrated default targets and whatever a compiled network asks for).

Procedure (all neurons in parallel; voltages in CADC readings):

1. **leak**: threshold at the highest code (no spikes), no input; the mean reading at two leak codes gives the
   per-neuron line ``reading = gain * code + offset``.
2. **reset**: threshold far below the reset and leak = reset: the neuron fires as soon as it leaves the
   refractory period and so sits at its reset potential; the mean reading at two reset codes gives the line.
3. **threshold**: for two threshold codes, bisection over the (now calibrated) leak for the onset of firing
   in a 150 us window: the threshold is the leak at which the neuron starts to fire. (Membrane noise lowers the
   onset by about two noise stds, the same for all neurons: a shift of the mean, not a spread.)
4. **tau_mem**: fastest synapse, a strong excitatory event, then the decay of the CADC trace back to the leak;
   a least-squares fit of ``L + A exp(-t / tau)`` gives tau, hence ``k = tau * code``.
5. **tau_syn (exc, inh) and synaptic strength**: a long membrane time constant (100 us, from step 4), one
   event, and a fit of the exact two-exponential PSP ``L + J tau_s / (tau_m - tau_s) (e^{-t/tau_m} -
   e^{-t/tau_s})`` gives ``tau_s`` and the jump ``J``; ``J`` over its nominal value is the synaptic strength
   (including the CADC gain and the mean DAC gain of the rows used).

Not calibrated: the refractory time (a digital counter here, resolved to the emulator step) and the per-synapse
DAC gains (hxtorch does not calibrate them either; training in the loop absorbs them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .dynamics import BSS2Chip, Calibration

__all__ = ["CalibrationReport", "calibrate", "effective_spread", "spread", "standard_targets"]

_N_BISECT = 9


@dataclass
class CalibrationReport:
    """The result: the calibration, what was measured per neuron, probe runs and wall time."""

    calibration: Calibration
    measured: dict[str, Tensor] = field(default_factory=dict)
    runs: int = 0
    seconds: float = 0.0


def standard_targets(chip: BSS2Chip) -> dict[str, Tensor]:
    """The calibration defaults of facts 3.2 (leak 80, reset 80, threshold 125 CADC; 10/10/2 us), per neuron."""
    s = chip.spec
    n = s.n_neurons
    full = lambda v: torch.full((n,), float(v), dtype=torch.float64)  # noqa: E731
    return dict(leak=full(s.leak), reset=full(s.reset), threshold=full(s.threshold), tau_mem=full(s.tau_mem_us),
                tau_syn_exc=full(s.tau_syn_us), tau_syn_inh=full(s.tau_syn_us), refractory=full(s.refractory_us),
                gm_exc=full(1.0), gm_inh=full(1.0))


class _Prober:
    def __init__(self, chip: BSS2Chip, cal: Calibration) -> None:
        self.chip, self.cal = chip, cal
        self.idx = torch.arange(chip.spec.n_neurons)
        self.base = standard_targets(chip)
        self.runs = 0

    def codes(self, **targets) -> dict[str, Tensor]:
        t = dict(self.base)
        for k, v in targets.items():
            t[k] = torch.as_tensor(v, dtype=torch.float64).expand(self.idx.shape[0]).clone()
        return self.cal.codes(self.chip.spec, self.idx, t)

    def run(self, codes, **kw):
        self.runs += 1
        return self.chip.probe(codes, **kw)


def _line(c1: Tensor, r1: Tensor, c2: Tensor, r2: Tensor) -> tuple[Tensor, Tensor]:
    gain = (r2 - r1) / (c2 - c1).to(torch.float64)
    return gain, r1 - gain * c1


def _mean_reading(p, codes) -> Tensor:
    out = p.run(codes, duration_us=40.0, batch=8)
    return out.cadc[1:].to(torch.float64).mean(dim=(0, 1)).cpu()


def _calibrate_volts(p: _Prober) -> dict[str, Tensor]:
    top = p.chip.spec.max_code
    cal = p.cal
    # 1. leak
    c1 = p.codes(leak=60.0)["leak"]
    c2 = p.codes(leak=160.0)["leak"]
    r = []
    for c in (c1, c2):
        codes = p.codes()
        codes.update(leak=c, reset=c, threshold=torch.full_like(c, top))
        r.append(_mean_reading(p, codes))
    cal.volt_gain[0], cal.volt_offset[0] = _line(c1, r[0], c2, r[1])
    # 2. reset: pinned at the reset potential by a threshold far below it
    r = []
    cs = []
    for target in (60.0, 140.0):
        codes = p.codes(reset=target, leak=target, threshold=15.0)
        cs.append(codes["reset"])
        r.append(_mean_reading(p, codes))
    cal.volt_gain[1], cal.volt_offset[1] = _line(cs[0], r[0], cs[1], r[1])
    # 3. threshold: onset of firing under a rising leak (bisection on leak codes)
    cs, r = [], []
    for target in (105.0, 145.0):
        th_code = p.codes(threshold=target)["threshold"]
        lo = p.codes(leak=target - 30.0)["leak"]
        hi = p.codes(leak=target + 30.0)["leak"]
        for _ in range(_N_BISECT):
            mid = (lo + hi) // 2
            codes = p.codes(reset=target - 55.0)
            codes.update(threshold=th_code, leak=mid)
            fired = p.run(codes, duration_us=150.0, batch=1).count[0].cpu() > 0
            hi = torch.where(fired, mid, hi)
            lo = torch.where(fired, lo, mid)
        onset = 0.5 * (lo + hi).to(torch.float64)
        cs.append(th_code)
        r.append(cal.volt_gain[0] * onset + cal.volt_offset[0])
    cal.volt_gain[2], cal.volt_offset[2] = _line(cs[0], r[0], cs[1], r[1])
    return {"leak_at_80": cal.volt_gain[0] * p.codes()["leak"] + cal.volt_offset[0]}


def _fit_grid(t: np.ndarray, y: np.ndarray, basis, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per neuron (columns of ``y [M, N]``), the grid value minimising the least-squares residual of
    ``y = L + A basis(t, g)`` (``basis`` may depend on the neuron: ``[G, M, N]`` or ``[G, M, 1]``), refined by a
    parabola through the best three; returns ``(g, L, A)`` at the best grid point."""
    f = basis(t, grid)  # [G, M, N or 1]
    fm = f.mean(1, keepdims=True)
    ym = y.mean(0)
    fc = f - fm
    yc = (y - ym)[None]
    a = (fc * yc).sum(1) / np.maximum((fc * fc).sum(1), 1e-30)  # [G, N]
    res = ((yc - a[:, None] * fc) ** 2).sum(1)  # [G, N]
    best = res.argmin(0)
    j = np.clip(best, 1, len(grid) - 2)
    cols = np.arange(y.shape[1])
    r0, r1, r2 = res[j - 1, cols], res[j, cols], res[j + 1, cols]
    den = r0 - 2 * r1 + r2
    shift = np.where(den > 0, 0.5 * (r0 - r2) / np.where(den > 0, den, 1), 0.0).clip(-1, 1)
    g = grid[j] + shift * np.where(shift > 0, grid[j + 1] - grid[j], grid[j] - grid[j - 1])
    amp = a[best, cols]
    lvl = ym - amp * np.broadcast_to(fm[:, 0, :], a.shape)[best, cols]
    return g, lvl, amp


def _calibrate_tau_mem(p: _Prober) -> Tensor:
    spec = p.chip.spec
    t0 = 10.0
    codes = p.codes(threshold=float("inf"), tau_syn_exc=0.0, tau_syn_inh=0.0, leak=80.0)
    unit = 140.0 * spec.tau_mem_us / (spec.max_weight * 8 * spec.min_tau_syn_us)
    out = p.run(codes, duration_us=110.0, batch=48, events=[(t0, "exc", spec.max_weight)], synapse_unit=unit)
    t = out.times_us.numpy()
    keep = t >= t0 + 4.0
    y = out.cadc[keep].to(torch.float64).mean(1).cpu().numpy()
    tt = t[keep] - t0
    grid = np.geomspace(3.0, 30.0, 400)
    tau, _, _ = _fit_grid(tt, y, lambda t_, g: np.exp(-t_[None, :, None] / g[:, None, None]), grid)
    k = torch.as_tensor(tau) * codes["tau_mem"].to(torch.float64)
    p.cal.tau_k[0] = k
    return torch.as_tensor(tau)


def _calibrate_tau_syn(p: _Prober) -> dict[str, Tensor]:
    spec = p.chip.spec
    t0 = 10.0
    tau_m_target = 100.0
    res = {}
    for j, kind in enumerate(("exc", "inh")):
        leak = 80.0 if kind == "exc" else 180.0
        codes = p.codes(threshold=float("inf"), tau_mem=tau_m_target, leak=leak)
        tau_m = (p.cal.tau_k[0] / codes["tau_mem"].to(torch.float64)).numpy()  # as calibrated in step 4
        unit = 2.0
        out = p.run(codes, duration_us=120.0, batch=32, events=[(t0, kind, spec.max_weight)], synapse_unit=unit)
        t = out.times_us.numpy()
        keep = t >= t0
        y = out.cadc[keep].to(torch.float64).mean(1).cpu().numpy()
        tt = t[keep] - t0
        grid = np.geomspace(2.0, 40.0, 500)

        def psp(t_, g, tm=tau_m):
            g = g[:, None, None]
            tm = tm[None, None, :]
            d = np.where(np.abs(tm - g) < 1e-6, 1e-6, tm - g)
            return g / d * (np.exp(-t_[None, :, None] / tm) - np.exp(-t_[None, :, None] / g))

        tau_s, _, amp = _fit_grid(tt, y, psp, grid)
        name = f"tau_syn_{kind}"
        p.cal.tau_k[1 + j] = torch.as_tensor(tau_s) * codes[name].to(torch.float64)
        nominal = unit * spec.max_weight * 8
        gm = np.abs(amp) / nominal
        p.cal.gm[j] = torch.as_tensor(gm)
        res[name] = torch.as_tensor(tau_s)
        res[f"gm_{kind}"] = torch.as_tensor(gm)
    return res


def calibrate(chip: BSS2Chip, *, apply: bool = True) -> CalibrationReport:
    """Measure ``chip``'s per-neuron CapMem maps by probing only (module docstring); with ``apply`` the chip is
    programmed through them from then on (``chip.calibration``)."""
    start = time.perf_counter()
    cal = Calibration.nominal(chip.spec)
    p = _Prober(chip, cal)
    measured = _calibrate_volts(p)
    measured["tau_mem"] = _calibrate_tau_mem(p)
    measured.update(_calibrate_tau_syn(p))
    if apply:
        chip.calibration = cal
    return CalibrationReport(calibration=cal, measured=measured, runs=p.runs, seconds=time.perf_counter() - start)


def effective_spread(chip: BSS2Chip, calibration: Calibration | None = None) -> dict[str, Tensor]:
    """Per neuron, the *true* effective parameters (the emulator's hidden truth, for judging a calibration) when
    the chip is programmed for the default targets through ``calibration`` (default: the chip's own): leak,
    reset, threshold as CADC readings, time constants in us, synaptic strength relative to nominal (as seen
    through the CADC, averaged over the 8 probe rows as in the calibration)."""
    cal = chip.calibration if calibration is None else calibration
    idx = torch.arange(chip.spec.n_neurons)
    codes = cal.codes(chip.spec, idx, standard_targets(chip))
    a = chip.effective(idx, codes)
    syn = chip._fp.synapse[:, :8, :].mean(1).reshape(-1)
    gain = chip._fp.cadc_gain
    return {"leak": chip.cadc_of(idx, a.leak), "reset": chip.cadc_of(idx, a.reset),
            "threshold": chip.cadc_of(idx, a.threshold), "tau_mem": a.tau_mem, "tau_syn_exc": a.tau_syn_exc,
            "tau_syn_inh": a.tau_syn_inh, "gm_exc": a.gm_exc * syn * gain, "gm_inh": a.gm_inh * syn * gain}


def spread(chip: BSS2Chip, calibration: Calibration | None = None) -> dict[str, tuple[float, float]]:
    """``{parameter: (mean, std across neurons)}`` of :func:`effective_spread`."""
    return {k: (float(v.mean()), float(v.std())) for k, v in effective_spread(chip, calibration).items()}

