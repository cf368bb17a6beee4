"""CUDA graphs of a whole model (spikeforge.kernels.graphed): equal to the eager model, clear errors."""

from __future__ import annotations

import pytest
import torch

from spikeforge import nn as snn
from spikeforge.core.checks import SpikeforgeError
from spikeforge.kernels import graphed


def _model(device: str) -> snn.Sequential:
    torch.manual_seed(0)
    return snn.Sequential(snn.Linear(24, 32), snn.LIF(5e-3, dt=1e-3), snn.Linear(32, 8),
                          snn.CubaLIF(5e-3, 2e-3, dt=1e-3)).to(device)


def test_graphed_refuses_cpu_input_and_bad_arguments():
    model = _model("cpu")
    with pytest.raises(SpikeforgeError, match="sample must be a CUDA tensor"):
        graphed(model, torch.zeros(5, 2, 24))
    with pytest.raises(SpikeforgeError, match="model must be a torch.nn.Module"):
        graphed(lambda x: x, torch.zeros(5, 2, 24))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_equals_eager_on_cuda():
    model = _model("cuda")
    x = (torch.rand(50, 16, 24, device="cuda") < 0.3).float() * 3.0
    out = model(x)[0]
    out.sum().backward()
    ref_out = out.detach().clone()
    ref_grads = [p.grad.detach().clone() for p in model.parameters()]
    del out  # no eager autograd graph may stay alive across the capture (its AccumulateGrad nodes)
    f = graphed(model, x)
    for _ in range(2):  # replays accumulate into fresh .grad like eager steps
        for p in model.parameters():
            p.grad = None
        out = f(x)
        out.sum().backward()
        torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
        for g, p in zip(ref_grads, model.parameters(), strict=True):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)
    # a NaN is still caught when the model runs eagerly (checks are skipped only while capturing)
    with pytest.raises(SpikeforgeError, match="finite"):
        model(x * float("nan"))
