"""Limits, bit widths and analog defaults of a BrainScaleS-2-like chip (facts: shared/docs/hardware-targets.md
section 3).

Every field names its source: **[3.1]** hardware facts, **[3.2]** hxtorch/calix code and docs, or
*assumption* (the facts file has no number for it; section 3.3 marks all noise magnitudes UNCONFIRMED). The
fields are plain so that a caller can override any of them with ``dataclasses.replace(BSS2, ...)``.

Units: time on the chip in microseconds of hardware time (``speedup`` times faster than the float model's
biological seconds); voltages in *CADC units*, the 8-bit readout's least significant bit, as calix states its
calibration targets.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BSS2", "BSS2Spec"]


@dataclass(frozen=True)
class BSS2Spec:
    """One BrainScaleS-2-like chip.

    Attributes:
        name: target name (``"bss2"``).
        neurons_per_row, rows: 256 neuron circuits in each of 2 rows, 512 in all **[3.1]**.
        synapse_rows: rows of each of the 2 synapse arrays (one array above each neuron row; a column of an
            array feeds one neuron) **[3.1]**. A row is excitatory or inhibitory **[3.1]**, so a presynaptic
            source with weights of both signs takes two rows (W+ and W-, as hxtorch, **[3.2]**).
        weight_bits: synapse weight magnitude, 6 bit (0..63) **[3.1]**; hxtorch maps ``clamp(scale*w, -63, 63)``
            **[3.2]**.
        capmem_bits: analog parameter storage, 10 bit per parameter **[3.1]**.
        cadc_bits: CADC readout width, 8 bit **[3.1]**. cadc_period_us: sample period, about 2 us when samples
            go to SRAM **[3.1, hxtorch notes]**.
        speedup: 1000x faster than biology **[3.1]**.
        leak, reset, threshold: calibration targets in CADC units, 80 / 80 / 125 **[3.2, calibrated_params.py]**
            (the PyNN default reset is 70).
        tau_mem_us, tau_syn_us, refractory_us: calibration targets 10 / 10 / 2 us **[3.2]**.
        readout_leak: resting CADC value given to a non-spiking LI read-out neuron; *assumption*: mid-range
            (128), so the trace can move both ways within 0..255.
        readout_span: CADC units the LI read-out's expected range (half-width) is mapped to; *assumption*: 100.
        capmem_volt_per_code: CADC units per CapMem code of a voltage parameter (leak, reset, threshold);
            *assumption*: 0.25 (10-bit codes cover 0..~256 CADC units; the facts give 0..1.6 V for CapMem and no
            CADC LSB in mV, section 10).
        tau_mem_code_us, tau_syn_code_us: a time constant is ``K / code`` (a conductance proportional to a CapMem
            bias current); K = 2000 us and 500 us are *assumptions* (10 us at codes 200 and 50; shortest
            1.96 us and 0.49 us).
        refractory_step_us: refractory time per code of the digital refractory counter; *assumption*: 0.05 us.
        min_tau_syn_us: the shortest synaptic time constant compile uses for LIF and LI layers (which have no
            synaptic filter in the float model); *assumption*: ``tau_syn_code_us / 1023``.
        h_us: integration step of the emulator in hardware us; *assumption*: 0.25 (the facts suggest <= 0.1;
            0.25 keeps Yin-Yang-sized batches fast; the scheme is exact for piecewise-constant currents).
    """

    name: str = "bss2"
    neurons_per_row: int = 256
    rows: int = 2
    synapse_rows: int = 256
    weight_bits: int = 6
    capmem_bits: int = 10
    cadc_bits: int = 8
    cadc_period_us: float = 2.0
    speedup: float = 1000.0
    leak: float = 80.0
    reset: float = 80.0
    threshold: float = 125.0
    tau_mem_us: float = 10.0
    tau_syn_us: float = 10.0
    refractory_us: float = 2.0
    readout_leak: float = 128.0
    readout_span: float = 100.0
    capmem_volt_per_code: float = 0.25
    tau_mem_code_us: float = 2000.0
    tau_syn_code_us: float = 500.0
    refractory_step_us: float = 0.05
    h_us: float = 0.25

    @property
    def n_neurons(self) -> int:
        return self.neurons_per_row * self.rows

    @property
    def max_weight(self) -> int:
        return (1 << self.weight_bits) - 1

    @property
    def max_code(self) -> int:
        return (1 << self.capmem_bits) - 1

    @property
    def max_cadc(self) -> int:
        return (1 << self.cadc_bits) - 1

    @property
    def min_tau_syn_us(self) -> float:
        return self.tau_syn_code_us / self.max_code

    @property
    def min_tau_mem_us(self) -> float:
        return self.tau_mem_code_us / self.max_code


#: The default BrainScaleS-2-like chip.
BSS2 = BSS2Spec()
