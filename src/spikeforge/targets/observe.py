"""What a target recorded when it ran a graph: the interface of hardware-in-the-loop training.

An :class:`Observer` programs a target (emulated or real) from a float graph
(:func:`spikeforge.graph.extract_graph`), runs an input through it and returns one
:class:`LayerObservation` per neuron layer, in model order. :mod:`spikeforge.train.hil` runs the float model
with these observations injected (forward value = hardware, gradient = software; DESIGN.md, "Hardware
targets", hardware-in-the-loop).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ..core.checks import SpikeforgeError

__all__ = ["LayerObservation", "Observer", "XyloObserver"]


class LayerObservation(NamedTuple):
    """One neuron layer as the target ran it.

    Attributes:
        spikes: ``[T, B, N]`` spike counts per model step.
        v: ``[T, B, N]`` membrane in the float model's units on its ``dt`` grid, or None where the target does
            not let it be observed. ``v[t]`` is the membrane at the end of step ``t`` *before* that step's reset:
            the value the threshold test of step ``t`` sees (a spike at ``t`` shows ``v[t] >= v_th``); the reset
            shows in ``v[t + 1]``. A target that records after the reset adds it back (Xylo: ``V + n * th``).
            For a non-spiking read-out (LI) it is the output membrane, and ``spikes`` are zeros.
    """

    spikes: Tensor
    v: Tensor | None


@runtime_checkable
class Observer(Protocol):
    """Programs a target from a float graph and records what it does."""

    def observe(self, graph, x: Tensor) -> list[LayerObservation]:
        """Program the target from ``graph`` and run input ``x`` ``[T, B, n_in]``; one
        :class:`LayerObservation` per neuron layer, in model order."""
        ...


def _gain(kind: str, dash_mem: np.ndarray, dash_syn: np.ndarray) -> np.ndarray:
    """Chip units per model unit of the membrane, ``V = sigma * g * v`` (see :mod:`.xylo.quantise`)."""
    one_minus_b = 2.0 ** -np.asarray(dash_syn, dtype=np.float64)
    b = 1.0 - one_minus_b
    one_minus_a = 2.0 ** -np.asarray(dash_mem, dtype=np.float64)
    gain = b / one_minus_b if kind == "IF" else b / (one_minus_b * one_minus_a)
    return np.where(b > 0, gain, 1.0)


class XyloObserver:
    """An :class:`Observer` for the bit-accurate Xylo emulator (:class:`~.xylo.XyloEmulator`).

    ``observe`` compiles the graph (the target's own quantiser; with the calibration ``peaks`` when given),
    runs the emulator on the input event counts ``x`` and returns, per neuron layer, the spike counts and the
    membrane ``V`` before the reset (``V + n * threshold``) divided by the layer's scale ``sigma * g``: the
    float model's units.

    Alignment: on the chip a hidden layer's spikes reach the next layer one step later (they go through the
    recurrent matrix, see :mod:`.xylo.compile`), so layer ``k`` (0-based) lags the float model by ``k``
    steps. The input is padded with ``L - 1`` empty steps and layer ``k`` is read from step ``k`` on, which
    puts every layer on the model's time grid.

    Args:
        target: ``"xylo-audio2"`` or ``"xylo-imu"``.
        peaks: calibration of the state ranges (:func:`spikeforge.train.qat.state_peaks`), or None.
        momentum: :meth:`calibrate` keeps ``max(new, momentum * old)`` per neuron (as QAT does).
        device: the emulator's torch device.
    """

    def __init__(self, target: str = "xylo-audio2", peaks: dict | None = None, momentum: float = 0.95,
                 device: str | torch.device | None = None) -> None:
        from .xylo import XYLO_TARGETS

        if target not in XYLO_TARGETS:
            raise SpikeforgeError(f"unknown Xylo target {target!r}; known: {', '.join(XYLO_TARGETS)}.")
        self.target = target
        self.peaks = peaks
        self.momentum = float(momentum)
        self.device = device
        self.config = None

    def calibrate(self, peaks: dict) -> None:
        """Fold the float model's state peaks on a batch into the running calibration."""
        if self.peaks is None:
            self.peaks = {k: tuple(np.asarray(a, dtype=np.float64) for a in v) for k, v in peaks.items()}
            return
        self.peaks = {k: tuple(np.maximum(np.asarray(n, dtype=np.float64), self.momentum * np.asarray(o))
                               for n, o in zip(v, self.peaks.get(k, v), strict=True)) for k, v in peaks.items()}

    def observe(self, graph, x: Tensor) -> list[LayerObservation]:
        """Compile ``graph``, run ``x`` ``[T, B, n_in]`` (event counts) on the emulator, one observation per layer."""
        from .xylo import XyloEmulator, read_graph
        from .xylo import compile as compile_xylo

        net = read_graph(graph)
        config = compile_xylo(graph, self.target, self.peaks)
        self.config = config
        x = torch.as_tensor(x).detach()
        if x.is_floating_point():
            if not bool((x == x.round()).all()) or bool((x < 0).any()):
                raise SpikeforgeError("Xylo takes non-negative integer input event counts per step; encode the "
                                      "input as events (e.g. encoding type 'events').")
            x = x.to(torch.int32)
        steps, batch = int(x.shape[0]), int(x.shape[1])
        lag = len(net.layers) - 1
        padded = torch.cat([x.cpu(), x.new_zeros((lag, batch, *x.shape[2:])).cpu()]) if lag else x.cpu()
        out, rec = XyloEmulator(config, device=self.device).run(padded.reshape(steps + lag, batch, -1))
        info = config.info
        obs = []
        for k, layer in enumerate(net.layers):
            window = slice(k, k + steps)
            if k < lag:
                a, b = info["hidden_layers"][layer.name]
                spikes = rec["spikes"][window, :, a:b]
                vmem = rec["vmem"][window, :, a:b]
                th = np.asarray(config.threshold[a:b], dtype=np.float64)
                scale = info["sigma_hidden"] * _gain(layer.kind, config.dash_mem[a:b], config.dash_syn[a:b, 0])
            else:
                spikes = out[window]
                vmem = rec["vmem_out"][window]
                th = np.asarray(config.threshold_out, dtype=np.float64)
                scale = info["sigma_out"] * _gain(layer.kind, config.dash_mem_out, config.dash_syn_out[:, 0])
            spikes = spikes.to(torch.float32)
            v = (vmem.to(torch.float64) + spikes.double() * torch.as_tensor(th)) / torch.as_tensor(scale)
            if layer.kind == "LI":
                spikes = torch.zeros_like(spikes)
            obs.append(LayerObservation(spikes.contiguous(), v.to(torch.float32).contiguous()))
        return obs
