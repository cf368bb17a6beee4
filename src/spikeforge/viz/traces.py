"""Membrane-potential traces: one subplot per neuron, threshold line and spike marks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from spikeforge.core.checks import SpikeforgeError, describe
from spikeforge.viz.raster import _as_tensor, _new_figure, _save_png, _select_sample, _time_axis

__all__ = ["plot_membrane"]


def _thresholds(threshold: float | Tensor | np.ndarray | None, n: int) -> np.ndarray | None:
    """Return one threshold per neuron (length ``n``), or None."""
    if threshold is None:
        return None
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        return np.full(n, float(threshold))
    th = _as_tensor("threshold", threshold).flatten()
    if th.numel() == 1:
        return np.full(n, float(th))
    if th.numel() != n:
        raise SpikeforgeError(
            f"threshold must be a number or hold 1 or N={n} values (one per neuron), got "
            f"{th.numel()} values."
        )
    return th.numpy()


def plot_membrane(
    v: Tensor | np.ndarray,
    *,
    spikes: Tensor | np.ndarray | None = None,
    threshold: float | Tensor | np.ndarray | None = None,
    sample: int = 0,
    neurons: Sequence[int] = (0, 1, 2, 3),
    dt: float | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Plot membrane potential traces of a few neurons of one sample.

    Args:
        v: Membrane potentials, ``[T,B,N]`` (or ``[T,N]``) tensor/ndarray.
        spikes: Optional spikes with the same shape as ``v``; each spike (value > 0) is marked.
        threshold: Optional firing threshold (a number, or one value per neuron), drawn dashed.
        sample: Batch index to plot.
        neurons: Indices of the neurons to plot, one subplot each.
        dt: Step length in seconds; when given the x axis is in seconds, else in steps.
        path: If given, save the figure as a PNG there (parent dirs are created).

    Returns:
        The matplotlib Figure.

    Raises:
        SpikeforgeError: On a wrong rank, mismatched ``spikes`` shape, an out-of-range
            ``sample`` or neuron index, or a bad ``threshold`` or ``dt``.
    """
    v_t = _as_tensor("v", v)
    trace = _select_sample("v", v_t, sample, "[T,B,N] or [T,N]")
    steps, n = trace.shape
    spk = None
    if spikes is not None:
        s_t = _as_tensor("spikes", spikes)
        if s_t.shape != v_t.shape:
            raise SpikeforgeError(
                f"spikes must have the same shape as v {tuple(v_t.shape)}, got {tuple(s_t.shape)}."
            )
        spk = _select_sample("spikes", s_t, sample, "[T,B,N] or [T,N]")
    if isinstance(neurons, (int, np.integer)):
        neurons = (neurons,)
    if isinstance(neurons, str) or not isinstance(neurons, Sequence) or not neurons:
        raise SpikeforgeError(
            f"neurons must be a non-empty sequence of ints, got {describe(neurons)}."
        )
    for i in neurons:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n:
            raise SpikeforgeError(
                f"neurons must hold integers in [0, {n - 1}] (v has N={n} neurons), got {i!r} "
                f"in neurons={tuple(neurons)!r}."
            )
    neurons = [int(i) for i in neurons]
    ths = _thresholds(threshold, n)
    times, xlabel = _time_axis(steps, dt)
    fig = _new_figure((8.0, 0.8 + 1.8 * len(neurons)))
    axes = fig.subplots(len(neurons), 1, sharex=True, squeeze=False)[:, 0]
    for ax, i in zip(axes, neurons, strict=True):
        ax.plot(times, trace[:, i].numpy(), lw=1.0, color="tab:blue", label="v")
        if ths is not None:
            ax.axhline(ths[i], ls="--", lw=1.0, color="tab:gray", label="threshold")
        if spk is not None:
            t_idx = (spk[:, i] > 0).nonzero(as_tuple=True)[0].numpy()
            y = ths[i] if ths is not None else trace[t_idx, i].numpy()
            ax.scatter(
                times[t_idx], np.broadcast_to(y, t_idx.shape), marker="v", s=18,
                color="tab:red", zorder=3, label="spike",
            )
        ax.set_ylabel(f"v[{i}]")
    axes[-1].set_xlabel(xlabel)
    axes[0].legend(loc="upper right", fontsize="small")
    fig.suptitle(f"membrane potential (sample {sample})")
    _save_png(fig, path)
    return fig
