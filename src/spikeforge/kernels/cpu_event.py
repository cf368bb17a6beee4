"""C++ CPU kernels of the event-driven feed-forward layer: exact spike times and EventProp gradients.

The source (``csrc/event.cpp``) walks each sample's merged, sorted input events once per output neuron, in
parallel over samples and neurons (``at::parallel_for``), with the equations of
:mod:`spikeforge.dynamics.cuba_lif_exact` and the jump rules of :mod:`spikeforge.sim.eventprop`; all arithmetic
is in double precision. It replaces, on CPU float32/float64 tensors with ``tau_syn > 0``, the vectorised PyTorch
engine (:func:`spikeforge.sim.event._run_feedforward`) and its backward
(:func:`spikeforge.sim.eventprop._backward_feedforward`), which stay the reference the tests pin it to.

Like :mod:`spikeforge.kernels.cpu_scan` it is compiled on first use into the kernel cache
(``$SPIKEFORGE_KERNEL_CACHE`` or ``~/.cache/spikeforge/kernels``); when that fails, one warning is issued and the
PyTorch path runs. Set :data:`ENABLED` to False (or the environment variable ``SPIKEFORGE_EVENT_KERNEL=0``) to
force the PyTorch path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..sim import event
from . import cpu_scan

__all__ = ["ENABLED", "available", "backward", "build", "covers", "forward"]

#: use the C++ kernels where they cover the call; False forces the PyTorch engine (tests, comparisons)
ENABLED = os.environ.get("SPIKEFORGE_EVENT_KERNEL", "1").strip().lower() not in ("0", "false", "no", "off")

_SOURCE = Path(__file__).resolve().parent / "csrc" / "event.cpp"
_SUPPORTED = (torch.float32, torch.float64)
# Build state of this process: None (not tried), True (loaded) or the reason it failed.
_STATE: dict[str, Any] = {"status": None}


def _compile() -> Path:
    """Compile ``csrc/event.cpp`` into the kernel cache and return the library path."""
    return cpu_scan.compile_library(_SOURCE, "spikeforge_event")


def build() -> bool:
    """Compile (first use) and load the kernels; True when they are usable in this process.

    A failure is reported once per process by a one-line warning; later calls return False at once.
    """
    return cpu_scan.load_library(_STATE, lambda: _compile(), "C++ event kernels", "the PyTorch event engine")


def available() -> bool:
    """True when the C++ event kernels are compiled and loaded (builds them on first call)."""
    return build()


def covers(times_in: Tensor, weight: Tensor, p) -> bool:
    """Whether the C++ kernels run this feed-forward layer: enabled, CPU, float32/float64, ``tau_syn > 0``
    for every neuron, and the library builds.

    Args:
        p: the layer's :class:`spikeforge.sim.event.EventParams`.
    """
    if not ENABLED or times_in.device.type != "cpu" or weight.device.type != "cpu":
        return False
    if times_in.dtype not in _SUPPORTED or weight.dtype != times_in.dtype:
        return False
    ts = p.tau_syn
    if (bool((ts <= 0).any()) if isinstance(ts, Tensor) else ts <= 0):
        return False  # plain LIF: the PyTorch engine
    return build()


def _per_neuron(value: Tensor | float, n_out: int) -> Tensor:
    """A parameter as a float64 ``[n_out]`` tensor (a Python float keeps its exact double value)."""
    if isinstance(value, Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64).reshape(-1).expand(n_out).contiguous()
    return torch.full((n_out,), float(value), dtype=torch.float64)


def _params(p, n_out: int) -> tuple[Tensor, Tensor, Tensor]:
    return _per_neuron(p.tau_mem, n_out), _per_neuron(p.tau_syn, n_out), _per_neuron(p.v_th, n_out)


def forward(t: Tensor, src: Tensor, weight: Tensor, p) -> tuple[Tensor, Tensor, Tensor]:
    """Spike times, currents at the spikes and currents at the releases, ``[B, n_out, max_spikes]`` each.

    Args:
        t, src: merged sorted input events ``[B, E]`` (``+inf`` padding at the end) and their input neurons, as
            :func:`spikeforge.sim.event.merge_events` returns them.
        weight: ``[n_out, n_in]`` (dtype of ``t``).
        p: :class:`spikeforge.sim.event.EventParams` (``tau_syn > 0``).
    """
    n_out = weight.shape[0]
    tm, ts, th = _params(p, n_out)
    return torch.ops.spikeforge_event.event_fwd(t.detach().contiguous(), src.contiguous(),
                                                weight.detach().contiguous(), tm, ts, th, float(p.t_ref),
                                                float(p.t_max), int(p.max_spikes))


def backward(t: Tensor, src: Tensor, weight: Tensor, times: Tensor, i_spike: Tensor, i_release: Tensor,
             grad: Tensor, p) -> tuple[Tensor, Tensor]:
    """EventProp gradients of a feed-forward layer: per merged input event ``[B, E]`` and per weight
    ``[n_out, n_in]``.

    Args:
        t, src: merged sorted input events (see :func:`forward`). weight: ``[n_out, n_in]``.
        times, i_spike, i_release: the forward's spike record ``[B, n_out, K]``.
        grad: gradient of the loss with respect to the spike times ``[B, n_out, K]``, zero where no spike.
        p: :class:`spikeforge.sim.event.EventParams`.
    """
    n_out = weight.shape[0]
    tm, ts, th = _params(p, n_out)
    dtype = weight.dtype
    return torch.ops.spikeforge_event.event_bwd(
        t.detach().contiguous(), src.contiguous(), weight.detach().contiguous(), tm, ts, th, float(p.t_ref),
        times.detach().to(dtype).contiguous(), i_spike.detach().to(dtype).contiguous(),
        i_release.detach().to(dtype).contiguous(), grad.detach().to(dtype).contiguous())


event.register_kernel(sys.modules[__name__])  # sim sits below kernels: it finds this module through its registry
