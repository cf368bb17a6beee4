r"""Losses for spiking networks. Each returns one value per sample (``[B]``) so that a batch split over
processes sums to the same total as one process (see :mod:`spikeforge.train.trainer`).

* :func:`cross_entropy` on a read-out of the output sequence: spike counts, max or mean membrane, or
  first-spike times (earlier is more likely: logits :math:`= -t_\mathrm{first}/(T\,\Delta t)`),
  scaled by ``logit_scale``.
* :func:`mse_membrane`: mean squared error between membrane traces and target traces.
* :func:`rate_regularizer`: :math:`\frac1L\sum_l \mathrm{mean}_n (r_{l,n} - r^*)^2` with
  :math:`r_{l,n}` the spikes per step of neuron n in hidden layer l for each sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.checks import SpikeforgeError, check_rank
from ..encode.readout import READOUTS

__all__ = ["cross_entropy", "logits_from_output", "mse_membrane", "rate_regularizer"]


def logits_from_output(out: Tensor, readout: str, *, logit_scale: float = 1.0) -> Tensor:
    """Reduce an output sequence ``[T, B, C]`` to class scores ``[B, C]``."""
    if readout not in READOUTS:
        raise SpikeforgeError(f"readout must be one of {sorted(READOUTS)}, got {readout!r}.")
    check_rank("out", out, 3, layout="[T, B, classes]")
    if readout == "first_spike_time":
        scores = -READOUTS[readout](out) / out.shape[0]
    else:
        scores = READOUTS[readout](out)
    return scores * logit_scale


def cross_entropy(out: Tensor, labels: Tensor, readout: str, *, logit_scale: float = 1.0) -> Tensor:
    """Per-sample cross-entropy of the read-out. Shape: out ``[T, B, C]``, labels ``[B]`` -> ``[B]``."""
    logits = logits_from_output(out, readout, logit_scale=logit_scale)
    if labels.shape != logits.shape[:1]:
        raise SpikeforgeError(
            f"labels must have shape [B] = [{logits.shape[0]}], got {tuple(labels.shape)}."
        )
    return F.cross_entropy(logits, labels, reduction="none")


def mse_membrane(v: Tensor, target: Tensor) -> Tensor:
    """Per-sample mean squared error between traces. Shape: ``[T, B, ...]`` twice -> ``[B]``."""
    if v.shape != target.shape:
        raise SpikeforgeError(
            f"target must have the shape of the membrane trace {tuple(v.shape)}, got {tuple(target.shape)}."
        )
    return (v - target).pow(2).transpose(0, 1).reshape(v.shape[1], -1).mean(dim=1)


def rate_regularizer(spikes: Sequence[Tensor], target: float = 0.0) -> Tensor:
    """Per-sample firing-rate penalty over hidden layers. Shape: each ``[T, B, ...]`` -> ``[B]``."""
    if not spikes:
        raise SpikeforgeError("rate_regularizer needs at least one hidden spiking layer's spikes.")
    terms = []
    for z in spikes:
        rate = z.mean(dim=0).reshape(z.shape[1], -1)  # spikes per step, [B, N]
        terms.append((rate - target).pow(2).mean(dim=1))
    return torch.stack(terms).mean(dim=0)
