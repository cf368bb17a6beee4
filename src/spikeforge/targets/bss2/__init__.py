"""BrainScaleS-2-like analog target: spec, fit rules, 6-bit signed-row weight mapping, a noise-accurate emulator
with per-instance mismatch and temporal noise (:class:`BSS2Chip`, an
:class:`~spikeforge.targets.observe.Observer`), and calix-like calibration through the emulated read-out only.
See docs/targets/bss2.md.
"""

from .calibrate import CalibrationReport, calibrate, effective_spread, spread, standard_targets
from .compile import FloatLayer, FloatNet, compile, read_graph
from .dynamics import CODE_NAMES, Analog, BSS2Chip, Calibration, FixedPattern, NoiseModel, Probe, integrate
from .quantise import BSS2Config, LayerConfig, quantise, quantise_weights
from .rules import RULES, check, placement
from .spec import BSS2, BSS2Spec

BSS2_TARGETS: dict[str, BSS2Spec] = {BSS2.name: BSS2}

__all__ = ["BSS2", "BSS2_TARGETS", "CODE_NAMES", "RULES", "Analog", "BSS2Chip", "BSS2Config", "BSS2Spec",
           "Calibration", "CalibrationReport", "FixedPattern", "FloatLayer", "FloatNet", "LayerConfig", "NoiseModel",
           "Probe", "calibrate", "check", "compile", "effective_spread", "integrate", "placement", "quantise",
           "quantise_weights", "read_graph", "spread", "standard_targets"]
