"""Limits and bit widths of the Xylo chips (facts: shared/docs/hardware-targets.md section 1).

One frozen :class:`XyloSpec` per variant. Values marked *assumption* are [UNCONFIRMED] in the facts file
(or my reading of them); they are plain fields so that a caller can override them with
``dataclasses.replace(XYLO_AUDIO2, max_weight_shift=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["XYLO_AUDIO2", "XYLO_IMU", "XYLO_TARGETS", "XyloSpec"]


@dataclass(frozen=True)
class XyloSpec:
    """One Xylo variant.

    Attributes:
        name: target name used by :func:`~spikeforge.targets.xylo.compile`.
        max_inputs, max_hidden, max_outputs: input channels, hidden neurons, output neurons.
        synapses_per_neuron: synaptic currents per hidden neuron (2 on Audio 2, 1 on IMU).
        output_synapses: synaptic currents per output neuron (1; facts section 1.4 step 5).
        max_fan_in: most non-zero incoming weights (input + recurrent, counted per hidden neuron and
            synapse). 63 for Audio 2 **[2nd]**; the same value for IMU is an *assumption* (facts section 10
            lists per-variant fan-in as open). Output weights are not counted (*assumption*).
        max_weights: total non-zero input + recurrent weights (64 000 on Audio 2 **[2nd]**, = 1000 x 64);
            IMU: *assumption* ``max_hidden * 64``.
        weight_bits: signed weight width (int8). state_bits: Isyn/Vmem width (int16, saturating).
        threshold_bits, bias_bits: signed widths (int16). dash_bits: decay shift width (4 bits: 0..15).
        max_weight_shift: largest per-matrix weight left shift. *Assumption*: 7 (facts section 10: the legal
            range is open; xylosim accepts any int8 but a shift above 8 would wrap the int16 weight).
        max_input_spikes, max_hidden_spikes, max_output_spikes: per-step spike caps (15, 31, 1) **[code]**.
        has_bias: whether neurons have a bias (xylosim v2).
        lif_dash_syn: synaptic shift used for a neuron without synaptic filter (LIF, IF). *Assumption*: 1,
            so that a weight reaches Vmem within a few steps with total charge ~ the weight.
    """

    name: str
    max_inputs: int = 16
    max_hidden: int = 1000
    max_outputs: int = 8
    synapses_per_neuron: int = 2
    output_synapses: int = 1
    max_fan_in: int = 63
    max_weights: int = 64000
    weight_bits: int = 8
    state_bits: int = 16
    threshold_bits: int = 16
    bias_bits: int = 16
    dash_bits: int = 4
    max_weight_shift: int = 7
    max_input_spikes: int = 15
    max_hidden_spikes: int = 31
    max_output_spikes: int = 1
    has_bias: bool = True
    lif_dash_syn: int = 1

    @property
    def weight_range(self) -> tuple[int, int]:
        return -(1 << (self.weight_bits - 1)), (1 << (self.weight_bits - 1)) - 1

    @property
    def state_range(self) -> tuple[int, int]:
        return -(1 << (self.state_bits - 1)), (1 << (self.state_bits - 1)) - 1

    @property
    def threshold_range(self) -> tuple[int, int]:
        return -(1 << (self.threshold_bits - 1)), (1 << (self.threshold_bits - 1)) - 1

    @property
    def bias_range(self) -> tuple[int, int]:
        return -(1 << (self.bias_bits - 1)), (1 << (self.bias_bits - 1)) - 1

    @property
    def max_dash(self) -> int:
        return (1 << self.dash_bits) - 1


#: Xylo Audio 2 (SYNS61201): 16 in / 1000 hidden / 8 out, two synapses, fan-in 63.
XYLO_AUDIO2 = XyloSpec(name="xylo-audio2")

#: Xylo IMU (SYNS63300): 16 in / 496 hidden / 16 out, one synapse (fan-in and weight budget: assumptions).
XYLO_IMU = XyloSpec(name="xylo-imu", max_hidden=496, max_outputs=16, synapses_per_neuron=1,
                    max_weights=496 * 64)

XYLO_TARGETS: dict[str, XyloSpec] = {s.name: s for s in (XYLO_AUDIO2, XYLO_IMU)}
