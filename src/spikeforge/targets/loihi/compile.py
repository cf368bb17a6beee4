"""``compile(graph)``: read a spikeforge graph, check the Loihi rules, quantise, return a frozen config.

The graph is read into a :class:`FloatNet` (a chain of neuron layers, each with its incoming float weights,
optional recurrent weights and the per-input-channel delays of a ``Delay`` node before its weights) with
the reader shared by all targets (:mod:`..graph_reader`); :mod:`.rules` checks it against the
:class:`~.spec.LoihiSpec`; :mod:`.quantise` turns it into a :class:`~.quantise.LoihiConfig` that
:class:`~.dynamics.LoihiEmulator` runs.

Accepted graphs: ``input -> ([Delay] -> Linear|Affine -> neuron)+ -> output`` where a neuron is ``CubaLIF``,
``LIF``, ``IF`` or (last layer only) ``LI``, a hidden layer may be a nested recurrent graph
(``w_in -> neuron <-> w_rec``), and ``Flatten`` nodes are skipped. Every weight matrix is one Lava ``Dense``
process, so each layer adds one step of latency on the chip (none in the float model).
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from ...core.checks import SpikeforgeError
from .. import graph_reader as gr
from .quantise import LoihiConfig, quantise
from .rules import check
from .spec import LOIHI_TARGETS, LoihiSpec

__all__ = ["FloatLayer", "FloatNet", "compile", "read_graph"]

_WORDS = gr.Wording(mapper="Loihi", chip="the Loihi target", matrix="Loihi Dense", readout="the last layer",
                    weights="Dense weights",
                    runs="[Delay ->] Linear/Affine -> CubaLIF/LIF/IF neurons (LI as the last layer)")


@dataclass(kw_only=True)
class FloatLayer(gr.FloatLayer):
    """One neuron layer of the graph with its incoming weights, in float (the model's own units)."""

    v_reset: np.ndarray                   # [n]
    delay: np.ndarray                     # [n_prev] extra delay in steps (float, as read)
    delay_node: str = ""
    shape: tuple[int, ...] = ()


@dataclass
class FloatNet(gr.FloatNet):
    """A graph read for Loihi: input width, dt and the neuron layers in order."""


def _neuron_layer(name: str, node, w_node, w_name: str, delay: tuple[str, np.ndarray] | None,
                  w_rec=None) -> FloatLayer:
    fields = gr.layer_fields(name, node, w_node, w_name, _WORDS, w_rec)
    n, n_prev = fields["weight"].shape
    v_reset = np.zeros(n)
    if isinstance(node, (nir.CubaLIF, nir.LIF, nir.IF)):
        v_reset = gr.flat(getattr(node, "v_reset", 0.0), n)
    d_name, d = delay if delay is not None else ("", np.zeros(n_prev))
    if d.shape != (n_prev,):
        raise SpikeforgeError(f"delay node {d_name!r} has {d.size} channels; weight node {w_name!r} takes {n_prev}.")
    return FloatLayer(**fields, v_reset=v_reset, delay=d, delay_node=d_name)


def read_graph(graph: nir.NIRGraph) -> FloatNet:
    """Read a spikeforge graph into a :class:`FloatNet`; refuses, naming the node, what Loihi cannot hold."""
    dt, in_shape = gr.read_header(graph, _WORDS)
    net = FloatNet(n_in=in_shape[0], dt=dt)
    for c in gr.connections(graph, _WORDS, dt, delays=True):
        net.layers.append(_neuron_layer(c.name, c.neuron, c.w_node, c.w_name, c.delay, c.w_rec))
    if not net.layers:
        raise SpikeforgeError("the graph has no neuron layer; the Loihi target needs at least one.")
    return net


def compile(graph: nir.NIRGraph, target: str | LoihiSpec = "loihi") -> LoihiConfig:  # noqa: A001
    """Check ``graph`` against the Loihi rules, quantise it, and return the frozen chip config.

    Args:
        graph: from :func:`spikeforge.graph.extract_graph`.
        target: ``"loihi"`` or a :class:`LoihiSpec` (e.g. with changed assumptions).

    Raises:
        SpikeforgeError: naming the limit and the offending node when the graph does not fit.
    """
    if isinstance(target, str):
        if target not in LOIHI_TARGETS:
            raise SpikeforgeError(f"unknown Loihi target {target!r}; known: {', '.join(LOIHI_TARGETS)}.")
        spec = LOIHI_TARGETS[target]
    else:
        spec = target
    net = read_graph(graph)
    check(net, spec)
    return quantise(net, spec)
