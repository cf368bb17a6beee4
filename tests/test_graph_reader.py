"""The chain walker every target's ``read_graph`` shares (``targets.graph_reader.connections``): what it pairs and
what it refuses, each refusal naming the node and the chip."""

from __future__ import annotations

import nir
import numpy as np
import pytest

from spikeforge.core.checks import SpikeforgeError
from spikeforge.targets import graph_reader as gr

WORDS = gr.Wording(mapper="Chip", chip="the chip", matrix="Chip", readout="the last layer", weights="synapses",
                   runs="weights into neurons")
DT = 1e-3


def _lif(n: int) -> nir.LIF:
    one = np.ones(n)
    return nir.LIF(tau=one * 1e-2, r=one, v_leak=0 * one, v_threshold=one)


def _graph(*nodes: tuple[str, object]) -> nir.NIRGraph:
    names = ["input"] + [name for name, _ in nodes] + ["output"]
    table = {"input": nir.Input(input_type={"input": np.array([2])}), **dict(nodes),
             "output": nir.Output(output_type={"output": np.array([2])})}
    return nir.NIRGraph(nodes=table, edges=list(zip(names[:-1], names[1:], strict=True)), metadata={"dt": DT})


def _lin() -> nir.Linear:
    return nir.Linear(np.eye(2))


def _recurrent() -> nir.NIRGraph:
    inner = {"input": nir.Input(input_type={"input": np.array([2])}), "w_in": _lin(), "neuron": _lif(2),
             "w_rec": nir.Linear(0.5 * np.eye(2)), "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "w_in"), ("w_in", "neuron"), ("neuron", "w_rec"), ("w_rec", "neuron"), ("neuron", "output")]
    return nir.NIRGraph(nodes=inner, edges=edges)


def test_pairs_weights_neurons_delays_and_recurrent_blocks():
    flat = nir.Flatten(input_type={"input": np.array([2])}, start_dim=0)
    g = _graph(("d", nir.Delay(np.array([2e-3, 3e-3]))), ("w", _lin()), ("flat", flat), ("h", _lif(2)),
               ("rnn", _recurrent()))
    first, second = gr.connections(g, WORDS, DT, delays=True)
    assert (first.name, first.w_name, first.w_rec) == ("h", "w", None)
    assert first.delay[0] == "d" and np.allclose(first.delay[1], [2.0, 3.0])
    assert (second.name, second.w_name, second.delay) == ("rnn", "rnn.w_in", None)
    assert np.allclose(second.w_rec, 0.5 * np.eye(2)) and isinstance(second.neuron, nir.LIF)


@pytest.mark.parametrize("nodes, kw, message", [
    ([("a", _lin()), ("b", _lin()), ("h", _lif(2))], {}, r"'a' and 'b' follow each other; the chip needs a neuron "
                                                         r"after every synapses"),
    ([("h", _lif(2))], {}, r"neuron node 'h' has no weight node before it; neurons on the chip take input only "
                           r"through synapses"),
    ([("w", _lin()), ("h", _lif(2)), ("w2", _lin())], {},
     r"node 'w2' is not followed by a neuron; the output of the chip"),
    ([("w", _lin()), ("h", _lif(2)), ("d", nir.Delay(np.zeros(2)))], {"delays": True},
     r"node 'd' is not followed by a neuron"),
    ([("w", _lin()), ("d", nir.Delay(np.zeros(2))), ("h", _lif(2))], {"delays": True},
     r"delay node 'd' follows weight node 'w'; Chip delays are synaptic"),
    ([("d", nir.Delay(np.zeros(2))), ("w", _lin()), ("h", _lif(2))], {},
     r"node 'd' \(Delay\) has no equivalent on the chip; it runs weights into neurons"),
    ([("rnn", _recurrent())], {"recurrent": False}, r"node 'rnn' is a nested \(recurrent\) graph; the Chip mapper"),
    ([("w", _lin()), ("rnn", _recurrent())], {}, r"weight node 'w' feeds the recurrent block 'rnn'"),
])
def test_refusals_name_the_node_and_the_chip(nodes, kw, message):
    with pytest.raises(SpikeforgeError, match=message):
        gr.connections(_graph(*nodes), WORDS, DT, **kw)
