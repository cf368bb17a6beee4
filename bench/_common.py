"""Shared pieces of the accuracy benchmarks: run configs in worker processes, summarise, print, save."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(job["threads"])
    from spikeforge.train.config import load_config
    from spikeforge.train.trainer import Trainer

    path = Path(job["config"])
    cfg = load_config(path if path.is_file() else ROOT / path, job["overrides"])
    trainer = Trainer(cfg)
    final = trainer.fit()
    per_epoch = sum(r["seconds"] for r in trainer.history) / max(1, len(trainer.history))
    return {**job["tag"], **final, "epoch_seconds": per_epoch, "peak_memory_mib": peak_memory_mib(trainer.device)}


def interleaved(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median time (ms) of each ``fns[name]() -> seconds``, the calls interleaved round by round (one warm-up round
    first), so that load from other processes on a shared machine hits every variant alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            t = fn()
            if r:
                times[name].append(t)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def peak_memory_mib(device=None) -> float:
    """Peak memory so far: ``torch.cuda.max_memory_allocated`` on a CUDA device, else the peak resident set size
    of this process (``ru_maxrss``; a worker that ran several jobs reports the largest of them)."""
    import resource

    import torch

    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_jobs(jobs: list[dict[str, Any]], workers: int, threads: int | None = None,
             run_one: Callable[[dict[str, Any]], dict[str, Any]] = _run_one) -> list[dict[str, Any]]:
    """Run training jobs, ``workers`` at a time, each on ``threads`` threads (default cpu_count // workers).

    ``run_one(job)`` trains one job (default: the config with its overrides); a replacement must be a module-level
    function so that worker processes can find it."""
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, workers))
    for job in jobs:
        job["threads"] = threads
    if workers <= 1:
        return [run_one(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run_one, jobs))


def summarise(values: list[float], *, keep: bool = False) -> dict[str, Any]:
    """Mean, std, min and max of ``values`` (with ``keep``: also their count and the values themselves)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    out: dict[str, Any] = {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}
    if keep:
        out.update(n=len(values), values=list(values))
    return out


def evaluate_with(trainer, model) -> float:
    """Test accuracy of ``model`` through ``trainer``'s own evaluation (encoding, batches, read-out)."""
    original = trainer.model
    trainer.model = model
    try:
        return trainer.evaluate("test")["acc"]
    finally:
        trainer.model = original


def environment() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """Print rows as a fixed-width table; columns are (key, header, format)."""
    widths = [max(len(h), 10) for _, h, _ in columns]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths, strict=True)))
    for row in rows:
        cells = []
        for (key, _, fmt), w in zip(columns, widths, strict=True):
            val = row.get(key, "")
            cells.append((format(val, fmt) if isinstance(val, (int, float)) else str(val)).rjust(w))
        print("  ".join(cells))


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    from spikeforge.train.checkpoint import dump_json

    dump_json(path, data)
    print(f"wrote {path}")
