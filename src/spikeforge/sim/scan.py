"""Reference time-stepped engine: a plain loop over a model's ``step``.

Every other engine (fused kernels, event-driven) is pinned to this one by equivalence tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["run", "stack_states"]

Step = Callable[[Any, Any, Any, Tensor], tuple[Tensor, Any]]


def stack_states(states: list[NamedTuple]) -> NamedTuple:
    """Stack a list of per-step states into one state of ``[T, ...]`` tensors (None stays None).

    Nested states (NamedTuples inside a NamedTuple) are stacked field by field.
    """
    cls = type(states[0])
    fields = zip(*states, strict=True)
    return cls(*[_stack_field(list(f)) for f in fields])


def _stack_field(values: list) -> Any:
    """Stack one field over time; a nested state (e.g. a recurrent layer's neuron) recursively."""
    if values[0] is None:
        return None
    if isinstance(values[0], tuple):
        return stack_states(values)
    return torch.stack(values)


def run(
    step: Step, spec: Any, params: Any, state: NamedTuple, inputs: Tensor, *, record: bool = False
) -> tuple[Tensor, NamedTuple, NamedTuple | None]:
    """Run ``step`` over the leading time axis of ``inputs``.

    Args:
        step: a model's ``step(spec, params, state, x_t) -> (out_t, state)``.
        spec: the model's firing spec (reset, surrogate, refractoriness).
        params: the model's per-step parameters.
        state: state at the start of the sequence.
        inputs: input currents.
        record: also return every state variable at every step.

    Returns:
        ``(outputs, final_state, record)``; ``record`` is None unless requested.

    Shape:
        inputs ``[T, B, *features]`` -> outputs ``[T, B, *features]``; record fields ``[T, B, *features]``.
    """
    outs = []
    recs = []
    for t in range(inputs.shape[0]):
        out, state = step(spec, params, state, inputs[t])
        outs.append(out)
        if record:
            recs.append(state)
    out_seq = torch.stack(outs) if outs else inputs.new_zeros(inputs.shape)
    rec = stack_states(recs) if record and recs else None
    return out_seq, state, rec
