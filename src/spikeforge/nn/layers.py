"""Layers without memory, applied to all time steps at once by folding time into the batch.

``TimeDistributed`` wraps any ``torch.nn.Module`` that maps ``[N, *features]``; the named layers below
are ready-made wrappers. ``Dropout`` draws one mask per sample and keeps it for the whole sequence
(a neuron dropped at one step is dropped at every step), which suits recurrent dynamics.

``Linear`` computes its product from the active inputs only when the input is sparse spikes (binary, or scaled
by dropout's ``1/(1-p)`` in training; :mod:`spikeforge.kernels.sparse`): ``sparse="auto"`` (default) decides per
call from the measured density and
the device, ``sparse=True`` always accumulates active inputs, ``sparse=False`` is the plain dense product.
All three give the same outputs and gradients (up to float rounding).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..core.checks import SpikeforgeError, check_finite, check_in_range, describe
from ..kernels.sparse import SparseInput, choose, find_active, sparse_linear
from .base import SNNModule, check_sequence

__all__ = [
    "AvgPool1d",
    "AvgPool2d",
    "Conv1d",
    "Conv2d",
    "Dropout",
    "Flatten",
    "Linear",
    "MaxPool1d",
    "MaxPool2d",
    "TimeDistributed",
]


class TimeDistributed(SNNModule):
    """Apply a memoryless module to every time step at once.

    Shape:
        ``[T, B, *in]`` -> ``[T, B, *out]`` where the wrapped module maps ``[N, *in] -> [N, *out]``.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise SpikeforgeError(
                f"module must be a torch.nn.Module, got {type(module).__name__}."
            )
        self.module = module

    def forward(self, x: Tensor, state: None = None) -> tuple[Tensor, None]:
        check_sequence("x", x)
        t, b = x.shape[:2]
        try:
            y = self.module(x.reshape(t * b, *x.shape[2:]))
        except RuntimeError as err:
            raise SpikeforgeError(
                f"{type(self.module).__name__} could not take input of shape {tuple(x.shape)} "
                f"(time-major [T, B, *features]; per step {tuple(x.shape[2:])}): {err}"
            ) from err
        return y.reshape(t, b, *y.shape[1:]), None


class Linear(TimeDistributed):
    """Dense synapses ``y = x W^T + b``, with sparse spike arithmetic for sparse binary inputs.

    Args:
        in_features: input size. out_features: output size. bias: learn a bias.
        sparse: ``"auto"`` (default): per call, accumulate the weight columns of the active inputs when the
            input is spikes (every non-zero equals 1, or one common value such as dropout's ``1/(1-p)``) and its
            density is below ``sparse_threshold``;
            ``True``: always compute from the non-zeros (any values, weighted); ``False``: always the dense
            ``torch.nn.Linear`` product. The weight gradient of the sparse path also uses the active inputs
            only; the input gradient (when the input requires one) is the dense ``grad @ W``.
        sparse_threshold: density below which ``"auto"`` goes sparse; None takes the device's default
            (:data:`spikeforge.kernels.sparse.DEFAULT_THRESHOLDS`: measured on CPU, 0 = always dense on
            CUDA).

    Shape:
        ``[T, B, in] -> [T, B, out]``.
    """

    fresh_output = True  # a new tensor every call (Sequential may donate it to the next neuron layer)

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 sparse: bool | str = "auto", sparse_threshold: float | None = None) -> None:
        super().__init__(nn.Linear(in_features, out_features, bias=bias))
        if sparse not in ("auto", True, False):
            raise SpikeforgeError(f"sparse must be 'auto', True or False, got {describe(sparse)}.")
        if sparse_threshold is not None:
            check_in_range("sparse_threshold", sparse_threshold, 0.0, 1.0)
        self.sparse = sparse
        self.sparse_threshold = None if sparse_threshold is None else float(sparse_threshold)

    def forward(self, x: Tensor, state: None = None) -> tuple[Tensor, None]:
        """Apply the synapses to every time step (dense or sparse, see the class doc).

        Shape:
            x ``[T, B, in]`` -> ``[T, B, out]``.
        """
        route = self.route(x)
        if route is None:  # the dense product (and its errors) for anything else
            return super().forward(x, state)
        return self.product(x, route[1]), None

    def route(self, x: Tensor) -> tuple[Tensor, SparseInput | None] | None:
        """This call's choice of product, without computing it.

        Returns:
            None when the plain ``TimeDistributed`` path runs (``sparse=False``, or ``x`` not a ``[T, B, in]``
            tensor of the weight's dtype and device); else ``(x2, active)``: ``x`` as ``[T * B, in]`` and its
            non-zeros when the sparse product is chosen (None: dense). The input was checked to be finite.
        """
        lin = self.module
        plain = (not isinstance(x, Tensor) or x.dim() != 3 or x.shape[2] != lin.in_features
                 or x.dtype != lin.weight.dtype or x.device != lin.weight.device)
        if self.sparse is False or plain:
            return None
        t, b = x.shape[:2]
        x2 = x.reshape(t * b, x.shape[2])
        # Finiteness is checked on the non-zeros only when they are found anyway (binary ones are finite).
        active = find_active(x2) if self.sparse is True else choose(x2, self.sparse_threshold)
        if active is None:
            check_finite("x", x)
        elif active.values is not None:
            check_finite("x (its non-zero values)", active.values)
        return x2, active

    def product(self, x: Tensor, active: SparseInput | None) -> Tensor:
        """``x W^T + b`` for a ``[T, B, in]`` input, from its non-zeros ``active`` (see :meth:`route`) or dense.

        Shape:
            x ``[T, B, in]`` -> ``[T, B, out]``.
        """
        t, b = x.shape[:2]
        x2 = x.reshape(t * b, x.shape[2])
        lin = self.module
        y = lin(x2) if active is None else sparse_linear(x2, lin.weight, lin.bias, active=active)
        return y.reshape(t, b, -1)

    def extra_repr(self) -> str:
        thr = "" if self.sparse_threshold is None else f", sparse_threshold={self.sparse_threshold:g}"
        return f"sparse={self.sparse!r}{thr}"

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    @property
    def bias(self) -> nn.Parameter | None:
        return self.module.bias


class Conv1d(TimeDistributed):
    """1-D convolution. Shape: ``[T, B, C_in, L] -> [T, B, C_out, L_out]``."""

    fresh_output = True  # a new tensor every call (Sequential may donate it to the next neuron layer)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 padding: int | str = 0, dilation: int = 1, bias: bool = True) -> None:
        super().__init__(nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                                   padding=padding, dilation=dilation, bias=bias))


class Conv2d(TimeDistributed):
    """2-D convolution. Shape: ``[T, B, C_in, H, W] -> [T, B, C_out, H_out, W_out]``."""

    fresh_output = True  # a new tensor every call (Sequential may donate it to the next neuron layer)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], *,
                 stride: int = 1, padding: int | str = 0, dilation: int = 1,
                 bias: bool = True) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                   padding=padding, dilation=dilation, bias=bias))


class MaxPool1d(TimeDistributed):
    """1-D max pooling. Shape: ``[T, B, C, L] -> [T, B, C, L_out]``."""

    def __init__(self, kernel_size: int, *, stride: int | None = None) -> None:
        super().__init__(nn.MaxPool1d(kernel_size, stride=stride))


class MaxPool2d(TimeDistributed):
    """2-D max pooling. Shape: ``[T, B, C, H, W] -> [T, B, C, H_out, W_out]``."""

    def __init__(self, kernel_size: int, *, stride: int | None = None) -> None:
        super().__init__(nn.MaxPool2d(kernel_size, stride=stride))


class AvgPool1d(TimeDistributed):
    """1-D average pooling. Shape: ``[T, B, C, L] -> [T, B, C, L_out]``."""

    def __init__(self, kernel_size: int, *, stride: int | None = None) -> None:
        super().__init__(nn.AvgPool1d(kernel_size, stride=stride))


class AvgPool2d(TimeDistributed):
    """2-D average pooling. Shape: ``[T, B, C, H, W] -> [T, B, C, H_out, W_out]``."""

    def __init__(self, kernel_size: int, *, stride: int | None = None) -> None:
        super().__init__(nn.AvgPool2d(kernel_size, stride=stride))


class Flatten(TimeDistributed):
    """Flatten the feature dimensions. Shape: ``[T, B, *features] -> [T, B, prod(features)]``."""

    def __init__(self) -> None:
        super().__init__(nn.Flatten())


class Dropout(SNNModule):
    """Dropout with one mask per sample, shared by all time steps (identity in eval mode).

    Shape:
        ``[T, B, *features]`` -> same.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        check_in_range("p", p, 0.0, 1.0)
        self.p = float(p)

    def forward(self, x: Tensor, state: None = None) -> tuple[Tensor, None]:
        check_sequence("x", x)
        keep = self.keep_mask(x)
        return (x, None) if keep is None else (x * keep, None)

    def keep_mask(self, x: Tensor) -> Tensor | None:
        """This call's factor ``[B, *features]`` for ``x [T, B, *features]`` (0 where dropped, ``1/(1-p)`` where
        kept; drawn from torch's generator), or None where the layer is the identity (eval mode, ``p = 0``)."""
        if not self.training or self.p == 0.0:
            return None
        if self.p == 1.0:
            return x.new_zeros(x.shape[1:])
        return (x.new_empty(x.shape[1:]).bernoulli_(1.0 - self.p)) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
