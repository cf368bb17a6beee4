"""Xylo-like target (Xylo Audio 2, and Xylo IMU limits as a variant): spec, rules, post-training
quantisation (and its inverse, for quantisation-aware training), a bit-accurate integer emulator that agrees
with xylosim v2, and a cycle/energy/latency estimate (``cost.py``). See docs/targets/xylo.md.
"""

from .compile import FloatLayer, FloatNet, compile, dequantised, read_graph
from .cost import XyloPowerModel
from .cost import estimate as estimate_cost
from .dynamics import XyloEmulator
from .quantise import XyloConfig, dash_from_tau, dequantise, quantise, tau_from_dash
from .rules import RULES, check, usage
from .spec import XYLO_AUDIO2, XYLO_IMU, XYLO_TARGETS, XyloSpec

__all__ = ["RULES", "XYLO_AUDIO2", "XYLO_IMU", "XYLO_TARGETS", "FloatLayer", "FloatNet", "XyloConfig",
           "XyloEmulator", "XyloPowerModel", "XyloSpec", "check", "compile", "dash_from_tau", "dequantise",
           "dequantised", "estimate_cost", "quantise", "read_graph", "tau_from_dash", "usage"]
