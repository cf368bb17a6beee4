"""``compile(graph, target)``: read a spikeforge graph, check the target's rules, quantise, return a config.

The graph is read into a :class:`FloatNet` (a chain of neuron layers with their incoming float weights) in
this file; :mod:`.rules` checks it against the :class:`~.spec.XyloSpec`; :mod:`.quantise` turns it into a
frozen :class:`~.quantise.XyloConfig` that :class:`~.dynamics.XyloEmulator` runs.

Accepted graphs: ``input -> (Linear|Affine -> neuron)+ -> output`` where a neuron is ``CubaLIF``, ``LIF``,
``IF`` or (last layer only) ``LI``, and a hidden layer may be a nested recurrent graph (``w_in -> neuron <->
w_rec``). All layers but the last are hidden neurons; the last is the output layer. Feed-forward
connections between hidden layers go into the chip's recurrent matrix, so on the chip they take one step
(as with Rockpool's mapper); within the float model they take none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np

from ...core.checks import SpikeforgeError
from .quantise import XyloConfig, quantise
from .rules import check
from .spec import XYLO_TARGETS, XyloSpec

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
    w_rec: np.ndarray | None              # [n, n] recurrent, or None
    tau_mem: np.ndarray | None            # [n] seconds (None for IF)
    tau_syn: np.ndarray | None            # [n] seconds (CubaLIF only)
    v_th: np.ndarray | None               # [n] (None for LI)
    v_leak: np.ndarray                    # [n]
    reset: str = "subtract"
    refractory: int = 0
    weight_node: str = ""
    shape: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class FloatNet:
    """A graph read for Xylo: input width, dt and the neuron layers in order (the last is the output)."""

    n_in: int
    dt: float
    layers: list[FloatLayer] = field(default_factory=list)
    in_shape: tuple[int, ...] = ()


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
            raise SpikeforgeError(f"node {cur!r} feeds {len(outs)} nodes ({outs}); the Xylo mapper reads a chain.")
        if not outs:
            return order
        cur = outs[0]
        if cur in order:
            raise SpikeforgeError(f"node {cur!r} closes a loop at the top level; put recurrence in a nested graph.")
        order.append(cur)


def _neuron_layer(name: str, node, w_node, w_name: str, dt: float, w_rec=None) -> FloatLayer:
    if not isinstance(node, _NEURONS):
        raise SpikeforgeError(f"node {name!r} ({type(node).__name__}) is not a neuron Xylo can run; supported: "
                              f"CubaLIF, LIF, IF, and LI as the output layer.")
    weight = np.asarray(w_node.weight, dtype=np.float64)
    if weight.ndim != 2:
        raise SpikeforgeError(f"weight node {w_name!r} has a weight of shape {weight.shape}; Xylo needs 2-D.")
    n = weight.shape[0]
    meta = getattr(node, "metadata", None) or {}
    bias = np.asarray(w_node.bias, dtype=np.float64).reshape(-1) if isinstance(w_node, nir.Affine) else None
    kind = type(node).__name__
    tau_mem = tau_syn = v_th = None
    v_leak = np.zeros(n)
    if isinstance(node, nir.CubaLIF):
        tau_mem, tau_syn = _flat(node.tau_mem, n), _flat(node.tau_syn, n)
        if np.any(np.asarray(node.w_in) != 1) or np.any(np.asarray(node.r) != 1):
            raise SpikeforgeError(f"node {name!r}: CubaLIF with r != 1 or w_in != 1 is not a spikeforge "
                                  f"discretisation; fold them into the weights first.")
    elif isinstance(node, (nir.LIF, nir.LI)):
        tau_mem = _flat(node.tau, n)
    if isinstance(node, (nir.CubaLIF, nir.LIF, nir.IF)):
        v_th = _flat(node.v_threshold, n)
    if isinstance(node, (nir.CubaLIF, nir.LIF, nir.LI)):
        v_leak = _flat(node.v_leak, n)
    return FloatLayer(name=name, kind=kind, weight=weight, bias=bias, w_rec=w_rec, tau_mem=tau_mem,
                      tau_syn=tau_syn, v_th=v_th, v_leak=v_leak, reset=str(meta.get("reset", "value")),
                      refractory=int(meta.get("refractory_steps", 0)), weight_node=w_name,
                      shape=tuple(int(s) for s in np.asarray(getattr(node, "output_type", {}).get("output", [n]))
                                  .reshape(-1)))


def read_graph(graph: nir.NIRGraph) -> FloatNet:
    """Read a spikeforge graph into a :class:`FloatNet`; refuses, naming the node, what Xylo cannot hold."""
    meta = getattr(graph, "metadata", None) or {}
    if "dt" not in meta:
        raise SpikeforgeError("the graph has no 'dt' in its metadata; build it with spikeforge.graph.extract_graph.")
    dt = float(meta["dt"])
    in_shape = tuple(int(s) for s in np.asarray(graph.nodes["input"].input_type["input"]).reshape(-1))
    if len(in_shape) != 1:
        raise SpikeforgeError(f"input has shape {in_shape}; Xylo takes a flat vector of input channels.")
    net = FloatNet(n_in=in_shape[0], dt=dt, in_shape=in_shape)
    pending: tuple[str, object] | None = None
    for name in _chain(graph):
        node = graph.nodes[name]
        if isinstance(node, nir.Output):
            break
        if isinstance(node, _WEIGHTS):
            if pending is not None:
                raise SpikeforgeError(f"weight nodes {pending[0]!r} and {name!r} follow each other; Xylo needs a "
                                      f"neuron after every weight (fold the two matrices into one).")
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
            net.layers.append(_neuron_layer(name, inner["neuron"], inner["w_in"], f"{name}.w_in", dt, w_rec))
        elif isinstance(node, _NEURONS):
            if pending is None:
                raise SpikeforgeError(f"neuron node {name!r} has no weight node before it; Xylo neurons take "
                                      f"input only through weights.")
            net.layers.append(_neuron_layer(name, node, pending[1], pending[0], dt))
            pending = None
        elif isinstance(node, nir.Flatten):
            continue
        else:
            raise SpikeforgeError(f"node {name!r} ({type(node).__name__}) has no Xylo equivalent; Xylo runs "
                                  f"Linear/Affine weights into CubaLIF/LIF/IF neurons (LI as readout).")
    if pending is not None:
        raise SpikeforgeError(f"weight node {pending[0]!r} is not followed by a neuron; the Xylo output must come "
                              f"straight from neurons.")
    return net


def compile(graph: nir.NIRGraph, target: str | XyloSpec = "xylo-audio2") -> XyloConfig:  # noqa: A001
    """Check ``graph`` against ``target``'s rules, quantise it, and return the frozen chip config.

    Args:
        graph: from :func:`spikeforge.graph.extract_graph`.
        target: ``"xylo-audio2"``, ``"xylo-imu"`` or a :class:`XyloSpec` (e.g. with changed assumptions).

    Raises:
        SpikeforgeError: naming the limit and the offending node when the graph does not fit.
    """
    if isinstance(target, str):
        if target not in XYLO_TARGETS:
            raise SpikeforgeError(f"unknown Xylo target {target!r}; known: {', '.join(XYLO_TARGETS)}.")
        spec = XYLO_TARGETS[target]
    else:
        spec = target
    net = read_graph(graph)
    check(net, spec)
    return quantise(net, spec)
