"""Tests of spikeforge.viz: PNGs are written atomically, figures returned, bad input rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from spikeforge.core.checks import SpikeforgeError
from spikeforge.viz import plot_learning_curves, plot_membrane, plot_raster

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 100 and data[:8] == PNG_MAGIC
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


@pytest.fixture
def spikes() -> torch.Tensor:
    torch.manual_seed(0)
    return (torch.rand(50, 3, 20) < 0.1).float()


def test_raster_writes_png(tmp_path: Path, spikes: torch.Tensor) -> None:
    out = tmp_path / "sub" / "dir" / "raster.png"
    fig = plot_raster(spikes, sample=2, dt=1e-3, title="raster", path=out)
    assert isinstance(fig, Figure)
    _assert_png(out)


def test_raster_2d_ndarray_counts_and_max_neurons(spikes: torch.Tensor) -> None:
    counts = np.random.default_rng(0).poisson(0.3, size=(40, 300))
    fig = plot_raster(counts, max_neurons=50)
    assert fig.axes[0].get_ylim() == (-0.5, 49.5)


def test_raster_layers(tmp_path: Path, spikes: torch.Tensor) -> None:
    out = tmp_path / "layers.png"
    fig = plot_raster([spikes, spikes[..., :5]], names=["in", "hidden"], path=str(out))
    assert [ax.get_title() for ax in fig.axes] == ["in", "hidden"]
    _assert_png(out)


def test_raster_bad_inputs(spikes: torch.Tensor) -> None:
    with pytest.raises(SpikeforgeError, match=r"spikes must have rank 2 or 3.*\(rank 1\)"):
        plot_raster(torch.zeros(10))
    with pytest.raises(SpikeforgeError, match=r"sample must be an integer in \[0, 2\].*got 3"):
        plot_raster(spikes, sample=3)
    with pytest.raises(SpikeforgeError, match=r"spikes\[1\] must have rank"):
        plot_raster([spikes, torch.zeros(2, 2, 2, 2)])
    with pytest.raises(SpikeforgeError, match="names must be a sequence of 2"):
        plot_raster([spikes, spikes], names=["a"])
    with pytest.raises(SpikeforgeError, match="dt must be positive"):
        plot_raster(spikes, dt=0.0)
    with pytest.raises(SpikeforgeError, match="torch.Tensor or numpy.ndarray"):
        plot_raster("spikes")


def test_membrane_writes_png(tmp_path: Path, spikes: torch.Tensor) -> None:
    v = torch.randn(50, 3, 20).cumsum(0) * 0.1
    out = tmp_path / "v.png"
    fig = plot_membrane(v, spikes=spikes, threshold=1.0, sample=1, neurons=(0, 5), dt=1e-3,
                        path=out)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    _assert_png(out)
    assert isinstance(plot_membrane(v.numpy(), threshold=torch.ones(20)), Figure)


def test_membrane_bad_inputs(spikes: torch.Tensor) -> None:
    v = torch.zeros(50, 3, 20)
    with pytest.raises(SpikeforgeError, match=r"v must have rank 2 or 3.*rank 4"):
        plot_membrane(torch.zeros(2, 2, 2, 2))
    with pytest.raises(SpikeforgeError, match=r"sample must be an integer in \[0, 2\].*got -1"):
        plot_membrane(v, sample=-1)
    with pytest.raises(SpikeforgeError, match=r"neurons must hold integers in \[0, 19\].*got 20"):
        plot_membrane(v, neurons=(0, 20))
    with pytest.raises(SpikeforgeError, match="spikes must have the same shape as v"):
        plot_membrane(v, spikes=spikes[:, :, :5])
    with pytest.raises(SpikeforgeError, match="threshold must be a number or hold 1 or N=20"):
        plot_membrane(v, threshold=torch.ones(3))


def test_learning_curves_writes_png(tmp_path: Path) -> None:
    history = [
        {"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5 + e / 20, "val_acc": 0.4 + e / 25}
        for e in range(1, 6)
    ]
    history[2]["val_loss"] = torch.tensor(0.7)  # sparse key, tensor value
    history[4]["test_acc"] = 0.8
    out = tmp_path / "curves.png"
    fig = plot_learning_curves(history, path=out)
    assert isinstance(fig, Figure) and [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy"]
    assert {ln.get_label() for ln in fig.axes[1].lines} == {"train_acc", "val_acc", "test_acc"}
    _assert_png(out)
    assert len(plot_learning_curves([{"train_loss": 1.0}, {"train_loss": 0.5}]).axes) == 1


def test_learning_curves_bad_inputs() -> None:
    with pytest.raises(SpikeforgeError, match="at least one epoch"):
        plot_learning_curves([])
    with pytest.raises(SpikeforgeError, match="list of dicts"):
        plot_learning_curves({"train_loss": 1.0})
    with pytest.raises(SpikeforgeError, match=r"history\[1\] must be a dict"):
        plot_learning_curves([{"train_loss": 1.0}, 3])
    with pytest.raises(SpikeforgeError, match="no loss or accuracy keys"):
        plot_learning_curves([{"epoch": 1, "lr": 0.1}])
