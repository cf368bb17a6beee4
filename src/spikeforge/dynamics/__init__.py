"""Neuron models: one file each, equations written once as a pure step function.

Every model module provides ``make_params(**physical, dt)``, ``init_state(params, like, refractory=)``
and ``step(fire_spec, params, state, x) -> (output, state)``.
"""

from . import adaptive_lif, analog_lif, cuba_lif, if_neuron, li, lif
from .common import RESET_MODES, FireSpec, decay, fire, refractory_steps

__all__ = [
    "RESET_MODES",
    "FireSpec",
    "adaptive_lif",
    "analog_lif",
    "cuba_lif",
    "decay",
    "fire",
    "if_neuron",
    "li",
    "lif",
    "refractory_steps",
]
