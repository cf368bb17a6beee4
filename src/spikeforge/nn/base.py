"""The module contract: ``forward(x, state=None) -> (output, state)`` on time-major sequences."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..core.checks import check_finite, check_rank

__all__ = ["SNNModule", "check_sequence"]


def check_sequence(name: str, x: Tensor, *, min_rank: int = 2) -> None:
    """Check that ``x`` is a finite time-major sequence ``[T, B, *features]``."""
    check_rank(name, x, tuple(range(min_rank, 8)), layout="[T, B, *features] (time-major)")
    check_finite(name, x)


class SNNModule(nn.Module):
    """Base of every spikeforge layer.

    ``forward(x, state=None)`` maps a sequence ``[T, B, ...]`` to ``(output, state)``; feeding a
    sequence in chunks with the returned state gives exactly the output of one call. Stateless layers
    return ``state=None``. ``trace`` also returns a record of internal variables (or None).
    """

    stateful: bool = False

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:  # pragma: no cover
        raise NotImplementedError

    def trace(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any, Any]:
        """Like ``forward``, plus a record of internal variables over time (None here)."""
        out, state = self(x, state)
        return out, state, None
