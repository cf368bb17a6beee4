"""``compile(graph)``: read a spikeforge graph, check the Loihi rules, quantise, return a frozen config.

The graph is read into a :class:`FloatNet` (a chain of neuron layers, each with its incoming float weights,
optional recurrent weights and the per-input-channel delays of a ``Delay`` node before its weights);
:mod:`.rules` checks it against the :class:`~.spec.LoihiSpec`; :mod:`.quantise` turns it into a
:class:`~.quantise.LoihiConfig` that :class:`~.dynamics.LoihiEmulator` runs.

Accepted graphs: ``input -> ([Delay] -> Linear|Affine -> neuron)+ -> output`` where a neuron is ``CubaLIF``,
``LIF``, ``IF`` or (last layer only) ``LI``, a hidden layer may be a nested recurrent graph
(``w_in -> neuron <-> w_rec``), and ``Flatten`` nodes are skipped. Every weight matrix is one Lava ``Dense``
process, so each layer adds one step of latency on the chip (none in the float model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np

from ...core.checks import SpikeforgeError
from .quantise import LoihiConfig, quantise
from .rules import check
from .spec import LOIHI_TARGETS, LoihiSpec

__all__ = ["FloatLayer", "FloatNet", "compile", "read_graph"]

_NEURONS = (nir.CubaLIF, nir.LIF, nir.IF, nir.LI)
_WEIGHTS = (nir.Linear, nir.Affine)


@dataclass
class FloatLayer:
    """One neuron layer of the graph with its incoming weights, in float (the model's own units)."""

    name: str
    kind: str
    weight: np.ndarray                    # [n, n_prev] incoming
    bias: np.ndarray | None               # [n] from an Affine node, or None
    w_rec: np.ndarray | None              # [n, n] recurrent (post, pre), or None
    tau_mem: np.ndarray | None            # [n] seconds (None for IF)
    tau_syn: np.ndarray | None            # [n] seconds (CubaLIF only)
    v_th: np.ndarray | None               # [n] (None for LI)
    v_leak: np.ndarray                    # [n]
    v_reset: np.ndarray                   # [n]
    delay: np.ndarray                     # [n_prev] extra delay in steps (float, as read)
    reset: str = "value"
    refractory: int = 0
    weight_node: str = ""
    delay_node: str = ""
    shape: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class FloatNet:
    """A graph read for Loihi: input width, dt and the neuron layers in order."""

    n_in: int
    dt: float
    layers: list[FloatLayer] = field(default_factory=list)


def _flat(a, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(a, dtype=np.float64).reshape(-1), (n,)).copy()


def _chain(graph: nir.NIRGraph) -> list[str]:
    nxt: dict[str, list[str]] = {}
    for a, b in graph.edges:
        nxt.setdefault(a, []).append(b)
    order, cur = [], "input"
    while True:
        outs = nxt.get(cur, [])
        if len(outs) > 1:
            raise SpikeforgeError(f"node {cur!r} feeds {len(outs)} nodes ({outs}); the Loihi mapper reads a chain.")
        if not outs:
            return order
        cur = outs[0]
        if cur in order:
            raise SpikeforgeError(f"node {cur!r} closes a loop at the top level; put recurrence in a nested graph.")
        order.append(cur)


def _neuron_layer(name: str, node, w_node, w_name: str, delay: tuple[str, np.ndarray] | None,
                  w_rec=None) -> FloatLayer:
    if not isinstance(node, _NEURONS):
        raise SpikeforgeError(f"node {name!r} ({type(node).__name__}) is not a neuron Loihi can run; supported: "
                              f"CubaLIF, LIF, IF, and LI as the last layer.")
    weight = np.asarray(w_node.weight, dtype=np.float64)
    if weight.ndim != 2:
        raise SpikeforgeError(f"weight node {w_name!r} has a weight of shape {weight.shape}; Loihi Dense needs 2-D.")
    n, n_prev = weight.shape
    meta = getattr(node, "metadata", None) or {}
    bias = np.asarray(w_node.bias, dtype=np.float64).reshape(-1) if isinstance(w_node, nir.Affine) else None
    tau_mem = tau_syn = v_th = None
    v_leak = np.zeros(n)
    v_reset = np.zeros(n)
    if isinstance(node, nir.CubaLIF):
        tau_mem, tau_syn = _flat(node.tau_mem, n), _flat(node.tau_syn, n)
        if np.any(np.asarray(node.w_in) != 1) or np.any(np.asarray(node.r) != 1):
            raise SpikeforgeError(f"node {name!r}: CubaLIF with r != 1 or w_in != 1 is not a spikeforge "
                                  f"discretisation; fold them into the weights first.")
    elif isinstance(node, (nir.LIF, nir.LI)):
        tau_mem = _flat(node.tau, n)
    if isinstance(node, (nir.CubaLIF, nir.LIF, nir.IF)):
        v_th = _flat(node.v_threshold, n)
        v_reset = _flat(getattr(node, "v_reset", 0.0), n)
    if isinstance(node, (nir.CubaLIF, nir.LIF, nir.LI)):
        v_leak = _flat(node.v_leak, n)
    d_name, d = delay if delay is not None else ("", np.zeros(n_prev))
    if d.shape != (n_prev,):
        raise SpikeforgeError(f"delay node {d_name!r} has {d.size} channels; weight node {w_name!r} takes {n_prev}.")
    return FloatLayer(name=name, kind=type(node).__name__, weight=weight, bias=bias, w_rec=w_rec, tau_mem=tau_mem,
                      tau_syn=tau_syn, v_th=v_th, v_leak=v_leak, v_reset=v_reset, delay=d,
                      reset=str(meta.get("reset", "value")), refractory=int(meta.get("refractory_steps", 0)),
                      weight_node=w_name, delay_node=d_name)


def read_graph(graph: nir.NIRGraph) -> FloatNet:
    """Read a spikeforge graph into a :class:`FloatNet`; refuses, naming the node, what Loihi cannot hold."""
    meta = getattr(graph, "metadata", None) or {}
    if "dt" not in meta:
        raise SpikeforgeError("the graph has no 'dt' in its metadata; build it with spikeforge.graph.extract_graph.")
    dt = float(meta["dt"])
    in_shape = tuple(int(s) for s in np.asarray(graph.nodes["input"].input_type["input"]).reshape(-1))
    if len(in_shape) != 1:
        raise SpikeforgeError(f"input has shape {in_shape}; the Loihi target takes a flat vector of input channels.")
    net = FloatNet(n_in=in_shape[0], dt=dt)
    pending: tuple[str, object] | None = None
    delay: tuple[str, np.ndarray] | None = None
    for name in _chain(graph):
        node = graph.nodes[name]
        if isinstance(node, nir.Output):
            break
        if isinstance(node, nir.Delay):
            if pending is not None:
                raise SpikeforgeError(f"delay node {name!r} follows weight node {pending[0]!r}; Loihi delays are "
                                      f"synaptic: put the Delay before the weights.")
            steps = np.asarray(node.delay, dtype=np.float64).reshape(-1) / dt
            delay = (name, steps if delay is None else delay[1] + steps)
        elif isinstance(node, _WEIGHTS):
            if pending is not None:
                raise SpikeforgeError(f"weight nodes {pending[0]!r} and {name!r} follow each other; Loihi needs a "
                                      f"neuron after every Dense (fold the two matrices into one).")
            pending = (name, node)
        elif isinstance(node, nir.NIRGraph):
            if pending is not None:
                raise SpikeforgeError(f"weight node {pending[0]!r} feeds the recurrent block {name!r}, which has "
                                      f"its own input weights; fold them into one.")
            inner = node.nodes
            if not all(k in inner for k in ("w_in", "neuron", "w_rec")):
                raise SpikeforgeError(f"nested graph {name!r} is not a spikeforge recurrent block "
                                      f"(w_in -> neuron <-> w_rec).")
            w_rec = np.asarray(inner["w_rec"].weight, dtype=np.float64)
            net.layers.append(_neuron_layer(name, inner["neuron"], inner["w_in"], f"{name}.w_in", delay, w_rec))
            delay = None
        elif isinstance(node, _NEURONS):
            if pending is None:
                raise SpikeforgeError(f"neuron node {name!r} has no weight node before it; Loihi neurons take "
                                      f"input only through Dense weights.")
            net.layers.append(_neuron_layer(name, node, pending[1], pending[0], delay))
            pending, delay = None, None
        elif isinstance(node, nir.Flatten):
            continue
        else:
            raise SpikeforgeError(f"node {name!r} ({type(node).__name__}) has no equivalent on the Loihi target; it "
                                  f"runs [Delay ->] Linear/Affine -> CubaLIF/LIF/IF neurons (LI as the last layer).")
    if pending is not None or delay is not None:
        left = pending[0] if pending is not None else delay[0]
        raise SpikeforgeError(f"node {left!r} is not followed by a neuron; the Loihi output must come straight "
                              f"from neurons.")
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
