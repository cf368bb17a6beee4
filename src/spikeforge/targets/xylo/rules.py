"""Fit checks for Xylo. Each rule raises :class:`SpikeforgeError` naming the limit and the node.

``RULES`` is the list that :func:`check` runs in order; each rule is ``rule(net, spec) -> None`` where
``net`` is a :class:`~.compile.FloatNet` and ``spec`` a :class:`~.spec.XyloSpec`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...core.checks import SpikeforgeError
from ..graph_reader import finite

if TYPE_CHECKING:  # pragma: no cover
    from .compile import FloatNet
    from .spec import XyloSpec

__all__ = ["RULES", "check"]


def _hidden(net: FloatNet):
    return net.layers[:-1]


def two_layers(net: FloatNet, spec: XyloSpec) -> None:
    if len(net.layers) < 2:
        raise SpikeforgeError(f"the graph has {len(net.layers)} neuron layer(s); {spec.name} needs at least two "
                              f"(hidden neurons, then output neurons).")


def inputs(net: FloatNet, spec: XyloSpec) -> None:
    if net.n_in > spec.max_inputs:
        raise SpikeforgeError(f"input has {net.n_in} channels; {spec.name} takes at most {spec.max_inputs}.")


def hidden_neurons(net: FloatNet, spec: XyloSpec) -> None:
    for layer in _hidden(net):
        if layer.size > spec.max_hidden:
            raise SpikeforgeError(f"hidden layer {layer.name!r} has {layer.size} neurons; {spec.name} holds at "
                                  f"most {spec.max_hidden}.")
    total = sum(layer.size for layer in _hidden(net))
    if total > spec.max_hidden:
        names = ", ".join(repr(layer.name) for layer in _hidden(net))
        raise SpikeforgeError(f"hidden layers {names} have {total} neurons in total; {spec.name} holds at most "
                              f"{spec.max_hidden}.")


def output_neurons(net: FloatNet, spec: XyloSpec) -> None:
    out = net.layers[-1]
    if out.size > spec.max_outputs:
        raise SpikeforgeError(f"output layer {out.name!r} has {out.size} neurons; {spec.name} has at most "
                              f"{spec.max_outputs} output neurons.")
    if out.w_rec is not None:
        raise SpikeforgeError(f"output layer {out.name!r} is recurrent; {spec.name} output neurons cannot be.")


def neuron_kinds(net: FloatNet, spec: XyloSpec) -> None:
    for layer in _hidden(net):
        if layer.kind == "LI":
            raise SpikeforgeError(f"hidden layer {layer.name!r} is LI (no spikes); on {spec.name} only the output "
                                  f"layer may be a non-spiking readout.")


def reset_and_refractory(net: FloatNet, spec: XyloSpec) -> None:
    for layer in net.layers:
        if layer.kind != "LI" and layer.reset != "subtract":
            raise SpikeforgeError(f"layer {layer.name!r} resets by {layer.reset!r}; {spec.name} neurons subtract "
                                  f"the threshold. Train with reset='subtract'.")
        if layer.refractory > 0:
            raise SpikeforgeError(f"layer {layer.name!r} has {layer.refractory} refractory steps; {spec.name} "
                                  f"neurons have no refractory period.")


def spikes_per_step(net: FloatNet, spec: XyloSpec) -> None:
    """A hidden neuron emits up to ``max_hidden_spikes`` (31) per step on the chip: a model trained for 1 or for
    exactly that many runs; any other count would train one neuron and deploy another. Outputs emit one."""
    for layer in _hidden(net):
        if layer.max_spikes not in (1, spec.max_hidden_spikes):
            raise SpikeforgeError(f"hidden layer {layer.name!r} emits up to {layer.max_spikes} spikes per step; "
                                  f"{spec.name} hidden neurons emit up to {spec.max_hidden_spikes}. Build it with "
                                  f"max_spikes={spec.max_hidden_spikes} (as the chip) or 1.")
    out = net.layers[-1]
    if out.kind != "LI" and out.max_spikes > spec.max_output_spikes:
        raise SpikeforgeError(f"output layer {out.name!r} emits up to {out.max_spikes} spikes per step; {spec.name} "
                              f"output neurons emit at most {spec.max_output_spikes}.")


def one_dimensional(net: FloatNet, spec: XyloSpec) -> None:
    for layer in net.layers:
        if len(layer.shape) > 1:
            raise SpikeforgeError(f"layer {layer.name!r} has feature shape {layer.shape}; {spec.name} neurons "
                                  f"are a flat vector (flatten before the weights).")


def fan_in(net: FloatNet, spec: XyloSpec) -> None:
    for layer in _hidden(net):
        count = np.count_nonzero(layer.weight, axis=1)
        if layer.w_rec is not None:
            count = count + np.count_nonzero(layer.w_rec, axis=1)
        worst = int(count.max()) if count.size else 0
        if worst > spec.max_fan_in:
            j = int(count.argmax())
            raise SpikeforgeError(f"hidden layer {layer.name!r}: neuron {j} has fan-in {worst} (non-zero input "
                                  f"and recurrent weights); {spec.name} allows at most {spec.max_fan_in}. "
                                  f"Prune the weights (e.g. keep the {spec.max_fan_in} largest per neuron).")


def weight_budget(net: FloatNet, spec: XyloSpec) -> None:
    total = 0
    for layer in _hidden(net):
        total += int(np.count_nonzero(layer.weight))
        if layer.w_rec is not None:
            total += int(np.count_nonzero(layer.w_rec))
    if total > spec.max_weights:
        raise SpikeforgeError(f"hidden layers hold {total} non-zero input and recurrent weights; {spec.name} "
                              f"stores at most {spec.max_weights}.")


RULES = [two_layers, inputs, hidden_neurons, output_neurons, neuron_kinds, reset_and_refractory, spikes_per_step,
         one_dimensional, fan_in, weight_budget, finite]


def check(net: FloatNet, spec: XyloSpec) -> None:
    """Run every rule in :data:`RULES`; the first that fails raises."""
    for rule in RULES:
        rule(net, spec)


def usage(config) -> list[dict]:
    """The fit report of a compiled :class:`~.quantise.XyloConfig`: each limited resource, how much of it the
    network uses and the chip's limit (counted on the integers, after quantisation)."""
    spec = config.spec
    nz_in = config.w_in != 0
    nz_rec = config.w_rec != 0
    fan_in = (nz_in.sum(axis=0) + nz_rec.sum(axis=0)).max(initial=0)  # per hidden neuron and synapse
    rows = [
        ("input channels", config.n_in, spec.max_inputs),
        ("hidden neurons", config.n_hidden, spec.max_hidden),
        ("output neurons", config.n_out, spec.max_outputs),
        ("largest fan-in (per hidden neuron and synapse)", int(fan_in), spec.max_fan_in),
        ("input + recurrent weights (non-zero)", int(nz_in.sum() + nz_rec.sum()), spec.max_weights),
        ("largest weight shift", max(config.weight_shift_in, config.weight_shift_rec, config.weight_shift_out),
         spec.max_weight_shift),
        ("largest decay shift (dash)", int(max(config.dash_mem.max(initial=0), config.dash_syn.max(initial=0),
                                               config.dash_mem_out.max(initial=0),
                                               config.dash_syn_out.max(initial=0))), spec.max_dash),
    ]
    return [{"resource": r, "used": int(u), "limit": int(lim)} for r, u, lim in rows]
