"""Cost metrics: NeuroBench-compatible footprint, sparsity and synaptic operations (see docs/metrics.md)."""

from .neurobench import activation_sparsity, connection_sparsity, footprint, synaptic_operations

__all__ = ["activation_sparsity", "connection_sparsity", "footprint", "synaptic_operations"]
