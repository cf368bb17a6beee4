"""Limits and bit widths of the Loihi-like target (facts: shared/docs/hardware-targets.md section 2).

One frozen :class:`LoihiSpec`. Values marked *assumption* are [UNCONFIRMED] in the facts file, or my
reading of it, or a quantiser choice; they are plain fields so that a caller can override them with
``dataclasses.replace(LOIHI, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LOIHI", "LOIHI_TARGETS", "LoihiSpec"]


@dataclass(frozen=True)
class LoihiSpec:
    """The Loihi 1 CUBA LIF + Dense target, as Lava's bit-accurate models define it.

    Attributes:
        name: target name.
        decay_bits: width of ``du``/``dv`` (unsigned 12 bit; ``decay_unity = 4096``) **[code]**.
        ds_offset, dm_offset: Loihi 1 offsets added to ``du``/``dv`` (1 and 0) **[code]**.
        state_bits: width of ``u`` and ``v`` (24 bit; ``u`` wraps, ``v`` saturates) **[code]**.
        vth_bits: unsigned threshold mantissa width (17 bit) **[code]**. vth_shift: 6 **[code]**.
        act_shift: left shift of the incoming activation (6) **[code]**.
        bias_mant_bits: signed bias mantissa width (13 bit) **[code]**. bias_exp_bits: 3 bit **[code]**;
            *assumption*: the exponent is used as 0..7 (non-negative; Lava also accepts negative ones).
        weight_bits: signed weight mantissa width in mixed sign mode (8 bit magnitude, range -256..255)
            **[code]**. num_weight_bits: kept precision (0..8); mixed mode drops
            ``8 - num_weight_bits + 1`` LSBs, so weights are even at 8 **[code]**.
        weight_exp_min, weight_exp_max: range of the per-matrix weight exponent, -8..7 (Brian2Loihi
            ``w_exp`` **[code]**; Lava's Python model accepts any int, so this range is an *assumption*).
        max_delay: largest extra synaptic delay in steps (Loihi 1, Brian2Loihi: 0..62 **[code]**; Loihi 2:
            63). Delay 0 is the Dense model's one-step buffer.
        compartments_per_core, n_cores: 1024 and 128 **[2nd]**; the compile limit is their product.
        max_refractory: longest refractory period in steps (Brian2Loihi 1..64 **[code]**). Lava's
            bit-accurate LIF has no refractory period; the emulator's (``v`` held, ``u`` runs on) follows
            Brian2Loihi and is an *assumption* about the chip (facts section 10).
        threshold_headroom_bits: quantiser choice, *assumption*: the largest threshold uses
            ``vth_bits - threshold_headroom_bits`` bits, so ``v`` and ``u`` have 2^3 times the threshold
            before they saturate or wrap.
        max_activation: bound on ``|a_in|`` per step that compile checks (the facts give ``a_in`` as int16
            **[code]**); Lava's Python model does not enforce it, nor does the emulator. *Assumption*: checked
            on the worst case (every presynaptic neuron spiking) only when ``check_activation`` is true.
    """

    name: str = "loihi"
    decay_bits: int = 12
    ds_offset: int = 1
    dm_offset: int = 0
    state_bits: int = 24
    vth_bits: int = 17
    vth_shift: int = 6
    act_shift: int = 6
    bias_mant_bits: int = 13
    bias_exp_bits: int = 3
    weight_bits: int = 8
    num_weight_bits: int = 8
    weight_exp_min: int = -8
    weight_exp_max: int = 7
    max_delay: int = 62
    compartments_per_core: int = 1024
    n_cores: int = 128
    max_refractory: int = 64
    threshold_headroom_bits: int = 3
    max_activation: int = (1 << 15) - 1
    check_activation: bool = False

    @property
    def decay_unity(self) -> int:
        return 1 << self.decay_bits

    @property
    def max_decay(self) -> int:
        return (1 << self.decay_bits) - 1

    @property
    def max_neurons(self) -> int:
        return self.compartments_per_core * self.n_cores

    @property
    def max_uv(self) -> int:
        """``2^23``: Lava's ``max_uv_val``."""
        return 1 << (self.state_bits - 1)

    @property
    def max_vth(self) -> int:
        return (1 << self.vth_bits) - 1

    @property
    def weight_step(self) -> int:
        """Spacing of representable weight mantissas (mixed sign mode): ``2^(8 - num_weight_bits + 1)``."""
        return 1 << (self.weight_bits - self.num_weight_bits + 1)

    @property
    def weight_range(self) -> tuple[int, int]:
        """Mixed sign mode: -256..255 before truncation; the largest truncated value is ``256 - step``."""
        return -(1 << self.weight_bits), (1 << self.weight_bits) - self.weight_step

    @property
    def bias_mant_range(self) -> tuple[int, int]:
        return -(1 << (self.bias_mant_bits - 1)), (1 << (self.bias_mant_bits - 1)) - 1

    @property
    def max_bias_exp(self) -> int:
        return (1 << self.bias_exp_bits) - 1


#: Loihi 1 as Lava's bit-accurate CUBA LIF and Dense models define it.
LOIHI = LoihiSpec()

LOIHI_TARGETS: dict[str, LoihiSpec] = {LOIHI.name: LOIHI}
