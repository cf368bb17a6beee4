"""NeuroBench-compatible cost metrics, counted as the ``neurobench`` package (2.3) counts them.

* **footprint**: bytes of every parameter and buffer (``numel * element_size``).
* **connection sparsity**: zero weights / all weights over the connection layers (``nn.Linear``,
  ``nn.Conv1d/2d/3d``, and ``nn.RNNBase`` / ``nn.RNNCellBase`` with their biases), rounded to 4 decimals.
* **activation sparsity**: zero outputs / all outputs of the activation layers (every neuron layer and
  every wrapped ``nn.ReLU`` / ``nn.Sigmoid``) over all time steps and samples.
* **synaptic operations**: per connection layer and time step, the layer is applied with its non-zero
  weights set to 1, its bias set to 0, to its input with non-zero entries set to 1; the sum of the result
  is the number of effective operations. They are ACs when that step's input (the whole batch) holds only
  values in {-1, 0, 1}, MACs otherwise. ``dense`` repeats the count with every weight and every input set
  to 1. Biases are not counted. All three are summed over time steps and divided by the batch size.

NeuroBench steps a network one time step at a time (``SNNTorchModel``), so the AC/MAC choice is made per
layer call, i.e. per time step; spikeforge folds time into the batch for speed, so here it is made per
time step explicitly. The recurrent synapses of :class:`~spikeforge.nn.Recurrent` are a connection layer
whose input at step ``t`` is the layer's own spikes of step ``t - 1`` (zeros at ``t = 0``), as in snnTorch's
``RLeaky``. Counts are computed in float64 so they stay exact integers on large layers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..core.checks import SpikeforgeError
from ..nn import Dropout, Neuron, Recurrent, Sequential, SNNModule, TimeDistributed
from ..nn.delay import Delay

__all__ = ["activation_sparsity", "connection_sparsity", "footprint", "synaptic_operations"]

CONNECTION_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
ACTIVATIONS = (nn.ReLU, nn.Sigmoid)
_PASS_THROUGH = (nn.Flatten, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                 nn.AvgPool3d, nn.Identity)


def footprint(model: nn.Module) -> int:
    """Memory footprint in bytes: every parameter and buffer, ``numel * element_size``."""
    tensors = list(model.parameters()) + list(model.buffers())
    return int(sum(t.numel() * t.element_size() for t in tensors))


def _rnn_weight_names(module: nn.Module) -> list[str]:
    if isinstance(module, nn.RNNCellBase):
        return ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if module.bias else [])
    names = []
    for i in range(module.num_layers):
        base = ["weight_ih_l{}{}", "weight_hh_l{}{}"]
        if module.bias:
            base += ["bias_ih_l{}{}", "bias_hh_l{}{}"]
        if module.proj_size > 0:
            base += ["weight_hr_l{}{}"]
        names += [n.format(i, "") for n in base]
        if module.bidirectional:
            names += [n.format(i, "_reverse") for n in base]
    return names


def _zeros_and_weights(module: nn.Module) -> tuple[int, int]:
    children = list(module.children())
    if children:
        counts = [_zeros_and_weights(c) for c in children]
        return sum(z for z, _ in counts), sum(n for _, n in counts)
    if isinstance(module, CONNECTION_LAYERS):
        return int((module.weight == 0).sum()), module.weight.numel()
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        tensors = [getattr(module, name) for name in _rnn_weight_names(module)]
        return int(sum(int((t == 0).sum()) for t in tensors)), sum(t.numel() for t in tensors)
    return 0, 0


def connection_sparsity(model: nn.Module) -> float:
    """Fraction of zero weights in the connection layers, rounded to 4 decimals (as NeuroBench).

    Raises:
        SpikeforgeError: the model has no connection layer (NeuroBench would divide by zero).
    """
    zeros, total = _zeros_and_weights(model)
    if total == 0:
        raise SpikeforgeError(
            f"{type(model).__name__} has no connection layer (Linear, Conv1d/2d/3d, RNN); connection "
            "sparsity is undefined."
        )
    return round(zeros / total, 4)


def _layers(model: nn.Module) -> list[nn.Module]:
    """The flat list of layers of a (possibly nested) Sequential."""
    if isinstance(model, Sequential):
        return [leaf for layer in model.layers for leaf in _layers(layer)]
    if isinstance(model, SNNModule):
        return [model]
    raise SpikeforgeError(
        f"expected a spikeforge.nn.Sequential or layer, got {type(model).__name__}; wrap torch modules in "
        "spikeforge.nn.Sequential."
    )


def _walk(model: nn.Module, x: Tensor):
    """Yield ``(layer, input, output)`` for every layer, running the model once in eval mode (as NeuroBench
    does; the training flags are restored afterwards) without gradients."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            for layer in _layers(model):
                out, _ = layer(x, None)
                yield layer, x, out
                x = out
    finally:
        for m, mode in modes.items():
            m.training = mode


def _is_activation(layer: nn.Module) -> bool:
    if isinstance(layer, Neuron):
        return True
    return isinstance(layer, TimeDistributed) and isinstance(layer.module, ACTIVATIONS)


def _check_input(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise SpikeforgeError(
            f"x must be a time-major tensor [T, B, *features], got "
            f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}."
        )


def activation_sparsity(model: nn.Module, x: Tensor) -> float:
    """Fraction of zero outputs of the activation layers over all time steps and samples.

    Activation layers: every neuron layer (including the one inside ``Recurrent``; a non-spiking ``LI``
    counts its membrane output) and every wrapped ``nn.ReLU`` / ``nn.Sigmoid``. Returns 0.0 when there is
    none (as NeuroBench).

    Shape:
        ``x``: ``[T, B, *features]``.
    """
    _check_input(x)
    nonzero = total = 0
    for layer, _, out in _walk(model, x):
        if _is_activation(layer) or isinstance(layer, Recurrent):
            nonzero += int(torch.count_nonzero(out))
            total += out.numel()
    if total == 0:
        return 0.0
    return (total - nonzero) / total


def _binary(t: Tensor, *, all_ones: bool) -> Tensor:
    if all_ones:
        return torch.ones_like(t, dtype=torch.float64)
    return (t != 0).to(torch.float64)


def _ops_per_step(layer: nn.Module, weight: Tensor, x: Tensor, *, dense: bool) -> Tensor:
    """Operations of one connection layer at every step: ``[T]`` (float64, exact integers)."""
    t, b = x.shape[:2]
    params = {"weight": _binary(weight, all_ones=dense)}
    if getattr(layer, "bias", None) is not None:
        params["bias"] = torch.zeros_like(layer.bias, dtype=torch.float64)
    xin = _binary(x, all_ones=dense).reshape(t * b, *x.shape[2:])
    y = functional_call(layer, params, (xin,))
    return y.reshape(t, -1).sum(dim=1)


def _spiking_steps(x: Tensor) -> Tensor:
    """Per step: True when the whole batch's input holds only -1, 0 and 1."""
    ok = (x == 0) | (x == 1) | (x == -1)
    return ok.reshape(x.shape[0], -1).all(dim=1)


def _connections(layer: nn.Module, x: Tensor, out: Tensor) -> list[tuple[nn.Module, Tensor, Tensor]]:
    """The connection layers inside ``layer`` as ``(torch layer, weight, input sequence)``."""
    if isinstance(layer, TimeDistributed):
        if isinstance(layer.module, CONNECTION_LAYERS):
            return [(layer.module, layer.module.weight, x)]
        if isinstance(layer.module, (*_PASS_THROUGH, *ACTIVATIONS)):
            return []
    elif isinstance(layer, Recurrent):
        z_prev = torch.cat([torch.zeros_like(out[:1]), out[:-1]], dim=0)
        return [(layer.input, layer.input.weight, x), (layer.recurrent, layer._w_rec(), z_prev)]
    elif isinstance(layer, (Neuron, Dropout, Delay)):
        return []
    raise SpikeforgeError(
        f"synaptic operations do not support {type(layer).__name__} layers yet; supported: Linear, Conv "
        "(TimeDistributed nn.Linear / nn.Conv1d/2d/3d), Recurrent, neurons, pooling, Flatten, Dropout, Delay."
    )


def synaptic_operations(model: nn.Module, x: Tensor) -> dict[str, float]:
    """Effective MACs, effective ACs and dense operations per sample (NeuroBench ``SynapticOperations``).

    Returns:
        ``{"effective_macs", "effective_acs", "dense"}``, each the total over all time steps and
        samples divided by the batch size ``B``.

    Shape:
        ``x``: ``[T, B, *features]``.
    """
    _check_input(x)
    macs = acs = dense = 0.0
    for layer, inp, out in _walk(model, x):
        for module, weight, seq in _connections(layer, inp, out):
            ops = _ops_per_step(module, weight, seq, dense=False)
            spiking = _spiking_steps(seq)
            acs += float(ops[spiking].sum())
            macs += float(ops[~spiking].sum())
            dense += float(_ops_per_step(module, weight, seq, dense=True).sum())
    b = x.shape[1]
    return {"effective_macs": macs / b, "effective_acs": acs / b, "dense": dense / b}
