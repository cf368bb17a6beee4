"""``torch.nn`` modules for spiking networks (time-major ``[T, B, ...]``; forward returns
``(output, state)``)."""

from .base import SNNModule
from .crossbar import CrossbarLinear
from .delay import Delay, DelayedLinear
from .event_readout import EventLI
from .events import EventLIF
from .layers import (
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool1d,
    MaxPool2d,
    TimeDistributed,
)
from .neurons import IF, LI, LIF, AdaptiveLIF, AnalogLIF, CubaLIF, Neuron
from .recurrent import Recurrent, RecurrentState
from .sequential import Sequential

__all__ = [
    "IF",
    "LI",
    "LIF",
    "AdaptiveLIF",
    "AnalogLIF",
    "AvgPool1d",
    "AvgPool2d",
    "Conv1d",
    "Conv2d",
    "CrossbarLinear",
    "CubaLIF",
    "Delay",
    "DelayedLinear",
    "Dropout",
    "EventLI",
    "EventLIF",
    "Flatten",
    "Linear",
    "MaxPool1d",
    "MaxPool2d",
    "Neuron",
    "Recurrent",
    "RecurrentState",
    "SNNModule",
    "Sequential",
    "TimeDistributed",
]
