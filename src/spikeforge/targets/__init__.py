"""Hardware targets: each folder maps a graph (:mod:`spikeforge.graph`) onto one chip.

Every target uses the same file names: ``spec.py`` (limits and bit widths), ``rules.py`` (fit checks that
name the limit and the offending node), ``quantise.py`` (post-training quantisation to the chip's integer
formats), ``dynamics.py`` (the bit-accurate integer emulator, batched in torch), ``compile.py``
(``compile(graph, target) -> config``) and, where the sources give figures, ``cost.py``. Targets read only
the graph, never :mod:`spikeforge.nn` (DESIGN.md, "Hardware targets").

:mod:`.graph_reader` holds what the targets share: reading the graph's chain into float layers, and the
``finite`` fit rule. ``bss2`` (BrainScaleS-2-like) is an analog target: its ``dynamics.py`` is a
noise-accurate emulator with per-instance mismatch and a ``calibrate.py`` instead of a bit-accurate one.
"""

from .bss2 import BSS2_TARGETS, BSS2Chip, BSS2Config, BSS2Spec
from .bss2 import compile as compile_bss2
from .loihi import LOIHI_TARGETS, LoihiConfig, LoihiEmulator, LoihiSpec
from .loihi import compile as compile_loihi
from .xylo import XYLO_TARGETS, XyloConfig, XyloEmulator, XyloSpec
from .xylo import compile as compile_xylo
from .xylo import dequantised as dequantised_xylo

TARGETS = {**XYLO_TARGETS, **LOIHI_TARGETS, **BSS2_TARGETS}


def compile(graph, target: str = "xylo-audio2", peaks: dict | None = None):  # noqa: A001 - the operation's name
    """Compile ``graph`` for ``target`` (one of :data:`TARGETS`); see :func:`spikeforge.targets.xylo.compile`
    and :func:`spikeforge.targets.loihi.compile` and :func:`spikeforge.targets.bss2.compile`. ``peaks``:
    state-range calibration (Xylo targets only; the Loihi quantiser keeps a fixed headroom instead)."""
    from ..core.checks import SpikeforgeError

    if target not in TARGETS:
        raise SpikeforgeError(f"unknown target {target!r}; known targets: {', '.join(sorted(TARGETS))}.")
    if target in LOIHI_TARGETS:
        return compile_loihi(graph, target=target)
    if target in BSS2_TARGETS:
        return compile_bss2(graph, target=target)
    return compile_xylo(graph, target=target, peaks=peaks)


def dequantised(graph, target: str = "xylo-audio2", peaks: dict | None = None):
    """``(config, values)``: the compiled config and, per neuron node, the float values its integers stand for
    (weights, thresholds, drives, time constants). The forward pass of quantisation-aware training; built
    for the Xylo targets (the Loihi target's quantiser has no inverse here yet)."""
    from ..core.checks import SpikeforgeError

    if target not in TARGETS:
        raise SpikeforgeError(f"unknown target {target!r}; known targets: {', '.join(sorted(TARGETS))}.")
    if target in LOIHI_TARGETS or target in BSS2_TARGETS:
        raise SpikeforgeError(f"quantisation-aware training is built for the Xylo targets "
                              f"({', '.join(XYLO_TARGETS)}), not {target!r}; deploy to Loihi uses post-training "
                              f"quantisation; bss2 trains in the loop (spikeforge.train.hil).")
    return dequantised_xylo(graph, target=target, peaks=peaks)


__all__ = ["TARGETS", "BSS2Chip", "BSS2Config", "BSS2Spec", "LoihiConfig", "LoihiEmulator", "LoihiSpec", "XyloConfig",
           "XyloEmulator", "XyloSpec", "compile", "dequantised"]
