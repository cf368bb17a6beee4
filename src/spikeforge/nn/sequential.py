"""A sequential container that passes each layer's state along.

Plain ``torch.nn`` modules (e.g. ``nn.Linear``) are wrapped in
:class:`~spikeforge.nn.layers.TimeDistributed` automatically.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn.modules import module as torch_module

from ..core.checks import SpikeforgeError
from .base import SNNModule, check_sequence
from .layers import TimeDistributed

__all__ = ["Sequential"]


def _hooked(layer: nn.Module) -> bool:
    """Whether a forward hook (on ``layer``, inside it, or global) could have kept a reference to its output."""
    if torch_module._global_forward_hooks:
        return True
    return any(m._forward_hooks for m in layer.modules())


class Sequential(SNNModule):
    """Chain of layers; ``forward(x, state) -> (out, state)`` where ``state`` is a tuple per layer.

    Shape:
        ``[T, B, *in]`` -> ``[T, B, *out]``.
    """

    stateful = True

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        wrapped = []
        for i, layer in enumerate(layers):
            if isinstance(layer, SNNModule):
                wrapped.append(layer)
            elif isinstance(layer, nn.Module):
                wrapped.append(TimeDistributed(layer))
            else:
                raise SpikeforgeError(
                    f"layer {i} must be a torch.nn.Module, got {type(layer).__name__}."
                )
        self.layers = nn.ModuleList(wrapped)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> nn.Module:
        return self.layers[i]

    def _states(self, state: Any) -> tuple:
        if state is None:
            return (None,) * len(self.layers)
        if not isinstance(state, (tuple, list)) or len(state) != len(self.layers):
            raise SpikeforgeError(
                f"state must be None or a tuple with one entry per layer ({len(self.layers)}), "
                f"got {type(state).__name__} of length "
                f"{len(state) if hasattr(state, '__len__') else '?'}."
            )
        return tuple(state)

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, tuple]:
        """Run every layer in turn.

        Memory: the output of a ``Linear``/``Conv`` layer (``fresh_output``) that feeds a neuron layer
        (``accepts_donation``) is a temporary only this loop holds, so it is donated: the neuron's fused kernel
        keeps its saved membrane there instead of in a new ``[T, B, ...]`` buffer. Not when forward hooks could
        have kept a reference to it.

        Shape:
            ``[T, B, *in]`` -> ``[T, B, *out]``.
        """
        check_sequence("x", x)
        new = []
        owned = False  # whether x is a fresh temporary that only this loop references
        for layer, s in zip(self.layers, self._states(state), strict=True):
            if owned and getattr(layer, "accepts_donation", False):
                x, s = layer(x, s, donate=True)
            else:
                x, s = layer(x, s)
            owned = getattr(layer, "fresh_output", False) and not _hooked(layer)
            new.append(s)
        return x, tuple(new)

    def layer_outputs(self, x: Tensor, state: Any = None) -> tuple[Tensor, tuple, list[Tensor]]:
        """Like ``forward``, plus every layer's output sequence (e.g. hidden spikes for a rate penalty)."""
        check_sequence("x", x)
        new, outs = [], []
        for layer, s in zip(self.layers, self._states(state), strict=True):
            x, s = layer(x, s)
            new.append(s)
            outs.append(x)
        return x, tuple(new), outs

    def trace(self, x: Tensor, state: Any = None) -> tuple[Tensor, tuple, list]:
        """Like ``forward``; the record holds, per layer, ``(output, record or None)``."""
        check_sequence("x", x)
        new, records = [], []
        for layer, s in zip(self.layers, self._states(state), strict=True):
            x, s, rec = layer.trace(x, s)
            new.append(s)
            records.append((x, rec))
        return x, tuple(new), records
