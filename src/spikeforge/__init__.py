"""spikeforge: design, simulate, train, measure and deploy spiking neural networks on PyTorch."""

__version__ = "0.1.0"
