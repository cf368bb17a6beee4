"""Fit checks for the Loihi target. Each rule raises :class:`SpikeforgeError` naming the limit and the node.

``RULES`` is the list that :func:`check` runs in order; each rule is ``rule(net, spec) -> None`` where
``net`` is a :class:`~.compile.FloatNet` and ``spec`` a :class:`~.spec.LoihiSpec`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...core.checks import SpikeforgeError
from ..graph_reader import finite

if TYPE_CHECKING:  # pragma: no cover
    from .compile import FloatNet
    from .spec import LoihiSpec

__all__ = ["RULES", "check"]


def neuron_count(net: FloatNet, spec: LoihiSpec) -> None:
    total = sum(layer.size for layer in net.layers)
    if total > spec.max_neurons:
        worst = max(net.layers, key=lambda layer: layer.size)
        raise SpikeforgeError(f"the layers hold {total} neurons (largest: layer {worst.name!r} with {worst.size}); "
                              f"{spec.name} holds at most {spec.max_neurons} ({spec.n_cores} cores x "
                              f"{spec.compartments_per_core} compartments).")


def neuron_kinds(net: FloatNet, spec: LoihiSpec) -> None:
    for layer in net.layers[:-1]:
        if layer.kind == "LI":
            raise SpikeforgeError(f"layer {layer.name!r} is LI (no spikes); on {spec.name} only the last layer may "
                                  f"be a non-spiking readout.")


def reset_to_zero(net: FloatNet, spec: LoihiSpec) -> None:
    for layer in net.layers:
        if layer.kind == "LI":
            continue
        if layer.reset != "value":
            raise SpikeforgeError(f"layer {layer.name!r} resets by {layer.reset!r}; {spec.name} neurons reset the "
                                  f"membrane to 0. Train with reset='value', v_reset=0.")
        if np.any(layer.v_reset != 0):
            raise SpikeforgeError(f"layer {layer.name!r} resets to v_reset={float(np.abs(layer.v_reset).max()):g}; "
                                  f"{spec.name} neurons reset the membrane to 0.")


def thresholds(net: FloatNet, spec: LoihiSpec) -> None:
    for layer in net.layers:
        if layer.v_th is not None and np.any(layer.v_th < 0):
            raise SpikeforgeError(f"layer {layer.name!r} has a negative threshold ({float(layer.v_th.min()):g}); "
                                  f"{spec.name} thresholds are unsigned ({spec.vth_bits} bits).")


def refractory(net: FloatNet, spec: LoihiSpec) -> None:
    for layer in net.layers:
        if layer.refractory > spec.max_refractory:
            raise SpikeforgeError(f"layer {layer.name!r} has {layer.refractory} refractory steps; {spec.name} "
                                  f"allows at most {spec.max_refractory}.")


def delays(net: FloatNet, spec: LoihiSpec) -> None:
    for layer in net.layers:
        d = layer.delay
        if d.size == 0:
            continue
        where = f"delay node {layer.delay_node!r} (before layer {layer.name!r})"
        if np.any(np.abs(d - np.rint(d)) > 1e-6) or np.any(d < 0):
            raise SpikeforgeError(f"{where} has delays that are not whole non-negative numbers of steps; "
                                  f"{spec.name} delays are integers 0..{spec.max_delay}.")
        if float(d.max()) > spec.max_delay:
            raise SpikeforgeError(f"{where} has a delay of {int(np.rint(d.max()))} steps; {spec.name} allows at "
                                  f"most {spec.max_delay}.")


def binary_spikes(net: FloatNet, spec: LoihiSpec) -> None:
    for layer in net.layers:
        if layer.max_spikes > 1:
            raise SpikeforgeError(f"layer {layer.name!r} emits up to {layer.max_spikes} spikes per step; {spec.name} "
                                  f"neurons emit binary spikes (graded spikes are not emulated). Use max_spikes=1.")


RULES = [neuron_count, neuron_kinds, reset_to_zero, thresholds, refractory, delays, binary_spikes, finite]


def check(net: FloatNet, spec: LoihiSpec) -> None:
    """Run every rule in :data:`RULES`; the first that fails raises."""
    for rule in RULES:
        rule(net, spec)


def usage(config) -> list[dict]:
    """The fit report of a compiled :class:`~.quantise.LoihiConfig`: each limited resource, how much of it the
    network uses and the chip's limit."""
    spec = config.spec
    rows = [("neurons (compartments)", sum(layer.size for layer in config.layers), spec.max_neurons),
            ("cores (at 1024 compartments each)",
             sum(-(-layer.size // spec.compartments_per_core) for layer in config.layers), spec.n_cores)]
    for layer in config.layers:
        rows.append((f"layer {layer.name}: weight exponent", layer.weight_exp, spec.weight_exp_max))
        rows.append((f"layer {layer.name}: largest delay (steps)", int(np.max(layer.delay, initial=0)),
                     spec.max_delay))
    return [{"resource": r, "used": int(u), "limit": int(lim)} for r, u, lim in rows]
