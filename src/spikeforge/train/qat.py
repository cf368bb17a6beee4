"""Quantisation-aware training (QAT): run the model with the values its target chip will hold.

Each forward pass extracts the model's graph, compiles it for the target with the target's own quantiser
(calibrated by running maxima of the states -- synaptic currents and membranes -- seen in the previous
batches, so that the chip's int16 states do not saturate where the float model's do not)
and reads back the float values that the chip's integers stand for (:func:`spikeforge.targets.dequantised`):
weights (int8 with a per-matrix shift), thresholds, biases (``v_leak`` + the Linear bias) and time
constants snapped to the chip's bit-shift decays. The model then runs with those values in place of its
own (``torch.func.functional_call``); learned tensors get them straight-through, ``w + (w_q - w).detach()``,
so the gradient updates the float "shadow" weights. Because the values come from the same code that
``spikeforge deploy`` uses, the network trained here is, integer for integer, the one deployed.

What QAT does not model (the emulator reports its effect): the chip's ``>=`` against spikeforge's ``>``
threshold, several spikes per step in hidden neurons, and int16 saturation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.checks import SpikeforgeError
from ..graph import extract_graph
from ..nn.neurons import Neuron
from ..nn.recurrent import Recurrent
from ..nn.sequential import Sequential

__all__ = ["QuantisedModel", "state_peaks"]

Peaks = dict[str, tuple[np.ndarray, np.ndarray]]


def _records_peaks(model: Sequential, x: Tensor, records: list) -> Peaks:
    """Per neuron layer (by graph node name): peak ``|I|`` (its synaptic current, or for neurons without one
    its input current) and peak ``|v|`` over time and batch, per neuron."""
    peaks: Peaks = {}
    prev = x
    for i, (layer, (out, rec)) in enumerate(zip(model.layers, records, strict=True)):
        neuron_rec = getattr(rec, "neuron", rec) if isinstance(layer, Recurrent) else rec
        if isinstance(layer, (Neuron, Recurrent)) and neuron_rec is not None and hasattr(neuron_rec, "v"):
            dims = tuple(range(neuron_rec.v.dim() - 1))
            v = neuron_rec.v.detach().abs().amax(dim=dims)
            cur = getattr(neuron_rec, "i", None)
            if cur is None:
                cur = prev if not isinstance(layer, Recurrent) else torch.zeros_like(neuron_rec.v)
            i_peak = cur.detach().abs().amax(dim=dims)
            peaks[str(i)] = (i_peak.double().cpu().numpy(), v.double().cpu().numpy())
        prev = out
    return peaks


def state_peaks(model: Sequential, x: Tensor) -> Peaks:
    """Calibration for a chip's state ranges: per neuron layer, the peak ``|I|`` and ``|v|`` of the float model on
    the input sequence ``x`` (``[T, B, *features]``), as :func:`spikeforge.targets.compile` takes them."""
    with torch.no_grad():
        _, _, records = model.trace(x)
    return _records_peaks(model, x, records)


class _Trace(nn.Module):
    def __init__(self, model: Sequential) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor):
        return self.model.trace(x)


def _linear_path(model: Sequential, index: int) -> tuple[str, nn.Linear]:
    """Module path and ``nn.Linear`` of the layer that a weight node stands for."""
    layer = model.layers[index]
    for attr in ("module", "linear"):
        inner = getattr(layer, attr, None)
        if isinstance(inner, nn.Linear):
            return f"layers.{index}.{attr}", inner
    raise SpikeforgeError(f"layer {index} ({type(layer).__name__}) is not a Linear layer; QAT quantises "
                          f"Linear weights feeding neurons.")


class QuantisedModel:
    """Run a :class:`~spikeforge.nn.Sequential` with the values of its target chip (see module docstring).

    Args:
        model: the float model (its parameters stay float and keep learning).
        in_shape: per-step input features, e.g. ``(4,)``.
        target: a target that supports QAT, e.g. ``"xylo-audio2"``.
        momentum: of the running state peaks (calibration): ``peak = max(batch peak, momentum * peak)``.

    Calling it returns what ``model.layer_outputs(x)`` returns. ``peaks`` holds the calibration the last
    forward pass used (saved in checkpoints; ``spikeforge deploy`` compiles with it).
    """

    def __init__(self, model: Sequential, in_shape: tuple[int, ...], target: str, momentum: float = 0.95) -> None:
        self.model = model
        self.in_shape = tuple(in_shape)
        self.target = target
        self.momentum = float(momentum)
        self._wrapper = _Trace(model)
        self.config: Any = None
        self.peaks: Peaks | None = None
        self.overrides()  # fail now, with the target's message, if the model does not fit

    def overrides(self) -> dict[str, Tensor]:
        """The tensors (by module path) that stand in for the model's own in the quantised forward pass."""
        from ..targets import dequantised

        was_training = self.model.training
        self.model.eval()  # the graph is the model in eval mode (no dropout)
        try:
            with torch.no_grad():
                graph = extract_graph(self.model, self.in_shape)
        finally:
            self.model.train(was_training)
        self.config, values = dequantised(graph, self.target, self.peaks)
        own = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        out: dict[str, Tensor] = {}

        def put(path: str, value) -> None:
            cur = own[path]
            q = torch.as_tensor(value, dtype=cur.dtype, device=cur.device)
            if q.numel() == cur.numel():
                q = q.reshape(cur.shape)  # else a scalar buffer becomes per-neuron (it broadcasts the same way)
            out[path] = cur + (q - cur).detach() if cur.requires_grad else q

        for name, vals in values.items():
            index = int(name)
            layer = self.model.layers[index]
            if isinstance(layer, Recurrent):
                prefix = f"layers.{index}.neuron"
                w_path, linear = f"layers.{index}.input", layer.input
                put(f"layers.{index}.recurrent.weight", vals["w_rec"])
            else:
                prefix = f"layers.{index}"
                w_path, linear = _linear_path(self.model, int(vals["weight_node"]))
            put(f"{w_path}.weight", vals["weight"])
            if linear.bias is not None:
                put(f"{w_path}.bias", vals["drive"] - own[f"{prefix}.v_leak"].detach().cpu().double().numpy())
            else:
                put(f"{prefix}.v_leak", vals["drive"])
            for key in ("v_th", "tau_mem", "tau_syn"):
                if vals.get(key) is not None and f"{prefix}.{key}" in own:
                    put(f"{prefix}.{key}", vals[key])
        return out

    def __call__(self, x: Tensor):
        """``model.layer_outputs(x)`` with the quantised values (in training mode, also updates ``peaks``)."""
        if self.peaks is None:
            self.peaks = state_peaks(self.model, x)
        overrides = {f"model.{k}": v for k, v in self.overrides().items()}
        out, states, records = torch.func.functional_call(self._wrapper, overrides, (x,), strict=False)
        if self.model.training:
            new = _records_peaks(self.model, x, records)
            self.peaks = {k: tuple(np.maximum(n, self.momentum * o) for n, o in zip(new[k], self.peaks.get(k, new[k]),
                                                                                   strict=True))
                          for k in new}
        return out, states, [r[0] for r in records]
