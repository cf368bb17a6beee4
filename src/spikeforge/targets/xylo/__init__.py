"""Xylo-like target (Xylo Audio 2, and Xylo IMU limits as a variant): spec, rules, post-training
quantisation and a bit-accurate integer emulator that agrees with xylosim v2. See docs/targets/xylo.md.

No ``cost.py``: the facts file gives a cycle-count formula and a few measured powers but no energy per
cycle or clock default (both [UNCONFIRMED]), so no energy model is built here yet.
"""

from .compile import FloatLayer, FloatNet, compile, read_graph
from .dynamics import XyloEmulator
from .quantise import XyloConfig, dash_from_tau, quantise, tau_from_dash
from .rules import RULES, check
from .spec import XYLO_AUDIO2, XYLO_IMU, XYLO_TARGETS, XyloSpec

__all__ = ["RULES", "XYLO_AUDIO2", "XYLO_IMU", "XYLO_TARGETS", "FloatLayer", "FloatNet", "XyloConfig",
           "XyloEmulator", "XyloSpec", "check", "compile", "dash_from_tau", "quantise", "read_graph",
           "tau_from_dash"]
