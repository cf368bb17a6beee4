"""CUDA graphs for a whole spiking model: one replay per forward and one per backward.

A fused scan is one kernel launch per layer and direction, but on a GPU a small model is still dominated by
the host: Python, autograd and a launch of a few microseconds per kernel, while the kernels themselves take
less. :func:`graphed` records the model's forward and backward once into CUDA graphs
(:func:`torch.cuda.make_graphed_callables`) and replays them, so a training step costs two graph launches
whatever the number of layers and kernels.

The usual CUDA-graph rules apply: fixed input shape, dtype and device; the same ``training`` mode as when
captured (the other mode runs the model eagerly); no host synchronisation inside the model. spikeforge's
layers honour the last one: their input checks (finiteness) are skipped while a graph is being captured, and
run as usual when the model runs eagerly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..core.checks import SpikeforgeError, describe

__all__ = ["graphed"]


class _OutputOnly(nn.Module):
    """``model(x)[0]``: a spikeforge model's output without its final state (graphs return tensors only)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, tuple) else out


def graphed(model: nn.Module, sample: Tensor, *, warmup: int = 3) -> Callable[[Tensor], Tensor]:
    """Capture ``model``'s forward and backward into CUDA graphs for inputs shaped like ``sample``.

    Args:
        model: a module on a CUDA device; called as ``model(x)`` and returning a tensor or a tuple whose first
            element is the output (a :class:`spikeforge.nn.Sequential` returns ``(output, state)``; the state
            is dropped).
        sample: an input with the shape, dtype and device of every later call (its values are not kept).
        warmup: eager iterations on a side stream before capture (as :func:`torch.cuda.make_graphed_callables`
            requires; they also build the Triton kernels).

    Returns:
        A callable ``f(x) -> output`` whose forward replays one graph and whose backward (through
        ``output.backward``) replays another, accumulating into the parameters' ``.grad`` as usual.

    Shape:
        ``x`` like ``sample`` (``[T, B, *features]``) -> the model's output.
    """
    if not isinstance(model, nn.Module):
        raise SpikeforgeError(f"model must be a torch.nn.Module, got {describe(model)}.")
    if not isinstance(sample, Tensor) or not sample.is_cuda:
        raise SpikeforgeError(f"sample must be a CUDA tensor (CUDA graphs need a GPU), got {describe(sample)}.")
    if not isinstance(warmup, int) or warmup < 1:
        raise SpikeforgeError(f"warmup must be an int >= 1, got {describe(warmup)}.")
    wrapped = _OutputOnly(model)
    return torch.cuda.make_graphed_callables(wrapped, (sample,), num_warmup_iters=warmup)
