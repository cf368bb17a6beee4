"""bench/crossbar_study.py runs end to end with tiny settings: the ideal crossbar reproduces the float accuracy,
every effect has an accuracy per step count, and the JSON and plot are written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_crossbar_study_quick(tmp_path):
    out = tmp_path / "cb.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "crossbar_study.py"), "--epochs", "1", "--steps", "4", "6",
         "--chips", "2", "--train-seeds", "1", "--quick", "--workers", "1", "--out", str(tmp_path / "runs"),
         "--json", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["steps"] == [4, 6] and data["chips"] == 2 and data["train_seeds"] == [0]
    assert data["command"][1:3] == [str(ROOT / "bench" / "crossbar_study.py"), "--epochs"]
    assert "torch" in data["environment"]
    by_effect = {(r["effect"], r["label"]): r for r in data["results"]}
    assert set(by_effect) == {("ideal", "all off"), ("levels", "8"), ("prog_noise", "1"), ("read_noise", "0.05"),
                              ("aihwkit_pcm", "1 h")}
    for t, run in zip(("4", "6"), data["training"], strict=True):
        float_acc = data["float_accuracy"][t]["mean"]
        assert float_acc == run["test_acc"]
        assert by_effect[("ideal", "all off")]["accuracy"][t]["values"] == [float_acc]
        for r in data["results"]:
            acc = r["accuracy"][t]
            assert len(acc["values"]) == (2 if r["stochastic"] else 1)
            assert all(0.0 <= a <= 1.0 for a in acc["values"])
    assert by_effect[("prog_noise", "1")]["stochastic"] and not by_effect[("levels", "8")]["stochastic"]
    assert out.with_suffix(".png").stat().st_size > 0
    assert "aihwkit_pcm" in res.stdout
