"""Sparse backward (Perez-Nieves & Goodman 2021): backward time dense vs sparse, and the accuracy cost.

With ``sparse_backward=b`` a neuron-step whose membrane is outside ``|v - v_th| < b`` ("inactive") passes no
gradient: its input gradient is exactly zero. Part 1 times the backward of a LIF layer (fused scan alone), of a
spiking MLP (where the ``Linear`` layers then form their input, weight and bias gradients from the non-zeros of
the output gradient: ``kernels.sparse``'s CSR kernels) and of a recurrent LIF layer (where the skipped neurons also
skip their share of ``gx_t @ W_rec``) at several activity levels (fraction of neuron-steps inside the band), dense
(exact) vs sparse, same forward; medians of interleaved runs. Part 2 trains a config (``--config``, default
Yin-Yang; Fashion-MNIST with
``--config src/spikeforge/configs/fashion-mnist.yaml``) for the same number of epochs with and without it.

    python bench/sparse_backward.py --epochs 0 --mlp-bands 0.1 0.2 0.3 --json bench/results/sparse_backward_timings.json
    python bench/sparse_backward.py --no-timings --config src/spikeforge/configs/fashion-mnist.yaml --epochs 4 \
        --seeds 2 --train-bands 0.5 1.0 --threads 1 --json bench/results/sparse_backward_fashion_mnist.json

The issue's comparison (``bench/results/sparse_backward_deep.json``): train ``configs/fashion-mnist-deep.yaml``
exactly and ``configs/fashion-mnist-deep-sparse.yaml`` (band 0.46), then time a training step of each on its own
weights::

    python bench/sparse_backward.py --no-timings --epochs 0 --threads 1 --repeats 11 --band 0.46 \
        --pair EXACT/last.pt SPARSE/last.pt
"""

from __future__ import annotations

import argparse
import copy
import inspect
import time
from pathlib import Path

import torch
import yaml
from _common import ROOT, environment, interleaved, print_table, write_json

from spikeforge.cli.main import _parse_set
from spikeforge.kernels import cpu_scan
from spikeforge.nn import LIF, Recurrent


def _clock() -> float:
    """With one thread the CPU time of this thread (immune to waiting for a core on a shared machine; all the work
    runs on it), else wall time."""
    return time.thread_time() if torch.get_num_threads() == 1 else time.perf_counter()


def _backward_seconds(model, x: torch.Tensor, loss_of):
    """``() -> seconds`` of the backward of ``loss_of(model(x)[0])``, after a fresh forward pass each call."""
    def once() -> float:
        model.zero_grad()
        loss = loss_of(model(x)[0])
        t0 = _clock()
        loss.backward()
        return _clock() - t0

    return once


def _finish(row: dict, times: dict[str, float]) -> dict:
    row["dense_ms"], row["sparse_ms"] = times["dense"], times["sparse"]
    row["speedup"] = row["dense_ms"] / row["sparse_ms"]
    return row


def _in_band(layer: LIF, x: torch.Tensor, band: float) -> tuple[float, float]:
    """Fraction of neuron-steps with |v - v_th| < band (membrane before reset) and the spike rate."""
    cpu_scan.build()
    p = layer.params(x)
    state = layer.init_state(x[0])
    prep = cpu_scan._prepare("lif", layer.fire_spec, p, state, x, None)
    setup, table, v0, _aux, _ref = prep
    n = x[0].numel()
    z, vh = torch.ops.spikeforge_scan.scan_fwd(x.reshape(x.shape[0], n).contiguous(), table, v0.reshape(n).clone(),
                                               v0.new_zeros(n), torch.empty(0, dtype=torch.int32), setup.code,
                                               setup.reset, setup.refr, True)
    return float(((vh - table[3]).abs() < band).float().mean()), float(z.mean())


def _time_lif(t: int, b: int, n: int, drive: float, band: float, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = drive + 1.5 * torch.randn(t, b, n, generator=g)
    row = {"layer": f"LIF T={t} B={b} n={n}", "setting": f"drive {drive:g}", "band": band}
    row["in_band"], row["rate"] = _in_band(LIF(), x, band)
    fns = {}
    for name, layer in (("dense", LIF()), ("sparse", LIF(sparse_backward=band))):
        xi = x.clone().requires_grad_()

        def once(layer=layer, xi=xi) -> float:
            z, _ = layer(xi)
            gz = torch.ones_like(z)
            t0 = _clock()
            z.backward(gz)
            return _clock() - t0

        fns[name] = once
    return _finish(row, interleaved(fns, repeats))


def _time_recurrent(t: int, b: int, h: int, drive: float, band: float, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(t, b, h, generator=g) < 0.1).float()
    torch.manual_seed(0)
    dense = Recurrent(h, LIF(size=h))
    with torch.no_grad():
        dense.input.weight.mul_(20.0)
        dense.input.bias.fill_(drive)
    dense.input.requires_grad_(False)  # time the recurrent scan's backward (x_ff and W_rec gradients) only
    sparse = copy.deepcopy(dense)
    sparse.neuron.set_engine("auto", sparse_backward=band)
    row = {"layer": f"Recurrent T={t} B={b} H={h}", "setting": f"drive {drive:g}", "band": band}
    with torch.no_grad():  # the reference trace gives the membrane after reset; add the subtracted threshold back
        z, _, rec = dense.trace(x)
        vh = rec.v + z * dense.neuron.v_th
    row["rate"] = float(z.mean())
    row["in_band"] = float(((vh - dense.neuron.v_th).abs() < band).float().mean())
    w = torch.linspace(0, 1, h)
    fns = {name: _backward_seconds(layer, x, lambda z: (z * w).sum()) for name, layer in
           (("dense", dense), ("sparse", sparse))}
    return _finish(row, interleaved(fns, repeats))


def _sequential(*layers):
    """``Sequential`` of the unfused layers: a pending change fuses ``Linear -> LIF`` pairs (recomputing the forward
    in the backward pass) unless ``fuse=False``; this benchmark times the layers' own backward passes."""
    from spikeforge.nn import Sequential

    if "fuse" in inspect.signature(Sequential).parameters:
        return Sequential(*layers, fuse=False)
    return Sequential(*layers)


def _time_mlp(t: int, b: int, hidden: int, gain: float, band: float, repeats: int) -> dict:
    """Backward of a whole spiking MLP (784 -> hidden -> hidden -> 10, input spikes at 8 %, a LI read-out): the
    sparse backward's zero gradients make the hidden layers' input, weight and bias gradients sparse products."""
    from spikeforge.nn import LI, Linear

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(t, b, 784, generator=g) < 0.08).float()

    def net(sparse: float | None):
        torch.manual_seed(1)
        m = _sequential(Linear(784, hidden), LIF(sparse_backward=sparse), Linear(hidden, hidden),
                        LIF(sparse_backward=sparse), Linear(hidden, 10), LI())
        with torch.no_grad():
            m[0].weight.mul_(gain)
            m[2].weight.mul_(2.0 * gain)
        return m

    row = {"layer": f"MLP 784-{hidden}-{hidden}-10 T={t} B={b}", "setting": f"gain {gain:g}", "band": band}
    dense = net(None)
    with torch.no_grad():
        _, _, recs = dense.trace(x)
    in_band, rates = [], []
    for i in (1, 3):
        z, rec = recs[i]
        vh = rec.v + z * dense[i].v_th
        in_band.append(float(((vh - dense[i].v_th).abs() < band).float().mean()))
        rates.append(float(z.mean()))
    row["in_band"], row["rate"] = sum(in_band) / 2, sum(rates) / 2
    fns = {name: _backward_seconds(model, x, lambda out: out.amax(0).sum()) for name, model in
           (("dense", dense), ("sparse", net(band)))}
    return _finish(row, interleaved(fns, repeats))


def _training_batch(trainer, batch: int = 64, index: int = 0):
    """Training samples ``[index * batch, (index + 1) * batch)`` of a trainer's data, encoded as in training
    (seeded by ``index``)."""
    from spikeforge.train.datasets import encode_batch
    from spikeforge.train.trainer import _generator

    x_all, y_all = trainer.splits.train
    idx = torch.arange(index * batch, (index + 1) * batch) % x_all.shape[0]
    return encode_batch(x_all[idx], trainer.cfg.encoding, _generator(trainer.cfg.seed, 0, 2, index)), y_all[idx]


def _mean_activity(trainer, band: float | None, batches: int) -> dict:
    """:func:`_activity` averaged over the first ``batches`` training batches of 64."""
    acts = [_activity(trainer.model, _training_batch(trainer, 64, k)[0].to(trainer.device), band)
            for k in range(batches)]
    out = {key: sum(a[key] for a in acts) / batches for key in ("rate", "in_band") if key in acts[0]}
    for key in ("rates", "in_band_layers"):
        if key in acts[0]:
            out[key] = [sum(a[key][i] for a in acts) / batches for i in range(len(acts[0][key]))]
    return out


def _activity(model, xb: torch.Tensor, band: float | None) -> dict:
    """In-band fraction (neuron-steps with ``|v - v_th| < band``, membrane before reset; the "active" neurons of
    sparse backward) and spike rate of each spiking layer of ``model`` on the batch ``xb`` (training mode, fixed
    dropout masks), with their means over layers under ``in_band`` and ``rate``."""
    from spikeforge.nn import Neuron

    was_training = model.training
    model.train()
    with torch.no_grad():
        torch.manual_seed(0)
        _, _, records = model.trace(xb)
    model.train(was_training)
    in_band, rates = [], []
    for layer, (z, rec) in zip(model.layers, records, strict=True):
        if isinstance(layer, Neuron) and layer.kernel is not None:
            vh = rec.v + z * layer.v_th if layer.fire_spec.reset == "subtract" else rec.v
            if band is not None:
                in_band.append(float(((vh - layer.v_th).abs() < band).float().mean()))
            rates.append(float(z.mean()))
    out = {"rate": sum(rates) / len(rates), "rates": rates}
    if band is not None:
        out.update(in_band=sum(in_band) / len(in_band), in_band_layers=in_band)
    return out


def _time_checkpoint(path: str, bands: list[float], repeats: int, batch: int = 64) -> list[dict]:
    """Backward time of one training step of a trained network (see :func:`_load_trained`): its loss on
    ``batch`` training samples, exact vs each band, unfused and (where ``Sequential`` fuses ``Linear -> LIF``) as
    the default model runs; with the in-band fraction and spike rate of its spiking layers on that batch."""

    from spikeforge.nn import Neuron

    trainer = _load_trained(path)
    model = trainer.model
    xb, yb = _training_batch(trainer, batch)
    neurons = [m for m in model.modules() if isinstance(m, Neuron) and m.kernel is not None]
    fuse_modes = [None]
    if hasattr(model, "set_fuse"):
        fuse_modes = [False, "auto"]

    def step_seconds(band, fuse) -> float:
        for m in neurons:
            m.set_engine("auto", sparse_backward=band)
        if fuse is not None:
            model.set_fuse(fuse)
        torch.manual_seed(0)  # the same dropout masks for every variant
        model.zero_grad()
        _, per_sample, _ = trainer._forward(xb, yb)
        loss = per_sample.sum() / batch
        t0 = _clock()
        loss.backward()
        return _clock() - t0

    rows = []
    for fuse in fuse_modes:
        for band in bands:
            row = {"layer": f"{Path(path).parent.name} B={batch}", "setting": f"fuse={fuse}", "band": band}
            row.update(_activity(model, xb, band))
            fns = {"dense": lambda fuse=fuse: step_seconds(None, fuse),
                   "sparse": lambda band=band, fuse=fuse: step_seconds(band, fuse)}
            rows.append(_finish(row, interleaved(fns, repeats)))
    for m in neurons:
        m.set_engine("auto", sparse_backward=None)
    return rows


def _load_trained(path: str):
    """A trainer with the weights of ``path``: a checkpoint of ``spikeforge train`` or a file holding only its
    ``config`` and ``model`` (as ``bench/gpu_run.sh`` brings trained weights back), on the CPU."""
    import tempfile

    from spikeforge.train.config import config_from_dict
    from spikeforge.train.trainer import Trainer

    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = dict(ck["config"])
    cfg["device"] = "cpu"
    cfg["output"] = {"dir": tempfile.mkdtemp(prefix="sparse-bench-"), "plots": False, "progress": False}
    trainer = Trainer(config_from_dict(cfg))
    trainer.model.load_state_dict(ck["model"])
    trainer.model.train()
    return trainer


def _time_pair(dense_path: str, sparse_path: str, band: float, repeats: int, batch: int = 64) -> list[dict]:
    """The issue's comparison: one training step of a network trained exactly (its own surrogate, exact
    gradients) against one of a network trained with sparse backward at ``band``, each on its own weights, the same
    training batch and dropout masks. Backward and whole-step (forward + backward) times, with ``Sequential``'s
    ``Linear -> neuron`` fusion off and on ("auto"), and each network's activity (in-band fraction at ``band``,
    10 batches). The speed-up is taken against the faster of the exact network's two modes."""
    from spikeforge.nn import Neuron

    nets = {"dense": _load_trained(dense_path), "sparse": _load_trained(sparse_path)}
    for name, trainer in nets.items():
        for m in trainer.model.modules():
            if isinstance(m, Neuron) and m.kernel is not None:
                m.set_engine("auto", sparse_backward=band if name == "sparse" else None)
    xb, yb = _training_batch(nets["dense"], batch)
    times: dict[tuple, list[tuple[float, float]]] = {}

    def step(name: str, fuse) -> tuple[float, float]:
        trainer = nets[name]
        trainer.model.set_fuse(fuse)
        torch.manual_seed(0)  # the same dropout masks for every variant
        trainer.model.zero_grad()
        t0 = _clock()
        _, per_sample, _ = trainer._forward(xb, yb)
        loss = per_sample.sum() / batch
        t1 = _clock()
        loss.backward()
        return t1 - t0, _clock() - t1

    variants = [(name, fuse) for name in nets for fuse in (False, "auto")]
    for v in variants:  # warm-up
        step(*v)
    for _ in range(repeats):
        for v in variants:
            times.setdefault(v, []).append(step(*v))

    def med(values):
        return sorted(values)[len(values) // 2] * 1e3

    rows = []
    for (name, fuse), ts in times.items():
        row = {"layer": f"{Path(dense_path if name == 'dense' else sparse_path).parent.name} ({name})",
               "setting": f"fuse={fuse}", "band": band if name == "sparse" else None,
               "backward_ms": med([b for _, b in ts]), "step_ms": med([f + b for f, b in ts])}
        row.update(_mean_activity(nets[name], band, 10))
        rows.append(row)
    best = min(r["backward_ms"] for r in rows if r["band"] is None)
    for r in rows:
        r["speedup"] = best / r["backward_ms"]
    return rows


def _train(config: Path, band: float | None, epochs: int, seed: int, out: str,
           surrogate_scale: float | None = None, surrogate_name: str | None = None,
           overrides: dict | None = None, activity_band: float | None = None) -> dict:
    """Train ``config`` (with ``band`` as every LIF layer's ``sparse_backward``, the surrogate and dotted-key
    ``overrides`` applied) and return its test accuracy, time per epoch and the trained network's activity on 10
    training batches of 64 (in-band fraction at ``band``, or at ``activity_band`` for an exact run; spike rate)."""
    from spikeforge.train.config import apply_overrides, config_from_dict
    from spikeforge.train.trainer import Trainer

    data = apply_overrides(yaml.safe_load(config.read_text()), overrides)
    for key, value in (("scale", surrogate_scale), ("name", surrogate_name)):
        if value is not None:
            data["model"]["surrogate"] = {**data["model"].get("surrogate", {}), key: value}
    for layer in data["model"]["layers"]:
        if layer["type"] == "lif" and band is not None:
            layer["sparse_backward"] = band
    data["train"]["epochs"] = epochs
    data["seed"] = seed
    data["output"] = {"dir": f"{out}/band{band}-seed{seed}", "plots": False, "progress": False}
    surrogate = data["model"].get("surrogate", {})
    trainer = Trainer(config_from_dict(data))
    final = trainer.fit()
    per_epoch = sum(r["seconds"] for r in trainer.history) / max(1, len(trainer.history))
    act = _mean_activity(trainer, band if band is not None else activity_band, 10)
    return {"band": "none" if band is None else f"{band:g}", "seed": seed, "test_acc": final["test_acc"],
            "epochs": epochs, "epoch_seconds": per_epoch, "surrogate": surrogate, "overrides": overrides or {},
            "device": str(trainer.device), **act}


def _band_arg(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


#: table columns of a timing row after its name
TIMING_COLUMNS = [("setting", "setting", "s"), ("band", "band", ".2f"), ("in_band", "in band", ".3f"),
                  ("rate", "spike rate", ".3f"), ("dense_ms", "dense ms", ".1f"), ("sparse_ms", "sparse ms", ".1f"),
                  ("speedup", "speed-up", ".2f")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--band", type=float, default=0.3, help="sparse-backward band around v_th (default 0.3)")
    parser.add_argument("--train-bands", type=_band_arg, nargs="+", help="bands trained against the dense run "
                        "(default: --band; 'none': exact, e.g. with --skip-dense to train only the exact run)")
    parser.add_argument("--repeats", type=int, default=7, help="timing repeats, median taken (default 7)")
    parser.add_argument("--mlp-bands", type=float, nargs="+", help="bands timed for the MLPs (default: --band)")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs per run; 0 skips training")
    parser.add_argument("--seeds", type=int, default=2, help="training seeds per setting (default 2)")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first training run (default 0)")
    parser.add_argument("--config", default=str(ROOT / "src/spikeforge/configs/yinyang.yaml"))
    parser.add_argument("--out", default="runs/bench-sparse-backward", help="folder for the training runs")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-timings", action="store_true", help="skip the timing table (accuracy only)")
    parser.add_argument("--skip-dense", action="store_true", help="train only the sparse-backward runs")
    parser.add_argument("--checkpoint", nargs="+", default=[], help="trained checkpoints (last.pt) whose training "
                        "step's backward is timed at --mlp-bands (default: --band)")
    parser.add_argument("--surrogate-scale", type=float, help="override the config's surrogate steepness (the "
                        "band keeps more of a steeper surrogate's gradient: fast_sigmoid keeps 1 - 1/(1 + s b))")
    parser.add_argument("--surrogate", help="override the config's surrogate shape (e.g. triangle: zero outside "
                        "|v - v_th| < 1/scale, so the band 1/scale drops nothing of it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the training runs, as `spikeforge train --set` (repeatable)")
    parser.add_argument("--activity-band", type=float, default=0.5, help="band at which the in-band fraction of "
                        "an exact (band-less) run is reported (default 0.5)")
    parser.add_argument("--pair", nargs=2, metavar=("EXACT", "SPARSE"), help="time one training step of a network "
                        "trained exactly against one trained with sparse backward at --band (checkpoints, or the "
                        "config+model files bench/gpu_run.sh brings back)")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not cpu_scan.available():
        raise SystemExit("the fused CPU kernels could not be built here; sparse backward needs them")

    overrides = _parse_set(args.set)
    rows = []
    if not args.no_timings:
        bands = args.mlp_bands or [args.band]
        rows += [_time_lif(500, 16, 1024, drive, args.band, args.repeats) for drive in (-1.0, 0.0, 0.5, 1.0)]
        rows += [_time_mlp(50, 64, hidden, gain, band, args.repeats) for hidden in (512, 1024)
                 for gain in (15.0, 20.0) for band in bands]
        rows += [_time_recurrent(500, 16, 256, drive, args.band, args.repeats) for drive in (-2.0, -1.0, 0.0)]
        rows += [_time_recurrent(1000, 8, 512, drive, args.band, args.repeats) for drive in (-2.0, -1.0, 0.0)]
        rows += [_time_recurrent(300, 16, 1024, drive, args.band, args.repeats) for drive in (-2.0, -1.0, 0.0)]
        print(f"backward time, dense (exact) vs sparse_backward (median of {args.repeats}, interleaved, "
              f"{torch.get_num_threads()} threads)")
        print_table(rows, [("layer", "layer", "s"), *TIMING_COLUMNS])

    if args.checkpoint:
        ck_rows = []
        for path in args.checkpoint:
            ck_rows += _time_checkpoint(path, args.mlp_bands or [args.band], args.repeats)
        print(f"training step of a trained network: backward time (median of {args.repeats}, interleaved, "
              f"{torch.get_num_threads()} threads)")
        print_table(ck_rows, [("layer", "network", "s"), *TIMING_COLUMNS])
        rows += ck_rows

    if args.pair:
        pair_rows = _time_pair(args.pair[0], args.pair[1], args.band, args.repeats)
        print(f"one training step, exact vs sparse backward (median of {args.repeats}, interleaved, "
              f"{torch.get_num_threads()} threads)")
        print_table(pair_rows, [("layer", "network", "s"), ("setting", "setting", "s"),
                                ("in_band", "in band", ".3f"), ("rate", "spike rate", ".3f"),
                                ("backward_ms", "backward ms", ".2f"), ("step_ms", "step ms", ".2f"),
                                ("speedup", "backward speed-up", ".2f")])
        rows += pair_rows

    runs = []
    if args.epochs > 0:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for band in ((() if args.skip_dense else (None,)) + tuple(args.train_bands or [args.band])):
                runs.append(_train(Path(args.config), band, args.epochs, seed, args.out, args.surrogate_scale,
                                   args.surrogate, overrides, args.activity_band))
        print(f"\n{Path(args.config).stem}, {args.epochs} epochs")
        print_table(runs, [("band", "band", "s"), ("seed", "seed", "d"), ("test_acc", "test acc", ".4f"),
                           ("in_band", "in band", ".3f"), ("rate", "spike rate", ".3f"),
                           ("epoch_seconds", "s/epoch", ".2f")])
    write_json(args.json, {"benchmark": "sparse_backward", "band": args.band, "config": Path(args.config).name,
                           "surrogate": args.surrogate, "surrogate_scale": args.surrogate_scale, "overrides": overrides,
                           "timings": rows, "training": runs,
                           "threads": torch.get_num_threads(), "environment": environment()})


if __name__ == "__main__":
    main()
