"""NeuroBench-compatible metrics: hand-computed values on tiny models, and agreement with ``neurobench``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import spikeforge.nn as snn
from spikeforge.core.checks import SpikeforgeError
from spikeforge.metrics import activation_sparsity, connection_sparsity, footprint, synaptic_operations


def _linear(weight, bias=None) -> snn.Linear:
    w = torch.tensor(weight, dtype=torch.float32)
    layer = snn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return layer


# ---------------------------------------------------------------- hand-computed values


def test_footprint_counts_parameters_and_buffers():
    model = snn.Sequential(snn.Linear(3, 2), snn.LIF())
    # weight 6 + bias 2 float32 parameters; LIF buffers tau_mem, v_th, v_leak, v_reset (scalars)
    assert footprint(model) == (6 + 2) * 4 + 4 * 4
    assert footprint(model.double()) == (6 + 2 + 4) * 8


def test_connection_sparsity_counts_zero_weights():
    model = snn.Sequential(_linear([[0, 1], [2, 0]]), snn.LIF(), _linear([[0, 3]]))
    assert connection_sparsity(model) == 0.5
    # Recurrent: 2x3 input weights (none zero) + 3x3 recurrent weights with a zero diagonal: 3 / 15
    rec = snn.Recurrent(2, snn.LIF(size=3), bias=False)
    with torch.no_grad():
        rec.input.weight.fill_(1.0)
        rec.recurrent.weight.fill_(1.0).fill_diagonal_(0.0)
    assert connection_sparsity(snn.Sequential(rec)) == 0.2
    # rounded to 4 decimals, as NeuroBench
    w = torch.ones(1, 3)
    w[0, 0] = 0
    assert connection_sparsity(snn.Sequential(_linear(w.tolist()))) == 0.3333


def test_connection_sparsity_without_connections_is_an_error():
    with pytest.raises(SpikeforgeError, match="no connection layer"):
        connection_sparsity(snn.Sequential(snn.LIF()))


def test_activation_sparsity_over_steps_samples_and_layers():
    model = snn.Sequential(_linear([[1, 0], [0, -1]]), nn.ReLU())
    x = torch.tensor([[[1.0, 1.0], [0.0, -2.0]], [[3.0, 0.0], [-1.0, 0.0]]])  # [T=2, B=2, 2]
    # ReLU outputs: [1,0],[0,2],[3,0],[0,0] -> 3 non-zero of 8
    assert activation_sparsity(model, x) == pytest.approx(5 / 8)
    # IF with threshold 0.5, reset to 0: every input 1 spikes, every 0 does not
    model = snn.Sequential(_linear([[1, 0], [0, 1]]), snn.IF(v_th=0.5, reset="value"))
    x = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]])  # [T=3, B=1, 2]
    assert activation_sparsity(model, x) == pytest.approx(3 / 6)
    assert activation_sparsity(snn.Sequential(_linear([[1.0]])), torch.ones(2, 1, 1)) == 0.0


def test_synaptic_operations_acs_macs_and_dense():
    # column non-zeros of W: [1, 0, 2]; the bias is not counted
    model = snn.Sequential(_linear([[1, 0, 2], [0, 0, 3]], bias=[5.0, -1.0]))
    spikes = torch.tensor([[[1.0, 0, 1], [0, 0, 0]], [[1.0, 1, 1], [0, 1, 0]]])  # [T=2, B=2, 3]
    # step 0: 1 + 2 + 0 = 3, step 1: 1 + 0 + 2 + 0 = 3 -> 6 ACs over 2 samples
    assert synaptic_operations(model, spikes) == {"effective_macs": 0.0, "effective_acs": 3.0, "dense": 12.0}
    # step 1 made analog: its operations are MACs, step 0 stays ACs (the choice is made per time step)
    mixed = spikes.clone()
    mixed[1] = torch.tensor([[0.5, 1.0, 0.0], [0.0, 0.0, 2.0]])  # 1 + 0 + 2 = 3 MACs
    assert synaptic_operations(model, mixed) == {"effective_macs": 1.5, "effective_acs": 1.5, "dense": 12.0}
    # -1 counts as a spike (NeuroBench's test is values in {-1, 0, 1})
    assert synaptic_operations(model, -spikes)["effective_acs"] == 3.0


def test_synaptic_operations_of_a_recurrent_layer():
    # IF with threshold 0.5, reset to 0; input weights 1, recurrent weights 1 off the diagonal
    rec = snn.Recurrent(1, snn.IF(v_th=0.5, reset="value", size=2), bias=False)
    with torch.no_grad():
        rec.input.weight.fill_(1.0)
        rec.recurrent.weight.fill_(1.0).fill_diagonal_(0.0)
    x = torch.tensor([[[1.0]], [[0.0]], [[0.0]]])  # [T=3, B=1, 1]
    # step 0: input 1 -> 2 input ACs, both neurons spike; steps 1, 2: each neuron gets 1 from the other
    # -> both spike again; recurrent ACs at steps 1 and 2: 2 each (the diagonal is zero)
    ops = synaptic_operations(snn.Sequential(rec), x)
    assert ops == {"effective_macs": 0.0, "effective_acs": 2.0 + 4.0, "dense": 3 * 2 + 3 * 4}


def test_unsupported_layers_are_refused_with_a_message():
    model = snn.Sequential(snn.DelayedLinear(2, 2))
    with pytest.raises(SpikeforgeError, match="do not support DelayedLinear"):
        synaptic_operations(model, torch.ones(2, 1, 2))


# ---------------------------------------------------------------- agreement with the neurobench package

try:
    import neurobench  # noqa: F401
    NEUROBENCH_ERROR = None
except ImportError as err:  # the hand-computed tests above still run
    NEUROBENCH_ERROR = f"neurobench cannot be imported ({err}); install it with pip install --no-deps neurobench==2.3.0"


class _StepNeuron(nn.Module):
    """One spikeforge neuron layer stepped one time step per call, state kept as hidden state (snnTorch style)."""

    def __init__(self, neuron: snn.Neuron) -> None:
        super().__init__()
        self.neuron = neuron
        self.state = None

    def forward(self, x):
        out, self.state = self.neuron(x[None], self.state)
        return out[0]


class _StepRecurrent(nn.Module):
    """``Recurrent`` stepped one time step per call: input and recurrent synapses are separate nn.Linear calls."""

    def __init__(self, rec: snn.Recurrent) -> None:
        super().__init__()
        self.input, self.recurrent, self.step = rec.input, rec.recurrent, _StepNeuron(rec.neuron)
        self.z = None

    def forward(self, x):
        cur = self.input(x)
        z = torch.zeros_like(cur) if self.z is None else self.z
        self.z = self.step(cur + self.recurrent(z))
        return self.z


class _StepNet(nn.Module):
    """The same modules (same weights) as a spikeforge Sequential, run one time step per call as NeuroBench's
    ``SNNTorchModel`` expects: ``net(x_t) -> (out_t, None)``, ``net.reset()`` between batches."""

    def __init__(self, model: snn.Sequential) -> None:
        super().__init__()
        steps = []
        for layer in model.layers:
            if isinstance(layer, snn.Recurrent):
                steps.append(_StepRecurrent(layer))
            elif isinstance(layer, snn.Neuron):
                steps.append(_StepNeuron(layer))
            elif isinstance(layer, snn.Dropout):
                steps.append(nn.Identity())  # NeuroBench evaluates in eval mode
            else:
                steps.append(layer.module)
        self.steps = nn.ModuleList(steps)

    def reset(self):
        for m in self.modules():
            if isinstance(m, _StepNeuron):
                m.state = None
            if isinstance(m, _StepRecurrent):
                m.z = None

    def forward(self, x):
        for m in self.steps:
            x = m(x)
        return x, None


def _neurobench_results(model: snn.Sequential, x: torch.Tensor) -> dict:
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import SNNTorchModel, TorchModel

    data = torch.utils.data.TensorDataset(x.transpose(0, 1), torch.zeros(x.shape[1]))  # NeuroBench: [B, T, ...]
    loader = torch.utils.data.DataLoader(data, batch_size=x.shape[1])
    wrapped = SNNTorchModel(_StepNet(model))
    wrapped.add_activation_module(_StepNeuron)
    bench = Benchmark(wrapped, loader, [], [], [[], [ActivationSparsity, SynapticOperations]])
    results = bench.run(quiet=True)
    static = TorchModel(model)  # the static metrics read the spikeforge model itself
    results["Footprint"] = Footprint()(static)
    results["ConnectionSparsity"] = ConnectionSparsity()(static)
    return results


def _feedforward(seed: int) -> snn.Sequential:
    torch.manual_seed(seed)
    model = snn.Sequential(snn.Linear(12, 20), snn.LIF(tau_mem=5e-3), snn.Dropout(0.3), snn.Linear(20, 16),
                           snn.LIF(tau_mem=5e-3), snn.Linear(16, 4, bias=False), snn.LI(tau_mem=5e-3))
    with torch.no_grad():
        model[0].weight.mul_(6.0)
        model[3].weight.mul_(6.0)
        model[3].weight[model[3].weight.abs() < 0.1] = 0.0  # some pruned synapses
    return model


def _conv(seed: int) -> snn.Sequential:
    torch.manual_seed(seed)
    model = snn.Sequential(snn.Conv2d(2, 4, 3, padding=1), snn.IF(), snn.MaxPool2d(2), snn.Flatten(),
                           snn.Linear(4 * 3 * 3, 8), nn.ReLU(), snn.Linear(8, 5), snn.CubaLIF())
    with torch.no_grad():
        model[0].module.weight.mul_(4.0)
    return model


def _recurrent(seed: int) -> snn.Sequential:
    torch.manual_seed(seed)
    rec = snn.Recurrent(6, snn.LIF(tau_mem=5e-3, size=10))
    with torch.no_grad():
        rec.input.weight.mul_(8.0)
        rec.recurrent.weight.mul_(4.0)
    return snn.Sequential(rec, snn.Linear(10, 3), snn.AdaptiveLIF(size=3))


def _mixed(u: torch.Tensor) -> torch.Tensor:
    """Spikes at even steps, analog values at odd ones: NeuroBench decides AC vs MAC per layer call (step)."""
    x = (u < 0.3).float()
    x[1::2] = u[1::2]
    return x


CASES = {
    "feedforward-spikes": (_feedforward, lambda g: (torch.rand(15, 5, 12, generator=g) < 0.3).float()),
    "feedforward-analog": (_feedforward, lambda g: torch.rand(15, 5, 12, generator=g) * (torch.rand(15, 5, 12,
                                                                                                   generator=g) < 0.5)),
    "feedforward-mixed": (_feedforward, lambda g: _mixed(torch.rand(15, 5, 12, generator=g))),
    "conv-spikes": (_conv, lambda g: (torch.rand(6, 3, 2, 6, 6, generator=g) < 0.4).float()),
    "conv-analog": (_conv, lambda g: torch.randn(6, 3, 2, 6, 6, generator=g)),
    "recurrent-spikes": (_recurrent, lambda g: (torch.rand(20, 4, 6, generator=g) < 0.3).float()),
}


@pytest.mark.skipif(NEUROBENCH_ERROR is not None, reason=str(NEUROBENCH_ERROR))
@pytest.mark.parametrize("case", sorted(CASES))
def test_equal_to_neurobench(case):
    build, make_x = CASES[case]
    model = build(0).eval()
    x = make_x(torch.Generator().manual_seed(1))
    ref = _neurobench_results(model, x)
    ops = synaptic_operations(model, x)
    ours = {"Footprint": footprint(model), "ConnectionSparsity": connection_sparsity(model),
            "ActivationSparsity": activation_sparsity(model, x), "Effective_MACs": ops["effective_macs"],
            "Effective_ACs": ops["effective_acs"], "Dense": ops["dense"]}
    theirs = {k: ref[k] for k in ("Footprint", "ConnectionSparsity", "ActivationSparsity")}
    theirs |= {k: ref["SynapticOperations"][k] for k in ("Effective_MACs", "Effective_ACs", "Dense")}
    # NeuroBench's Benchmark weights a batch's activation sparsity by batch_size / dataset_len: equal to the last ulp
    assert ours.pop("ActivationSparsity") == pytest.approx(theirs.pop("ActivationSparsity"), rel=1e-12, abs=0)
    assert ours == theirs
    assert ops["effective_acs"] > 0  # every case has spiking layers
    assert ops["effective_macs"] > 0 or case in ("feedforward-spikes", "recurrent-spikes")  # ReLU feeds MACs
