"""bench/neuron_study.py runs end to end with tiny settings: AnalogLIF with the Linear curve and no mismatch
reproduces the LIF accuracy exactly, every condition has accuracies, and the JSON and plot are written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_neuron_study_quick(tmp_path):
    out = tmp_path / "ns.json"
    script = str(ROOT / "bench" / "neuron_study.py")
    res = subprocess.run(
        [sys.executable, script, "--epochs", "1", "--train-seeds", "1", "--chips", "2", "--quick",
         "--workers", "1", "--out", str(tmp_path / "runs"), "--json", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["command"][1:3] == [script, "--epochs"]
    assert data["epochs"] == 1 and data["chips"] == 2 and data["train_seeds"] == [0] and data["sigmas"] == [0.1]
    assert "torch" in data["environment"]
    runs = {r["neuron"]: r for r in data["training"]}
    assert set(runs) == {"lif", "default"}
    lif_acc = runs["lif"]["test_acc"]
    assert data["lif_accuracy"]["values"] == [lif_acc]
    assert data["linear_equals_lif"] == {"0": True}
    by = {(r["trained"], r["curve"], r["sigma"]): r for r in data["results"]}
    assert set(by) == {("lif", "linear", 0.0), ("lif", "default", 0.0), ("lif", "default", 0.1),
                       ("lif", "linear", 0.1), ("default", "default", 0.0), ("default", "default", 0.1),
                       ("default", "linear", 0.0)}
    # AnalogLIF(curve=Linear()), no mismatch, on the LIF-trained weights: exactly the LIF accuracy
    assert by[("lif", "linear", 0.0)]["accuracy"]["values"] == [lif_acc]
    # the analog-trained network tested on its own neuron: the accuracy its training reported
    assert by[("default", "default", 0.0)]["accuracy"]["values"] == [runs["default"]["test_acc"]]
    for r in data["results"]:
        values = r["accuracy"]["values"]
        assert len(values) == (2 if r["sigma"] > 0 else 1)
        assert all(0.0 <= a <= 1.0 for a in values)
    assert out.with_suffix(".png").stat().st_size > 0
    assert "train LIF (time domain) | test Rails default" in res.stdout
