"""spikeforge: design, simulate, train, measure and deploy spiking neural networks on PyTorch.

Sub-packages (data flows one way, top to bottom):

* :mod:`spikeforge.core`: argument checks, spike functions with surrogate gradients;
* :mod:`spikeforge.dynamics`: neuron models, one file each (equations written once);
* :mod:`spikeforge.sim`: simulation engines (reference time-stepped scan);
* :mod:`spikeforge.nn`: ``torch.nn`` layers on time-major sequences ``[T, B, ...]``;
* :mod:`spikeforge.encode`: input codings and read-outs;
* :mod:`spikeforge.data`: Yin-Yang, MNIST and Fashion-MNIST;
* :mod:`spikeforge.viz`: spike rasters, membrane traces, learning curves;
* :mod:`spikeforge.train`: configs, losses, the trainer, checkpoints;
* :mod:`spikeforge.cli`: the ``spikeforge`` command.
"""

from . import core, data, dynamics, encode, nn, sim
from .core.checks import SpikeforgeError
from .core.surrogate import Surrogate

__version__ = "0.1.0"

__all__ = ["Surrogate", "SpikeforgeError", "core", "data", "dynamics", "encode", "nn", "sim", "__version__"]
