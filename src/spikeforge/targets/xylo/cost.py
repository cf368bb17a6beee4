"""Cost of running a compiled Xylo network: clock cycles, latency, energy and power per time step.

**Cycles** follow the cycle model of Rockpool's Xylo Audio 2 power model (facts 1.3, **[code]**), master-clock
cycles per time step:

.. math::

    C = N_\\mathrm{in}(p_\\mathrm{in} N_\\mathrm{hid}\\,3.5 + 1) + N_\\mathrm{hid}(\\bar f\\,7\\,p_\\mathrm{hid} + 3)
        + N_\\mathrm{hid}\\,p_\\mathrm{hid}(1 + 8 N_\\mathrm{out}) + 19 N_\\mathrm{hid} + 12 N_\\mathrm{out}

with :math:`p_\\mathrm{in}` the input events per channel and step, :math:`p_\\mathrm{hid}` the hidden spikes
per neuron and step (both *measured* on the emulator; Rockpool sizes the clock with every unit sending one
event per step, reported as ``cycles_per_step_every_unit_once``), :math:`\\bar f` the mean
number of non-zero recurrent weights leaving a hidden neuron, and no alias neurons (compiled configs have
none). The second synaptic current costs no extra cycles. Rockpool sizes the clock as
``C (1 + margin) / dt`` with a 20 % margin.

**Latency** of one step is ``C / clock_hz``; the network runs in real time when that is at most ``dt``.

**Energy and power** -- the facts give no energy per cycle and no default clock (**[UNCONFIRMED]**), so both
are parameters of :class:`XyloPowerModel`, and every figure computed from them is an estimate:

* ``energy_per_cycle`` = 1 pJ: *assumption*, chosen so that the chip running flat out at its stated maximum
  clock (250 MHz **[2nd]**) draws about 250 µW of dynamic power, the order of the published dynamic inference
  powers on Xylo Audio 2 (93 µW **[2nd]**, 291 µW Bos & Muir 2024 **[paper]**).
* ``idle_power`` = 219 µW **[2nd]** (Open Neuromorphic's Xylo page).
* ``clock_hz`` = 250 MHz, the stated maximum **[2nd]**; the devkits' default is unknown.

Dynamic energy per step is ``C * energy_per_cycle``; dynamic power is that over ``dt``; total power adds
``idle_power``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ...core.checks import SpikeforgeError, check_positive
from .quantise import XyloConfig

__all__ = ["XyloPowerModel", "cycles_per_step", "estimate"]


@dataclass(frozen=True)
class XyloPowerModel:
    """Parameters of the energy and latency estimate (see the module docstring for each default's source)."""

    clock_hz: float = 250e6
    energy_per_cycle: float = 1e-12
    idle_power: float = 219e-6
    margin: float = 0.2

    def __post_init__(self) -> None:
        check_positive("clock_hz", self.clock_hz)
        check_positive("energy_per_cycle", self.energy_per_cycle)
        if self.idle_power < 0 or self.margin < 0:
            raise SpikeforgeError(f"idle_power and margin must be >= 0, got {self.idle_power} and {self.margin}.")


def mean_fanout(config: XyloConfig) -> float:
    """Mean number of non-zero recurrent weights (any synapse) leaving a hidden neuron."""
    if config.n_hidden == 0:
        return 0.0
    return float((config.w_rec != 0).any(axis=2).sum(axis=1).mean())


def cycles_per_step(config: XyloConfig, p_in: float, p_hid: float) -> float:
    """Master-clock cycles for one time step at input rate ``p_in`` and hidden rate ``p_hid`` (events per unit
    and step)."""
    if p_in < 0 or p_hid < 0:
        raise SpikeforgeError(f"p_in and p_hid must be >= 0 events per unit and step, got {p_in} and {p_hid}.")
    n_in, n_hid, n_out = config.n_in, config.n_hidden, config.n_out
    return (n_in * (p_in * n_hid * 3.5 + 1) + n_hid * (mean_fanout(config) * 7 * p_hid + 3)
            + n_hid * p_hid * (1 + 8 * n_out) + n_hid * 19 + 12 * n_out)


def estimate(config: XyloConfig, input_events: np.ndarray | float, hidden_spikes: np.ndarray | float, steps: int,
             model: XyloPowerModel | None = None) -> dict[str, Any]:
    """Cycles, latency, energy and power for a run of ``steps`` steps per sample.

    Args:
        config: the compiled network (its ``info["dt"]`` is the step).
        input_events: total input events per sample (array over samples, or their mean).
        hidden_spikes: total hidden spikes per sample (likewise).
        steps: time steps per sample.
        model: energy/clock parameters (defaults: :class:`XyloPowerModel`).

    Returns:
        A dict of plain numbers: the measured rates; cycles per step (measured activity, and every unit
        sending one event per step as Rockpool sizes it); the clock needed for real time; latency per step and
        per sample; dynamic energy per step and per sample; dynamic and total power; the model's parameters.
    """
    model = model or XyloPowerModel()
    if steps < 1:
        raise SpikeforgeError(f"steps must be >= 1, got {steps}.")
    dt = float(config.info.get("dt", 1e-3))
    p_in = float(np.mean(input_events)) / (steps * max(config.n_in, 1))
    p_hid = float(np.mean(hidden_spikes)) / (steps * max(config.n_hidden, 1))
    cycles = cycles_per_step(config, p_in, p_hid)
    worst = cycles_per_step(config, 1.0, 1.0)
    e_step = cycles * model.energy_per_cycle
    latency = cycles / model.clock_hz
    return {
        "dt": dt, "steps": steps, "input_events_per_channel_step": p_in, "hidden_spikes_per_neuron_step": p_hid,
        "mean_fanout": mean_fanout(config), "cycles_per_step": cycles, "cycles_per_step_every_unit_once": worst,
        "clock_needed_hz": cycles * (1 + model.margin) / dt,
        "clock_needed_every_unit_once_hz": worst * (1 + model.margin) / dt,
        "latency_per_step_s": latency, "latency_per_sample_s": latency * steps, "real_time": latency <= dt,
        "energy_per_step_j": e_step, "energy_per_sample_j": e_step * steps,
        "dynamic_power_w": e_step / dt, "total_power_w": e_step / dt + model.idle_power,
        "model": asdict(model),
        "assumptions": "energy_per_cycle and clock_hz are assumptions (facts: [UNCONFIRMED]); "
                       "idle_power [2nd]; cycle model from Rockpool's Xylo Audio 2 power model [code]",
    }
