"""End to end: the trainer trains the Yin-Yang event configs (exact TTFS gradients, EventProp) from their YAML
files, and the loss drops within a few batches; config errors teach."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spikeforge.core.checks import SpikeforgeError
from spikeforge.data import load_yinyang
from spikeforge.train.config import load_config
from spikeforge.train.datasets import Splits
from spikeforge.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def _splits(n_train: int) -> Splits:
    train, test = load_yinyang("train"), load_yinyang("test")
    return Splits((train[0][:n_train], train[1][:n_train]), None, (test[0][:300], test[1][:300]), 3)


@pytest.mark.parametrize("name", ["yinyang-ttfs.yaml", "yinyang-eventprop.yaml"])
def test_event_config_trains_and_loss_drops(tmp_path, name):
    torch.set_num_threads(1)
    cfg = load_config(ROOT / "configs" / name, {"output.dir": str(tmp_path), "output.progress": False,
                                                "output.plots": False, "train.epochs": 2})
    trainer = Trainer(cfg, splits=_splits(5000))
    before = trainer.evaluate("test")
    final = trainer.fit()
    after = trainer.evaluate("test")
    assert after["loss"] < before["loss"] - 0.02, (before, after)
    assert 0 < final["spikes_per_sample"] and final["test_acc"] > 0.4
    assert (tmp_path / "last.pt").is_file()
    # resume from the checkpoint continues where it stopped
    resumed = Trainer(load_config(ROOT / "configs" / name, {"output.dir": str(tmp_path), "output.progress": False,
                                                            "output.plots": False, "train.epochs": 2}),
                      resume=True, splits=_splits(5000))
    assert resumed.epoch == 2
    assert resumed.evaluate("test")["loss"] == pytest.approx(after["loss"])


def test_event_config_errors_teach():
    base = {"model": {"method": "ttfs", "layers": [{"type": "event_lif", "out": 3, "tau_mem": 5e-3,
                                                     "tau_syn": 5e-3}]},
            "encoding": {"type": "spike_times", "times": {"t_min": 0.0, "t_max": 1e-2}},
            "train": {"loss": {"readout": "ttfs", "options": {"tau_0": 1e-3, "t_max": 2e-2}}}}
    from spikeforge.train.config import config_from_dict

    config_from_dict(base)
    bad = {**base, "encoding": {"type": "current"}}
    with pytest.raises(SpikeforgeError, match="spike_times"):
        config_from_dict(bad)
    bad = {**base, "train": {"loss": {"readout": "max_membrane"}}}
    with pytest.raises(SpikeforgeError, match="event_li read-out"):
        config_from_dict(bad)
    bad = {**base, "train": {"loss": {"readout": "ttfs", "options": {"tau0": 1.0}}}}
    with pytest.raises(SpikeforgeError, match="unknown key 'tau0'"):
        config_from_dict(bad)
    bad = {**base, "model": {"method": "evenprop", "layers": base["model"]["layers"]}}
    with pytest.raises(SpikeforgeError, match="model.method"):
        config_from_dict(bad)


@pytest.mark.parametrize("readout", ["max_membrane", "integral", "spike_count"])
def test_eventprop_readouts_train(tmp_path, readout):
    """The EventLI read-out losses (max membrane, loss shaping) and the spike-count loss train through EventProp."""
    from spikeforge.train.config import config_from_dict

    torch.set_num_threads(1)
    hidden = {"type": "event_lif", "out": 30, "tau_mem": 20e-3, "tau_syn": 5e-3, "max_spikes": 2, "t_max": 40e-3,
              "init_mean": 0.55, "init_std": 0.29}
    if readout == "spike_count":
        last = {"type": "event_lif", "out": 3, "tau_mem": 20e-3, "tau_syn": 5e-3, "max_spikes": 6, "t_max": 40e-3,
                "init_mean": 0.1, "init_std": 0.2}
        options = {"window": 40e-3}
    else:
        last = {"type": "event_li", "out": 3, "tau_mem": 20e-3, "tau_syn": 5e-3, "t_max": 40e-3, "steps": 40}
        options = {"weighting": "exp"} if readout == "integral" else {}
    cfg = config_from_dict({
        "data": {"dataset": "yinyang"},
        "encoding": {"type": "spike_times", "times": {"t_min": 2e-3, "t_max": 27e-3, "larger_later": True,
                                                      "t_bias": 0.0}},
        "model": {"method": "eventprop", "layers": [hidden, last]},
        "train": {"epochs": 3, "batch_size": 50, "optimizer": {"name": "adam", "lr": 1e-3 if readout != "spike_count"
                                                                else 1e-4},
                  "loss": {"readout": readout, "options": options, "logit_scale": 2.0}},
        "output": {"dir": str(tmp_path), "progress": False, "plots": False}})
    trainer = Trainer(cfg, splits=_splits(300))
    before = trainer.evaluate("test")["loss"]
    trainer.fit()
    assert trainer.evaluate("test")["loss"] < before - 0.01


def test_readout_init_mean_applies_and_time_noise_is_refused():
    """``init_mean``/``init_std`` set the read-out's initial weights too (in units of its w0); ``time_noise`` on a
    non-spiking read-out is an error."""
    from spikeforge.nn.events import psp_peak
    from spikeforge.train.config import config_from_dict
    from spikeforge.train.event import build_event_model

    def cfg(last):
        return config_from_dict({
            "model": {"method": "eventprop", "layers": [
                {"type": "event_lif", "out": 4, "tau_mem": 20e-3, "tau_syn": 5e-3, "t_max": 40e-3},
                {"type": "event_li", "out": 3, "tau_mem": 20e-3, "tau_syn": 5e-3, "t_max": 40e-3, **last}]},
            "encoding": {"type": "spike_times", "times": {"t_min": 0.0, "t_max": 1e-2}},
            "train": {"loss": {"readout": "max_membrane"}}})

    model = build_event_model(cfg({"init_mean": 0.5, "init_std": 0.0}), 5, 3)
    w0 = 1.0 / psp_peak(20e-3, 5e-3)
    assert torch.allclose(model.layers[1].weight, torch.full((3, 4), 0.5 * w0))
    default = build_event_model(cfg({}), 5, 3)
    assert not torch.allclose(default.layers[1].weight, torch.full((3, 4), 0.5 * w0))
    with pytest.raises(SpikeforgeError, match="time_noise"):
        cfg({"time_noise": 1e-4})
