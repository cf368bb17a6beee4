"""The reference semantics of sparse backward, shared by the CPU and Triton kernel tests."""

from __future__ import annotations

import torch

from spikeforge.dynamics import common


def gated_fire(band: float):
    """``dynamics.common.fire`` with sparse backward: where the membrane (after the refractory hold) is outside
    ``|v - v_th| < band`` it and the held value are constants for autograd, so no gradient passes through them.
    Patch it over a model module's ``fire`` to get the reference the fused kernels must equal."""

    def fire(spec, v, v_th, v_reset, ref, v_before):
        held = v if ref is None else torch.where(ref <= 0, v, v_before)
        inb = (held - v_th).abs() < band
        v = torch.where(inb, v, v.detach())
        v_before = torch.where(inb, v_before, v_before.detach())
        return common.fire(spec, v, v_th, v_reset, ref, v_before)

    return fire
