"""Fit checks for the BrainScaleS-2-like target. Each rule raises :class:`SpikeforgeError` naming the limit and
the node.

``RULES`` is the list :func:`check` runs in order; each rule is ``rule(net, spec) -> None`` where ``net`` is a
:class:`~.compile.FloatNet` and ``spec`` a :class:`~.spec.BSS2Spec`.

Mapping (what the rules protect): every neuron layer sits in one row of neuron circuits (``spec.neurons_per_row``
columns); the synapse array above that row holds its input, one array row per presynaptic source and sign
(W+ on an excitatory row, W- on an inhibitory row, as hxtorch). Layers are placed in order, each in the first
neuron row with enough free columns *and* free synapse rows (:func:`placement`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...core.checks import SpikeforgeError
from ..graph_reader import finite

if TYPE_CHECKING:  # pragma: no cover
    from .compile import FloatNet
    from .spec import BSS2Spec

__all__ = ["RULES", "check", "placement", "rows_needed"]


def rows_needed(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which presynaptic sources need an excitatory and an inhibitory synapse row: ``(exc [n_pre], inh [n_pre])``."""
    return (weight > 0).any(axis=0), (weight < 0).any(axis=0)


def placement(net: FloatNet, spec: BSS2Spec) -> list[int]:
    """The neuron row (0 or 1) of each layer: first fit by free columns and free synapse rows.

    Raises:
        SpikeforgeError: naming the layer that does not fit, and why.
    """
    cols = [0] * spec.rows
    syn = [0] * spec.rows
    where = []
    for layer in net.layers:
        exc, inh = rows_needed(layer.weight)
        need = int(exc.sum() + inh.sum())
        for r in range(spec.rows):
            if cols[r] + layer.size <= spec.neurons_per_row and syn[r] + need <= spec.synapse_rows:
                cols[r] += layer.size
                syn[r] += need
                where.append(r)
                break
        else:
            raise SpikeforgeError(
                f"layer {layer.name!r} ({layer.size} neurons, {need} synapse rows: one per presynaptic source and "
                f"sign) fits in no neuron row of {spec.name}: each row has {spec.neurons_per_row} neuron circuits and "
                f"a synapse array of {spec.synapse_rows} rows; already used (columns, synapse rows) = "
                f"{list(zip(cols, syn, strict=True))}. Use fewer neurons or inputs, or weights of one sign per input.")
    return where


def chain_of_neurons(net: FloatNet, spec: BSS2Spec) -> None:
    if not net.layers:
        raise SpikeforgeError(f"the graph has no neuron layer; {spec.name} runs Linear -> LIF/CubaLIF layers.")
    for i, layer in enumerate(net.layers):
        last = i == len(net.layers) - 1
        if layer.kind == "IF":
            raise SpikeforgeError(f"layer {layer.name!r} is IF; {spec.name} neurons always leak. Use LIF with a long "
                                  f"tau_mem (at most {spec.tau_mem_code_us:g} us hardware time).")
        if layer.kind == "LI" and not last:
            raise SpikeforgeError(f"layer {layer.name!r} is LI (no spikes); on {spec.name} only the last layer may be "
                                  f"a non-spiking read-out (read through the CADC).")
        if layer.w_rec is not None:
            raise SpikeforgeError(f"layer {layer.name!r} is recurrent; the {spec.name} mapper runs feed-forward "
                                  f"chains only.")


def neuron_count(net: FloatNet, spec: BSS2Spec) -> None:
    total = sum(layer.size for layer in net.layers)
    if total > spec.n_neurons:
        raise SpikeforgeError(f"the network has {total} neurons; {spec.name} has {spec.n_neurons} neuron circuits "
                              f"({spec.rows} rows of {spec.neurons_per_row}).")
    for layer in net.layers:
        if layer.size > spec.neurons_per_row:
            raise SpikeforgeError(f"layer {layer.name!r} has {layer.size} neurons; the {spec.name} mapper places a "
                                  f"layer in one neuron row of {spec.neurons_per_row}.")


def fan_in(net: FloatNet, spec: BSS2Spec) -> None:
    for layer in net.layers:
        exc, inh = rows_needed(layer.weight)
        need = int(exc.sum() + inh.sum())
        if need > spec.synapse_rows:
            raise SpikeforgeError(f"layer {layer.name!r} needs {need} synapse rows ({int(exc.sum())} excitatory + "
                                  f"{int(inh.sum())} inhibitory, one per presynaptic source and sign); a {spec.name} "
                                  f"synapse array has {spec.synapse_rows}. Use at most {spec.synapse_rows // 2} "
                                  f"inputs with signed weights.")


def reset_and_spikes(net: FloatNet, spec: BSS2Spec) -> None:
    for layer in net.layers:
        if layer.kind == "LI":
            continue
        if layer.reset != "value":
            raise SpikeforgeError(f"layer {layer.name!r} resets by {layer.reset!r}; {spec.name} neurons reset to a "
                                  f"potential. Train with reset='value'.")
        if layer.max_spikes != 1:
            raise SpikeforgeError(f"layer {layer.name!r} emits up to {layer.max_spikes} spikes per step; build it with "
                                  f"max_spikes=1 ({spec.name} neurons fire once and reset).")


def levels(net: FloatNet, spec: BSS2Spec) -> None:
    for layer in net.layers:
        if layer.kind == "LI":
            continue
        if np.any(layer.v_th <= layer.v_leak):
            raise SpikeforgeError(f"layer {layer.name!r}: v_th must lie above v_leak for {spec.name} (the threshold "
                                  f"{spec.threshold:g} lies above the leak {spec.leak:g} CADC units).")
        span = (layer.v_th - layer.v_leak).max()
        k = (spec.threshold - spec.leak) / span
        low = spec.leak + k * (layer.v_reset - layer.v_leak).min()
        if low < 0:
            raise SpikeforgeError(f"layer {layer.name!r}: v_reset maps to {low:.1f} CADC units, below the CADC range "
                                  f"0..{spec.max_cadc}; raise v_reset towards v_leak.")


RULES = [chain_of_neurons, neuron_count, fan_in, reset_and_spikes, finite, levels]


def check(net: FloatNet, spec: BSS2Spec) -> None:
    """Run every rule in :data:`RULES`, then the placement; the first that fails raises."""
    for rule in RULES:
        rule(net, spec)
    placement(net, spec)
