"""Sparse backward (Perez-Nieves & Goodman 2021): backward time dense vs sparse, and Yin-Yang accuracy.

With ``sparse_backward=b`` a neuron-step whose membrane is outside ``|v - v_th| < b`` ("inactive") passes no
gradient: its input gradient is exactly zero, and the fused backward skips it. Part 1 times the backward of a LIF
layer (fused scan alone), of a spiking MLP (where the hidden layers' input gradients ``grad @ W`` are then formed
from the non-zeros only) and of a recurrent LIF layer (where the skipped neurons also skip their share of
``gx_t @ W_rec``) at several activity levels (fraction of neuron-steps inside the band), dense vs sparse, same
forward. Part 2 trains a config (``--config``, default Yin-Yang; Fashion-MNIST with
``--config src/spikeforge/configs/fashion-mnist.yaml``) for the same number of epochs with and without it.

    python bench/sparse_backward.py --json bench/results/sparse_backward.json
    python bench/sparse_backward.py --epochs 0        # timings only
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import yaml
from _common import ROOT, environment, print_table, write_json

from spikeforge.kernels import cpu_scan
from spikeforge.nn import LIF, Recurrent


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        best = min(best, fn())
    return best


def _backward_ms(model, x: torch.Tensor, loss_of, repeats: int) -> float:
    """Best backward time (ms) of ``loss_of(model(x)[0])`` over ``repeats`` fresh forward passes."""
    def once() -> float:
        model.zero_grad()
        loss = loss_of(model(x)[0])
        t0 = time.perf_counter()
        loss.backward()
        return time.perf_counter() - t0

    return 1e3 * _best_of(once, repeats)


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
    row = {"layer": f"LIF T={t} B={b} n={n}", "drive": drive}
    row["in_band"], row["rate"] = _in_band(LIF(), x, band)
    for name, layer in (("dense", LIF()), ("sparse", LIF(sparse_backward=band))):
        xi = x.clone().requires_grad_()

        def once(layer=layer, xi=xi) -> float:
            z, _ = layer(xi)
            gz = torch.ones_like(z)
            t0 = time.perf_counter()
            z.backward(gz)
            return time.perf_counter() - t0

        row[f"{name}_ms"] = 1e3 * _best_of(once, repeats)
    row["speedup"] = row["dense_ms"] / row["sparse_ms"]
    return row


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
    row = {"layer": f"Recurrent T={t} B={b} H={h}", "drive": drive}
    with torch.no_grad():  # the reference trace gives the membrane after reset; add the subtracted threshold back
        z, _, rec = dense.trace(x)
        vh = rec.v + z * dense.neuron.v_th
    row["rate"] = float(z.mean())
    row["in_band"] = float(((vh - dense.neuron.v_th).abs() < band).float().mean())
    w = torch.linspace(0, 1, h)
    for name, layer in (("dense", dense), ("sparse", sparse)):
        row[f"{name}_ms"] = _backward_ms(layer, x, lambda z: (z * w).sum(), repeats)
    row["speedup"] = row["dense_ms"] / row["sparse_ms"]
    return row


def _time_mlp(t: int, b: int, hidden: int, gain: float, band: float, repeats: int) -> dict:
    """Backward of a whole spiking MLP (784 -> hidden -> hidden -> 10, input spikes at 8 %): the sparse
    backward's zero input gradients also skip the hidden layers' ``grad @ W`` (formed from the non-zeros)."""
    from spikeforge.nn import LI, Linear, Sequential

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(t, b, 784, generator=g) < 0.08).float()

    def net(sparse: float | None) -> Sequential:
        torch.manual_seed(1)
        m = Sequential(Linear(784, hidden), LIF(sparse_backward=sparse), Linear(hidden, hidden),
                       LIF(sparse_backward=sparse), Linear(hidden, 10), LI())
        with torch.no_grad():
            m[0].weight.mul_(gain)
            m[2].weight.mul_(2.0 * gain)
        return m

    row = {"layer": f"MLP 784-{hidden}-{hidden}-10 T={t} B={b}", "drive": gain}
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
    for name, model in (("dense", dense), ("sparse", net(band))):
        row[f"{name}_ms"] = _backward_ms(model, x, lambda out: out.amax(0).sum(), repeats)
    row["speedup"] = row["dense_ms"] / row["sparse_ms"]
    return row


def _train(config: Path, band: float | None, epochs: int, seed: int, out: str) -> dict:
    from spikeforge.train.config import config_from_dict
    from spikeforge.train.trainer import Trainer

    data = yaml.safe_load(config.read_text())
    for layer in data["model"]["layers"]:
        if layer["type"] == "lif" and band is not None:
            layer["sparse_backward"] = band
    data["train"]["epochs"] = epochs
    data["seed"] = seed
    data["output"] = {"dir": f"{out}/band{band}-seed{seed}", "plots": False, "progress": False}
    trainer = Trainer(config_from_dict(data))
    final = trainer.fit()
    per_epoch = sum(r["seconds"] for r in trainer.history) / max(1, len(trainer.history))
    return {"band": "none" if band is None else f"{band:g}", "seed": seed, "test_acc": final["test_acc"],
            "epochs": epochs, "epoch_seconds": per_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--band", type=float, default=0.3, help="sparse-backward band around v_th (default 0.3)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats, best taken (default 3)")
    parser.add_argument("--epochs", type=int, default=40, help="Yin-Yang epochs per run; 0 skips training")
    parser.add_argument("--seeds", type=int, default=2, help="Yin-Yang seeds per setting (default 2)")
    parser.add_argument("--config", default=str(ROOT / "src/spikeforge/configs/yinyang.yaml"))
    parser.add_argument("--out", default="runs/bench-sparse-backward", help="folder for the training runs")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-timings", action="store_true", help="skip the timing table (accuracy only)")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not cpu_scan.available():
        raise SystemExit("the fused CPU kernels could not be built here; sparse backward needs them")

    rows = []
    if not args.no_timings:
        rows += [_time_lif(500, 16, 1024, drive, args.band, args.repeats) for drive in (-1.0, 0.0, 0.5, 1.0)]
        rows += [_time_mlp(50, 64, hidden, gain, args.band, args.repeats) for hidden in (512, 1024)
                 for gain in (15.0, 20.0)]
        rows += [_time_recurrent(500, 16, 256, drive, args.band, args.repeats) for drive in (-2.0, -1.0, 0.0)]
        rows += [_time_recurrent(1000, 8, 512, drive, args.band, args.repeats) for drive in (-2.0, -1.0, 0.0)]
        rows += [_time_recurrent(300, 16, 1024, drive, args.band, args.repeats) for drive in (-2.0, -1.0, 0.0)]
        print(f"backward time, dense vs sparse_backward={args.band} (best of {args.repeats}, "
              f"{torch.get_num_threads()} threads)")
        print_table(rows, [("layer", "layer", "s"), ("drive", "drive", ".1f"), ("in_band", "in band", ".3f"),
                           ("rate", "spike rate", ".3f"), ("dense_ms", "dense ms", ".1f"),
                           ("sparse_ms", "sparse ms", ".1f"), ("speedup", "speed-up", ".2f")])

    runs = []
    if args.epochs > 0:
        for seed in range(args.seeds):
            for band in (None, args.band):
                runs.append(_train(Path(args.config), band, args.epochs, seed, args.out))
        print(f"\n{Path(args.config).stem}, {args.epochs} epochs")
        print_table(runs, [("band", "band", "s"), ("seed", "seed", "d"), ("test_acc", "test acc", ".4f"),
                           ("epoch_seconds", "s/epoch", ".2f")])
    write_json(args.json, {"benchmark": "sparse_backward", "band": args.band, "timings": rows, "yinyang": runs,
                           "threads": torch.get_num_threads(), "environment": environment()})


if __name__ == "__main__":
    main()
