"""Plots of spikes, membrane traces and learning curves (matplotlib, Agg backend, no display)."""

from spikeforge.viz.curves import plot_learning_curves
from spikeforge.viz.raster import plot_raster
from spikeforge.viz.traces import plot_membrane

__all__ = ["plot_learning_curves", "plot_membrane", "plot_raster"]
