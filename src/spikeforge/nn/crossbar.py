"""Dense synapses computed on a simulated memristive crossbar (:mod:`spikeforge.analog.crossbar`).

:class:`CrossbarLinear` keeps trainable float weights. Its forward pass uses the non-ideal crossbar product;
its backward pass is that of the ideal ``F.linear`` (straight-through: ``y = ideal + (nonideal - ideal).detach()``),
so hardware-aware training sees the hardware's outputs but the ideal gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..analog.crossbar import CrossbarConfig, CrossbarState, crossbar_matmul, program
from ..core.checks import SpikeforgeError, check_positive_int, check_shape_tail, describe
from .base import SNNModule, check_sequence

__all__ = ["CrossbarLinear"]

#: The ideal crossbar (every effect off), the default configuration.
IDEAL = CrossbarConfig()


class CrossbarLinear(SNNModule):
    """``y = x W^T + b`` on a memristive crossbar with the non-idealities of ``config``.

    Args:
        in_features: input size (crossbar rows). out_features: output size (crossbar columns).
        config: :class:`~spikeforge.analog.crossbar.CrossbarConfig`; the default is an ideal crossbar whose
            output equals ``torch.nn.functional.linear`` exactly.
        bias: learn a digital bias, added after the ADC.
        seed: seed of the fixed-pattern effects (programming noise, stuck-at faults, drift exponents),
            drawn once per programming, and of the read-noise stream (one draw per forward call).

    The array is programmed from the current weights by :meth:`program`, and automatically at the first
    forward call and whenever the weights have changed since the last programming (e.g. after an optimiser
    step); automatic reprogramming reuses ``seed``, so the fixed pattern stays the same. Weights are
    initialised as in ``torch.nn.Linear``.

    Shape:
        ``[T, B, in] -> [T, B, out]`` (time folded into the batch).
    """

    def __init__(self, in_features: int, out_features: int, config: CrossbarConfig = IDEAL,
                 bias: bool = True, seed: int = 0) -> None:
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        if not isinstance(config, CrossbarConfig):
            raise SpikeforgeError(f"config must be a CrossbarConfig, got {describe(config)}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SpikeforgeError(f"seed must be an integer, got {describe(seed)}.")
        self.config = config
        self.seed = seed
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()
        self._state: CrossbarState | None = None
        self._programmed_from: Tensor | None = None
        self._read_generator = torch.Generator().manual_seed(seed)

    def reset_parameters(self) -> None:
        """Initialise weight and bias as ``torch.nn.Linear`` does."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def program(self, seed: int | None = None) -> CrossbarState:
        """(Re)program the array from the current weights and restart the read-noise stream.

        Args:
            seed: new seed for the fixed-pattern effects and read noise; None keeps ``self.seed``.

        Returns:
            The programmed :class:`~spikeforge.analog.crossbar.CrossbarState`.
        """
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise SpikeforgeError(f"seed must be None or an integer, got {describe(seed)}.")
            self.seed = seed
        self._read_generator = torch.Generator().manual_seed(self.seed)
        return self._program()

    def _program(self) -> CrossbarState:
        with torch.no_grad():
            w = self.weight.detach()
            gen = torch.Generator().manual_seed(self.seed)
            self._state = program(w, self.config, gen)
            self._programmed_from = w.clone()
        return self._state

    @property
    def crossbar_state(self) -> CrossbarState:
        """The programmed array, (re)programmed first if the weights changed since the last programming."""
        w = self.weight.detach()
        stale = (self._state is None or self._programmed_from is None or self._programmed_from.shape != w.shape
                 or self._programmed_from.dtype != w.dtype or self._programmed_from.device != w.device
                 or not torch.equal(self._programmed_from, w))
        return self._program() if stale else self._state

    def forward(self, x: Tensor, state: None = None) -> tuple[Tensor, None]:
        """Apply the crossbar to every time step (one read-noise draw per call).

        Shape:
            x ``[T, B, in]`` -> ``[T, B, out]``.
        """
        check_sequence("x", x, min_rank=3)
        check_shape_tail("x", x, (self.in_features,), layout="[T, B, in_features]")
        if x.dim() != 3:
            raise SpikeforgeError(f"x must have rank 3 laid out as [T, B, in_features], got shape {tuple(x.shape)}.")
        if x.dtype != self.weight.dtype:
            raise SpikeforgeError(
                f"x must have the layer's dtype {self.weight.dtype}, got {x.dtype}; convert one of them "
                f"(e.g. layer.to(x.dtype))."
            )
        t, b = x.shape[:2]
        x2 = x.reshape(t * b, self.in_features)
        with torch.no_grad():
            nonideal = crossbar_matmul(x2, self.crossbar_state, self.config, self._read_generator, bias=self.bias)
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or self.weight.requires_grad or (self.bias is not None and self.bias.requires_grad))
        if needs_grad:
            ideal = F.linear(x2, self.weight, self.bias)
            y = ideal + (nonideal - ideal).detach()
        else:
            y = nonideal
        return y.reshape(t, b, self.out_features), None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, seed={self.seed}, config=({self.config.describe()})")
