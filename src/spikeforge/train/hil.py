r"""Hardware-in-the-loop (HIL) training: the forward pass runs on a target, the backward pass in software.

Every forward pass extracts the graph of the current float model (:func:`spikeforge.graph.extract_graph`),
lets an :class:`~spikeforge.targets.observe.Observer` program the target with it and run the batch
(:meth:`~spikeforge.targets.observe.Observer.observe`), and then runs the float model once more with what the
target recorded *injected* per layer and per step -- straight through, as hxtorch.snn's ``Unterjubel`` does
(docs/hardware-targets.md, section 3.2): the forward value is the hardware's, the gradient the software's.

Per neuron layer and step ``t``, with ``z_hw``, ``v_hw`` the target's spikes and membrane (before the step's
reset) and the software membrane ``v_sw`` integrated from the layer's input (which is the previous layer's
*hardware* spikes)::

    v = unterjubel(v_sw, v_hw)             # forward: v_hw, backward: d/dv_sw = 1   (only where v is observed)
    z = unterjubel(spike(v - v_th), z_hw)  # surrogate derivative evaluated at the hardware membrane
    state.v = v                            # software reset skipped: v_hw[t + 1] already contains it

Where the target gives no membrane (``v`` is None) the software membrane runs on, is compared with the
threshold for the surrogate derivative, and is reset by the *hardware* spikes. The spikes passed to the
next layer are the hardware's, so the whole forward pass -- and the read-out (an LI layer's membrane, where
observed) -- is the target's. With an observer that returns the float model's own spikes and membranes,
training in the loop is training in software, output for output and gradient for gradient (tests/test_hil.py);
the reset's gradient is the same too as long as it is detached (``detach_reset=True``, the default).

One switch: :func:`in_the_loop` wraps a model (``hil(x)`` as ``model(x)``; ``layer_outputs``/``trace`` too), and
the trainer takes ``hil: {target: ..., instance: ...}`` in its config (or ``Trainer(cfg, target=observer)``)
while everything else stays the same. :func:`make_observer` builds an observer by target name.

Not covered: layers the graph cannot hold (see :mod:`spikeforge.graph`), and ``Recurrent`` layers (their own
time loop steps the neuron; it has no injection hook yet).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..core.checks import SpikeforgeError, describe
from ..graph import extract_graph
from ..nn.neurons import Neuron
from ..nn.recurrent import Recurrent
from ..nn.sequential import Sequential
from ..targets.observe import LayerObservation, Observer
from .qat import state_peaks

__all__ = ["InTheLoop", "Observer", "Unterjubel", "hil_from_config", "in_the_loop", "make_observer", "neuron_layers",
           "unterjubel"]


class Unterjubel(torch.autograd.Function):
    """``forward(software, hardware) = hardware`` exactly; ``backward``: the gradient goes to ``software``."""

    @staticmethod
    def forward(ctx, software: Tensor, hardware: Tensor) -> Tensor:  # noqa: D102
        return hardware.to(software.dtype).clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        return grad, None


def unterjubel(software: Tensor, hardware: Tensor) -> Tensor:
    """The hardware value with the software tensor's gradient (hxtorch's ``Unterjubel``)."""
    if hardware.shape != software.shape:
        raise SpikeforgeError(f"injected hardware values have shape {tuple(hardware.shape)}, the software ones "
                              f"{tuple(software.shape)}.")
    return Unterjubel.apply(software, hardware.detach())


class _InjectedStep:
    """The model's step with one layer's observation injected; called once per time step, in order."""

    def __init__(self, step: Callable, spec, spikes: Tensor, v: Tensor | None) -> None:
        self.step, self.spec, self.spikes, self.v = step, spec, spikes, v
        self.no_reset = None if spec is None else dataclasses.replace(spec, reset="none")
        self.t = 0

    def __call__(self, spec, p, s, x: Tensor):
        t = self.t
        if t >= self.spikes.shape[0]:
            raise SpikeforgeError(f"the observation has {self.spikes.shape[0]} steps; the layer ran more.")
        self.t += 1
        v_hw = None if self.v is None else self.v[t]
        if self.spec is None:  # non-spiking read-out (LI): the output is the membrane
            out, ns = self.step(spec, p, s, x)
            if v_hw is None:
                return out, ns
            v = unterjubel(out, v_hw.reshape(out.shape))
            return v, ns._replace(v=v)
        z_hw = self.spikes[t].reshape(x.shape)
        v_hw = None if v_hw is None else v_hw.reshape(x.shape)
        ref = getattr(s, "ref", None)
        # integrate and fire without the reset: ns.v is the software membrane before the reset
        z_sw, ns = self.step(self.no_reset, p, s, x)
        fs = self.spec
        if v_hw is not None:
            v = unterjubel(ns.v, v_hw)
            z_sw = fs.surrogate(v - p.v_th)  # the surrogate derivative at the hardware membrane
            if ref is not None:
                z_sw = z_sw * (ref <= 0).to(v.dtype)
            if fs.max_spikes > 1:
                z_sw = z_sw + _extra(v, p.v_th, z_sw, fs.max_spikes)
            z = unterjubel(z_sw, z_hw)
            # the software reset is skipped: the next observed membrane contains it
            return z, ns._replace(v=v, ref=_refractory(fs, ref, z_hw))
        z = unterjubel(z_sw, z_hw)
        v = ns.v
        first = (z_hw > 0).to(v.dtype) if fs.reset == "value" else z
        zr = first.detach() if fs.detach_reset else (z - z.detach() + first.detach())
        if fs.reset == "subtract":
            v = v - zr * p.v_th
        elif fs.reset == "value":
            v = v - zr * (v - p.v_reset)
        return z, ns._replace(v=v, ref=_refractory(fs, ref, z_hw))


def _extra(v: Tensor, v_th: Tensor, z: Tensor, max_spikes: int) -> Tensor:
    from ..dynamics.common import _extra_spikes

    return _extra_spikes(v, v_th, z, max_spikes)


def _refractory(spec, ref: Tensor | None, z_hw: Tensor) -> Tensor | None:
    """The refractory counter after the step, from the step's counter ``ref`` and the hardware spikes."""
    if ref is None:
        return None
    return torch.where(z_hw > 0, torch.full_like(ref, spec.refractory), (ref - 1).clamp(min=0))


def neuron_layers(model: Sequential) -> list[tuple[int, Neuron]]:
    """The neuron layers of ``model`` in order, as ``(index, layer)``; refuses what HIL cannot inject into."""
    if not isinstance(model, Sequential):
        raise SpikeforgeError(f"hardware-in-the-loop training takes a spikeforge.nn.Sequential, got "
                              f"{describe(model)}.")
    out = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Recurrent):
            raise SpikeforgeError(f"layer {i} (Recurrent): hardware-in-the-loop injection is built for feed-forward "
                                  f"neuron layers; a Recurrent layer steps its neuron in its own loop.")
        if isinstance(layer, Neuron):
            out.append((i, layer))
    if not out:
        raise SpikeforgeError("the model has no neuron layers to run on a target.")
    return out


class InTheLoop(nn.Module):
    """``model`` with its forward pass run on a target through ``observer`` (see the module docstring).

    Args:
        model: the float model; its parameters are this module's and keep learning.
        observer: programs and runs the target (:class:`~spikeforge.targets.observe.Observer`).
        calibrate: before each observation in training mode, hand the float model's state peaks on the batch to
            an observer that has ``calibrate(peaks)`` (e.g. a Xylo observer choosing its int16 scales).

    Calling it (or :meth:`layer_outputs`, :meth:`trace`) runs the model as ``model`` would, with the target's
    values injected. ``last`` holds the latest observations.
    """

    def __init__(self, model: Sequential, observer: Observer, *, calibrate: bool = True) -> None:
        super().__init__()
        if not callable(getattr(observer, "observe", None)):
            raise SpikeforgeError(f"observer must have observe(graph, x) (spikeforge.targets.observe.Observer), "
                                  f"got {describe(observer)}.")
        self.model = model
        self.observer = observer
        self.calibrate = calibrate
        self.layers = neuron_layers(model)
        self.last: list[LayerObservation] | None = None

    def observe(self, x: Tensor) -> list[LayerObservation]:
        """Program the target from the current model and run ``x`` on it; the observations, checked."""
        was_training = self.model.training
        self.model.eval()  # the graph is the model in eval mode (no dropout)
        try:
            with torch.no_grad():
                graph = extract_graph(self.model, tuple(x.shape[2:]))
                if self.calibrate and was_training and callable(getattr(self.observer, "calibrate", None)):
                    self.observer.calibrate(state_peaks(self.model, x))
                obs = list(self.observer.observe(graph, x.detach()))
        finally:
            self.model.train(was_training)
        if len(obs) != len(self.layers):
            raise SpikeforgeError(f"the observer returned {len(obs)} layer observations; the model has "
                                  f"{len(self.layers)} neuron layers (layers {[i for i, _ in self.layers]}).")
        return obs

    @contextmanager
    def injected(self, obs: list[LayerObservation], like: Tensor) -> Iterator[None]:
        """Within the block, the model's neuron layers run with ``obs`` injected (see the module docstring)."""
        hooks = []
        steps = like.shape[0]
        batch = like.shape[1]
        for (i, layer), ob in zip(self.layers, obs, strict=True):
            spikes = _as_layer(f"layer {i}: spikes", ob.spikes, steps, batch, like)
            v = None if ob.v is None else _as_layer(f"layer {i}: v", ob.v, steps, batch, like)
            hooks.append((layer, _hook(layer, spikes, v)))
        try:
            for layer, hook in hooks:
                layer.step_hook = hook
            yield
        finally:
            for layer, _ in hooks:
                del layer.step_hook  # back to the class default (None)

    def layer_outputs(self, x: Tensor, state: Any = None):
        """``model.layer_outputs(x)`` with the target's observations injected."""
        obs = self.observe(x)
        self.last = obs
        with self.injected(obs, x):
            return self.model.layer_outputs(x, state)

    def trace(self, x: Tensor, state: Any = None):
        """``model.trace(x)`` with the target's observations injected."""
        obs = self.observe(x)
        self.last = obs
        with self.injected(obs, x):
            return self.model.trace(x, state)

    def forward(self, x: Tensor, state: Any = None):
        out, new, _ = self.layer_outputs(x, state)
        return out, new


def _hook(layer: Neuron, spikes: Tensor, v: Tensor | None):
    def hook(step):
        return _InjectedStep(step, layer.fire_spec, spikes, v)
    return hook


def _as_layer(what: str, t: Tensor, steps: int, batch: int, like: Tensor) -> Tensor:
    t = torch.as_tensor(t)
    if t.dim() < 2 or t.shape[0] != steps or t.shape[1] != batch:
        raise SpikeforgeError(f"{what} of the observation has shape {tuple(t.shape)}; expected [T={steps}, "
                              f"B={batch}, N].")
    return t.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)


def in_the_loop(model: Sequential, observer: Observer, *, calibrate: bool = True) -> InTheLoop:
    """``model`` run on a target through ``observer``, trained with software gradients: the one-line switch.

    ``hil = in_the_loop(model, XyloObserver())``, then ``out, _ = hil(x)`` where ``model(x)`` was; the optimiser
    keeps ``model.parameters()`` (they are ``hil``'s too)."""
    return InTheLoop(model, observer, calibrate=calibrate)


def make_observer(target: str, **kwargs) -> Observer:
    """An observer by target name: ``"xylo-audio2"``/``"xylo-imu"`` (bit-accurate Xylo emulator) or ``"bss2"``
    (the BrainScaleS-2-like analog target; ``instance=`` picks the emulated chip); ``kwargs`` go to its
    constructor."""
    from ..targets.observe import XyloObserver
    from ..targets.xylo import XYLO_TARGETS

    if target in XYLO_TARGETS:
        return XyloObserver(target, **kwargs)
    if target == "bss2":
        try:
            from ..targets.bss2 import BSS2Chip
        except ImportError as err:
            raise SpikeforgeError(f"the bss2 target is not available: {err}") from err
        return BSS2Chip(**kwargs)
    raise SpikeforgeError(f"unknown hardware-in-the-loop target {target!r}; known: {', '.join(XYLO_TARGETS)}, bss2.")


def hil_from_config(model: Sequential, cfg, target: Observer | None = None) -> InTheLoop | None:
    """The trainer's switch: ``target`` (an observer) if given, else the config's ``hil`` section
    (``hil.target``: null -> None, software training)."""
    hil = getattr(cfg, "hil", None)
    if target is None and (hil is None or hil.target is None):
        return None
    if getattr(cfg, "quantise", None) is not None and cfg.quantise.target:
        raise SpikeforgeError("hil and quantise.target are exclusive: training in the loop already runs the target's "
                              "own quantisation; set quantise.target to null.")
    method = getattr(getattr(cfg, "model", None), "method", "surrogate")
    if method != "surrogate":
        raise SpikeforgeError(f"hil runs time-stepped models (model.method: surrogate); model.method is {method!r}.")
    if target is None:
        kwargs = dict(hil.options)
        if hil.instance is not None:
            kwargs["instance"] = hil.instance
        try:
            target = make_observer(hil.target, **kwargs)
        except TypeError as err:
            raise SpikeforgeError(f"hil: the {hil.target!r} observer does not take these arguments "
                                  f"({sorted(kwargs)}): {err}") from err
    return InTheLoop(model, target)
