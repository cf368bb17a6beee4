"""NIR interchange: :func:`to_nir` writes a model, :func:`from_nir` reads one, through one table of
node mappings (:data:`NODES`). Conventions (dt, discretisation, r, reset) are in
:mod:`spikeforge.export.nir` and ``docs/nir.md``."""

from .nir import DISCRETISATIONS, NODES, Mapping, from_nir, to_nir

__all__ = ["DISCRETISATIONS", "NODES", "Mapping", "from_nir", "to_nir"]
