"""Event-driven layer on the CPU: the PyTorch engine vs the C++ kernels (``spikeforge.kernels.cpu_event``).

Part 1 times the forward pass and forward + backward (EventProp) of the first, spiking layer of two configs, with
the PyTorch reference engine and with the C++ kernels, on one thread: the CPU time of the thread
(``time.thread_time``, immune to waiting for a core on a shared machine), medians of interleaved runs.

* MNIST (``configs/mnist-eventprop.yaml``): batch 64, 784 latency-coded pixels (real MNIST training images when
  the data set is found, else random latencies with ~150 spikes per sample), 350 hidden neurons, 3 spikes each;
* Yin-Yang (``configs/yinyang-eventprop.yaml``): batch 150, 5 inputs, 500 hidden neurons (120 before), 2 spikes each.

Part 2 profiles one whole MNIST EventProp training step (encoding, event layer, ``EventLI`` read-out, loss,
backward, Adam) with the C++ kernels and reports each part's share of the step.

    python bench/event_speed.py --json bench/results/event_speed.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from _common import ROOT, environment, interleaved, print_table, write_json

from spikeforge.core.checks import SpikeforgeError
from spikeforge.kernels import cpu_event
from spikeforge.sim import eventprop as ep
from spikeforge.train.config import load_config
from spikeforge.train.datasets import encode_batch
from spikeforge.train.event import EventTask

CONFIGS = {"mnist": "src/spikeforge/configs/mnist-eventprop.yaml",
           "yinyang": "src/spikeforge/configs/yinyang-eventprop.yaml"}
BATCH = {"mnist": 64, "yinyang": 150}


def _samples(name: str, cfg) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A batch ``(x [B, *features], y [B])`` of the config's data set and where it came from."""
    b = BATCH[name]
    try:
        if name == "mnist":
            from spikeforge.data import load_mnist, to_float_images

            x, y = load_mnist("train")
            return to_float_images(x[:b]), y[:b], "MNIST training images"
        from spikeforge.data import load_yinyang

        x, y = load_yinyang("train")
        return x[:b], y[:b], "Yin-Yang training samples"
    except SpikeforgeError:
        g = torch.Generator().manual_seed(0)
        if name == "mnist":  # ~150 of 784 pixels at or above the encoding threshold
            x = torch.where(torch.rand(b, 784, generator=g) < 150 / 784, 0.2 + 0.8 * torch.rand(b, 784, generator=g),
                            torch.zeros(b, 784))
            return x, torch.randint(0, 10, (b,), generator=g), "random latencies (MNIST not found)"
        return torch.rand(b, 4, generator=g), torch.randint(0, 3, (b,), generator=g), "random (Yin-Yang not found)"


def _setup(name: str):
    """The config's model and task, and an encoded batch ``[K, B, n_in]`` with its labels."""
    cfg = load_config(ROOT / CONFIGS[name])
    x, y, source = _samples(name, cfg)
    seq = encode_batch(x, cfg.encoding, None)
    task = EventTask(cfg)
    model = task.build((seq.shape[2],), 10 if name == "mnist" else 3)
    return cfg, task, model, seq, y, source


def _layer_fns(layer, t_in: torch.Tensor) -> tuple[Callable[[], float], Callable[[], float]]:
    """``() -> seconds`` of the layer's forward, and of its forward + backward (a loss on every spike time)."""
    c = torch.rand(t_in.shape[0], layer.weight.shape[0], layer.max_spikes, generator=torch.Generator().manual_seed(1))

    def fwd() -> float:
        t0 = time.thread_time()
        with torch.no_grad():
            layer(t_in)
        return time.thread_time() - t0

    def fwd_bwd() -> float:
        layer.zero_grad()
        t0 = time.thread_time()
        out = layer(t_in)
        (torch.where(torch.isfinite(out), out, 0.0) * c).sum().backward()
        return time.thread_time() - t0

    return fwd, fwd_bwd


def _switch(enabled: bool, fn: Callable[[], float]) -> Callable[[], float]:
    def run() -> float:
        cpu_event.ENABLED = enabled
        try:
            return fn()
        finally:
            cpu_event.ENABLED = True
    return run


def time_layers(repeats: int) -> list[dict]:
    rows = []
    for name in CONFIGS:
        _cfg, _task, model, seq, _y, source = _setup(name)
        layer = model.layers[0]
        t_in = seq.permute(1, 2, 0).contiguous()
        if model.bias_times[0] is not None:
            from spikeforge.train.event import _bias_channel

            t_in = torch.cat([t_in, _bias_channel(t_in, model.bias_times[0])], dim=1)
        with torch.no_grad():
            spikes_in = int(torch.isfinite(t_in).sum()) / t_in.shape[0]
            spikes_out = int(torch.isfinite(layer(t_in)).sum()) / t_in.shape[0]
        fwd, fwd_bwd = _layer_fns(layer, t_in)
        # the Python engine is slow on the MNIST shape: fewer rounds of it
        reps = repeats if name == "yinyang" else max(3, repeats // 2)
        ms = interleaved({"py_fwd": _switch(False, fwd), "cpp_fwd": _switch(True, fwd),
                           "py_fb": _switch(False, fwd_bwd), "cpp_fb": _switch(True, fwd_bwd)}, reps)
        rows.append({"shape": name, "batch": t_in.shape[0], "n_in": t_in.shape[1], "n_out": layer.weight.shape[0],
                     "max_spikes": layer.max_spikes, "inputs": source, "in_spikes_per_sample": spikes_in,
                     "out_spikes_per_sample": spikes_out, "py_fwd_ms": ms["py_fwd"], "cpp_fwd_ms": ms["cpp_fwd"],
                     "fwd_speedup": ms["py_fwd"] / ms["cpp_fwd"], "py_fb_ms": ms["py_fb"], "cpp_fb_ms": ms["cpp_fb"],
                     "fb_speedup": ms["py_fb"] / ms["cpp_fb"]})
    return rows


def profile_step(repeats: int) -> dict:
    """Shares of one MNIST EventProp training step (C++ kernels on), medians over ``repeats`` steps."""
    cfg, task, model, _seq, y, _source = _setup("mnist")
    x, _, _ = _samples("mnist", cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.optimizer.lr)
    lif, readout = model.layers[0], model.layers[1]
    acc = {"event_bwd": 0.0}
    original = ep.backward_feedforward

    def timed_backward(*args, **kw):
        t0 = time.thread_time()
        try:
            return original(*args, **kw)
        finally:
            acc["event_bwd"] += time.thread_time() - t0

    parts: dict[str, list[float]] = {k: [] for k in ("encode", "event_fwd", "readout_fwd", "loss", "event_bwd",
                                                     "readout_loss_bwd", "optimizer", "total")}
    ep.backward_feedforward = timed_backward
    try:
        for r in range(repeats + 1):
            acc["event_bwd"] = 0.0
            opt.zero_grad(set_to_none=False)
            c0 = time.thread_time()
            seq = encode_batch(x, cfg.encoding, None)
            c1 = time.thread_time()
            h = lif(seq.permute(1, 2, 0))
            c2 = time.thread_time()
            out = readout(h)
            c3 = time.thread_time()
            per_sample = task.fn(out, task.grid.to(out), y, **task.kw)
            loss = per_sample.sum() / len(y)
            c4 = time.thread_time()
            loss.backward()
            c5 = time.thread_time()
            opt.step()
            c6 = time.thread_time()
            if r:
                step = {"encode": c1 - c0, "event_fwd": c2 - c1, "readout_fwd": c3 - c2, "loss": c4 - c3,
                        "event_bwd": acc["event_bwd"], "readout_loss_bwd": c5 - c4 - acc["event_bwd"],
                        "optimizer": c6 - c5, "total": c6 - c0}
                for k, v in step.items():
                    parts[k].append(v)
    finally:
        ep.backward_feedforward = original
    med = {k: 1e3 * statistics.median(v) for k, v in parts.items()}
    total = med["total"]
    return {"ms": med, "share": {k: v / total for k, v in med.items() if k != "total"},
            "epoch_estimate_s": total / 1e3 * math.ceil(60000 / 64)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds per variant (after one warm-up round)")
    ap.add_argument("--no-profile", action="store_true", help="skip the training-step profile")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not cpu_event.available():
        raise SystemExit("the C++ event kernels could not be built here; nothing to compare")
    rows = time_layers(args.repeats)
    print("Event layer on one CPU thread (thread CPU time, medians; fb = forward + EventProp backward)")
    print_table(rows, [("shape", "shape", ""), ("batch", "batch", "d"), ("n_in", "n_in", "d"),
                       ("n_out", "n_out", "d"), ("in_spikes_per_sample", "in/sample", ".0f"),
                       ("py_fwd_ms", "py fwd ms", ".2f"), ("cpp_fwd_ms", "C++ fwd ms", ".2f"),
                       ("fwd_speedup", "fwd x", ".1f"), ("py_fb_ms", "py fb ms", ".2f"),
                       ("cpp_fb_ms", "C++ fb ms", ".2f"), ("fb_speedup", "fb x", ".1f")])
    data = {"environment": environment(), "threads": 1, "layers": rows}
    if not args.no_profile:
        prof = profile_step(args.repeats)
        data["mnist_training_step"] = prof
        print("\nOne MNIST EventProp training step (C++ kernels, batch 64), thread CPU time, medians")
        print_table([{"part": k, "ms": prof["ms"][k], "share": 100 * prof["share"][k]} for k in prof["share"]]
                    + [{"part": "total", "ms": prof["ms"]["total"], "share": 100.0}],
                    [("part", "part", ""), ("ms", "ms", ".2f"), ("share", "% of step", ".1f")])
        print(f"-> about {prof['epoch_estimate_s']:.0f} s of compute per 60000-sample epoch on one thread")
    write_json(args.json, data)


if __name__ == "__main__":
    main()
