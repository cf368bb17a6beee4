"""Static inputs as spike times for event-driven networks: one spike per input channel, plus a bias spike.

Output format of every encoder here: ``[B, channels, 1]`` spike times in seconds, ``+inf`` where an input does not
fire (the event engine's format: sorted along the last dim, ``+inf`` padded).

* Yin-Yang (Göltz et al. 2021, "Fast & Deep"; Wunderlich & Pehle 2021, EventProp): each value ``v`` of
  ``(x, y, 1 - x, 1 - y)`` fires at ``t_early + v (t_late - t_early)`` -- in Fast & Deep
  ``t = 0.15 + 1.85 v`` in units of ``tau_syn`` -- and one bias channel fires at ``t_bias`` (0.9 ``tau_syn`` in
  Fast & Deep): ``larger_later=True``.
* MNIST-style latency coding: a pixel at or above ``threshold`` fires once, brighter pixels earlier
  (:func:`spikeforge.encode.latency.latency_times`, linear or RC-log mode); darker pixels never fire.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from spikeforge.core.checks import SpikeforgeError, check_min_rank
from spikeforge.encode.latency import latency_times

__all__ = ["spike_times", "yinyang_spike_times"]


def spike_times(x: Tensor, *, t_min: float, t_max: float, mode: str = "linear", threshold: float = 0.0,
                larger_later: bool = False, t_bias: float | None = None) -> Tensor:
    """One spike per input feature (features flattened), optionally one bias spike appended.

    Args:
        x: intensities in ``[0, 1]``.
        t_min, t_max: the coding window in seconds.
        mode, threshold: as in :func:`~spikeforge.encode.latency.latency_times` (inputs below ``threshold``
            never fire).
        larger_later: larger values fire later (``t = t_min + v (t_max - t_min)``, linear mode only) instead of
            earlier.
        t_bias: time of an extra bias spike (a last channel), or None.

    Returns:
        Spike times ``[B, n_features (+1), 1]`` in seconds, ``+inf`` where silent.

    Shape: ``[B, *features]`` -> ``[B, prod(features) (+1), 1]``.
    """
    check_min_rank("x", x, 2, "[B, *features]")
    if larger_later:
        if mode != "linear" or threshold != 0.0:
            raise SpikeforgeError("larger_later=True supports mode='linear' with threshold=0 only "
                                  f"(got mode={mode!r}, threshold={threshold}).")
        x = 1.0 - x
    t = latency_times(x.flatten(1), t_min=t_min, t_max=t_max, mode=mode, threshold=threshold)
    if t_bias is not None:
        if not math.isfinite(t_bias) or t_bias < 0:
            raise SpikeforgeError(f"t_bias must be a finite time >= 0 in seconds, got {t_bias!r}.")
        t = torch.cat([t, t.new_full((t.shape[0], 1), float(t_bias))], dim=1)
    return t.unsqueeze(-1)


def yinyang_spike_times(x: Tensor, *, tau_syn: float, t_early: float = 0.15, t_late: float = 2.0,
                        t_bias: float | None = 0.9) -> Tensor:
    """The Fast & Deep Yin-Yang code: ``t = (t_early + v (t_late - t_early)) tau_syn`` for each of the 4 values,
    and a bias spike at ``t_bias * tau_syn``.

    Shape: ``[B, 4]`` -> ``[B, 5, 1]`` (``[B, 4, 1]`` without bias).
    """
    check_min_rank("x", x, 2, "[B, 4]")
    return spike_times(x, t_min=t_early * tau_syn, t_max=t_late * tau_syn, larger_later=True,
                       t_bias=None if t_bias is None else t_bias * tau_syn)
