"""Reading a spikeforge graph into float layers: the part every target's ``compile.py`` shares.

A target's ``read_graph`` takes dt and the input width (:func:`read_header`), pairs every neuron node with the
weights (and, where the target has them, the delays) before it (:func:`connections`, which walks the top-level
chain, :func:`chain`, and unpacks nested recurrent blocks, :func:`recurrent_block`) and reads each pair
(:func:`layer_fields`) into its own :class:`FloatLayer` subclass, adding the fields only it needs. The functions
here take a :class:`Wording` so that their refusals name the chip and what it runs; limits of one chip stay in
its target. :func:`finite` is the fit rule the targets run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import nir
import numpy as np

from ..core.checks import SpikeforgeError

__all__ = ["NEURONS", "WEIGHTS", "Connection", "FloatLayer", "FloatNet", "Wording", "chain", "connections", "finite",
           "flat", "layer_fields", "read_header", "recurrent_block"]

NEURONS = (nir.CubaLIF, nir.LIF, nir.IF, nir.LI)
WEIGHTS = (nir.Linear, nir.Affine)


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
    reset: str = "value"
    refractory: int = 0
    weight_node: str = ""
    max_spikes: int = 1                   # spikes per step the model lets a neuron emit

    @property
    def size(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class FloatNet:
    """A graph read for a target: input width, dt and the neuron layers in order."""

    n_in: int
    dt: float
    layers: list[FloatLayer] = field(default_factory=list)


@dataclass(frozen=True)
class Wording:
    """How a target names itself in the reader's messages."""

    mapper: str      # "the {mapper} mapper reads a chain", "not a neuron {mapper} can run"
    chip: str        # "{chip} takes a flat vector of input channels"
    matrix: str      # "{matrix} needs 2-D"
    readout: str     # "LI as {readout}"
    weights: str     # "neurons take input only through {weights}"; "a neuron after every {weights}"
    runs: str        # "it runs {runs}" (what the target takes, for an unsupported node)


def flat(a, n: int) -> np.ndarray:
    """``a`` as a float64 vector of length ``n`` (a scalar is broadcast)."""
    return np.broadcast_to(np.asarray(a, dtype=np.float64).reshape(-1), (n,)).copy()


def chain(graph: nir.NIRGraph, words: Wording) -> list[str]:
    """The top-level node names from ``input`` on, refusing branches and top-level loops."""
    nxt: dict[str, list[str]] = {}
    for a, b in graph.edges:
        nxt.setdefault(a, []).append(b)
    order, cur = [], "input"
    while True:
        outs = nxt.get(cur, [])
        if len(outs) > 1:
            raise SpikeforgeError(f"node {cur!r} feeds {len(outs)} nodes ({outs}); the {words.mapper} mapper reads "
                                  f"a chain.")
        if not outs:
            return order
        cur = outs[0]
        if cur in order:
            raise SpikeforgeError(f"node {cur!r} closes a loop at the top level; put recurrence in a nested graph.")
        order.append(cur)


def read_header(graph: nir.NIRGraph, words: Wording) -> tuple[float, tuple[int, ...]]:
    """``(dt, in_shape)`` of ``graph``; refuses a graph without dt or with a non-flat input."""
    meta = getattr(graph, "metadata", None) or {}
    if "dt" not in meta:
        raise SpikeforgeError("the graph has no 'dt' in its metadata; build it with spikeforge.graph.extract_graph.")
    dt = float(meta["dt"])
    in_shape = tuple(int(s) for s in np.asarray(graph.nodes["input"].input_type["input"]).reshape(-1))
    if len(in_shape) != 1:
        raise SpikeforgeError(f"input has shape {in_shape}; {words.chip} takes a flat vector of input channels.")
    return dt, in_shape


def recurrent_block(name: str, node: nir.NIRGraph, pending: tuple[str, object] | None) -> tuple[Any, Any, np.ndarray]:
    """``(w_in node, neuron node, w_rec)`` of the nested recurrent block ``name``."""
    if pending is not None:
        raise SpikeforgeError(f"weight node {pending[0]!r} feeds the recurrent block {name!r}, which has "
                              f"its own input weights; fold them into one.")
    inner = node.nodes
    if not all(k in inner for k in ("w_in", "neuron", "w_rec")):
        raise SpikeforgeError(f"nested graph {name!r} is not a spikeforge recurrent block "
                              f"(w_in -> neuron <-> w_rec).")
    return inner["w_in"], inner["neuron"], np.asarray(inner["w_rec"].weight, dtype=np.float64)


class Connection(NamedTuple):
    """A neuron node with the weight node before it: the recurrent block's inner nodes and ``w_rec`` for a nested
    block, and the delay in steps per input channel (with the Delay node's name) where delays were read."""

    name: str
    neuron: Any
    w_node: Any
    w_name: str
    w_rec: np.ndarray | None
    delay: tuple[str, np.ndarray] | None


def connections(graph: nir.NIRGraph, words: Wording, dt: float, *, recurrent: bool = True,
                delays: bool = False) -> list[Connection]:
    """Every neuron layer of the top-level chain with its incoming weights, in order.

    The chain must run ``[Delay ->] weights -> neurons`` repeatedly (Flatten nodes are skipped, a nested recurrent
    block counts as weights and neurons), up to the output. Refused, naming the node: two weight nodes in a row,
    neurons without weights, weights (or a delay) left without neurons, nested graphs when ``recurrent`` is False,
    Delay nodes when ``delays`` is False (or a Delay after the weights), and any other node.
    """
    out: list[Connection] = []
    pending: tuple[str, Any] | None = None
    delay: tuple[str, np.ndarray] | None = None
    for name in chain(graph, words):
        node = graph.nodes[name]
        if isinstance(node, nir.Output):
            break
        if delays and isinstance(node, nir.Delay):
            if pending is not None:
                raise SpikeforgeError(f"delay node {name!r} follows weight node {pending[0]!r}; {words.mapper} delays "
                                      f"are synaptic: put the Delay before the weights.")
            steps = np.asarray(node.delay, dtype=np.float64).reshape(-1) / dt
            delay = (name, steps if delay is None else delay[1] + steps)
        elif isinstance(node, WEIGHTS):
            if pending is not None:
                raise SpikeforgeError(f"weight nodes {pending[0]!r} and {name!r} follow each other; {words.chip} needs "
                                      f"a neuron after every {words.weights} (fold the two matrices into one).")
            pending = (name, node)
        elif isinstance(node, nir.NIRGraph):
            if not recurrent:
                raise SpikeforgeError(f"node {name!r} is a nested (recurrent) graph; the {words.mapper} mapper runs "
                                      f"feed-forward chains only.")
            w_in, neuron, w_rec = recurrent_block(name, node, pending)
            out.append(Connection(name, neuron, w_in, f"{name}.w_in", w_rec, delay))
            delay = None
        elif isinstance(node, NEURONS):
            if pending is None:
                raise SpikeforgeError(f"neuron node {name!r} has no weight node before it; neurons on {words.chip} "
                                      f"take input only through {words.weights}.")
            out.append(Connection(name, node, pending[1], pending[0], None, delay))
            pending, delay = None, None
        elif not isinstance(node, nir.Flatten):
            raise SpikeforgeError(f"node {name!r} ({type(node).__name__}) has no equivalent on {words.chip}; it runs "
                                  f"{words.runs}.")
    if pending is not None or delay is not None:
        left = pending[0] if pending is not None else delay[0]
        raise SpikeforgeError(f"node {left!r} is not followed by a neuron; the output of {words.chip} must come "
                              f"straight from neurons.")
    return out


def layer_fields(name: str, node, w_node, w_name: str, words: Wording, w_rec=None) -> dict[str, Any]:
    """The :class:`FloatLayer` fields of neuron ``node`` fed by weight node ``w_node``, as keyword arguments."""
    if not isinstance(node, NEURONS):
        raise SpikeforgeError(f"node {name!r} ({type(node).__name__}) is not a neuron {words.mapper} can run; "
                              f"supported: CubaLIF, LIF, IF, and LI as {words.readout}.")
    weight = np.asarray(w_node.weight, dtype=np.float64)
    if weight.ndim != 2:
        raise SpikeforgeError(f"weight node {w_name!r} has a weight of shape {weight.shape}; {words.matrix} needs 2-D.")
    n = weight.shape[0]
    meta = getattr(node, "metadata", None) or {}
    bias = np.asarray(w_node.bias, dtype=np.float64).reshape(-1) if isinstance(w_node, nir.Affine) else None
    tau_mem = tau_syn = v_th = None
    v_leak = np.zeros(n)
    if isinstance(node, nir.CubaLIF):
        tau_mem, tau_syn = flat(node.tau_mem, n), flat(node.tau_syn, n)
        if np.any(np.asarray(node.w_in) != 1) or np.any(np.asarray(node.r) != 1):
            raise SpikeforgeError(f"node {name!r}: CubaLIF with r != 1 or w_in != 1 is not a spikeforge "
                                  f"discretisation; fold them into the weights first.")
    elif isinstance(node, (nir.LIF, nir.LI)):
        tau_mem = flat(node.tau, n)
    if isinstance(node, (nir.CubaLIF, nir.LIF, nir.IF)):
        v_th = flat(node.v_threshold, n)
    if isinstance(node, (nir.CubaLIF, nir.LIF, nir.LI)):
        v_leak = flat(node.v_leak, n)
    return dict(name=name, kind=type(node).__name__, weight=weight, bias=bias, w_rec=w_rec, tau_mem=tau_mem,
                tau_syn=tau_syn, v_th=v_th, v_leak=v_leak, reset=str(meta.get("reset", "value")),
                refractory=int(meta.get("refractory_steps", 0)), weight_node=w_name,
                max_spikes=int(meta.get("max_spikes", 1)))


def finite(net: FloatNet, spec) -> None:
    """Fit rule: every float parameter is finite and every time constant positive."""
    for layer in net.layers:
        for key in ("weight", "bias", "w_rec", "tau_mem", "tau_syn", "v_th", "v_leak"):
            v = getattr(layer, key)
            if v is not None and not np.all(np.isfinite(v)):
                raise SpikeforgeError(f"layer {layer.name!r}: {key} has non-finite values.")
        for key in ("tau_mem", "tau_syn"):
            v = getattr(layer, key)
            if v is not None and np.any(v <= 0):
                raise SpikeforgeError(f"layer {layer.name!r}: {key} must be positive for {spec.name}.")
