"""Trainer, config validation, checkpoints, resume, losses, distributed equivalence and the CLI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spikeforge.core.checks import SpikeforgeError
from spikeforge.train import checkpoint as ckpt
from spikeforge.train.config import config_from_dict, load_config
from spikeforge.train.losses import cross_entropy, mse_membrane, rate_regularizer
from spikeforge.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------- config
def test_shipped_configs_validate():
    for name in ("yinyang.yaml", "mnist.yaml"):
        cfg = load_config(ROOT / "configs" / name)
        assert cfg.model.layers


def test_unknown_key_is_named(tiny_config):
    tiny_config["train"]["optimizer"]["lrr"] = 0.1
    with pytest.raises(SpikeforgeError, match=r"train\.optimizer\.lrr.*allowed keys.*lr"):
        config_from_dict(tiny_config)


def test_ill_typed_key_is_named(tiny_config):
    tiny_config["train"]["epochs"] = "many"
    with pytest.raises(SpikeforgeError, match=r"train\.epochs.*must be int.*'many'"):
        config_from_dict(tiny_config)


def test_bool_is_not_an_int(tiny_config):
    tiny_config["train"]["batch_size"] = True
    with pytest.raises(SpikeforgeError, match=r"train\.batch_size"):
        config_from_dict(tiny_config)


def test_unknown_layer_type_and_key(tiny_config):
    bad = copy.deepcopy(tiny_config)
    bad["model"]["layers"][1]["type"] = "lifx"
    with pytest.raises(SpikeforgeError, match=r"model\.layers\[1\]\.type.*'lifx'"):
        config_from_dict(bad)
    bad = copy.deepcopy(tiny_config)
    bad["model"]["layers"][1]["tau"] = 0.01
    with pytest.raises(SpikeforgeError, match=r"unknown key 'tau' in model\.layers\[1\].*tau_mem"):
        config_from_dict(bad)


def test_wrong_class_count_and_bad_tau(tiny_config):
    bad = copy.deepcopy(tiny_config)
    bad["model"]["layers"][3]["out"] = 4
    with pytest.raises(SpikeforgeError, match="3 classes"):
        Trainer(config_from_dict(bad))
    bad = copy.deepcopy(tiny_config)
    bad["model"]["layers"][1]["tau_mem"] = -1.0
    with pytest.raises(SpikeforgeError, match=r"model\.layers\[1\].*tau_mem must be positive"):
        Trainer(config_from_dict(bad))


def test_yaml_overrides(tmp_path, tiny_config):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    cfg = load_config(path, {"train.epochs": 7, "train.optimizer.lr": "1e-2"})
    assert cfg.train.epochs == 7 and cfg.train.optimizer.lr == pytest.approx(0.01)


# ------------------------------------------------------------------- losses
def test_losses_by_hand():
    out = torch.zeros(3, 2, 2)
    out[1, 0, 1] = 1.0  # sample 0: class 1 max membrane 1
    out[2, 1, 0] = 2.0  # sample 1: class 0 max membrane 2
    ce = cross_entropy(out, torch.tensor([1, 0]), "max_membrane", logit_scale=1.0)
    expected = torch.log1p(torch.exp(torch.tensor([-1.0, -2.0])))
    torch.testing.assert_close(ce, expected)
    # first-spike-time: earlier spike -> larger logit
    z = torch.zeros(4, 1, 2)
    z[1, 0, 0] = 1.0
    z[3, 0, 1] = 1.0
    ce_t = cross_entropy(z, torch.tensor([0]), "first_spike_time", logit_scale=4.0)
    torch.testing.assert_close(ce_t, torch.log1p(torch.exp(torch.tensor([-(3 - 1) / 4 * 4.0]))))
    v, tgt = torch.ones(5, 2, 3), torch.zeros(5, 2, 3)
    tgt[:, 1] = 3.0
    torch.testing.assert_close(mse_membrane(v, tgt), torch.tensor([1.0, 4.0]))
    spikes = torch.zeros(4, 2, 2)
    spikes[:, 0, 0] = 1.0  # sample 0: rates (1, 0)
    torch.testing.assert_close(rate_regularizer([spikes], 0.5), torch.tensor([0.25, 0.25]))
    with pytest.raises(SpikeforgeError, match="readout must be one of"):
        cross_entropy(out, torch.tensor([1, 0]), "nope")


# --------------------------------------------------------- checkpoints/resume
def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_resume_is_bit_identical(tiny_config, tmp_path):
    straight = copy.deepcopy(tiny_config)
    straight["output"]["dir"] = str(tmp_path / "straight")
    a = Trainer(config_from_dict(straight))
    res_a = a.fit()

    stopped = copy.deepcopy(tiny_config)
    stopped["output"]["dir"] = str(tmp_path / "stopped")
    b = Trainer(config_from_dict(stopped))
    b.fit(stop_after=1)
    del b
    c = Trainer(config_from_dict(stopped), resume=True)
    assert c.epoch == 1
    res_c = c.fit()

    pa, pc = _params(a), _params(c)
    assert pa.keys() == pc.keys()
    for k in pa:
        assert torch.equal(pa[k], pc[k]), k
    assert res_a["test_acc"] == res_c["test_acc"]
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in c.history]
    log = json.loads((tmp_path / "stopped" / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert (tmp_path / "stopped" / "log.csv").read_text().count("\n") == 4


def test_training_learns(tiny_config):
    tiny_config["data"]["limit_train"] = 1000
    tiny_config["train"]["epochs"] = 6
    result = Trainer(config_from_dict(tiny_config)).fit()
    assert result["test_acc"] > 0.6  # chance is about 0.33
    assert result["spikes_per_sample"] > 0


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, {"model": {"w": torch.ones(2)}, "config": {}})

    def boom(obj, fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.save_checkpoint(path, {"model": {"w": torch.zeros(2)}, "config": {}})
    monkeypatch.undo()
    assert torch.equal(ckpt.load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    with pytest.raises(SpikeforgeError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SpikeforgeError, match="could not be read"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")


# ------------------------------------------------------------- distributed
DDP_SCRIPT = """
import json, sys, torch
from spikeforge.train.config import config_from_dict
from spikeforge.train.trainer import Trainer
cfg = json.loads(sys.argv[1])
t = Trainer(config_from_dict(cfg))
t.fit()
if t.world.rank == 0:
    torch.save(t.model.state_dict(), sys.argv[2])
"""


def test_two_process_gloo_equals_one_process(tiny_config, tmp_path):
    cfg = copy.deepcopy(tiny_config)
    cfg["model"]["layers"] = [layer for layer in cfg["model"]["layers"] if layer["type"] != "dropout"]
    cfg["train"]["epochs"] = 2
    cfg["train"]["batch_size"] = 30  # 256 samples: the last global batch (16) splits 8/8
    cfg["output"]["plots"] = False
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = dict(cfg, output=dict(cfg["output"], dir=str(tmp_path / "one")))
    subprocess.run([sys.executable, str(script), json.dumps(one), str(tmp_path / "one.pt")],
                   check=True, env=env, timeout=300)
    two = dict(cfg, output=dict(cfg["output"], dir=str(tmp_path / "two")))
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(script), json.dumps(two), str(tmp_path / "two.pt")],
                   check=True, env=env, timeout=300, capture_output=True)
    a = torch.load(tmp_path / "one.pt")
    b = torch.load(tmp_path / "two.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert not torch.equal(a["layers.0.module.weight"], torch.zeros_like(a["layers.0.module.weight"]))


# --------------------------------------------------------------------- CLI
def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spikeforge", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_train_evaluate(tiny_config, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    out = tmp_path / "cli"
    res = _cli("train", str(path), "--out", str(out), "--epochs", "2")
    assert res.returncode == 0, res.stderr
    final = json.loads(res.stdout[res.stdout.index("{"):])
    assert 0.0 <= final["test_acc"] <= 1.0
    for name in ("last.pt", "best.pt", "log.csv", "log.json", "final.json", "learning_curves.png",
                 "raster.png", "membrane.png"):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0
    assert (out / "raster.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = _cli("evaluate", str(out / "last.pt"))
    assert res.returncode == 0, res.stderr
    ev = json.loads(res.stdout)
    assert ev["acc"] == pytest.approx(final["test_acc"])
    # resume from the CLI continues after epoch 2
    res = _cli("train", str(path), "--out", str(out), "--epochs", "3", "--resume")
    assert res.returncode == 0, res.stderr
    assert "after epoch 2" in res.stdout
    assert len(json.loads((out / "log.json").read_text())) == 3


def test_cli_errors(tmp_path, tiny_config):
    tiny_config["train"]["epochz"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    res = _cli("train", str(path))
    assert res.returncode == 2
    assert "unknown config key 'train.epochz'" in res.stderr
    res = _cli("evaluate", str(tmp_path / "none.pt"))
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_cli_demo_runs(tmp_path):
    res = _cli("demo", "--epochs", "1", "--out", str(tmp_path / "demo"))
    assert res.returncode == 0, res.stderr
    for line in ("float model accuracy", "on the chip", "power estimate", "spikes per sample"):
        assert line in res.stdout, res.stdout
    assert (tmp_path / "demo" / "raster.png").is_file()
    assert (tmp_path / "demo" / "deploy-xylo-audio2" / "chip_config.npz").is_file()
