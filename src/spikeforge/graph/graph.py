r"""The graph of a spikeforge model: a :class:`nir.NIRGraph` built from NIR's own node types.

Export and hardware targets read this graph, never :mod:`spikeforge.nn`. It is a *copy* of the model in
spikeforge's own discretisation (DESIGN.md principle 5): every parameter is the model's value, in
physical units (seconds), and ``dt`` is written in the metadata, so ``exp(-dt/tau)`` is computed from
them exactly as the model does.

========================================  ==========================================================
layer (``spikeforge.nn``)                 node (``nir``), parameters
========================================  ==========================================================
``Linear`` / ``DelayedLinear`` (delay 0)  ``Affine(weight, bias)``, or ``Linear(weight)`` without bias
``Conv1d``, ``Conv2d``                    ``Conv1d``, ``Conv2d`` (``input_shape`` = spatial shape)
``Flatten``                               ``Flatten(start_dim, end_dim)`` (dims without the batch)
``AvgPool2d``                             ``AvgPool2d(kernel_size, stride, padding=0)``
``torch.nn.LPPool2d(1, ...)``             ``SumPool2d(kernel_size, stride, padding=0)``
``Delay``                                 ``Delay(delay = steps * dt)`` in seconds, per feature
``LIF``                                   ``LIF(tau=tau_mem, r=1, v_leak, v_threshold=v_th, v_reset)``
``CubaLIF``                               ``CubaLIF(tau_syn, tau_mem, r=1, w_in=1, v_leak, ...)``
``IF``                                    ``IF(r=1/dt, v_threshold=v_th, v_reset)``
``LI``                                    ``LI(tau=tau_mem, r=1, v_leak)``
``Recurrent``                             nested ``NIRGraph``: input -> w_in -> neuron <-> w_rec
``Dropout``, ``torch.nn.Identity``        dropped (identity in eval mode)
========================================  ==========================================================

Why these values: our LIF update ``v = v_leak + a (v - v_leak) + (1 - a) x`` with ``a = exp(-dt/tau)``
is the exact solution of NIR's ``tau dv/dt = v_leak - v + R x`` with ``R = 1`` for an input held over
the step; LI and the two stages of CubaLIF are written the same way (``w_in = 1``); IF's ``v += x``
is NIR's ``dv/dt = R x`` with ``R = 1/dt``. Neuron parameters are written per neuron (broadcast to the
layer's shape), as NIR's type checks require.

Metadata. The graph's: ``generator`` (``"spikeforge <version>"``), ``dt`` (seconds) and
``discretisation`` (``"exp"`` here; see :mod:`spikeforge.export.nir` for ``"euler"``). Each node's:
``layer`` (the spikeforge class), and for neurons ``dt``, ``reset`` (``"subtract"``, ``"value"``,
``"none"``), ``refractory_steps``, ``detach_reset``, ``surrogate``, ``surrogate_scale``, ``max_spikes``
(written only when above 1), ``learn``
(comma-separated names), ``size`` and ``param_ndim`` (each parameter's own rank, so that a scalar
comes back as a scalar). NIR itself resets to ``v_reset`` and has no refractoriness: other tools that
read the graph ignore this metadata, so a neuron with ``reset="subtract"`` or a refractory period runs
differently there (``to_nir(..., strict=True)`` refuses such models).

Refused, with the layer's index and the reason: ``AdaptiveLIF`` (NIR has no adaptive neuron),
``DelayedLinear`` with non-zero delays (per-synapse delays), max pooling and 1-D pooling (no NIR node),
pooling with padding, layers of different ``dt``, and any other module.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from ..core.checks import SpikeforgeError
from ..nn.delay import Delay, DelayedLinear
from ..nn.layers import Dropout, TimeDistributed
from ..nn.neurons import IF, LI, LIF, AdaptiveLIF, CubaLIF, Neuron
from ..nn.recurrent import Recurrent
from ..nn.sequential import Sequential

__all__ = ["GENERATOR", "NEURON_FIELDS", "extract_graph", "written_by_spikeforge"]

try:
    _VERSION = version("spikeforge")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    _VERSION = "unknown"

#: The graph metadata ``generator`` prefix that marks a graph written by spikeforge.
GENERATOR = "spikeforge"

#: Per neuron class: spikeforge parameter name -> NIR field name.
NEURON_FIELDS: dict[type, dict[str, str]] = {
    LIF: {"tau_mem": "tau", "v_th": "v_threshold", "v_leak": "v_leak", "v_reset": "v_reset"},
    CubaLIF: {"tau_mem": "tau_mem", "tau_syn": "tau_syn", "v_th": "v_threshold", "v_leak": "v_leak",
              "v_reset": "v_reset"},
    IF: {"v_th": "v_threshold", "v_reset": "v_reset"},
    LI: {"tau_mem": "tau", "v_leak": "v_leak"},
}

_SUPPORTED = ("Linear, DelayedLinear (zero delays), Conv1d, Conv2d, Flatten, AvgPool2d, "
              "torch.nn.LPPool2d(norm_type=1), Delay, LIF, CubaLIF, IF, LI, Recurrent, Dropout")


def written_by_spikeforge(graph: nir.NIRGraph) -> bool:
    """Whether ``graph`` carries spikeforge's metadata (and so its reset modes, surrogates, ...)."""
    meta = getattr(graph, "metadata", None) or {}
    return str(meta.get("generator", "")).startswith(GENERATOR)


def _where(i: int | str, layer: nn.Module) -> str:
    inner = f"({type(layer.module).__name__})" if type(layer) is TimeDistributed else ""
    return f"layer {i} ({type(layer).__name__}{inner})"


def _step_shapes(model: Sequential, in_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Per-step feature shape after every layer, from one dummy step of batch 1."""
    first = next(iter([*model.parameters(), *model.buffers()]), None)
    x = torch.zeros((1, 1, *in_shape), device=first.device if first is not None else "cpu")
    shapes = []
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            try:
                x, _ = layer(x)
            except (SpikeforgeError, RuntimeError) as err:
                raise SpikeforgeError(
                    f"{_where(i, layer)} could not take a step of features {tuple(x.shape[2:])} "
                    f"(in_shape={in_shape}): {err}"
                ) from err
            shapes.append(tuple(x.shape[2:]))
    return shapes


def _array(t: torch.Tensor | float, shape: tuple[int, ...]) -> np.ndarray:
    """A parameter as a float32 array of the layer's per-step shape (an exact copy of its values)."""
    a = torch.as_tensor(t).detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(np.broadcast_to(a, shape), dtype=np.float32)


def _weight(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().to("cpu").numpy().copy()


def _neuron_node(where: str, layer: Neuron, shape: tuple[int, ...]) -> nir.NIRNode:
    fields = NEURON_FIELDS.get(type(layer))
    if fields is None:
        if isinstance(layer, AdaptiveLIF):
            raise SpikeforgeError(
                f"{where}: NIR has no adaptive neuron (the after-hyperpolarising current of AdaptiveLIF "
                f"has no NIR node). Use LIF or CubaLIF to export, or keep the model in spikeforge."
            )
        raise SpikeforgeError(f"{where}: no NIR node for this neuron type; supported: {_SUPPORTED}.")
    phys = layer.physical()
    values = {fields[k]: _array(v, shape) for k, v in phys.items()}
    meta: dict[str, Any] = {
        "layer": type(layer).__name__,
        "dt": float(layer.dt),
        "param_ndim": {k: int(v.dim()) for k, v in phys.items()},
    }
    if layer.size is not None:
        meta["size"] = np.array(layer.size, dtype=np.int64)
    learned = [k for k in phys if isinstance(getattr(layer, k), nn.Parameter)]
    if learned:
        meta["learn"] = ",".join(learned)
    spec = layer.fire_spec
    if spec is not None:
        meta.update(reset=spec.reset, refractory_steps=int(spec.refractory),
                    detach_reset=bool(spec.detach_reset), surrogate=spec.surrogate.name,
                    surrogate_scale=float(spec.surrogate.scale))
        if spec.max_spikes != 1:
            meta["max_spikes"] = int(spec.max_spikes)
    one = np.ones(shape, dtype=np.float32)
    if isinstance(layer, LIF):
        return nir.LIF(r=one, **values, metadata=meta)
    if isinstance(layer, CubaLIF):
        return nir.CubaLIF(r=one, w_in=one.copy(), **values, metadata=meta)
    if isinstance(layer, IF):
        return nir.IF(r=np.full(shape, 1.0 / layer.dt, dtype=np.float64), **values, metadata=meta)
    return nir.LI(r=one, **values, metadata=meta)


def _linear_node(weight: torch.Tensor, bias: torch.Tensor | None, meta: dict) -> nir.NIRNode:
    if bias is None:
        return nir.Linear(weight=_weight(weight), metadata=meta)
    return nir.Affine(weight=_weight(weight), bias=_weight(bias), metadata=meta)


def _conv_node(where: str, conv: nn.Conv1d | nn.Conv2d, shape_in: tuple[int, ...]) -> nir.NIRNode:
    if conv.padding_mode != "zeros":
        raise SpikeforgeError(
            f"{where}: padding_mode={conv.padding_mode!r}; NIR convolutions pad with zeros only. "
            f"Use padding_mode='zeros'."
        )
    meta = {"layer": type(conv).__name__, "bias": conv.bias is not None}
    bias = _weight(conv.bias) if conv.bias is not None else np.zeros(conv.out_channels, dtype=np.float32)
    pad = conv.padding if isinstance(conv.padding, str) else tuple(int(p) for p in conv.padding)
    if isinstance(conv, nn.Conv1d):
        return nir.Conv1d(input_shape=int(shape_in[-1]), weight=_weight(conv.weight), stride=int(conv.stride[0]),
                          padding=pad if isinstance(pad, str) else pad[0], dilation=int(conv.dilation[0]),
                          groups=int(conv.groups), bias=bias, metadata=meta)
    return nir.Conv2d(input_shape=tuple(int(s) for s in shape_in[-2:]), weight=_weight(conv.weight),
                      stride=tuple(int(s) for s in conv.stride), padding=pad,
                      dilation=tuple(int(d) for d in conv.dilation), groups=int(conv.groups), bias=bias,
                      metadata=meta)


def _pair(v: int | Sequence[int]) -> np.ndarray:
    return np.array([v, v] if isinstance(v, int) else list(v), dtype=np.int64)


def _pool_node(where: str, pool: nn.Module) -> nir.NIRNode:
    if isinstance(pool, nn.AvgPool2d):
        if pool.ceil_mode or pool.divisor_override is not None or np.any(_pair(pool.padding) != 0):
            raise SpikeforgeError(
                f"{where}: NIR's AvgPool2d is a sum over the window divided by its size, without padding; "
                f"use padding=0, ceil_mode=False and no divisor_override."
            )
        return nir.AvgPool2d(kernel_size=_pair(pool.kernel_size), stride=_pair(pool.stride),
                             padding=np.zeros(2, dtype=np.int64), metadata={"layer": "AvgPool2d"})
    if pool.norm_type != 1 or pool.ceil_mode:
        raise SpikeforgeError(
            f"{where}: only LPPool2d(norm_type=1, ceil_mode=False) is a sum pool (NIR SumPool2d); got "
            f"norm_type={pool.norm_type}, ceil_mode={pool.ceil_mode}."
        )
    stride = pool.kernel_size if pool.stride is None else pool.stride
    return nir.SumPool2d(kernel_size=_pair(pool.kernel_size), stride=_pair(stride),
                         padding=np.zeros(2, dtype=np.int64), metadata={"layer": "SumPool2d"})


def _flatten_node(where: str, flat: nn.Flatten, shape_in: tuple[int, ...]) -> nir.NIRNode:
    if flat.start_dim == 0:
        raise SpikeforgeError(f"{where}: Flatten(start_dim=0) would fold the batch; use start_dim >= 1.")
    start = flat.start_dim - 1 if flat.start_dim > 0 else flat.start_dim
    end = flat.end_dim - 1 if flat.end_dim > 0 else flat.end_dim
    return nir.Flatten(input_type={"input": np.array(shape_in, dtype=np.int64)}, start_dim=start, end_dim=end,
                       metadata={"layer": "Flatten"})


def _delay_node(where: str, layer: Delay, shape: tuple[int, ...], dt: float | None) -> nir.NIRNode:
    if dt is None:
        raise SpikeforgeError(
            f"{where}: NIR writes delays in seconds, which needs the model's dt, but the model has no neuron "
            f"layer to take it from."
        )
    steps = np.broadcast_to(layer.delay.detach().cpu().numpy(), shape)
    return nir.Delay(delay=steps.astype(np.float64) * dt,
                     metadata={"layer": "Delay", "per_channel": bool(layer.delay.dim() == 1)})


def _memoryless_node(where: str, layer: TimeDistributed, shape_in: tuple[int, ...]) -> nir.NIRNode | None:
    m = layer.module
    name = type(layer).__name__ if type(layer) is not TimeDistributed else type(m).__name__
    if isinstance(m, nn.Linear):
        return _linear_node(m.weight, m.bias, {"layer": "Linear"})
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return _conv_node(where, m, shape_in)
    if isinstance(m, nn.Flatten):
        return _flatten_node(where, m, shape_in)
    if isinstance(m, (nn.AvgPool2d, nn.LPPool2d)):
        return _pool_node(where, m)
    if isinstance(m, (nn.Dropout, nn.Identity)):
        return None
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        raise SpikeforgeError(
            f"{where}: NIR has no max pooling. Replace {name} by AvgPool2d (NIR AvgPool2d) or a strided "
            f"Conv2d and retrain, or keep the model in spikeforge."
        )
    if isinstance(m, nn.AvgPool1d):
        raise SpikeforgeError(
            f"{where}: NIR has no 1-D pooling. Use a Conv1d with stride (weights 1/k) instead, or keep the "
            f"model in spikeforge."
        )
    raise SpikeforgeError(f"{where}: {type(m).__name__} has no NIR node; supported: {_SUPPORTED}.")


def _recurrent_node(where: str, layer: Recurrent, shape_in: tuple[int, ...]) -> nir.NIRGraph:
    hidden = layer.neuron.size
    neuron = _neuron_node(f"{where} neuron", layer.neuron, hidden)
    w_in = _linear_node(layer.input.weight, layer.input.bias, {"layer": "Linear"})
    w_rec = nir.Linear(weight=_weight(layer._w_rec()), metadata={"layer": "Linear"})
    nodes = {
        "input": nir.Input(input_type={"input": np.array(shape_in, dtype=np.int64)}),
        "w_in": w_in,
        "neuron": neuron,
        "w_rec": w_rec,
        "output": nir.Output(output_type={"output": np.array(hidden, dtype=np.int64)}),
    }
    edges = [("input", "w_in"), ("w_in", "neuron"), ("neuron", "w_rec"), ("w_rec", "neuron"),
             ("neuron", "output")]
    meta = {"layer": "Recurrent", "self_connections": bool(layer.self_connections)}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def _common_dt(model: Sequential) -> float | None:
    seen: dict[float, str] = {}
    for i, layer in enumerate(model.layers):
        neuron = layer.neuron if isinstance(layer, Recurrent) else layer
        if isinstance(neuron, Neuron):
            seen.setdefault(float(neuron.dt), _where(i, layer))
    if len(seen) > 1:
        listed = ", ".join(f"{w} has dt={dt:g}" for dt, w in seen.items())
        raise SpikeforgeError(
            f"all neuron layers must share one dt to be written as one graph, but {listed}. "
            f"Build every neuron with the same dt."
        )
    return next(iter(seen), None)


def _layer_node(i: int, layer: nn.Module, shape_in: tuple[int, ...], shape_out: tuple[int, ...],
                dt: float | None) -> nir.NIRNode | None:
    where = _where(i, layer)
    if isinstance(layer, Neuron):
        return _neuron_node(where, layer, shape_out)
    if isinstance(layer, TimeDistributed):
        return _memoryless_node(where, layer, shape_in)
    if isinstance(layer, Dropout):
        return None
    if isinstance(layer, Recurrent):
        return _recurrent_node(where, layer, shape_in)
    if isinstance(layer, DelayedLinear):
        if bool((layer.delays != 0).any()):
            raise SpikeforgeError(
                f"{where} has per-synapse delays (up to {layer.max_delay} steps); NIR's Delay delays whole "
                f"channels and spikeforge writes a chain of nodes, so they cannot be exported. Use "
                f"Delay (one delay per input channel) followed by Linear, or delays=0."
            )
        return _linear_node(layer.linear.weight, layer.linear.bias, {"layer": "DelayedLinear"})
    if isinstance(layer, Delay):
        return _delay_node(where, layer, shape_out, dt)
    if isinstance(layer, Sequential):
        raise SpikeforgeError(
            f"{where}: nested Sequential; flatten it first, e.g. Sequential(*outer[:{i}], *inner, "
            f"*outer[{i + 1}:])."
        )
    raise SpikeforgeError(f"{where} has no NIR node; supported: {_SUPPORTED}.")


def extract_graph(model: Sequential, in_shape: int | Sequence[int]) -> nir.NIRGraph:
    """The graph of ``model``: one NIR node per layer, named by the layer's index, in a chain.

    Args:
        model: a :class:`~spikeforge.nn.Sequential`. Dropout layers are dropped (the graph is the model
            in eval mode).
        in_shape: the per-step input features, e.g. ``(784,)`` or ``(2, 34, 34)`` (no time, no batch).

    Returns:
        A :class:`nir.NIRGraph` with nodes ``"input"``, ``"0"``, ``"1"``, ..., ``"output"`` (indices of the
        layers that have a node) and the metadata described in this module's docstring. Each node's
        ``input_type``/``output_type`` is the per-step shape measured by running the model once; NIR's own
        type inference is not run (nir 1.0.8 computes grouped and non-square convolutions wrongly), so read
        such files back with ``nir.read(path, type_check=False)``.

    Raises:
        SpikeforgeError: naming the layer, for anything NIR cannot express.
    """
    if not isinstance(model, Sequential):
        raise SpikeforgeError(
            f"extract_graph takes a spikeforge.nn.Sequential, got {type(model).__name__}; wrap a single "
            f"layer as Sequential(layer)."
        )
    in_shape = (int(in_shape),) if isinstance(in_shape, int) else tuple(int(s) for s in in_shape)
    dt = _common_dt(model)
    shapes = _step_shapes(model, in_shape)
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": np.array(in_shape, dtype=np.int64)})}
    prev_shape = in_shape
    for i, layer in enumerate(model.layers):
        node = _layer_node(i, layer, prev_shape, shapes[i], dt)
        if node is not None:
            # The shapes measured on the model, not NIR's inference (nir 1.0.8 gets grouped and
            # non-square convolutions wrong).
            node.input_type = {"input": np.array(prev_shape, dtype=np.int64)}
            node.output_type = {"output": np.array(shapes[i], dtype=np.int64)}
            nodes[str(i)] = node
        prev_shape = shapes[i]
    out_shape = shapes[-1] if shapes else in_shape
    nodes["output"] = nir.Output(output_type={"output": np.array(out_shape, dtype=np.int64)})
    names = list(nodes)
    meta: dict[str, Any] = {"generator": f"{GENERATOR} {_VERSION}", "discretisation": "exp"}
    if dt is not None:
        meta["dt"] = dt
    edges = list(zip(names[:-1], names[1:], strict=True))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)
