"""Training event-driven networks (exact spike times) with the :class:`~spikeforge.train.trainer.Trainer`.

A config selects this path with ``model.method``:

* ``surrogate`` (default): time-stepped surrogate-gradient BPTT (:mod:`spikeforge.train.build`), untouched.
* ``ttfs``: event-driven layers with exact spike-time gradients (``gradient: exact``, the multi-spike Fast & Deep
  rebuild of :mod:`spikeforge.sim.exact_times`), typically one spike per neuron and a first-spike loss.
* ``eventprop``: event-driven layers with EventProp gradients (``gradient: eventprop``,
  :mod:`spikeforge.nn.events`).

Layers (``model.layers``): ``event_lif`` (``out`` plus the keyword arguments of
:class:`~spikeforge.nn.events.EventLIF`; ``gradient`` defaults to the method's) and ``event_li`` (``out`` plus
those of :class:`~spikeforge.nn.event_readout.EventLI`), chained; either may take ``t_bias``, the time of an extra
input channel that fires once (a bias spike into that layer, as Fast & Deep uses in every layer). An ``event_lif``
layer may also take ``max_missing`` and ``bump`` (Fast & Deep's targeted weight bumping): after a training step in
which more than the fraction ``max_missing`` of the layer's (sample, neuron) pairs had no spike, the input weights of
every neuron that stayed silent on some sample of the batch grow by ``bump * w0`` (``w0``: the weight whose PSP
peaks at the threshold). A neuron without spikes has no spike-time gradient at all, so without this a network can
lose an output neuron for good. ``init_mean``/``init_std`` (both or neither) draw the initial input weights from
``N(init_mean, init_std^2) * w0`` instead of the layer's default; ``time_noise`` (seconds) adds Gaussian noise of
that standard deviation to the layer's output spike times during training (Fast & Deep's training noise; it uses
the global RNG, whose state the trainer checkpoints). ``model.dt``/``surrogate``/``init_gain`` are ignored.
Inputs: ``encoding.type: spike_times`` with ``encoding.times`` = keyword arguments of
:func:`spikeforge.encode.spike_times.spike_times` (one spike per input feature plus an optional bias spike).
Loss: ``train.loss.readout`` is ``ttfs``, ``spike_count`` (on a spiking output layer), ``max_membrane`` or
``integral`` (on an ``event_li`` read-out), with ``train.loss.options`` = keyword arguments of the matching loss in
:mod:`spikeforge.train.time_losses` and ``train.loss.logit_scale`` as ``scale`` where the loss has one.

The trainer batches along dim 1, so the encoded batch is laid out ``[K, B, n_in]`` (spike index first, like the
time-major sequences); :class:`EventNetwork` turns it into the engines' ``[B, n_in, K]``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import Tensor, nn

from ..core.checks import SpikeforgeError
from ..encode.spike_times import spike_times
from ..nn.event_readout import EventLI
from . import time_losses

__all__ = ["EVENT_LAYERS", "EVENT_METHODS", "EVENT_READOUTS", "EventNetwork", "EventTask", "build_event_model",
           "encode_spike_times", "validate_event_config"]

EVENT_METHODS = {"ttfs": "exact", "eventprop": "eventprop"}
#: layer keys handled here, not by the layer's constructor
_OWN_KEYS = ("t_bias", "max_missing", "bump", "init_mean", "init_std", "time_noise")
EVENT_LAYERS = ("event_lif", "event_li")
#: readout -> (loss function, needs a spiking output layer)
EVENT_READOUTS = {
    "ttfs": (time_losses.ttfs_cross_entropy, True),
    "spike_count": (time_losses.spike_count_cross_entropy, True),
    "max_membrane": (time_losses.max_membrane_cross_entropy, False),
    "integral": (time_losses.integral_cross_entropy, False),
}


def _event_lif_class() -> type:
    from ..nn.events import EventLIF  # the event engine's module (imported when an event model is built)

    return EventLIF


def _keys(fn: Any) -> set[str]:
    params = inspect.signature(fn).parameters
    return {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}


def _check_keys(kw: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in kw:
        if key not in allowed:
            raise SpikeforgeError(f"unknown key '{key}' in {where}; allowed: {', '.join(sorted(allowed))}.")


def validate_event_config(cfg: Any) -> None:
    """Check an event config (method, layer types and keys, encoding, read-out); raise a teaching error."""
    method = cfg.model.method
    if method not in EVENT_METHODS:
        raise SpikeforgeError(f"model.method must be 'surrogate', {', '.join(map(repr, EVENT_METHODS))}, "
                              f"got {method!r}.")
    if cfg.encoding.type != "spike_times":
        raise SpikeforgeError(f"model.method {method!r} needs encoding.type 'spike_times' (event networks take "
                              f"spike times), got {cfg.encoding.type!r}.")
    _check_keys(cfg.encoding.times, _keys(spike_times), "encoding.times")
    if cfg.quantise.target is not None:
        raise SpikeforgeError(f"quantise.target is not supported with model.method {method!r}; set it to null.")
    hil = getattr(cfg, "hil", None)
    if hil is not None and hil.target is not None:
        raise SpikeforgeError(f"hil.target is not supported with model.method {method!r} (the hardware-in-the-loop "
                              "path runs time-stepped models); set it to null.")
    layers = cfg.model.layers
    if not layers:
        raise SpikeforgeError("model.layers is empty; list at least one event_lif or event_li layer.")
    for i, spec in enumerate(layers):
        where = f"model.layers[{i}]"
        if not isinstance(spec, dict) or spec.get("type") not in EVENT_LAYERS:
            raise SpikeforgeError(f"{where} must be a mapping with type in {list(EVENT_LAYERS)} for model.method "
                                  f"{method!r}, got {spec!r}.")
        if "out" not in spec:
            raise SpikeforgeError(f"{where} needs 'out' (number of neurons).")
        if spec["type"] == "event_li" and i != len(layers) - 1:
            raise SpikeforgeError(f"{where}: event_li is a non-spiking read-out and must be the last layer.")
        kw = {k: v for k, v in spec.items() if k not in ("type", "out", *_OWN_KEYS)}
        if spec["type"] == "event_li" and ("max_missing" in spec or "bump" in spec):
            raise SpikeforgeError(f"{where}: max_missing/bump apply to spiking event_lif layers only.")
        if ("init_mean" in spec) != ("init_std" in spec):
            raise SpikeforgeError(f"{where}: give both init_mean and init_std (units of w0), or neither.")
        if spec["type"] == "event_li" and "time_noise" in spec:
            raise SpikeforgeError(f"{where}: time_noise applies to spiking event_lif layers only.")
        if ("max_missing" in spec) != ("bump" in spec):
            raise SpikeforgeError(f"{where}: give both max_missing (a fraction in [0, 1]) and bump (in units of w0), "
                                  f"or neither.")
        if "max_missing" in spec and not (0 <= spec["max_missing"] <= 1 and spec["bump"] > 0):
            raise SpikeforgeError(f"{where}: max_missing must lie in [0, 1] and bump be > 0, got "
                                  f"{spec['max_missing']!r} and {spec['bump']!r}.")
        if spec.get("t_bias") is not None and not (isinstance(spec["t_bias"], (int, float)) and spec["t_bias"] >= 0):
            raise SpikeforgeError(f"{where}.t_bias must be a time >= 0 in seconds (a bias input spike) or null, "
                                  f"got {spec['t_bias']!r}.")
        if spec["type"] == "event_li":
            _check_keys(kw, _keys(EventLI.__init__) - {"generator"}, where)
    readout = cfg.train.loss.readout
    if readout not in EVENT_READOUTS:
        raise SpikeforgeError(f"train.loss.readout must be one of {list(EVENT_READOUTS)} for event networks, "
                              f"got {readout!r}.")
    fn, spiking = EVENT_READOUTS[readout]
    if spiking == (layers[-1]["type"] == "event_li"):
        want = "a spiking event_lif" if spiking else "an event_li read-out"
        raise SpikeforgeError(f"train.loss.readout {readout!r} needs {want} as the last layer.")
    _check_keys(cfg.train.loss.options, _keys(fn) - {"scale"}, "train.loss.options")


class EventNetwork(nn.Module):
    """A chain of event layers: spiking ``EventLIF`` layers, optionally ending in an ``EventLI`` read-out.

    Shape: ``[K, B, n_in]`` (spike index first, as the trainer batches) -> output spike times ``[B, C, K_out]``
    or read-out membrane ``[B, C, G]``; :meth:`layer_times` also returns every spiking layer's times.
    """

    def __init__(self, *layers: nn.Module, bias_times: list[float | None] | None = None,
                 time_noise: list[float | None] | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.bias_times = list(bias_times) if bias_times is not None else [None] * len(layers)
        self.time_noise = list(time_noise) if time_noise is not None else [None] * len(layers)

    def layer_times(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The output and the spike times ``[B, n, K]`` of every spiking layer."""
        t = x.permute(1, 2, 0)
        spikes = []
        for layer, t_bias, noise in zip(self.layers, self.bias_times, self.time_noise, strict=True):
            if t_bias is not None:  # one extra input channel firing once at t_bias (Fast & Deep's per-layer bias)
                t = torch.cat([t, _bias_channel(t, t_bias)], dim=1)
            t = layer(t)
            if noise and self.training:  # jitter the spike times (missing spikes stay +inf), keep them sorted
                t = torch.sort((t + noise * torch.randn_like(t)).clamp_min(0), dim=-1).values
            if not isinstance(layer, EventLI):
                spikes.append(t)
        return t, spikes

    def forward(self, x: Tensor) -> Tensor:
        return self.layer_times(x)[0]


def _bias_channel(t: Tensor, t_bias: float) -> Tensor:
    """A channel ``[B, 1, K]`` with one spike at ``t_bias`` (the rest ``+inf``)."""
    ch = torch.full((t.shape[0], 1, t.shape[2]), math.inf, dtype=t.dtype, device=t.device)
    ch[:, :, 0] = t_bias
    return ch


def build_event_model(cfg: Any, n_in: int, n_classes: int | None = None) -> EventNetwork:
    """Build the event network of a config for ``n_in`` input channels (raises if the last size is not
    ``n_classes``)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    layers: list[nn.Module] = []
    bias_times: list[float | None] = []
    noise: list[float | None] = []
    n = n_in
    for i, spec in enumerate(cfg.model.layers):
        kw = {k: v for k, v in spec.items() if k not in ("type", "out", *_OWN_KEYS)}
        out = spec["out"]
        bias_times.append(spec.get("t_bias"))
        noise.append(spec.get("time_noise"))
        n += spec.get("t_bias") is not None
        try:
            if spec["type"] == "event_li":
                layers.append(EventLI(n, out, generator=gen, **kw))
            else:
                kw.setdefault("gradient", EVENT_METHODS[cfg.model.method])
                layers.append(_event_lif_class()(n, out, generator=gen, **kw))
            if "init_mean" in spec:
                _init_weights(layers[-1], spec["init_mean"], spec["init_std"], gen)
        except TypeError as err:
            raise SpikeforgeError(f"model.layers[{i}] ({spec['type']}): {err}") from err
        n = out
    if n_classes is not None and n != n_classes:
        raise SpikeforgeError(f"the last layer has {n} neurons, but the data set has {n_classes} classes; set its "
                              f"'out' to {n_classes}.")
    return EventNetwork(*layers, bias_times=bias_times, time_noise=noise)


def _w0(layer: nn.Module) -> float:
    """The weight whose PSP peaks at the threshold (at 1 for a non-spiking ``EventLI`` read-out)."""
    from ..nn.events import psp_peak

    tm = float(torch.as_tensor(layer.tau_mem).max())
    ts = float(torch.as_tensor(layer.tau_syn).max())
    return getattr(layer, "v_th", 1.0) / psp_peak(tm, ts)


@torch.no_grad()
def _init_weights(layer: nn.Module, mean: float, std: float, gen: torch.Generator) -> None:
    w = torch.randn(layer.weight.shape, generator=gen, dtype=layer.weight.dtype)
    layer.weight.copy_(_w0(layer) * (mean + std * w))


def encode_spike_times(x: Tensor, enc_cfg: Any) -> Tensor:
    """Static samples ``[B, *features]`` -> spike times laid out ``[K, B, n_in]`` for the trainer."""
    return spike_times(x, **enc_cfg.times).permute(2, 0, 1)


def encoded_channels(in_shape: tuple[int, ...], enc_cfg: Any) -> tuple[int]:
    """Input channels after :func:`encode_spike_times`."""
    return (math.prod(in_shape) + (1 if enc_cfg.times.get("t_bias") is not None else 0),)


class EventTask:
    """The event path of the trainer: builds the model, runs the forward pass and the per-sample loss, predicts
    classes and counts spikes."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        loss = cfg.train.loss
        self.readout = loss.readout
        self.fn, self.spiking = EVENT_READOUTS[loss.readout]
        self.kw = dict(loss.options)
        if "scale" in _keys(self.fn):
            self.kw["scale"] = loss.logit_scale
        self.grid: Tensor | None = None
        self.bumping = [(spec.get("max_missing"), spec.get("bump")) for spec in cfg.model.layers
                        if spec["type"] == "event_lif"]
        self._last: list[Tensor] = []

    def build(self, in_shape: tuple[int, ...], n_classes: int | None) -> EventNetwork:
        """The event network for inputs of feature shape ``in_shape`` (after :func:`encoded_channels`)."""
        model = build_event_model(self.cfg, math.prod(in_shape), n_classes)
        last = model.layers[-1]
        self.grid = last.grid if isinstance(last, EventLI) else None
        return model

    def forward(self, model: EventNetwork, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``(out, per-sample loss [B], spikes)`` with spikes as ``[K, B, n]`` 0/1 tensors per spiking layer (the
        trainer's spike counting)."""
        out, times = model.layer_times(x)
        if self.readout == "integral":
            per_sample = self.fn(out, self.grid.to(out), y, **self.kw)
        else:
            per_sample = self.fn(out, y, **self.kw)
        spikes = [torch.isfinite(t.detach()).to(out.dtype).permute(2, 0, 1) for t in times]
        if model.training:
            self._last = [t.detach() for t in times]
        return out, per_sample, spikes

    @torch.no_grad()
    def after_step(self, model: EventNetwork) -> None:
        """Weight bumping (see the module docstring) from the spikes of the last training forward pass."""
        spiking = [layer for layer in model.layers if not isinstance(layer, EventLI)]
        for layer, times, (max_missing, bump) in zip(spiking, self._last, self.bumping, strict=False):
            if max_missing is None:
                continue
            fired = torch.isfinite(times[:, :, 0])  # [B, n]
            if 1.0 - fired.float().mean().item() <= max_missing:
                continue
            silent = ~fired.all(dim=0)  # neurons silent on some sample
            layer.weight[silent] += bump * _w0(layer)
        self._last = []

    def scores(self, out: Tensor) -> Tensor:
        """Class scores ``[B, C]`` (larger wins): ``-t_first`` (``-inf`` if silent), spike counts, max membrane or
        the weighted membrane integral."""
        if self.readout == "ttfs":
            return -out[:, :, 0]
        if self.readout == "spike_count":
            return torch.isfinite(out).sum(dim=2).to(out.dtype)
        if self.readout == "max_membrane":
            return out.amax(dim=2)
        return time_losses.integral_logits(out, self.grid.to(out), weighting=self.kw.get("weighting", "exp"),
                                           tau_w=self.kw.get("tau_w"))

    def predict(self, out: Tensor) -> Tensor:
        """Predicted classes ``[B]``; ``-1`` (always wrong) where no output neuron spiked (spiking read-outs)."""
        pred = self.scores(out).argmax(dim=1)
        if self.spiking:
            pred = torch.where(torch.isfinite(out).any(dim=2).any(dim=1), pred, torch.full_like(pred, -1))
        return pred
