"""Shared fixtures: a tiny Yin-Yang training config for fast trainer tests."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

TINY = {
    "seed": 3,
    "data": {"dataset": "yinyang", "limit_train": 256, "limit_test": 200},
    "encoding": {"type": "current", "steps": 6, "bias": True},
    "model": {
        "dt": 1.0e-3,
        "init_gain": 3.0,
        "layers": [
            {"type": "linear", "out": 24},
            {"type": "lif", "tau_mem": 5.0e-3},
            {"type": "dropout", "p": 0.1},
            {"type": "linear", "out": 3},
            {"type": "li", "tau_mem": 5.0e-3},
        ],
    },
    "train": {"epochs": 3, "batch_size": 32, "eval_batch_size": 100,
              "optimizer": {"name": "adam", "lr": 5.0e-3},
              "schedule": {"name": "cosine"},
              "loss": {"readout": "max_membrane", "logit_scale": 5.0, "rate_weight": 0.1,
                       "rate_target": 0.05}},
    "output": {"dir": "unset", "plots": True, "progress": False},
}


@pytest.fixture
def tiny_config(tmp_path: Path) -> dict:
    """A deep copy of a tiny config writing into a temporary folder."""
    cfg = copy.deepcopy(TINY)
    cfg["output"]["dir"] = str(tmp_path / "run")
    return cfg


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one torch thread avoids the thread pool's wake-up cost (large on a busy machine). Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
