"""The graph that export and hardware targets read: a :class:`nir.NIRGraph` extracted from a model.

NIR's own node types are used wherever they suffice; what they do not carry (reset mode, refractory
steps, surrogate, dt) is written in the nodes' metadata. See :mod:`spikeforge.graph.graph`.
"""

from .graph import GENERATOR, NEURON_FIELDS, extract_graph, written_by_spikeforge

__all__ = ["GENERATOR", "NEURON_FIELDS", "extract_graph", "written_by_spikeforge"]
