"""Build a :class:`~spikeforge.nn.Sequential` from the ``model`` section of a config.

One table maps each layer ``type`` to its constructor; arguments are checked against the constructor's
signature, and sizes are inferred by passing a dummy step through each built layer, so a config lists
only output sizes (``linear: out``, ``conv2d: out_channels``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import nn as snn
from ..core.checks import SpikeforgeError

__all__ = ["LAYER_TYPES", "build_model", "validate_config"]


def _linear(shape: tuple[int, ...], *, out: int, bias: bool = True, sparse: str | bool = "auto",
            sparse_threshold: float | None = None) -> nn.Module:
    if len(shape) != 1:
        raise SpikeforgeError(
            f"linear needs flat input features, got shape {shape}; add a {{type: flatten}} layer first."
        )
    return snn.Linear(shape[0], out, bias=bias, sparse=sparse, sparse_threshold=sparse_threshold)


def _conv(cls: type) -> Callable[..., nn.Module]:
    def make(shape: tuple[int, ...], *, out_channels: int, kernel_size: int, stride: int = 1,
             padding: int = 0, dilation: int = 1, bias: bool = True) -> nn.Module:
        return cls(shape[0], out_channels, kernel_size, stride=stride, padding=padding,
                   dilation=dilation, bias=bias)
    return make


def _neuron(cls: type, spiking: bool = True) -> Callable[..., nn.Module]:
    def make(shape: tuple[int, ...], *, dt: float, surrogate: dict | None = None, **kw: Any) -> nn.Module:
        if spiking:
            kw["surrogate"] = surrogate
        return cls(size=shape, dt=dt, **kw)
    make.accepts = cls  # type: ignore[attr-defined]
    return make


def _recurrent(shape: tuple[int, ...], *, out: int, neuron: dict, dt: float, surrogate: dict | None = None,
               bias: bool = True) -> nn.Module:
    neuron = dict(neuron)
    ntype = neuron.pop("type", "lif")
    if ntype not in ("lif", "if", "cuba_lif", "adaptive_lif"):
        raise SpikeforgeError(f"recurrent neuron type must be a spiking neuron, got {ntype!r}.")
    make = LAYER_TYPES[ntype]
    _check_kwargs(make, neuron, f"recurrent.neuron ({ntype})")
    cell = make((out,), dt=dt, surrogate=neuron.pop("surrogate", surrogate), **neuron)
    return snn.Recurrent(shape[0], cell, bias=bias)


#: layer ``type`` -> constructor taking the input feature shape and the layer's config keys.
LAYER_TYPES: dict[str, Callable[..., nn.Module]] = {
    "linear": _linear,
    "conv1d": _conv(snn.Conv1d),
    "conv2d": _conv(snn.Conv2d),
    "maxpool1d": lambda shape, *, kernel_size, stride=None: snn.MaxPool1d(kernel_size, stride=stride),
    "maxpool2d": lambda shape, *, kernel_size, stride=None: snn.MaxPool2d(kernel_size, stride=stride),
    "avgpool1d": lambda shape, *, kernel_size, stride=None: snn.AvgPool1d(kernel_size, stride=stride),
    "avgpool2d": lambda shape, *, kernel_size, stride=None: snn.AvgPool2d(kernel_size, stride=stride),
    "flatten": lambda shape: snn.Flatten(),
    "dropout": lambda shape, *, p=0.5: snn.Dropout(p),
    "delay": lambda shape, *, delay: snn.Delay(delay),
    "lif": _neuron(snn.LIF),
    "if": _neuron(snn.IF),
    "cuba_lif": _neuron(snn.CubaLIF),
    "adaptive_lif": _neuron(snn.AdaptiveLIF),
    "li": _neuron(snn.LI, spiking=False),
    "recurrent": _recurrent,
}

_INJECTED = {"dt", "surrogate", "size"}


def _allowed(make: Callable[..., nn.Module]) -> set[str]:
    target = getattr(make, "accepts", make)
    params = inspect.signature(target).parameters
    names = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return names - {"self", "shape"} - _INJECTED


def _check_kwargs(make: Callable[..., nn.Module], kw: dict[str, Any], where: str) -> None:
    allowed = _allowed(make)
    for key in kw:
        if key not in allowed:
            raise SpikeforgeError(
                f"unknown key '{key}' in {where}; allowed: {', '.join(sorted(allowed))}."
            )


def _layer_specs(layers: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    out = []
    for i, spec in enumerate(layers):
        where = f"model.layers[{i}]"
        if not isinstance(spec, dict) or "type" not in spec:
            raise SpikeforgeError(f"{where} must be a mapping with a 'type' key, got {spec!r}.")
        kw = dict(spec)
        ltype = kw.pop("type")
        if ltype not in LAYER_TYPES:
            raise SpikeforgeError(
                f"{where}.type must be one of {', '.join(sorted(LAYER_TYPES))}, got {ltype!r}."
            )
        _check_kwargs(LAYER_TYPES[ltype], kw, where)
        out.append((ltype, kw, where))
    return out


def validate_config(cfg: Any) -> None:
    """Check the layer list of a :class:`~spikeforge.train.config.Config` (types and keys)."""
    if cfg.model.method != "surrogate":  # event-driven network (spikeforge.train.event)
        from .event import validate_event_config

        validate_event_config(cfg)
        return
    if not cfg.model.layers:
        raise SpikeforgeError("model.layers is empty; list at least one layer.")
    _layer_specs(cfg.model.layers)
    q = cfg.quantise
    if q.target is not None:
        from ..targets.xylo import XYLO_TARGETS

        if q.target not in XYLO_TARGETS:
            raise SpikeforgeError(f"quantise.target must be one of {', '.join(XYLO_TARGETS)} (targets with "
                                  f"quantisation-aware training) or null, got {q.target!r}.")
        if not 0 <= q.start_epoch < cfg.train.epochs:
            raise SpikeforgeError(f"quantise.start_epoch must be in 0..{cfg.train.epochs - 1} (train.epochs is "
                                  f"{cfg.train.epochs}), got {q.start_epoch}.")


def build_model(model_cfg: Any, in_shape: tuple[int, ...], n_out: int | None = None) -> snn.Sequential:
    """Build the network for inputs with feature shape ``in_shape``.

    Raises a :class:`SpikeforgeError` naming the layer when arguments are wrong, and when the last
    layer's output size differs from ``n_out`` (the number of classes).
    """
    shape = tuple(in_shape)
    layers = []
    for ltype, kw, where in _layer_specs(model_cfg.layers):
        make = LAYER_TYPES[ltype]
        extra = {}
        if "dt" in inspect.signature(make).parameters:
            extra["dt"] = model_cfg.dt
            extra["surrogate"] = kw.pop("surrogate", model_cfg.surrogate)
        try:
            layer = make(shape, **extra, **kw)
            with torch.no_grad():
                y, _ = layer(torch.zeros(1, 1, *shape))
        except SpikeforgeError as err:
            raise SpikeforgeError(f"{where} ({ltype}): {err}") from err
        except (TypeError, RuntimeError, ValueError) as err:
            raise SpikeforgeError(f"{where} ({ltype}) cannot take input features {shape}: {err}") from err
        shape = tuple(y.shape[2:])
        layers.append(layer)
    if n_out is not None and math.prod(shape) != n_out:
        raise SpikeforgeError(
            f"the last layer outputs features {shape}, but the data set has {n_out} classes; "
            f"set the last linear layer's 'out' to {n_out}."
        )
    model = snn.Sequential(*layers)
    if model_cfg.init_gain != 1.0:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                    m.weight.mul_(model_cfg.init_gain)
    return model
