"""A sequential container that passes each layer's state along.

Plain ``torch.nn`` modules (e.g. ``nn.Linear``) are wrapped in
:class:`~spikeforge.nn.layers.TimeDistributed` automatically. A :class:`~spikeforge.nn.layers.Linear` directly
followed by a spiking neuron layer may run fused with it, in time chunks (``fuse``, see :class:`Sequential`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

from ..core.checks import SpikeforgeError, describe
from ..kernels import cpu_scan, fused_linear
from .base import SNNModule, check_sequence
from .layers import Dropout, Linear, TimeDistributed
from .neurons import Neuron

__all__ = ["Sequential"]


def _hooked(layer: nn.Module) -> bool:
    """Whether a forward hook (on ``layer``, inside it, or global) could have kept a reference to its output."""
    if torch_module._global_forward_hooks:
        return True
    return any(m._forward_hooks for m in layer.modules())


_FUSE = ("auto", True, False)


def _any_hooks(layer: nn.Module) -> bool:
    """Whether any hook (forward, pre-forward, backward; on ``layer``, inside it, or global) would see its call."""
    if (torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
            or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in layer.modules())


def _needs_grad(x: Tensor, lin: Linear, state: Any) -> bool:
    """Whether this call records a graph through the pair (input, synapses or initial neuron state)."""
    if not torch.is_grad_enabled():
        return False
    tensors = [x, lin.weight, lin.bias, *(state if isinstance(state, tuple) else ())]
    return any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


def _drop(_: Any) -> None:
    """Where :meth:`Sequential._run` records no outputs."""


def _linear(layer: nn.Module) -> bool:
    """A :class:`~spikeforge.nn.Linear` running its own forward, without hooks (fusable with what follows)."""
    return isinstance(layer, Linear) and type(layer).forward is Linear.forward and not _any_hooks(layer)


def _fusable(lin: nn.Module, neuron: nn.Module) -> bool:
    """Whether the pair can run as one fused ``Linear -> neuron`` call at all (before looking at the input)."""
    return (_linear(lin)
            and isinstance(neuron, Neuron) and neuron.kernel is not None and neuron.engine != "reference"
            and neuron.step_hook is None and type(neuron).forward is Neuron.forward
            and type(neuron).trace_run is Neuron.trace_run
            and (neuron.size is None or tuple(neuron.size) == (lin.module.out_features,))
            and not _any_hooks(neuron))


class Sequential(SNNModule):
    """Chain of layers; ``forward(x, state) -> (out, state)`` where ``state`` is a tuple per layer.

    Args:
        layers: the layers, in order (plain ``torch.nn`` modules are wrapped in ``TimeDistributed``).
        fuse: when a :class:`~spikeforge.nn.Linear` directly followed by a spiking neuron layer with a fused kernel
            (``IF``, ``LIF``, ``CubaLIF``, ``AdaptiveLIF``) runs as one fused call in time chunks
            (:mod:`spikeforge.kernels.fused_linear`): the current of all steps and the membrane of all steps are
            never held, only the output spikes, the input's non-zeros and a few chunk-sized buffers; the backward
            pass recomputes each chunk's current and scan (one more sparse product). Same spikes, same gradients
            (up to float rounding).

            * ``"auto"`` (default): on CPU, when the ``Linear`` picks its sparse product for this input (binary
              spikes below its density threshold, or ``sparse=True``), the call records a gradient (input,
              synapses or initial neuron state; training, where the memory kept for backward is the cost) and the
              input has at most :data:`~spikeforge.kernels.fused_linear.AUTO_MAX_ACTIVE` (64) active inputs per
              sample, so that recomputing the product in backward costs little next to the scan, and the sequence
              spans more than one chunk (else the whole current is held anyway and fusing only adds the recompute).
              Inference, dense inputs, wide busy inputs and short sequences run unfused (one product over all
              steps, fewest passes). A neuron layer that takes the compact sparse-backward scan (``IF``/``LIF``
              with ``sparse_backward``, no refractoriness) is instead fused, unchunked, with a ``Linear`` on sparse
              input whenever a gradient is recorded, and such pairs, the ``Dropout`` layers between them and a
              last ``[Dropout ->] Linear`` (the read-out) run as one chain
              (:class:`~spikeforge.kernels.fused_linear.BandChain`) whose backward forms each gradient only at
              the in-band steps of the layer below, never a dense gradient between the layers.
            * ``True``: whenever the pair is covered on CPU, also for inference and dense inputs (the dense product
              per chunk may round differently from one product over all steps).
            * ``False``: never.

            Either way the pair runs unfused when a hook is registered on either layer (or globally), the neuron
            uses ``engine="reference"``, a ``step_hook``, learned neuron parameters or several spikes per step,
            or the tensors are not on the CPU (CUDA runs the Triton kernels unfused).
        chunk_steps: time steps per chunk of the fused path; None: about 1/16 of the sequence, at least 1024
            samples (:func:`spikeforge.kernels.fused_linear.chunk_steps`). Smaller chunks take less memory and
            more kernel calls.

    Shape:
        ``[T, B, *in]`` -> ``[T, B, *out]``.
    """

    stateful = True
    fuse: bool | str = "auto"
    chunk_steps: int | None = None

    def __init__(self, *layers: nn.Module, fuse: bool | str = "auto", chunk_steps: int | None = None) -> None:
        super().__init__()
        wrapped = []
        for i, layer in enumerate(layers):
            if isinstance(layer, SNNModule):
                wrapped.append(layer)
            elif isinstance(layer, nn.Module):
                wrapped.append(TimeDistributed(layer))
            else:
                raise SpikeforgeError(
                    f"layer {i} must be a torch.nn.Module, got {type(layer).__name__}."
                )
        self.layers = nn.ModuleList(wrapped)
        self.set_fuse(fuse, chunk_steps=chunk_steps)

    def set_fuse(self, fuse: bool | str = "auto", *, chunk_steps: int | None = None) -> None:
        """Choose when a ``Linear`` and the spiking neuron layer after it run fused in time chunks (class doc).

        Args:
            fuse: ``"auto"``, ``True`` or ``False``.
            chunk_steps: time steps per chunk; None: sized automatically
                (:func:`spikeforge.kernels.fused_linear.chunk_steps`).
        """
        if fuse not in _FUSE or not isinstance(fuse, (bool, str)):
            raise SpikeforgeError(f"fuse must be 'auto', True or False, got {describe(fuse)}.")
        if chunk_steps is not None and (isinstance(chunk_steps, bool) or not isinstance(chunk_steps, int)
                                        or chunk_steps < 1):
            raise SpikeforgeError(f"chunk_steps must be None or a positive int, got {describe(chunk_steps)}.")
        self.fuse = fuse
        self.chunk_steps = chunk_steps

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> nn.Module:
        return self.layers[i]

    def _states(self, state: Any) -> tuple:
        if state is None:
            return (None,) * len(self.layers)
        if not isinstance(state, (tuple, list)) or len(state) != len(self.layers):
            raise SpikeforgeError(
                f"state must be None or a tuple with one entry per layer ({len(self.layers)}), "
                f"got {type(state).__name__} of length "
                f"{len(state) if hasattr(state, '__len__') else '?'}."
            )
        return tuple(state)

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, tuple]:
        """Run every layer in turn.

        Memory: the output of a ``Linear``/``Conv`` layer (``fresh_output``) that feeds a neuron layer
        (``accepts_donation``) is a temporary only this loop holds, so it is donated: the neuron's fused kernel
        keeps its saved membrane there instead of in a new ``[T, B, ...]`` buffer. Not when forward hooks could
        have kept a reference to it. A ``Linear`` followed by a spiking neuron layer may instead run fused with
        it in time chunks, never holding the current of all steps (``fuse``, class doc).

        Shape:
            ``[T, B, *in]`` -> ``[T, B, *out]``.
        """
        check_sequence("x", x)
        out, new = self._run(x, state, None)
        return out, new

    def _run(self, x: Tensor, state: Any, outs: list | None) -> tuple[Tensor, tuple]:
        """The loop of :meth:`forward`; appends each layer's output to ``outs`` when given (None where it is never
        held: a ``Linear`` fused with the neuron layer after it, or an output donated to that layer)."""
        layers, states = self.layers, self._states(state)
        new: list = []
        keep = outs.append if outs is not None else _drop
        owned = False  # whether x is a fresh temporary that only this loop references
        i = 0
        while i < len(layers):
            layer, s = layers[i], states[i]
            if i + 1 < len(layers) and self.fuse is not False and _fusable(layer, layers[i + 1]):
                route = layer.route(x)
                chained = self._chain(i, x, route, states, new, keep)
                if chained is not None:
                    x, i, owned = chained
                    continue
                fused = self._fused(layer, layers[i + 1], x, route, states[i + 1])
                if fused is not None:
                    x, s_next = fused
                    new += [None, s_next]
                    keep(None)
                    keep(x)
                    owned = False
                    i += 2
                    continue
                if route is not None:  # the decision is made: run the product without deciding again
                    x, s = layer.product(x, route[1]), None
                    owned = True
                    new.append(s)
                    keep(x)
                    i += 1
                    continue
            if owned and getattr(layer, "accepts_donation", False):
                if outs is not None:
                    outs[-1] = None  # its memory now holds the neuron's saved membrane
                x, s = layer(x, s, donate=True)
            else:
                x, s = layer(x, s)
            owned = getattr(layer, "fresh_output", False) and not _hooked(layer)
            new.append(s)
            keep(x)
            i += 1
        return x, tuple(new)

    def _band(self, lin: nn.Module, neuron: nn.Module) -> bool:
        """Whether ``fuse="auto"`` runs the pair as a stage of a band chain (the neuron layer takes the compact
        sparse-backward scan), given a sparse input and a recorded gradient."""
        return (self.fuse == "auto" and _fusable(lin, neuron)
                and cpu_scan.compact_band(neuron.kernel, neuron.fire_spec, neuron.sparse_backward))

    def _chain(self, i: int, x: Tensor, route, states: tuple, new: list,
               keep) -> tuple[Tensor, int, bool] | None:
        """Run ``layers[i:]`` as a :class:`~spikeforge.kernels.fused_linear.BandChain` when ``layers[i]`` and
        ``layers[i + 1]`` form a band stage: then as many further ``[Dropout ->] Linear -> IF/LIF`` stages as join
        (the next ``Linear``'s input is known only after the forward of the stage before) and, last, a ``[Dropout
        ->] Linear`` whose output leaves the chain as a current. Appends the layers' states and outputs (None for
        the ``Linear`` and ``Dropout`` layers inside the chain) and returns ``(output, next layer, owned)``; None when
        the pair is not a band stage here (nothing run)."""
        layers = self.layers
        if route is None or route[1] is None or x.device.type != "cpu" or not self._band(layers[i], layers[i + 1]):
            return None
        if not _needs_grad(x, layers[i], states[i + 1]):
            return None
        chain = fused_linear.BandChain(x, route[1])
        j, pending = i, None  # pending: (Dropout mask, position of the next Linear) drawn for a Linear not yet joined
        while True:
            lin, neuron = layers[j], layers[j + 1]
            like = lin.weight.new_zeros(()).expand(x.shape[1], lin.module.out_features)  # one step of the current
            state = states[j + 1] if states[j + 1] is not None else neuron.init_state(like)
            if not chain.add_stage(neuron.kernel, neuron.fire_spec, neuron.params(like), state, lin.weight,
                                   lin.bias, neuron.sparse_backward):
                if j == i:
                    return None
                break
            pending = None
            j += 2
            k = j + 1 if j < len(layers) and self._plain_dropout(layers[j]) else j
            if k >= len(layers) or not _linear(layers[k]):
                break
            drop = layers[j] if k > j else None
            mask = drop.keep_mask(chain.top) if drop is not None else None
            nxt = layers[k].route(chain.drop(mask))
            pending = (mask, k)
            chain.set_input(None if nxt is None else nxt[1])
            if nxt is None or nxt[1] is None:
                break
            if k + 1 < len(layers) and self._band(layers[k], layers[k + 1]):
                j = k
                continue
            if k + 1 < len(layers) and self._chunked(layers[k], layers[k + 1], chain.top, nxt[1]):
                break  # the Linear and the layer after it run fused in time chunks, for their memory
            if chain.add_tail(layers[k].weight, layers[k].bias):
                pending = None
                j = k + 1
            break
        results, tail = chain.finish()
        k = i  # states and outputs of the layers the chain ran: Linear (None), neuron, Dropout between stages (None)
        for r, (z, s) in enumerate(results):
            new += [None, s]
            keep(None)
            keep(z)
            k += 2
            if (r + 1 < len(results) or tail is not None) and self._plain_dropout(layers[k]):
                new.append(None)
                keep(None)
                k += 1
        if tail is not None:
            new.append(None)
            keep(tail)
            return tail, k + 1, True
        x = results[-1][0]
        if pending is not None and pending[1] > k:  # a Dropout drawn for a Linear that did not join: applied here
            x = x if pending[0] is None else x * pending[0]
            new.append(None)
            keep(x)
            k += 1
        return x, k, False

    @staticmethod
    def _plain_dropout(layer: nn.Module) -> bool:
        """A :class:`~spikeforge.nn.Dropout` whose call a band chain may take over (no hooks, its own forward)."""
        return isinstance(layer, Dropout) and type(layer).forward is Dropout.forward and not _any_hooks(layer)

    def _chunked(self, lin: Linear, neuron: nn.Module, x: Tensor, active) -> bool:
        """Whether the pair runs fused in time chunks (:func:`~spikeforge.kernels.fused_linear.fused_linear_scan`)
        on an input with these non-zeros (None: dense), a gradient being recorded (class doc). Not a pair of a
        band chain (:meth:`_chain`)."""
        if not _fusable(lin, neuron) or self._band(lin, neuron):
            return False
        if self.fuse != "auto":
            return True
        if active is None or active.index.numel() > fused_linear.AUTO_MAX_ACTIVE * active.shape[0]:
            return False  # dense (one GEMM over all steps is faster), or a recompute costlier than the scan
        # one chunk: the whole current is held anyway (the donated buffer then holds the membrane), so fusing would
        # only add the recompute (a Fashion-MNIST training step, T=16, B=64: 38 % slower)
        steps = x.shape[0]
        return (self.chunk_steps or fused_linear.chunk_steps(steps, x.shape[1], x.shape[2])) < steps

    def _fused(self, lin: Linear, neuron: Neuron, x: Tensor, route, state: Any) -> tuple[Tensor, Any] | None:
        """Run ``lin`` and ``neuron`` as one call fused in time chunks when the policy (class doc) picks it; else
        None."""
        if route is None or x.device.type != "cpu":
            return None
        if self.fuse == "auto" and not _needs_grad(x, lin, state):
            return None  # no graph to keep memory for
        active = route[1]
        if not self._chunked(lin, neuron, x, active):
            return None
        like = lin.weight.new_zeros(()).expand(x.shape[1], lin.module.out_features)  # one step of the current
        if state is None:
            state = neuron.init_state(like)
        return fused_linear.fused_linear_scan(neuron.kernel, neuron.fire_spec, neuron.params(like), state, x,
                                              lin.weight, lin.bias, active=active,
                                              sparse_backward=neuron.sparse_backward, chunk=self.chunk_steps)

    def layer_outputs(self, x: Tensor, state: Any = None, *,
                      every: bool = True) -> tuple[Tensor, tuple, list[Tensor | None]]:
        """Like ``forward``, plus every layer's output sequence (e.g. hidden spikes for a rate penalty).

        Args:
            every: True: each layer runs on its own and every output is held. False: the layers run as
                :meth:`forward` runs them (donated buffers, fused ``Linear -> neuron`` pairs; what training
                needs, with the memory and speed of ``forward``), and the output of a ``Linear`` whose current is
                never held or whose buffer went to the neuron layer after it is None, as is a ``Dropout``'s inside
                a band chain (``fuse``); every other output, the neuron layers' among them, is there. The hidden
                spikes of a band chain are outputs of one autograd function: a gradient a loss sends to them
                (e.g. a rate penalty) is exact, but the gradient that autograd reports *for* them
                (``torch.autograd.grad``, tensor hooks) is only the part that reaches them from outside the chain;
                use ``every=True`` or ``fuse=False`` to inspect it.
        """
        check_sequence("x", x)
        if not every:
            outs: list = []
            out, new_state = self._run(x, state, outs)
            return out, new_state, outs
        new, outs = [], []
        for layer, s in zip(self.layers, self._states(state), strict=True):
            x, s = layer(x, s)
            new.append(s)
            outs.append(x)
        return x, tuple(new), outs

    def trace(self, x: Tensor, state: Any = None) -> tuple[Tensor, tuple, list]:
        """Like ``forward``; the record holds, per layer, ``(output, record or None)``."""
        check_sequence("x", x)
        new, records = [], []
        for layer, s in zip(self.layers, self._states(state), strict=True):
            x, s, rec = layer.trace(x, s)
            new.append(s)
            records.append((x, rec))
        return x, tuple(new), records
