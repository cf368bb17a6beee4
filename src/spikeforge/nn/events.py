r"""Event-driven spiking layers: spike times in, spike times out (:mod:`spikeforge.sim.event`).

:class:`EventLIF` is a layer of current-based LIF neurons (``tau_syn dI/dt = -I``, ``tau_mem dV/dt = -V + I``,
an input spike of weight ``w`` adds ``w / tau_syn`` to ``I``; spike at ``V = v_th``, reset to 0, optional
refractory period), simulated exactly from spike times, with gradients with respect to its weights and its input
spike times, so layers chain. How the gradient is computed is settled when the layer is built: a name in
:data:`GRADIENTS` (``"eventprop"``: :mod:`spikeforge.sim.eventprop`).

Each entry of :data:`GRADIENTS` is a function
``fn(times, weight, *, tau_mem, tau_syn, v_th, t_ref, max_spikes, t_max, weight_rec) -> times_out`` that returns
the engine's spike times with autograd attached; other methods register themselves there.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..core.checks import SpikeforgeError, check_positive, check_positive_int, describe
from ..dynamics import cuba_lif_exact as ex
from ..sim.eventprop import eventprop
from ..sim.exact_times import exact

__all__ = ["GRADIENTS", "EventLIF", "psp_peak"]

#: gradient method name -> differentiable layer function (see the module docstring)
GRADIENTS: dict[str, Callable[..., Tensor]] = {"eventprop": eventprop, "exact": exact}


def psp_peak(tau_mem: float, tau_syn: float) -> float:
    """Largest membrane potential caused by one input spike of unit weight from rest (units of 1/second)."""
    if tau_syn == 0:
        return 1.0 / tau_mem
    t = ex.peak_time(torch.tensor(1.0 / tau_syn, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64),
                     tau_mem, tau_syn)
    return float(ex.psp_gain(t, tau_mem, tau_syn)) / tau_syn


def _time_constant(name: str, value: float | Tensor, n_out: int, *, allow_zero: bool) -> float | Tensor:
    if isinstance(value, Tensor):
        if value.dim() > 1 or (value.dim() == 1 and value.shape[0] != n_out):
            raise SpikeforgeError(f"{name} must be a number or a tensor of shape [n_out] = [{n_out}], got "
                                  f"{describe(value)}.")
        v = value.detach().to(torch.float64)
        bad = ~torch.isfinite(v) | ((v < 0) if allow_zero else (v <= 0))
        if bool(bad.any()):
            raise SpikeforgeError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'} seconds, got "
                                  f"{v.tolist()}.")
        return value.detach().clone()
    if allow_zero and value == 0:
        return 0.0
    check_positive(name, value)
    return float(value)


class EventLIF(nn.Module):
    """A layer of current-based LIF neurons simulated exactly from input spike times.

    Args:
        n_in, n_out: numbers of inputs and neurons.
        tau_mem, tau_syn: time constants in seconds (numbers or ``[n_out]`` tensors). EventProp needs
            ``tau_syn > 0``.
        v_th: threshold (> 0). t_ref: refractory period in seconds.
        max_spikes: spikes kept per neuron; after that a neuron is silent.
        t_max: end of the simulation in seconds (later spikes are dropped).
        recurrent: add recurrent weights ``weight_rec`` from the layer's own spikes.
        gradient: a name in :data:`GRADIENTS` (``"eventprop"``).
        init_scale: scale of the initial weights. With :math:`w_0 = v_\\mathrm{th} / \\kappa_\\max` (the weight
            whose PSP peaks at the threshold), ``weight = init_scale * w0 * (1.5 / n_in + N(0, 1) / sqrt(n_in))``
            and ``weight_rec = init_scale * w0 * 0.1 * N(0, 1) / sqrt(n_out)``.
        generator: random generator for the initial weights.

    Shape:
        ``[B, n_in, K_in]`` spike times (seconds, sorted along the last dim, ``+inf`` = no spike) ->
        ``[B, n_out, max_spikes]``.
    """

    def __init__(self, n_in: int, n_out: int, *, tau_mem: float | Tensor, tau_syn: float | Tensor,
                 v_th: float = 1.0, t_ref: float = 0.0, max_spikes: int = 1, t_max: float = math.inf,
                 recurrent: bool = False, gradient: str = "eventprop", init_scale: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.n_in, self.n_out = check_positive_int("n_in", n_in), check_positive_int("n_out", n_out)
        if gradient not in GRADIENTS:
            raise SpikeforgeError(f"gradient must be one of {sorted(GRADIENTS)}, got {gradient!r}.")
        self.gradient = gradient
        self._layer = GRADIENTS[gradient]
        self.tau_mem = _time_constant("tau_mem", tau_mem, n_out, allow_zero=False)
        self.tau_syn = _time_constant("tau_syn", tau_syn, n_out, allow_zero=True)
        if gradient == "eventprop" and (not isinstance(self.tau_syn, Tensor) and self.tau_syn == 0
                                        or isinstance(self.tau_syn, Tensor) and bool((self.tau_syn == 0).any())):
            raise SpikeforgeError("gradient='eventprop' needs tau_syn > 0 (with tau_syn = 0 spike times sit on "
                                  "input times and have no weight gradient); got tau_syn = 0.")
        check_positive("v_th", v_th)
        if isinstance(t_ref, bool) or not isinstance(t_ref, (int, float)) or not 0 <= t_ref < math.inf:
            raise SpikeforgeError(f"t_ref must be a finite number of seconds >= 0, got {describe(t_ref)}.")
        if isinstance(t_max, bool) or not isinstance(t_max, (int, float)) or not t_max > 0:
            raise SpikeforgeError(f"t_max must be a number of seconds > 0 (or inf), got {describe(t_max)}.")
        self.v_th, self.t_ref, self.t_max = float(v_th), float(t_ref), float(t_max)
        self.max_spikes = check_positive_int("max_spikes", max_spikes)
        check_positive("init_scale", init_scale)
        tm = float(self.tau_mem.max()) if isinstance(self.tau_mem, Tensor) else self.tau_mem
        ts = float(self.tau_syn.max()) if isinstance(self.tau_syn, Tensor) else self.tau_syn
        w0 = self.v_th / psp_peak(tm, ts)
        w = init_scale * w0 * (1.5 / n_in + torch.randn(n_out, n_in, generator=generator) / math.sqrt(n_in))
        self.weight = nn.Parameter(w)
        if recurrent:
            wr = init_scale * w0 * 0.1 * torch.randn(n_out, n_out, generator=generator) / math.sqrt(n_out)
            self.weight_rec = nn.Parameter(wr)
        else:
            self.register_parameter("weight_rec", None)

    def _param(self, x: float | Tensor, like: Tensor) -> float | Tensor:
        return x.to(dtype=like.dtype, device=like.device) if isinstance(x, Tensor) else x

    def forward(self, times: Tensor) -> Tensor:
        """Output spike times, differentiable with respect to the weights and ``times``."""
        return self._layer(times, self.weight, tau_mem=self._param(self.tau_mem, self.weight),
                           tau_syn=self._param(self.tau_syn, self.weight), v_th=self.v_th, t_ref=self.t_ref,
                           max_spikes=self.max_spikes, t_max=self.t_max, weight_rec=self.weight_rec)

    def extra_repr(self) -> str:
        return (f"n_in={self.n_in}, n_out={self.n_out}, tau_mem={self.tau_mem}, tau_syn={self.tau_syn}, "
                f"v_th={self.v_th}, t_ref={self.t_ref}, max_spikes={self.max_spikes}, t_max={self.t_max}, "
                f"recurrent={self.weight_rec is not None}, gradient={self.gradient!r}")
