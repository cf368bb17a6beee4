"""Cost of running a compiled Loihi network: synaptic operations, neuron updates, energy and power.

Loihi is asynchronous: a time step lasts as long as its busiest core needs, and the facts file has no timing
model for it, so **latency is not estimated** here. Energy is counted per event:

* a **synaptic operation** for every non-zero weight that a spike (input or neuron) reaches,
* a **neuron update** for every compartment and time step,
* a **spike** sent for every output spike of a neuron.

The energy per event is a parameter of :class:`LoihiEnergyModel`. The defaults are Davies et al. 2018
(IEEE Micro 38(1), Table 2) as commonly quoted -- 23.6 pJ per synaptic spike operation, 52 pJ per neuron
update, 1.7 pJ per spike sent within a tile -- and are **[UNCONFIRMED]**: the project's facts file does not
carry them (section 2.1 lists the chip's size, not its energies). Pass your own figures for another chip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ...core.checks import SpikeforgeError
from .quantise import LoihiConfig

__all__ = ["LoihiEnergyModel", "estimate"]


@dataclass(frozen=True)
class LoihiEnergyModel:
    """Energy per event in joules (defaults: see the module docstring; all [UNCONFIRMED])."""

    synop: float = 23.6e-12
    neuron_update: float = 52e-12
    spike: float = 1.7e-12

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value >= 0:
                raise SpikeforgeError(f"LoihiEnergyModel.{name} must be >= 0 joules, got {value}.")


def _fanout(w: np.ndarray) -> np.ndarray:
    """Non-zero outgoing weights per presynaptic channel of a ``[n, n_pre]`` matrix."""
    return (np.asarray(w) != 0).sum(axis=0).astype(np.float64)


def estimate(config: LoihiConfig, input_spikes: np.ndarray, layer_spikes: list[np.ndarray], steps: int,
             model: LoihiEnergyModel | None = None) -> dict[str, Any]:
    """Events, energy and power per sample.

    Args:
        config: the compiled network (``info["dt"]`` is the step).
        input_spikes: input spikes per channel summed over steps, ``[B, n_in]``.
        layer_spikes: per layer, its neurons' spikes summed over steps, ``[B, n]``.
        steps: time steps per sample.
        model: energy per event (defaults: :class:`LoihiEnergyModel`).
    """
    model = model or LoihiEnergyModel()
    if len(layer_spikes) != len(config.layers):
        raise SpikeforgeError(f"layer_spikes has {len(layer_spikes)} entries; the config has {len(config.layers)} "
                              f"layers.")
    dt = float(config.info.get("dt", 1e-3))
    pre = np.asarray(input_spikes, dtype=np.float64)
    synops = np.zeros(pre.shape[0])
    spikes = np.zeros(pre.shape[0])
    for layer, own in zip(config.layers, layer_spikes, strict=True):
        own = np.asarray(own, dtype=np.float64)
        synops += pre @ _fanout(layer.weight)
        if layer.w_rec is not None:
            synops += own @ _fanout(layer.w_rec)
        spikes += own.sum(axis=1)
        pre = own
    updates = steps * sum(layer.size for layer in config.layers)
    energy = synops * model.synop + updates * model.neuron_update + spikes * model.spike
    e = float(energy.mean())
    return {
        "dt": dt, "steps": steps, "synops_per_sample": float(synops.mean()), "neuron_updates_per_sample": updates,
        "spikes_per_sample": float(spikes.mean()), "energy_per_sample_j": e, "power_w": e / (steps * dt),
        "latency_per_step_s": None, "model": asdict(model),
        "assumptions": "energy per event: Davies et al. 2018 as commonly quoted, [UNCONFIRMED] (not in the facts "
                       "file); latency not modelled (asynchronous chip, no timing facts)",
    }
