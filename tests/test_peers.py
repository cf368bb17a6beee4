"""bench/peers.py runs end to end in its smoke mode: one record per library, matched dynamics, ratios, JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_peers_smoke_writes_one_record_per_library(tmp_path):
    out = tmp_path / "peers.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "peers.py"), "--smoke", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    recs = {r["library"]: r for r in data["records"]}
    assert set(recs) == {"floor", "spikeforge", "plain"}
    for r in recs.values():
        assert "error" not in r, r
        assert r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 and r["mem_mb"] is not None and r["mem_mb"] >= 0
        assert len(r["fwd_bwd_ms_all"]) == data["rounds"]
    # The floor is the reference of the floor ratio; the plain loop is the only (hence fastest) peer here.
    assert recs["floor"]["fwd_bwd_ms_vs_floor"] == 1.0
    assert recs["plain"]["fwd_bwd_ms_vs_fastest_peer"] == 1.0
    assert data["fastest_peer_fwd_bwd_ms"] == "plain"
    # Same weights, same LIF update: the plain PyTorch loop and spikeforge fire the same spikes.
    sf, plain = recs["spikeforge"], recs["plain"]
    assert 0.0 < sf["spikes_per_neuron_step"] < 1.0
    assert abs(sf["spikes_per_neuron_step"] - plain["spikes_per_neuron_step"]) < 1e-3
    assert sf["spikes_first_steps"] == plain["spikes_first_steps"]
    assert recs["floor"]["spikes_per_neuron_step"] is None
    assert "spikeforge" in proc.stdout and "fb/floor" in proc.stdout  # the printed table


def test_failing_library_is_recorded_not_raised(capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import peers
    finally:
        sys.path.remove(str(ROOT / "bench"))
    peers.run_worker("no_such_library", "smoke", "cpu", 1, False)
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["library"] == "no_such_library" and "KeyError" in rec["error"]
    recs = [rec, {"library": "floor", "fwd_ms": 1.0, "fwd_bwd_ms": 2.0, "mem_mb": 1.0}]
    peers.add_ratios(recs)
    assert recs[1]["fwd_bwd_ms_vs_floor"] == 1.0 and "fwd_bwd_ms_vs_floor" not in recs[0]
