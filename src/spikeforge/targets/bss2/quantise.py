"""Mapping a :class:`~.compile.FloatNet` onto the BrainScaleS-2-like chip: 6-bit signed-row weights and analog
targets in CADC units.

* **Weights** (as hxtorch's ``linear_saturating``, facts 3.2): ``wq = round(clamp(scale * W, -63, 63))`` with one
  ``scale`` per layer, by default ``63 / max|W|`` (the full 6-bit range). ``W+ = max(wq, 0)`` goes on the
  source's excitatory synapse row, ``W- = max(-wq, 0)`` on its inhibitory row (facts 3.1: the sign is a row
  property).
* **Voltages.** A spiking layer's float ``v_leak -> spec.leak`` (80) and ``v_th -> spec.threshold`` (125):
  ``cadc = leak + k (v - v_leak)`` with ``k = (threshold - leak) / max(v_th - v_leak)`` CADC units per model
  unit (one ``k`` per layer, so per-neuron thresholds stay per neuron); ``v_reset`` by the same map. An LI
  read-out has no threshold: its ``v_leak -> spec.readout_leak`` (128) and ``k = spec.readout_span / R`` with the
  float half-range ``R`` given (``readout_range``) or, by default, *assumption*: the largest L2 norm of a row of
  its weights (the std of its input if every presynaptic neuron fired independently with probability ~1/2 per step,
  times 2; pass ``readout_range`` when the float model's output range is known). An Affine bias ``b`` becomes a leak
  shift ``k b`` (the same steady state; the float model starts at ``v_leak``, the chip at its shifted rest).
* **Time.** Hardware time is biological time / ``spec.speedup``: ``tau_us = tau * 1e6 / speedup``, and so for dt
  and the refractory period (``refractory_steps * dt``). LIF and LI layers have no synaptic filter in the float
  model; on the chip every input goes through one, given ``lif_tau_syn_us`` (default
  ``max(0.25 dt_hw, spec.min_tau_syn_us)``, *assumption*). ``lif_tau_syn_us=0`` is the idealised instantaneous
  synapse (not a chip setting; it makes the emulator equal the float LIF, see :mod:`.dynamics`).
* **Charge.** An event of weight ``w`` (float) gives the float model's current the integral ``w dt`` (DC gain 1);
  on the chip it must give ``k w dt_hw`` CADC-unit microseconds: ``charge_per_lsb = k dt_hw / scale``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.checks import SpikeforgeError
from .rules import rows_needed
from .spec import BSS2Spec

if TYPE_CHECKING:  # pragma: no cover
    from .compile import FloatNet

__all__ = ["BSS2Config", "LayerConfig", "quantise", "quantise_weights"]


def _ro(a, dtype) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class LayerConfig:
    """One neuron layer on the chip. Per-neuron arrays have length ``size``; ``weight`` is ``[size, n_pre]``.

    Attributes:
        name, kind: the graph node and its type (``"LIF"``, ``"CubaLIF"``, ``"LI"``).
        neuron_row: 0 or 1; columns: neuron circuits used in that row.
        exc_rows, inh_rows: ``[n_pre]`` synapse-array row of each source's W+ / W- (-1: not needed).
        weight: int8 ``[size, n_pre]``, ``|weight| <= 63``; W+ and W- are its positive and negative parts.
        scale: LSB per float weight unit. k: CADC units per float membrane unit. v_leak: float resting value.
        leak, reset, threshold: targets in CADC units (threshold ``inf``: a read-out that never fires).
        tau_mem_us, tau_syn_us, refractory_us: hardware-time targets (tau_syn 0: instantaneous, idealised).
        charge_per_lsb: CADC-unit microseconds of synaptic current per weight LSB and event.
        origin: the CADC value of the float ``v_leak`` (trace offset: ``v = v_leak + (cadc - origin) / k``).
    """

    name: str
    kind: str
    neuron_row: int
    columns: np.ndarray
    exc_rows: np.ndarray
    inh_rows: np.ndarray
    weight: np.ndarray
    scale: float
    k: float
    v_leak: np.ndarray
    leak: np.ndarray
    reset: np.ndarray
    threshold: np.ndarray
    tau_mem_us: np.ndarray
    tau_syn_us: np.ndarray
    refractory_us: np.ndarray
    charge_per_lsb: float
    origin: float

    def __post_init__(self):
        for name in ("columns", "exc_rows", "inh_rows"):
            object.__setattr__(self, name, _ro(getattr(self, name), np.int64))
        object.__setattr__(self, "weight", _ro(self.weight, np.int8))
        for name in ("v_leak", "leak", "reset", "threshold", "tau_mem_us", "tau_syn_us", "refractory_us"):
            object.__setattr__(self, name, _ro(getattr(self, name), np.float64))

    @property
    def size(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_pre(self) -> int:
        return int(self.weight.shape[1])

    @property
    def spiking(self) -> bool:
        return self.kind != "LI"


@dataclass(frozen=True)
class BSS2Config:
    """A compiled network: what the chip is programmed with (targets per neuron; the chip instance turns them
    into CapMem codes through its calibration). ``dt`` is the float model's step in seconds."""

    spec: BSS2Spec
    dt: float
    n_in: int
    layers: tuple[LayerConfig, ...]
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def dt_us(self) -> float:
        """The model step in hardware microseconds."""
        return self.dt * 1e6 / self.spec.speedup


def quantise_weights(weight: np.ndarray, scale: float, max_weight: int = 63) -> np.ndarray:
    """``round(clamp(scale * W, -max, max))`` as int8 (hxtorch's ``linear_saturating`` plus rounding)."""
    return np.rint(np.clip(scale * np.asarray(weight, dtype=np.float64), -max_weight, max_weight)).astype(np.int8)


def _rows(exc: np.ndarray, inh: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray, int]:
    e = np.full(exc.shape, -1, dtype=np.int64)
    i = np.full(inh.shape, -1, dtype=np.int64)
    n_e, n_i = int(exc.sum()), int(inh.sum())
    e[exc] = start + np.arange(n_e)
    i[inh] = start + n_e + np.arange(n_i)
    return e, i, start + n_e + n_i


def quantise(net: FloatNet, spec: BSS2Spec, where: list[int], *, weight_scale: dict[str, float] | None = None,
             lif_tau_syn_us: float | None = None, readout_range: float | None = None) -> BSS2Config:
    """Map ``net`` (already checked and placed: ``where[i]`` is layer i's neuron row) to a :class:`BSS2Config`."""
    dt_us = net.dt * 1e6 / spec.speedup
    fast = max(0.25 * dt_us, spec.min_tau_syn_us) if lif_tau_syn_us is None else float(lif_tau_syn_us)
    if fast < 0:
        raise SpikeforgeError(f"lif_tau_syn_us must be >= 0 (0: idealised instantaneous synapse), got {fast}.")
    cols = [0] * spec.rows
    syn = [0] * spec.rows
    layers = []
    for layer, row in zip(net.layers, where, strict=True):
        n = layer.size
        w = layer.weight
        wmax = float(np.abs(w).max())
        scale = (weight_scale or {}).get(layer.name, spec.max_weight / wmax if wmax > 0 else 1.0)
        wq = quantise_weights(w, scale, spec.max_weight)
        exc, inh = rows_needed(wq)
        e_rows, i_rows, syn[row] = _rows(exc, inh, syn[row])
        columns = cols[row] + np.arange(n)
        cols[row] += n
        bias = np.zeros(n) if layer.bias is None else layer.bias
        if layer.kind == "LI":
            half = readout_range if readout_range is not None else float(np.sqrt((w * w).sum(axis=1)).max())
            k = spec.readout_span / max(half, 1e-12)
            origin = spec.readout_leak
            leak = spec.readout_leak + k * bias
            reset = leak.copy()
            threshold = np.full(n, np.inf)
            refractory = np.zeros(n)
        else:
            k = (spec.threshold - spec.leak) / float((layer.v_th - layer.v_leak).max())
            origin = spec.leak
            leak = spec.leak + k * bias
            reset = spec.leak + k * (layer.v_reset - layer.v_leak)
            threshold = spec.leak + k * (layer.v_th - layer.v_leak)
            refractory = np.full(n, layer.refractory * dt_us)
        tau_mem = layer.tau_mem * 1e6 / spec.speedup
        tau_syn = layer.tau_syn * 1e6 / spec.speedup if layer.tau_syn is not None else np.full(n, fast)
        layers.append(LayerConfig(
            name=layer.name, kind=layer.kind, neuron_row=row, columns=columns, exc_rows=e_rows, inh_rows=i_rows,
            weight=wq, scale=float(scale), k=float(k), v_leak=layer.v_leak, leak=leak, reset=reset,
            threshold=threshold, tau_mem_us=tau_mem, tau_syn_us=tau_syn, refractory_us=refractory,
            charge_per_lsb=float(k * dt_us / scale), origin=float(origin)))
    return BSS2Config(spec=spec, dt=net.dt, n_in=net.n_in, layers=tuple(layers),
                      info={"synapse_rows_used": list(syn), "columns_used": list(cols)})
