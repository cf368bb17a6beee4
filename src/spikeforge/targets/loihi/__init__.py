"""Loihi-like target (Loihi 1 CUBA LIF + Dense as Lava's bit-accurate models define them): spec, rules,
post-training quantisation and a batched integer emulator. See docs/targets/loihi.md.

lava-nc needs Python < 3.11 and cannot be installed here, so the emulator is tested against golden vectors
computed by hand from the documented update order, not against Lava itself. ``cost.py`` counts events and
prices them with energy figures that are parameters ([UNCONFIRMED] defaults).
"""

from .compile import FloatLayer, FloatNet, compile, read_graph
from .cost import LoihiEnergyModel
from .cost import estimate as estimate_cost
from .dynamics import LoihiEmulator
from .quantise import LoihiConfig, LoihiLayerConfig, decays_from_tau, quantise
from .rules import RULES, check, usage
from .spec import LOIHI, LOIHI_TARGETS, LoihiSpec

__all__ = ["LOIHI", "LOIHI_TARGETS", "RULES", "FloatLayer", "FloatNet", "LoihiConfig", "LoihiEmulator",
           "LoihiEnergyModel", "LoihiLayerConfig", "LoihiSpec", "check", "compile", "decays_from_tau", "estimate_cost",
           "quantise", "read_graph", "usage"]
