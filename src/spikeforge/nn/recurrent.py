r"""Recurrent spiking layer: the neuron's input at step t includes its own spikes from step t-1.

.. math::

    x_t = W_\mathrm{in}\,u_t + b + W_\mathrm{rec}\,z_{t-1}, \qquad z_t = \text{neuron}(x_t)

The feed-forward product :math:`W_\mathrm{in} u` is computed for all steps at once; only the recurrent
product steps through time. Under the neuron's engine (``"auto"``/``"fused"``) the whole loop, recurrent
product included, runs in one fused kernel (:func:`spikeforge.kernels.fused_recurrent`), which adds only
the weight columns of neurons that spiked; ``trace`` and uncovered cases run the reference scan.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..core.checks import SpikeforgeError, check_shape_tail
from ..kernels import fused_recurrent
from ..sim import scan
from .base import SNNModule, check_sequence
from .neurons import Neuron

__all__ = ["Recurrent", "RecurrentState"]


class RecurrentState(NamedTuple):
    """The neuron's state and its spikes of the last step."""

    neuron: NamedTuple
    z: Tensor


class Recurrent(SNNModule):
    """A dense layer of spiking neurons with all-to-all recurrent synapses.

    Args:
        in_features: input size. neuron: the neuron layer (e.g. ``LIF(size=hidden)``);
        its ``size`` must be ``(hidden,)``.
        bias: learn a bias on the input current.
        self_connections: keep the diagonal of ``W_rec`` (default: zeroed).

    Shape:
        ``[T, B, in_features]`` -> ``[T, B, hidden]``.
    """

    stateful = True

    def __init__(self, in_features: int, neuron: Neuron, *, bias: bool = True,
                 self_connections: bool = False) -> None:
        super().__init__()
        if not isinstance(neuron, Neuron) or not neuron.spiking:
            raise SpikeforgeError(
                f"neuron must be a spiking neuron layer (LIF, IF, CubaLIF, AdaptiveLIF), got "
                f"{type(neuron).__name__}."
            )
        if neuron.size is None or len(neuron.size) != 1:
            raise SpikeforgeError(
                f"the recurrent layer's neuron needs size=(hidden,), got size={neuron.size}."
            )
        hidden = neuron.size[0]
        self.neuron = neuron
        self.input = nn.Linear(in_features, hidden, bias=bias)
        self.recurrent = nn.Linear(hidden, hidden, bias=False)
        self.self_connections = self_connections
        if not self_connections:
            with torch.no_grad():
                self.recurrent.weight.fill_diagonal_(0.0)

    def _w_rec(self) -> Tensor:
        w = self.recurrent.weight
        if self.self_connections:
            return w
        return w * (1.0 - torch.eye(w.shape[0], dtype=w.dtype, device=w.device))

    def forward(self, x: Tensor, state: RecurrentState | None = None):
        """Run the layer over a sequence; returns ``(spikes, state)``.

        Shape:
            x ``[T, B, in_features]`` -> spikes ``[T, B, hidden]``.
        """
        out, state, _ = self._run(x, state, record=False)
        return out, state

    def trace(self, x: Tensor, state: RecurrentState | None = None):
        """Like ``forward`` plus the neuron's state at every step (reference scan)."""
        return self._run(x, state, record=True)

    def _run(self, x: Tensor, state: RecurrentState | None, *, record: bool):
        check_sequence("x", x, min_rank=3)
        check_shape_tail("x", x, (self.input.in_features,), layout="[T, B, in_features]")
        cur = self.input(x)
        p = self.neuron.params(cur)
        if state is None:
            state = RecurrentState(self.neuron.init_state(cur[0]), torch.zeros_like(cur[0]))
        w_rec = self._w_rec()
        model, spec = self.neuron.model, self.neuron.fire_spec
        neuron = self.neuron
        if not record and neuron.kernel is not None and neuron.engine != "reference":
            fused = fused_recurrent(neuron.kernel, spec, p, state.neuron, state.z, cur, w_rec,
                                    sparse_backward=neuron.sparse_backward)
            if fused is not None:
                z, ns, z_last = fused
                return z, RecurrentState(ns, z_last), None
            neuron._no_fused_path(cur)

        def step(spec_, p_, s: RecurrentState, x_t: Tensor):
            z, ns = model.step(spec_, p_, s.neuron, x_t + s.z @ w_rec.t())
            return z, RecurrentState(ns, z)

        out, state, rec = scan.run(step, spec, p, state, cur, record=record)
        return out, state, (rec.neuron if rec is not None else None)
