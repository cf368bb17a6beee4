"""Delta (send-on-delta, threshold-crossing) coding of a time series.

Each channel keeps a reference level ``r``. With threshold ``theta > 0``, on every step ``t``::

    d_t     = s_t - r_{t-1}
    on_t    = 1[d_t >= theta]
    off_t   = 1[d_t <= -theta]
    r_t     = r_{t-1} + theta * (on_t - off_t)

At most one spike per polarity and step is emitted, and the reference moves by exactly one
``theta`` per spike. A jump larger than ``theta`` is therefore sent as a burst over the following
steps (the encoder catches up one threshold per step), so the number of ON minus OFF spikes always
tracks ``(s_t - r_0) / theta`` to within the spikes still owed. With ``off_spikes=False`` the
reference still follows the signal downwards, only the OFF events are not emitted, so the ON
output equals the ON channel of ``off_spikes=True``.

The initial reference ``r_0`` is the first sample ``s_0`` unless a ``state`` is given; the returned
state is the last reference level, so encoding a long series in chunks (feeding back the state)
gives exactly the same spikes as one call on the whole series.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from spikeforge.core.checks import SpikeforgeError, check_finite, check_min_rank, check_positive, describe
from spikeforge.encode.rate import _as_float

__all__ = ["Delta", "delta"]


def _check_state(state: Tensor, signal: Tensor) -> Tensor:
    """Validate a reference-level state against ``signal`` and return it in its dtype/device."""
    if not isinstance(state, Tensor):
        raise SpikeforgeError(
            f"state must be None or the reference-level tensor returned by a previous call, got "
            f"{describe(state)}."
        )
    if tuple(state.shape) != tuple(signal.shape[1:]):
        raise SpikeforgeError(
            f"state must have shape {tuple(signal.shape[1:])} ([B, *features], the signal without "
            f"its time axis), got shape {tuple(state.shape)}."
        )
    check_finite("state", state)
    return state.to(dtype=signal.dtype, device=signal.device)


def delta(
    signal: Tensor,
    *,
    threshold: float | Tensor,
    off_spikes: bool = True,
    state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Send-on-delta coding: a spike whenever the signal moves one threshold from its reference.

    See the module docstring for the update equations.

    Args:
        signal: Finite time series (integer data is converted to float).
        threshold: Positive step size; a number or a tensor broadcastable to ``[B, *features]``
            (e.g. one threshold per channel).
        off_spikes: Emit OFF (decrease) spikes on a last polarity axis ``(ON, OFF)``; when False
            only ON spikes are returned, without a polarity axis.
        state: Reference levels from a previous call; None starts from the first sample.

    Returns:
        ``(spikes, state)``: float spikes of zeros and ones, and the reference levels after the
        last step (pass them back as ``state`` to continue the stream).

    Shape:
        - signal: ``[T, B, *features]``
        - state: ``[B, *features]``
        - spikes: ``[T, B, *features, 2]`` (ON, OFF) if ``off_spikes`` else ``[T, B, *features]``

    Raises:
        SpikeforgeError: on a rank below 2, NaN/inf, a non-positive threshold or a state of the
            wrong shape.
    """
    check_min_rank("signal", signal, 2, "[T, B, *features]")
    signal = _as_float(signal)
    check_finite("signal", signal)
    check_positive("threshold", threshold)
    theta = torch.as_tensor(threshold, dtype=signal.dtype, device=signal.device)
    channels = tuple(signal.shape[1:])
    try:
        fits = torch.broadcast_shapes(theta.shape, channels) == channels
    except RuntimeError:
        fits = False
    if not fits:
        raise SpikeforgeError(
            f"threshold must be a number or broadcast to {channels} ([B, *features]), got shape "
            f"{tuple(theta.shape)}."
        )
    ref = signal[0].detach().clone() if state is None else _check_state(state, signal).clone()
    signal = signal.detach()
    on_list: list[Tensor] = []
    off_list: list[Tensor] = []
    for s_t in signal:
        d = s_t - ref
        on = (d >= theta).to(signal.dtype)
        off = (d <= -theta).to(signal.dtype)
        ref = ref + theta * (on - off)
        on_list.append(on)
        off_list.append(off)
    on_spikes = torch.stack(on_list)
    if not off_spikes:
        return on_spikes, ref
    return torch.stack([on_spikes, torch.stack(off_list)], dim=-1), ref


class Delta(nn.Module):
    """Module form of :func:`delta`; threshold and polarity are fixed at construction.

    Args:
        threshold: Positive step size (number or tensor broadcastable to ``[B, *features]``).
        off_spikes: Also emit OFF spikes on a last ``(ON, OFF)`` axis.

    Shape:
        - input: ``[T, B, *features]``
        - output: ``[T, B, *features, 2]`` if ``off_spikes`` else ``[T, B, *features]``
    """

    def __init__(self, threshold: float | Tensor, *, off_spikes: bool = True) -> None:
        super().__init__()
        check_positive("threshold", threshold)
        self.threshold = threshold
        self.off_spikes = off_spikes

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode ``x``; returns ``(spikes, state)`` as :func:`delta` does."""
        return delta(x, threshold=self.threshold, off_spikes=self.off_spikes, state=state)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, off_spikes={self.off_spikes}"
