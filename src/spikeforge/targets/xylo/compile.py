"""``compile(graph, target)``: read a spikeforge graph, check the target's rules, quantise, return a config.

The graph is read into a :class:`FloatNet` (a chain of neuron layers with their incoming float weights) in
this file, using the reader shared by all targets (:mod:`..graph_reader`); :mod:`.rules` checks it against
the :class:`~.spec.XyloSpec`; :mod:`.quantise` turns it into a frozen :class:`~.quantise.XyloConfig` that
:class:`~.dynamics.XyloEmulator` runs.

Accepted graphs: ``input -> (Linear|Affine -> neuron)+ -> output`` where a neuron is ``CubaLIF``, ``LIF``,
``IF`` or (last layer only) ``LI``, and a hidden layer may be a nested recurrent graph (``w_in -> neuron <->
w_rec``). All layers but the last are hidden neurons; the last is the output layer. Feed-forward
connections between hidden layers go into the chip's recurrent matrix, so on the chip they take one step
(as with Rockpool's mapper); within the float model they take none.
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from ...core.checks import SpikeforgeError
from .. import graph_reader as gr
from .quantise import XyloConfig, dequantise, quantise
from .rules import check
from .spec import XYLO_TARGETS, XyloSpec

__all__ = ["FloatLayer", "FloatNet", "compile", "dequantised", "read_graph"]

_WORDS = gr.Wording(mapper="Xylo", chip="Xylo", matrix="Xylo", readout="the output layer", weights="weights",
                    runs="Linear/Affine weights into CubaLIF/LIF/IF neurons (LI as readout)")


@dataclass
class FloatLayer(gr.FloatLayer):
    """One neuron layer of the graph with its incoming weights, in float (the model's own units)."""

    reset: str = "subtract"
    shape: tuple[int, ...] = ()


@dataclass
class FloatNet(gr.FloatNet):
    """A graph read for Xylo: input width, dt and the neuron layers in order (the last is the output)."""

    in_shape: tuple[int, ...] = ()


def _neuron_layer(name: str, node, w_node, w_name: str, w_rec=None) -> FloatLayer:
    fields = gr.layer_fields(name, node, w_node, w_name, _WORDS, w_rec)
    n = fields["weight"].shape[0]
    shape = tuple(int(s) for s in np.asarray(getattr(node, "output_type", {}).get("output", [n])).reshape(-1))
    return FloatLayer(**fields, shape=shape)


def read_graph(graph: nir.NIRGraph) -> FloatNet:
    """Read a spikeforge graph into a :class:`FloatNet`; refuses, naming the node, what Xylo cannot hold."""
    dt, in_shape = gr.read_header(graph, _WORDS)
    net = FloatNet(n_in=in_shape[0], dt=dt, in_shape=in_shape)
    for c in gr.connections(graph, _WORDS, dt):
        net.layers.append(_neuron_layer(c.name, c.neuron, c.w_node, c.w_name, c.w_rec))
    return net


def compile(graph: nir.NIRGraph, target: str | XyloSpec = "xylo-audio2",  # noqa: A001
            peaks: dict[str, tuple] | None = None) -> XyloConfig:
    """Check ``graph`` against ``target``'s rules, quantise it, and return the frozen chip config.

    Args:
        graph: from :func:`spikeforge.graph.extract_graph`.
        target: ``"xylo-audio2"``, ``"xylo-imu"`` or a :class:`XyloSpec` (e.g. with changed assumptions).
        peaks: calibration of the state ranges (see :func:`~.quantise.quantise`), per neuron node name.

    Raises:
        SpikeforgeError: naming the limit and the offending node when the graph does not fit.
    """
    return _compile(graph, target, peaks)[0]


def _compile(graph: nir.NIRGraph, target: str | XyloSpec, peaks=None) -> tuple[XyloConfig, FloatNet]:
    if isinstance(target, str):
        if target not in XYLO_TARGETS:
            raise SpikeforgeError(f"unknown Xylo target {target!r}; known: {', '.join(XYLO_TARGETS)}.")
        spec = XYLO_TARGETS[target]
    else:
        spec = target
    net = read_graph(graph)
    check(net, spec)
    return quantise(net, spec, peaks), net


def dequantised(graph: nir.NIRGraph, target: str | XyloSpec = "xylo-audio2", peaks: dict[str, tuple] | None = None):
    """Compile ``graph`` and return ``(config, values)``: ``values`` maps each neuron node of the graph to the
    float values its integers stand for (:func:`~.quantise.dequantise`), keyed also by the name of the
    weight node that feeds it (``"weight_node"``). Quantisation-aware training runs the model with them."""
    config, net = _compile(graph, target, peaks)
    values = dequantise(config, net)
    for layer in net.layers:
        values[layer.name]["weight_node"] = layer.weight_node
    return config, values
