"""Smoke tests of the accuracy benchmarks: they run end to end and write their JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_yinyang_bench_writes_json(tmp_path):
    out = tmp_path / "yy.json"
    res = _bench("yinyang.py", "--seeds", "2", "--seed", "5", "--epochs", "1", "--workers", "1",
                 "--out", str(tmp_path / "runs"), "--json", str(out))
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["seeds"] == [5, 6]
    assert 0.3 < data["accuracy"]["mean"] <= 1.0
    assert data["spikes_per_sample"]["mean"] > 0
    assert "Yin-Yang test accuracy over 2 seeds" in res.stdout


def test_mnist_bench_writes_json(tmp_path):
    out = tmp_path / "mnist.json"
    res = _bench("mnist.py", "--datasets", "mnist", "--epochs", "1", "--limit-train", "512",
                 "--limit-test", "256", "--workers", "1", "--out", str(tmp_path / "runs"), "--json", str(out))
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"mnist"}
    assert 0.0 < data["results"]["mnist"]["accuracy"]["mean"] <= 1.0
