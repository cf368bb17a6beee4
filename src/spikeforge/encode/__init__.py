"""Input codings (rate, latency, delta) and output read-outs.

Encoders are pure functions with thin ``torch.nn.Module`` wrappers of the same name in CamelCase.
Static inputs are ``[B, *features]``; sequences are time-major ``[T, B, *features]``.
"""

from spikeforge.encode.delta import Delta, delta
from spikeforge.encode.latency import Latency, latency, latency_times
from spikeforge.encode.rate import ConstantCurrent, EventCounts, Poisson, constant_current, event_counts, poisson
from spikeforge.encode.readout import (
    READOUTS,
    FirstSpikeTime,
    MaxMembrane,
    MeanMembrane,
    SpikeCount,
    decode,
    first_spike_time,
    max_membrane,
    mean_membrane,
    spike_count,
)
from spikeforge.encode.spike_times import spike_times, yinyang_spike_times

__all__ = [
    "READOUTS",
    "ConstantCurrent",
    "Delta",
    "EventCounts",
    "FirstSpikeTime",
    "Latency",
    "MaxMembrane",
    "MeanMembrane",
    "Poisson",
    "SpikeCount",
    "constant_current",
    "decode",
    "delta",
    "event_counts",
    "first_spike_time",
    "latency",
    "latency_times",
    "max_membrane",
    "mean_membrane",
    "poisson",
    "spike_count",
    "spike_times",
    "yinyang_spike_times",
]
