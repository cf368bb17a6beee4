r"""Integer synaptic delays.

* :class:`Delay` delays each channel by its own whole number of steps (axonal delays):
  :math:`y_t[c] = x_{t - d_c}[c]`.
* :class:`DelayedLinear` gives every synapse its own delay:
  :math:`y_t[j] = \sum_i W_{ji}\,x_{t - d_{ji}}[i] + b_j`.

Both keep the last ``max_delay`` input steps as state, so streaming in chunks is exact; inputs before
the first step are zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..core.checks import SpikeforgeError, check_shape_tail
from .base import SNNModule, check_sequence

__all__ = ["Delay", "DelayedLinear"]


def _history(x: Tensor, state: Tensor | None, max_delay: int) -> Tensor:
    """Concatenate the stored last ``max_delay`` steps (zeros at first) with ``x`` on time."""
    if state is None:
        state = x.new_zeros((max_delay, *x.shape[1:]))
    return torch.cat([state, x], dim=0)


def _check_delays(delays: Tensor) -> Tensor:
    if delays.is_floating_point() and not torch.equal(delays, delays.round()):
        raise SpikeforgeError("delays must be whole numbers of time steps, got fractional values.")
    delays = delays.long()
    if bool((delays < 0).any()):
        raise SpikeforgeError(f"delays must be >= 0 steps, got minimum {int(delays.min())}.")
    return delays


class Delay(SNNModule):
    """Delay each channel (last dimension) by an integer number of steps.

    Args:
        delay: one delay for all channels, or one per channel.

    Shape:
        ``[T, B, ..., C]`` -> same.
    """

    stateful = True

    def __init__(self, delay: int | Sequence[int] | Tensor) -> None:
        super().__init__()
        d = _check_delays(torch.as_tensor(delay))
        self.register_buffer("delay", d)
        self.max_delay = int(d.max()) if d.numel() else 0

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_sequence("x", x)
        if self.delay.dim() == 1:
            check_shape_tail("x", x, (self.delay.numel(),), layout="[T, B, ..., channels]")
        t = x.shape[0]
        hist = _history(x, state, self.max_delay)
        if self.delay.dim() == 0:
            start = self.max_delay - int(self.delay)
            out = hist[start:start + t]
        else:
            idx = torch.arange(t, device=x.device)[:, None] + (self.max_delay - self.delay)[None, :]
            idx = idx.view(t, *([1] * (x.dim() - 2)), -1).expand(t, *x.shape[1:])
            out = hist.gather(0, idx)
        return out, hist[hist.shape[0] - self.max_delay:]

    def extra_repr(self) -> str:
        return f"max_delay={self.max_delay}"


class DelayedLinear(SNNModule):
    """Dense synapses, each with its own integer delay.

    Args:
        in_features, out_features: sizes. delays: ``[out, in]`` integer delays in steps (default 0).
        bias: learn a bias.

    Shape:
        ``[T, B, in]`` -> ``[T, B, out]``. Cost grows with the number of distinct delay values.
    """

    stateful = True

    def __init__(self, in_features: int, out_features: int, *,
                 delays: Tensor | Sequence[Sequence[int]] | None = None, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        d = torch.zeros(out_features, in_features, dtype=torch.long) if delays is None else (
            _check_delays(torch.as_tensor(delays)))
        if tuple(d.shape) != (out_features, in_features):
            raise SpikeforgeError(
                f"delays must have shape (out_features, in_features) = "
                f"({out_features}, {in_features}), got {tuple(d.shape)}."
            )
        self.register_buffer("delays", d)
        self.max_delay = int(d.max()) if d.numel() else 0

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_sequence("x", x, min_rank=3)
        check_shape_tail("x", x, (self.linear.in_features,), layout="[T, B, in_features]")
        t = x.shape[0]
        hist = _history(x, state, self.max_delay)
        w = self.linear.weight
        out = None
        for d in torch.unique(self.delays).tolist():
            mask = (self.delays == d).to(w.dtype)
            start = self.max_delay - d
            y = torch.nn.functional.linear(hist[start:start + t], w * mask)
            out = y if out is None else out + y
        if self.linear.bias is not None:
            out = out + self.linear.bias
        return out, hist[hist.shape[0] - self.max_delay:]
