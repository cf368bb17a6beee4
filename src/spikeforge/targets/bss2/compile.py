"""``compile(graph, target="bss2")``: read a spikeforge graph, check the rules, place and map it, return a config.

Accepted graphs: ``input -> (Linear|Affine -> LIF|CubaLIF)+ [-> Linear|Affine -> LI] -> output`` with
``reset="value"``: a feed-forward chain of spiking layers, optionally ending in a non-spiking LI read-out whose
membrane is read through the CADC. The graph is read with the reader shared by all targets
(:mod:`..graph_reader`), plus ``v_reset`` which this target needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from ...core.checks import SpikeforgeError
from .. import graph_reader as gr
from .quantise import BSS2Config, quantise
from .rules import check, placement
from .spec import BSS2, BSS2Spec

__all__ = ["FloatLayer", "FloatNet", "compile", "read_graph"]

_WORDS = gr.Wording(mapper="BrainScaleS-2", chip="BrainScaleS-2", matrix="a BrainScaleS-2 synapse array",
                    readout="the last layer (CADC read-out)", weights="synapses",
                    runs="Linear/Affine weights into LIF/CubaLIF neurons (LI as the last layer)")


@dataclass
class FloatLayer(gr.FloatLayer):
    """One neuron layer with its incoming weights, plus the reset value."""

    v_reset: np.ndarray | None = None


@dataclass
class FloatNet(gr.FloatNet):
    """A graph read for BrainScaleS-2: input width, dt and the neuron layers in order."""


def _layer(name: str, node, w_node, w_name: str) -> FloatLayer:
    fields = gr.layer_fields(name, node, w_node, w_name, _WORDS)
    n = fields["weight"].shape[0]
    v_reset = gr.flat(getattr(node, "v_reset", 0.0), n) if hasattr(node, "v_reset") else None
    return FloatLayer(**fields, v_reset=v_reset)


def read_graph(graph: nir.NIRGraph) -> FloatNet:
    """Read a spikeforge graph into a :class:`FloatNet`; refuses, naming the node, what the mapper cannot hold."""
    dt, in_shape = gr.read_header(graph, _WORDS)
    net = FloatNet(n_in=in_shape[0], dt=dt)
    for c in gr.connections(graph, _WORDS, dt, recurrent=False):
        net.layers.append(_layer(c.name, c.neuron, c.w_node, c.w_name))
    return net


def compile(graph: nir.NIRGraph, target: str | BSS2Spec = "bss2", *,  # noqa: A001
            weight_scale: dict[str, float] | None = None, lif_tau_syn_us: float | None = None,
            readout_range: float | None = None) -> BSS2Config:
    """Check ``graph`` against the chip's rules, place it and map it (:func:`~.quantise.quantise`).

    Args:
        graph: from :func:`spikeforge.graph.extract_graph`.
        target: ``"bss2"`` or a :class:`BSS2Spec` (e.g. with changed assumptions).
        weight_scale: LSB per float weight unit, per layer name (default ``63 / max|W|``).
        lif_tau_syn_us: synaptic time constant given to LIF/LI layers (hardware us; see :mod:`.quantise`).
        readout_range: float half-range of an LI read-out's membrane mapped to ``spec.readout_span`` CADC units.

    Raises:
        SpikeforgeError: naming the limit and the offending node when the graph does not fit.
    """
    if isinstance(target, str):
        if target != BSS2.name:
            raise SpikeforgeError(f"unknown BrainScaleS-2 target {target!r}; known: {BSS2.name}.")
        spec = BSS2
    else:
        spec = target
    net = read_graph(graph)
    check(net, spec)
    return quantise(net, spec, placement(net, spec), weight_scale=weight_scale, lif_tau_syn_us=lif_tau_syn_us,
                    readout_range=readout_range)
