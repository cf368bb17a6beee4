"""Spike raster plots: one dot per spike, time on x, neuron index on y."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from spikeforge.core.atomic import atomic_write
from spikeforge.core.checks import (
    SpikeforgeError,
    check_positive,
    check_positive_int,
    check_rank,
    describe,
)

__all__ = ["plot_raster"]


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """Return a Figure bound to the Agg canvas (no pyplot state, no display needed)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, path: str | Path | None) -> None:
    """Save ``fig`` as PNG at ``path`` atomically (temp file in the same dir, then os.replace)."""
    if path is None:
        return
    if not isinstance(path, (str, Path)):
        raise SpikeforgeError(f"path must be a str or pathlib.Path, got {describe(path)}.")
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))


def _as_tensor(name: str, x: object) -> Tensor:
    """Return ``x`` (Tensor or ndarray) as a detached float CPU tensor."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if not isinstance(x, Tensor):
        raise SpikeforgeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {describe(x)}.")
    return x.detach().to("cpu", torch.float32)


def _select_sample(name: str, x: Tensor, sample: int, layout: str) -> Tensor:
    """Validate ``x`` as [T,B,N] or [T,N] and return the [T,N] slice of ``sample``."""
    check_rank(name, x, (2, 3), layout)
    if x.dim() == 2:
        x = x.unsqueeze(1)
    batch = x.shape[1]
    is_int = isinstance(sample, (int, np.integer)) and not isinstance(sample, bool)
    if not is_int or not 0 <= sample < batch:
        raise SpikeforgeError(
            f"sample must be an integer in [0, {batch - 1}] for {name} of shape "
            f"{tuple(x.shape)} (batch size {batch}), got {sample!r}."
        )
    return x[:, sample, :]


def _time_axis(steps: int, dt: float | None) -> tuple[np.ndarray, str]:
    """Return the time values of ``steps`` steps and the x-axis label."""
    if dt is None:
        return np.arange(steps, dtype=float), "time step"
    check_positive("dt", dt)
    return np.arange(steps, dtype=float) * dt, "time (s)"


def _draw_raster(ax: Axes, grid: Tensor, dt: float | None, max_neurons: int) -> None:
    """Draw one [T,N] spike grid on ``ax``, showing at most ``max_neurons`` neurons."""
    steps, n = grid.shape
    shown = min(n, max_neurons)
    times, xlabel = _time_axis(steps, dt)
    t_idx, n_idx = (grid[:, :shown] > 0).nonzero(as_tuple=True)
    ax.scatter(times[t_idx.numpy()], n_idx.numpy(), s=6, marker="o", c="black", linewidths=0)
    step = dt if dt is not None else 1.0
    ax.set_xlim(-0.5 * step, (max(steps, 1) - 0.5) * step)
    ax.set_ylim(-0.5, shown - 0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("neuron" if shown == n else f"neuron (first {shown} of {n})")


def plot_raster(
    spikes: Tensor | np.ndarray | Sequence[Tensor | np.ndarray],
    *,
    sample: int = 0,
    dt: float | None = None,
    max_neurons: int = 200,
    title: str | None = None,
    names: Sequence[str] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Plot a spike raster of one sample, or stacked rasters of several layers.

    Args:
        spikes: ``[T,B,N]`` or ``[T,N]`` tensor/ndarray of 0/1 spikes (or counts; any value > 0
            is a spike), or a list of such arrays, one per layer, drawn as stacked panels.
        sample: Batch index to plot.
        dt: Step length in seconds; when given the x axis is in seconds, else in steps.
        max_neurons: Plot at most this many neurons (the first ones) per panel.
        title: Figure title.
        names: Panel titles for a list of layers (defaults to ``layer 0``, ``layer 1`` ...).
        path: If given, save the figure as a PNG there (parent dirs are created).

    Returns:
        The matplotlib Figure.

    Raises:
        SpikeforgeError: On a wrong rank, an out-of-range ``sample``, a bad ``dt``,
            ``max_neurons`` or ``names``.
    """
    check_positive_int("max_neurons", max_neurons)
    if dt is not None:
        check_positive("dt", dt)
    layered = isinstance(spikes, (list, tuple))
    layers = list(spikes) if layered else [spikes]
    if not layers:
        raise SpikeforgeError("spikes must hold at least one layer, got an empty list.")
    labels = [f"spikes[{i}]" for i in range(len(layers))] if layered else ["spikes"]
    grids = [
        _select_sample(lab, _as_tensor(lab, x), sample, "[T,B,N] or [T,N]")
        for lab, x in zip(labels, layers, strict=True)
    ]
    if names is not None and (isinstance(names, str) or len(names) != len(grids)):
        raise SpikeforgeError(
            f"names must be a sequence of {len(grids)} strings (one per layer), got {names!r}."
        )
    if names is None:
        names = [f"layer {i}" for i in range(len(grids))] if layered else [None]
    fig = _new_figure((8.0, 1.0 + 2.5 * len(grids)))
    axes = fig.subplots(len(grids), 1, sharex=True, squeeze=False)[:, 0]
    for ax, grid, name in zip(axes, grids, names, strict=True):
        _draw_raster(ax, grid, dt, max_neurons)
        if name is not None:
            ax.set_title(str(name))
    for ax in axes[:-1]:
        ax.set_xlabel("")
    if title is not None:
        fig.suptitle(title)
    _save_png(fig, path)
    return fig
