"""Learning curves: loss keys on one axis, accuracy keys on another."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from spikeforge.core.checks import SpikeforgeError, describe
from spikeforge.viz.raster import _new_figure, _save_png

__all__ = ["plot_learning_curves"]


def _number(value: object) -> float | None:
    """Return ``value`` as a finite float, or None when it is missing or not numeric."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def plot_learning_curves(
    history: Sequence[Mapping[str, object]], *, path: str | Path | None = None
) -> Figure:
    """Plot per-epoch training curves.

    Keys containing ``loss`` (e.g. ``train_loss``, ``val_loss``) share the left axis and keys
    containing ``acc`` (e.g. ``train_acc``, ``val_acc``, ``test_acc``) the right one. The x axis
    is the ``epoch`` value of each row, or the row position (from 1) where it is missing. Keys
    missing from some rows, or holding non-numeric values, are skipped for those rows.

    Args:
        history: One dict per epoch.
        path: If given, save the figure as a PNG there (parent dirs are created).

    Returns:
        The matplotlib Figure.

    Raises:
        SpikeforgeError: If ``history`` is empty, is not a sequence of dicts, or has no loss or
            accuracy key.
    """
    if isinstance(history, Mapping) or not isinstance(history, Sequence):
        raise SpikeforgeError(
            f"history must be a list of dicts (one per epoch), got {describe(history)}."
        )
    if not history:
        raise SpikeforgeError("history must hold at least one epoch, got an empty list.")
    for i, row in enumerate(history):
        if not isinstance(row, Mapping):
            raise SpikeforgeError(f"history[{i}] must be a dict, got {describe(row)}.")
    keys = list(dict.fromkeys(k for row in history for k in row if isinstance(k, str)))
    groups = {
        "loss": [k for k in keys if "loss" in k.lower()],
        "accuracy": [k for k in keys if "acc" in k.lower() and "loss" not in k.lower()],
    }
    groups = {label: ks for label, ks in groups.items() if ks}
    if not groups:
        raise SpikeforgeError(
            f"history has no loss or accuracy keys (names containing 'loss' or 'acc'); "
            f"got keys {keys}."
        )
    fig = _new_figure((5.0 * len(groups), 4.0))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (label, ks) in zip(axes, groups.items(), strict=True):
        for key in ks:
            pts = []
            for pos, row in enumerate(history, start=1):
                y = _number(row.get(key))
                x = _number(row.get("epoch"))
                if y is not None:
                    pts.append((pos if x is None else x, y))
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", ms=3, label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    _save_png(fig, path)
    return fig
