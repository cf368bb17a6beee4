r"""NIR read and write: :func:`to_nir` and :func:`from_nir`, through one table, :data:`NODES`.

:data:`NODES` maps each NIR node type to a pair: ``to`` turns a node of the model's graph
(:func:`spikeforge.graph.extract_graph`, spikeforge's own discretisation) into the node written, and
``from_`` turns a node read back into a spikeforge layer. Anything not in the table is refused by name.

Conventions (``docs/nir.md`` has the long form):

* **Units.** Time constants in seconds, as NIR and spikeforge use them.
* **dt.** NIR is continuous-time and stores no ``dt``. We write ours in the graph's and every neuron's
  metadata; on import the caller gives ``dt`` (``from_nir(graph, dt=...)``), which may differ.
* **Discretisation** (``discretisation=``): how a NIR time constant ``tau`` becomes a per-step decay.

  - ``"euler"`` (default, both ways): forward Euler, ``v <- v + dt/tau (v_leak - v + r x)``, the
    reading of snnTorch, Norse's LIFBox/LIBox, Lava and SpiNNaker2. Our update
    ``v = v_leak + a (v - v_leak) + (1 - a) x`` equals it exactly with ``1 - dt/tau_nir = a`` and
    ``r = 1``, so we write ``tau_nir = dt / (1 - exp(-dt/tau))`` and read
    ``tau = -dt / log(1 - dt/tau_nir)`` (which needs ``tau_nir > dt``). The same holds for LI and for
    both stages of CubaLIF (``w_in = 1``).
  - ``"exp"``: ``tau_nir = tau`` (a copy), the exact solution of NIR's equations for inputs held over
    a step; right for continuous-time consumers (analog hardware, event-driven solvers).

  ``from_nir`` reads a graph written by spikeforge in the discretisation its metadata records, and any
  other graph as ``"euler"``, unless told otherwise. Written and read back, both are exact: the float64
  round trip of ``tau`` rounds back to the same float32.
* **r and w_in.** Our neurons have ``R = 1``. A NIR neuron's input gain (``r`` for LIF and LI,
  ``r * w_in`` for CubaLIF, ``r * dt`` for IF, whose ``v += x`` is NIR's ``dv/dt = r I`` with
  ``r = 1/dt``) is folded into the rows of the weights just before it (Affine, Linear, Conv with a gain
  constant per channel, or a recurrent layer's input and recurrent weights), so the membrane keeps NIR's
  values. With no such node before a spiking neuron and a positive gain, the membrane is rescaled
  instead: ``v_threshold``, ``v_leak`` and ``v_reset`` are divided by the gain, which gives the same
  spikes (snnTorch's importer does the same). An LI read-out outputs its membrane, so it needs weights
  before it. Gains within 1e-12 of 1 (our own IF's ``dt * (1/dt)``) are taken as 1.
* **Reset.** NIR resets to ``v_reset``. A graph written by spikeforge brings back the reset mode
  (``"subtract"``, ``"value"``, ``"none"``), refractory steps, surrogate and ``detach_reset`` from its
  metadata; any other graph gets ``reset="value"``. Other tools ignore this metadata; ``strict=True``
  refuses what they would run differently.
* **Recurrence.** A nested NIRGraph ``input -> [w_in ->] neuron <-> w_rec, neuron -> output`` is a
  :class:`~spikeforge.nn.Recurrent` layer; without ``w_in`` (snnTorch's RLeaky form) the input weights
  are the identity. A recurrent ``Affine``'s bias is added to the input bias (it is added at every step).
  The loop carries the spikes of the previous step.

Known quirks of other writers: Norse 1.1.0's ``to_nir`` writes ``tau = dt * tau_true`` (it divides
``dt`` by ``tau_mem_inv``; norse issue #411): divide its ``tau`` by Norse's ``dt`` before importing.
snnTorch writes ``tau = 1e-4/(1 - beta)``, ``r = tau/1e-4`` (it assumes ``dt = 1e-4`` s), so import
with ``dt=1e-4``; its default reset by subtraction, one step late (``reset_delay=True``), is not what
it writes (NIR's reset to ``v_reset``), so only ``reset_mechanism="zero", reset_delay=False``
networks round-trip spike for spike.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import nir
import numpy as np
import torch
from torch import nn

from ..core.checks import SpikeforgeError, check_positive
from ..graph.graph import extract_graph, written_by_spikeforge
from ..nn.delay import Delay, DelayedLinear
from ..nn.layers import AvgPool2d, Conv1d, Conv2d, Flatten, Linear, TimeDistributed
from ..nn.neurons import IF, LI, LIF, CubaLIF, Neuron
from ..nn.recurrent import Recurrent
from ..nn.sequential import Sequential

__all__ = ["DISCRETISATIONS", "NODES", "Mapping", "from_nir", "to_nir"]

#: How a NIR time constant becomes a per-step decay: ``1 - dt/tau`` or ``exp(-dt/tau)``.
DISCRETISATIONS = ("euler", "exp")
_UNIT_GAIN_TOL = 1e-12


@dataclass(frozen=True)
class _Writing:
    dt: float | None
    discretisation: str


@dataclass(frozen=True)
class _Reading:
    dt: float
    discretisation: str
    ours: bool


class _Built(NamedTuple):
    """A layer read from a node (None: nothing to run) and the gain its input must be multiplied by."""

    layer: nn.Module | None
    gain: np.ndarray | None = None


class Mapping(NamedTuple):
    """One row of :data:`NODES`: graph node -> node written, and node read -> spikeforge layer."""

    to: Callable[[Any, _Writing], Any]
    from_: Callable[[str, Any, _Reading], _Built]


# ---------------------------------------------------------------------------------------------- helpers


def _f64(v: Any) -> np.ndarray:
    return np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64)


def _tensor(v: Any) -> torch.Tensor:
    """float32 tensor of a NIR array (float64 values round to the nearest float32)."""
    return torch.as_tensor(_f64(v)).to(torch.float32)


def _ints(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in np.atleast_1d(np.asarray(v)))


def _int_or_pair(v: Any) -> int | tuple[int, ...]:
    t = _ints(v)
    return t[0] if len(set(t)) == 1 else t


def _tau_out(tau: np.ndarray, c: _Writing) -> np.ndarray:
    """spikeforge's tau (seconds) -> the value written."""
    if c.discretisation == "exp":
        return tau
    tau = _f64(tau)
    return c.dt / -np.expm1(-c.dt / tau)


def _tau_in(where: str, field: str, tau: Any, c: _Reading) -> np.ndarray:
    """The value read -> spikeforge's tau (seconds)."""
    raw = tau
    tau = _f64(tau)
    if not np.all(np.isfinite(tau) & (tau > 0)):
        raise SpikeforgeError(f"{where}: {field} must be positive and finite (seconds), got min {tau.min():g}.")
    if c.discretisation == "exp":
        return raw if isinstance(raw, np.ndarray) and raw.dtype == np.float32 else tau
    q = c.dt / tau
    if np.any(q >= 1):
        raise SpikeforgeError(
            f"{where}: {field} = {tau.min():g} s is not longer than dt = {c.dt:g} s; forward Euler at this dt "
            f"decays by 1 - dt/{field} <= 0 per step, which no exponential decay equals. Import with a "
            f"smaller dt, or with discretisation='exp'."
        )
    return -c.dt / np.log1p(-q)


def _param(v: Any, ndim: Any) -> torch.Tensor:
    a = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v)
    if ndim is not None and a.ndim > int(ndim):
        a = a[(0,) * (a.ndim - int(ndim))]
    return _tensor(a) if a.dtype != np.float32 else torch.from_numpy(np.array(a, dtype=np.float32))


def _neuron(where: str, cls: type[Neuron], values: dict[str, Any], node: Any, c: _Reading,
            gain: np.ndarray) -> _Built:
    """Build a neuron layer from its parameters, restoring spikeforge's metadata when it is ours."""
    meta = node.metadata if c.ours else {}
    ndim = meta.get("param_ndim", {})
    params = {k: _param(v, ndim.get(k)) for k, v in values.items()}
    if c.ours:
        size = _ints(meta["size"]) if "size" in meta else None
    else:
        size = tuple(np.shape(next(iter(values.values())))) or None
    kw: dict[str, Any] = {"dt": c.dt, "size": size}
    if c.ours and meta.get("learn"):
        kw["learn"] = tuple(str(meta["learn"]).split(","))
    if cls is not LI:
        if c.ours:
            kw.update(reset=str(meta.get("reset", "value")), detach_reset=bool(meta.get("detach_reset", True)),
                      refractory=int(meta.get("refractory_steps", 0)) * c.dt)
            if int(meta.get("max_spikes", 1)) != 1:
                kw["max_spikes"] = int(meta["max_spikes"])
            if "surrogate" in meta:
                kw.update(surrogate=str(meta["surrogate"]), surrogate_scale=float(meta["surrogate_scale"]))
        else:
            kw["reset"] = "value"
    try:
        layer = cls(**params, **kw)
    except SpikeforgeError as err:
        raise SpikeforgeError(f"{where}: {err}") from err
    return _Built(layer, _f64(gain))


# ------------------------------------------------------------------------------------- node mappings


def _same(node: Any, c: _Writing) -> Any:
    return node


def _linear_layer(where: str, weight: Any, bias: Any, node: Any, c: _Reading) -> _Built:
    w = _tensor(weight)
    if w.dim() != 2:
        raise SpikeforgeError(f"{where}: weight must be 2-D (out, in), got shape {tuple(w.shape)}.")
    out_f, in_f = w.shape
    delayed = c.ours and node.metadata.get("layer") == "DelayedLinear"
    layer = (DelayedLinear if delayed else Linear)(in_f, out_f, bias=bias is not None)
    lin = layer.linear if delayed else layer.module
    with torch.no_grad():
        lin.weight.copy_(w)
        if bias is not None:
            lin.bias.copy_(_tensor(bias))
    return _Built(layer)


def _affine_from(where: str, node: nir.Affine, c: _Reading) -> _Built:
    return _linear_layer(where, node.weight, node.bias, node, c)


def _linear_from(where: str, node: nir.Linear, c: _Reading) -> _Built:
    return _linear_layer(where, node.weight, None, node, c)


def _conv_from(where: str, node: nir.Conv1d | nir.Conv2d, c: _Reading) -> _Built:
    w = _tensor(node.weight)
    b = _tensor(node.bias)
    two = isinstance(node, nir.Conv2d)
    groups = int(node.groups)
    bias = not (c.ours and not bool(node.metadata.get("bias", True)) and not bool(b.any()))
    pad = node.padding if isinstance(node.padding, str) else _ints(node.padding)
    spatial = _ints if two else (lambda v: _ints(v)[0])
    args = dict(stride=spatial(node.stride), padding=pad if isinstance(pad, str) else spatial(pad),
                dilation=spatial(node.dilation), bias=bias)
    kernel = tuple(w.shape[2:]) if two else int(w.shape[2])
    c_in, c_out = int(w.shape[1]) * groups, int(w.shape[0])
    if groups == 1:
        layer = (Conv2d if two else Conv1d)(c_in, c_out, kernel, **args)
    else:
        layer = TimeDistributed((nn.Conv2d if two else nn.Conv1d)(c_in, c_out, kernel, groups=groups, **args))
    with torch.no_grad():
        layer.module.weight.copy_(w)
        if bias:
            layer.module.bias.copy_(b)
    return _Built(layer)


def _flatten_from(where: str, node: nir.Flatten, c: _Reading) -> _Built:
    start, end = int(node.start_dim), int(node.end_dim)
    if (start, end) == (0, -1):
        return _Built(Flatten())
    return _Built(TimeDistributed(nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)))


def _check_no_padding(where: str, node: Any) -> None:
    if np.any(_f64(node.padding) != 0):
        raise SpikeforgeError(
            f"{where}: padding {_ints(node.padding)} is not supported; spikeforge reads pooling without padding."
        )


def _avgpool_from(where: str, node: nir.AvgPool2d, c: _Reading) -> _Built:
    _check_no_padding(where, node)
    return _Built(AvgPool2d(_int_or_pair(node.kernel_size), stride=_int_or_pair(node.stride)))


def _sumpool_from(where: str, node: nir.SumPool2d, c: _Reading) -> _Built:
    _check_no_padding(where, node)
    kernel, stride = _int_or_pair(node.kernel_size), _int_or_pair(node.stride)
    return _Built(TimeDistributed(nn.LPPool2d(1, kernel, stride=None if stride == kernel else stride)))


def _delay_from(where: str, node: nir.Delay, c: _Reading) -> _Built:
    d = _f64(node.delay) / c.dt
    steps = np.rint(d)
    if np.any(np.abs(d - steps) > 1e-6) or np.any(steps < 0):
        raise SpikeforgeError(
            f"{where}: delays must be whole non-negative multiples of dt = {c.dt:g} s, got {_f64(node.delay).max():g} "
            f"s at most ({d.max():g} steps). Import with a dt that divides the delays."
        )
    rows = steps.reshape(-1, steps.shape[-1]) if steps.ndim else steps.reshape(1, 1)
    if not np.all(rows == rows[:1]):
        raise SpikeforgeError(
            f"{where}: delays vary along other dimensions than the last; spikeforge's Delay delays each channel "
            f"(last dimension) by its own number of steps."
        )
    per_channel = bool(node.metadata.get("per_channel")) if c.ours else not np.all(rows == rows[0, 0])
    if per_channel:
        return _Built(Delay(torch.as_tensor(rows[0], dtype=torch.long)))
    return _Built(Delay(int(rows[0, 0])))


def _lif_to(node: nir.LIF, c: _Writing) -> nir.LIF:
    return nir.LIF(tau=_tau_out(node.tau, c), r=node.r, v_leak=node.v_leak, v_threshold=node.v_threshold,
                   v_reset=node.v_reset, metadata=dict(node.metadata))


def _lif_from(where: str, node: nir.LIF, c: _Reading) -> _Built:
    values = {"tau_mem": _tau_in(where, "tau", node.tau, c), "v_th": node.v_threshold, "v_leak": node.v_leak,
              "v_reset": node.v_reset}
    return _neuron(where, LIF, values, node, c, gain=_f64(node.r))


def _cuba_to(node: nir.CubaLIF, c: _Writing) -> nir.CubaLIF:
    return nir.CubaLIF(tau_syn=_tau_out(node.tau_syn, c), tau_mem=_tau_out(node.tau_mem, c), r=node.r,
                       v_leak=node.v_leak, v_threshold=node.v_threshold, v_reset=node.v_reset, w_in=node.w_in,
                       metadata=dict(node.metadata))


def _cuba_from(where: str, node: nir.CubaLIF, c: _Reading) -> _Built:
    values = {"tau_mem": _tau_in(where, "tau_mem", node.tau_mem, c),
              "tau_syn": _tau_in(where, "tau_syn", node.tau_syn, c), "v_th": node.v_threshold,
              "v_leak": node.v_leak, "v_reset": node.v_reset}
    return _neuron(where, CubaLIF, values, node, c, gain=_f64(node.r) * _f64(node.w_in))


def _if_from(where: str, node: nir.IF, c: _Reading) -> _Built:
    values = {"v_th": node.v_threshold, "v_reset": node.v_reset}
    return _neuron(where, IF, values, node, c, gain=_f64(node.r) * c.dt)


def _li_to(node: nir.LI, c: _Writing) -> nir.LI:
    return nir.LI(tau=_tau_out(node.tau, c), r=node.r, v_leak=node.v_leak, metadata=dict(node.metadata))


def _li_from(where: str, node: nir.LI, c: _Reading) -> _Built:
    values = {"tau_mem": _tau_in(where, "tau", node.tau, c), "v_leak": node.v_leak}
    return _neuron(where, LI, values, node, c, gain=_f64(node.r))


def _graph_to(node: nir.NIRGraph, c: _Writing) -> nir.NIRGraph:
    nodes = {k: _to(n, c) for k, n in node.nodes.items()}
    return nir.NIRGraph(nodes=nodes, edges=list(node.edges), metadata=dict(node.metadata), type_check=False)


def _graph_from(where: str, node: nir.NIRGraph, c: _Reading) -> _Built:
    return _Built(_recurrent(where, node, c))


#: The one table: NIR node type -> (graph node -> node written, node read -> spikeforge layer).
NODES: dict[type, Mapping] = {
    nir.Affine: Mapping(_same, _affine_from),
    nir.Linear: Mapping(_same, _linear_from),
    nir.Conv1d: Mapping(_same, _conv_from),
    nir.Conv2d: Mapping(_same, _conv_from),
    nir.Flatten: Mapping(_same, _flatten_from),
    nir.AvgPool2d: Mapping(_same, _avgpool_from),
    nir.SumPool2d: Mapping(_same, _sumpool_from),
    nir.Delay: Mapping(_same, _delay_from),
    nir.LIF: Mapping(_lif_to, _lif_from),
    nir.CubaLIF: Mapping(_cuba_to, _cuba_from),
    nir.IF: Mapping(_same, _if_from),
    nir.LI: Mapping(_li_to, _li_from),
    nir.NIRGraph: Mapping(_graph_to, _graph_from),
}

#: NIR node types spikeforge cannot simulate, and why.
_REFUSED: dict[type, str] = {
    nir.I: "spikeforge has no integrator without a threshold (IF fires; LI leaks)",
    nir.CubaLI: "spikeforge has no current-based leaky integrator read-out (use LI after the weights)",
    nir.Scale: "spikeforge has no element-wise scale layer (fold the scale into the weights before it)",
    nir.Threshold: "spikeforge has no stand-alone threshold (use IF, LIF or CubaLIF)",
}


def _to(node: Any, c: _Writing) -> Any:
    if isinstance(node, (nir.Input, nir.Output)):
        return node
    return NODES[type(node)].to(node, c)


def _from(where: str, node: Any, c: _Reading) -> _Built:
    mapping = NODES.get(type(node))
    if mapping is None:
        why = _REFUSED.get(type(node), "it is not a node type spikeforge reads")
        readable = ", ".join(sorted(t.__name__ for t in NODES))
        raise SpikeforgeError(f"{where}: cannot be imported: {why}. spikeforge reads {readable}.")
    return mapping.from_(where, node, c)


# ------------------------------------------------------------------------------------------ gains


def _weights_of(layer: nn.Module | None) -> nn.Module | None:
    if isinstance(layer, DelayedLinear):
        return layer.linear
    if isinstance(layer, TimeDistributed) and isinstance(layer.module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        return layer.module
    return None


def _scale_rows(weight: torch.Tensor, bias: torch.Tensor | None, vec: np.ndarray) -> None:
    g = torch.as_tensor(vec, dtype=torch.float64)
    with torch.no_grad():
        weight.copy_((weight.double() * g.reshape(-1, *([1] * (weight.dim() - 1)))).to(weight.dtype))
        if bias is not None:
            bias.copy_((bias.double() * g).to(bias.dtype))


def _row_gains(module: nn.Module, gain: np.ndarray) -> np.ndarray | None:
    """The gain as one factor per output row of ``module``, or None if it is not constant per row."""
    rows = module.out_features if isinstance(module, nn.Linear) else module.out_channels
    if gain.ndim == 0:
        return np.full(rows, float(gain))
    if gain.shape[0] != rows or (isinstance(module, nn.Linear) and gain.ndim != 1):
        return None
    per_row = gain.reshape(rows, -1)
    return per_row[:, 0] if np.all(per_row == per_row[:, :1]) else None


def _scale_membrane(neuron: Neuron, gain: np.ndarray) -> None:
    g = torch.as_tensor(gain, dtype=torch.float64)
    for name in ("v_th", "v_leak", "v_reset"):
        if name in neuron.physical():
            t = getattr(neuron, name)
            new = (t.detach().double() / g).to(torch.float32)
            if isinstance(t, nn.Parameter):
                t.data = new
            else:
                setattr(neuron, name, new)


def _apply_gain(where: str, before: nn.Module | None, built: _Built) -> None:
    """Multiply the neuron's input by its gain: fold it into ``before``'s rows, or rescale the membrane."""
    gain, neuron = built.gain, built.layer
    module = _weights_of(before)
    vec = _row_gains(module, gain) if module is not None else None
    if vec is not None:
        _scale_rows(module.weight, module.bias, vec)
        return
    if neuron.spiking and np.all(gain > 0):
        _scale_membrane(neuron, gain)
        return
    why = ("an LI read-out outputs its membrane, which cannot be rescaled" if not neuron.spiking
           else "the gain is not positive, so the membrane cannot be rescaled instead")
    raise SpikeforgeError(
        f"{where}: its input gain (r, r*w_in or r*dt) is {gain.min():g}..{gain.max():g}, not 1, and the node "
        f"before it is not an Affine, Linear or Conv (constant per channel) to fold it into; {why}. Put the "
        f"weights right before the neuron."
    )


def _is_unit(gain: np.ndarray) -> bool:
    return bool(np.all(np.abs(gain - 1.0) <= _UNIT_GAIN_TOL))


# ----------------------------------------------------------------------------------- graph walking


def _edges(graph: nir.NIRGraph) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    succ: dict[str, list[str]] = {k: [] for k in graph.nodes}
    pred: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        succ[str(a)].append(str(b))
        pred[str(b)].append(str(a))
    return succ, pred


def _only(where: str, graph: nir.NIRGraph, kind: type) -> str:
    found = [k for k, n in graph.nodes.items() if isinstance(n, kind)]
    if len(found) != 1:
        raise SpikeforgeError(f"{where}: needs exactly one nir.{kind.__name__} node, found {len(found)}: {found}.")
    return found[0]


def _chain(graph: nir.NIRGraph) -> list[str]:
    """Node names from Input to Output, refusing anything that is not a chain."""
    succ, pred = _edges(graph)
    name, out = _only("graph", graph, nir.Input), _only("graph", graph, nir.Output)
    order: list[str] = []
    while True:
        if len(succ[name]) != 1:
            raise SpikeforgeError(
                f"node {name!r} has {len(succ[name])} successors {succ[name]}; spikeforge imports a chain of "
                f"nodes from Input to Output (recurrence as a nested NIRGraph), like a Sequential."
            )
        name = succ[name][0]
        if name == out:
            break
        if name in order or len(pred[name]) != 1:
            raise SpikeforgeError(
                f"node {name!r} has {len(pred[name])} predecessors {pred[name]}; spikeforge imports a chain of "
                f"nodes (a loop belongs in a nested NIRGraph, read as a Recurrent layer)."
            )
        order.append(name)
    extra = set(graph.nodes) - set(order) - {_only("graph", graph, nir.Input), out}
    if extra:
        raise SpikeforgeError(f"nodes {sorted(extra)} are off the chain from Input to Output; remove them.")
    return order


def _recurrent(where: str, graph: nir.NIRGraph, c: _Reading) -> Recurrent:
    succ, pred = _edges(graph)
    inp, out = _only(where, graph, nir.Input), _only(where, graph, nir.Output)
    lin = (nir.Affine, nir.Linear)
    loops = [(a, b) for a, b in graph.edges if (b, a) in graph.edges and isinstance(graph.nodes[b], lin)
             and a != b and not isinstance(graph.nodes[a], lin)]
    if len(loops) != 1 or pred[out] != [loops[0][0]]:
        raise SpikeforgeError(
            f"{where}: a nested graph must be a recurrent layer: input -> [Affine|Linear ->] neuron, "
            f"neuron -> Affine|Linear -> neuron, neuron -> output; found edges {list(graph.edges)}."
        )
    neuron_name, rec_name = loops[0]
    first = succ[inp][0] if len(succ[inp]) == 1 else None
    w_in_name = None if first == neuron_name else first
    if first is None or (w_in_name is not None and (not isinstance(graph.nodes[w_in_name], lin)
                                                    or succ[w_in_name] != [neuron_name])):
        raise SpikeforgeError(f"{where}: the input must feed the neuron directly or through one Affine/Linear.")
    used = {inp, out, neuron_name, rec_name} | ({w_in_name} if w_in_name else set())
    if set(graph.nodes) != used:
        raise SpikeforgeError(f"{where}: unexpected nodes {sorted(set(graph.nodes) - used)} in a recurrent layer.")
    built = _from(f"{where}/{neuron_name}", graph.nodes[neuron_name], c)
    neuron = built.layer
    rec = graph.nodes[rec_name]
    w_rec = _tensor(rec.weight)
    hidden = int(w_rec.shape[0])
    if not isinstance(neuron, Neuron) or not neuron.spiking or neuron.size != (hidden,):
        raise SpikeforgeError(
            f"{where}: the recurrent neuron must be spiking (LIF, CubaLIF, IF) with per-neuron parameters of "
            f"shape ({hidden},); got {type(neuron).__name__} of size {getattr(neuron, 'size', None)}."
        )
    if w_in_name is None:
        w_in, b_in = torch.eye(hidden), None
    else:
        node = graph.nodes[w_in_name]
        w_in, b_in = _tensor(node.weight), _tensor(node.bias) if isinstance(node, nir.Affine) else None
    if isinstance(rec, nir.Affine) and bool(_tensor(rec.bias).any()):
        b_in = _tensor(rec.bias) + (b_in if b_in is not None else 0.0)
    self_conn = (bool(graph.metadata.get("self_connections")) if c.ours
                 else bool(torch.diagonal(w_rec).any()))
    layer = Recurrent(int(w_in.shape[1]), neuron, bias=b_in is not None, self_connections=self_conn)
    with torch.no_grad():
        layer.input.weight.copy_(w_in)
        if b_in is not None:
            layer.input.bias.copy_(b_in)
        layer.recurrent.weight.copy_(w_rec)
    if not _is_unit(built.gain):
        vec = _row_gains(layer.input, built.gain)
        if vec is None:
            raise SpikeforgeError(f"{where}: the neuron's input gain must be one value per neuron.")
        _scale_rows(layer.input.weight, layer.input.bias, vec)
        _scale_rows(layer.recurrent.weight, None, vec)
    return layer


# -------------------------------------------------------------------------------------------- API


def _strict_check(graph: nir.NIRGraph, prefix: str = "") -> None:
    for name, node in graph.nodes.items():
        where = f"node {prefix}{name!r} (nir.{type(node).__name__})"
        if isinstance(node, nir.NIRGraph):
            _strict_check(node, f"{prefix}{name}/")
            continue
        meta = node.metadata
        if meta.get("reset", "value") != "value":
            raise SpikeforgeError(
                f"{where}: reset={meta['reset']!r}, but NIR's neurons reset to v_reset and other tools ignore "
                f"spikeforge's metadata. With strict=True build the neuron with reset='value'."
            )
        if int(meta.get("refractory_steps", 0)) > 0:
            raise SpikeforgeError(
                f"{where}: refractory period of {int(meta['refractory_steps'])} steps, which NIR cannot express. "
                f"With strict=True build the neuron with refractory=0."
            )
        if int(meta.get("max_spikes", 1)) > 1:
            raise SpikeforgeError(
                f"{where}: up to {int(meta['max_spikes'])} spikes per step, which NIR cannot express (its neurons "
                f"emit binary spikes). With strict=True build the neuron with max_spikes=1."
            )


def to_nir(model: Sequential, in_shape: int | tuple[int, ...], *, path: str | os.PathLike | None = None,
           discretisation: str = "euler", strict: bool = False) -> nir.NIRGraph:
    """Write ``model`` as a NIR graph (and to ``path`` with ``nir.write`` when given).

    Args:
        model: a :class:`~spikeforge.nn.Sequential` (see :func:`spikeforge.graph.extract_graph`).
        in_shape: per-step input features, e.g. ``(784,)``.
        path: file to write (HDF5, ``nir.write``).
        discretisation: ``"euler"`` (forward Euler at our dt reproduces the model exactly; what snnTorch,
            Norse, Lava read) or ``"exp"`` (time constants copied; exact for continuous-time readers).
        strict: refuse what only spikeforge's metadata carries (reset other than ``"value"``, refractory
            periods), which other tools would run differently.

    Returns:
        The graph written; metadata records ``dt``, ``discretisation`` and each neuron's settings.
    """
    if discretisation not in DISCRETISATIONS:
        raise SpikeforgeError(f"discretisation must be one of {DISCRETISATIONS}, got {discretisation!r}.")
    graph = extract_graph(model, in_shape)
    if strict:
        _strict_check(graph)
    dt = graph.metadata.get("dt")
    out = _graph_to(graph, _Writing(None if dt is None else float(dt), discretisation))
    out.metadata["discretisation"] = discretisation
    if path is not None:
        nir.write(path, out)
    return out


def _load(graph_or_path: nir.NIRGraph | str | os.PathLike) -> nir.NIRGraph:
    if isinstance(graph_or_path, nir.NIRGraph):
        return graph_or_path
    if isinstance(graph_or_path, (str, os.PathLike)):
        if not os.path.isfile(graph_or_path):
            raise SpikeforgeError(f"no NIR file at {os.fspath(graph_or_path)!r}.")
        return nir.read(graph_or_path, type_check=False)  # we check the chain and shapes ourselves
    raise SpikeforgeError(
        f"from_nir takes a nir.NIRGraph or the path of a NIR file, got {type(graph_or_path).__name__}."
    )


def from_nir(graph_or_path: nir.NIRGraph | str | os.PathLike, *, dt: float,
             discretisation: str | None = None) -> Sequential:
    """Build a :class:`~spikeforge.nn.Sequential` from a NIR graph or file.

    Args:
        graph_or_path: a :class:`nir.NIRGraph`, or the path of a file written by ``nir.write``.
        dt: time step in seconds (NIR stores none).
        discretisation: ``"euler"`` or ``"exp"`` (see the module docstring); default: the one a spikeforge
            graph records, else ``"euler"``.

    Returns:
        The model; a graph written by spikeforge comes back with the same parameters, settings and outputs.

    Raises:
        SpikeforgeError: naming the node, for nodes spikeforge cannot simulate or graphs that are not chains.
    """
    check_positive("dt", dt)
    graph = _load(graph_or_path)
    ours = written_by_spikeforge(graph)
    if discretisation is None:
        discretisation = str(graph.metadata.get("discretisation", "euler")) if ours else "euler"
    if discretisation not in DISCRETISATIONS:
        raise SpikeforgeError(f"discretisation must be one of {DISCRETISATIONS}, got {discretisation!r}.")
    c = _Reading(float(dt), discretisation, ours)
    layers: list[nn.Module] = []
    for name in _chain(graph):
        node = graph.nodes[name]
        where = f"node {name!r} (nir.{type(node).__name__})"
        built = _from(where, node, c)
        if built.gain is not None and not _is_unit(built.gain):
            _apply_gain(where, layers[-1] if layers else None, built)
        if built.layer is not None:
            layers.append(built.layer)
    return Sequential(*layers)
