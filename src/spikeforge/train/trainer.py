"""The trainer: surrogate-gradient BPTT for classification, with checkpoints, resume, logs, plots and
data-parallel training over processes (``torchrun``; gloo on CPU, NCCL on GPU).

Determinism. The data order of epoch ``e`` and the random input encoding of batch ``k`` come from
generators seeded by ``(seed, e, k)``, not from the global RNG; the global RNG state (used by dropout) is
saved in every checkpoint. A run stopped after any epoch and resumed from its checkpoint therefore
continues bit-identically on the CPU.

Data parallelism. Every process draws the same global batch, encodes it identically, and computes the
loss on its own contiguous slice; per-sample losses are summed and divided by the *global* batch size,
and gradients are summed across processes with ``all_reduce``. The update then equals that of one
process on the whole global batch (up to floating-point summation order).
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm.auto import tqdm

from ..core.atomic import atomic_write_text
from ..core.checks import SpikeforgeError
from ..nn import Neuron, Recurrent, Sequential
from .build import build_model
from .checkpoint import dump_json, load_checkpoint, save_checkpoint
from .config import Config, apply_overrides, config_from_dict, config_to_dict
from .datasets import Splits, encode_batch, encoded_shape, load_splits
from .event import EventTask
from .hil import Observer, hil_from_config
from .losses import cross_entropy, logits_from_output, rate_regularizer
from .qat import QuantisedModel

__all__ = ["Trainer", "count_spikes", "spiking_outputs"]

CHECKPOINT_VERSION = 1


def spiking_outputs(model: Sequential, outputs: list[Tensor]) -> list[Tensor]:
    """The output sequences of the spiking layers (neurons that fire, recurrent layers)."""
    return [
        out for layer, out in zip(model.layers, outputs, strict=True)
        if (isinstance(layer, Neuron) and layer.spiking) or isinstance(layer, Recurrent)
    ]


def count_spikes(spikes: list[Tensor]) -> Tensor:
    """Spikes per sample over all given layers. Shape: each ``[T, B, ...]`` -> ``[B]``."""
    total = None
    for z in spikes:
        n = z.detach().transpose(0, 1).reshape(z.shape[1], -1).sum(dim=1)
        total = n if total is None else total + n
    return total


@dataclass
class _World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return _World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _World(dist.get_rank(), dist.get_world_size())


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpikeforgeError(f"device is {name!r} but no CUDA device is available; use 'cpu' or 'auto'.")
    if name != "cpu" and not name.startswith("cuda"):
        raise SpikeforgeError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {name!r}.")
    return torch.device(name)


def _generator(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def eval_generator(seed: int, batch: int) -> torch.Generator:
    """The generator that encodes evaluation batch ``batch`` (so every evaluation sees the same inputs)."""
    return _generator(seed, 10**6, 3, batch)


class Trainer:
    """Train and evaluate a network described by a :class:`~spikeforge.train.config.Config`.

    Args:
        cfg: the run's configuration.
        resume: continue from ``<output.dir>/last.pt`` when it exists.
        splits: data to use instead of loading ``cfg.data`` (tests, custom data).
        target: train (and evaluate) in the loop on this target (a :class:`~spikeforge.targets.observe.Observer`);
            default: the config's ``hil`` section, whose ``target: null`` trains in software.

    Outputs in ``cfg.output.dir``: ``last.pt`` (every epoch), ``best.pt`` (best validation accuracy),
    ``log.csv`` and ``log.json`` (one row per epoch), ``final.json``, and PNG plots.
    """

    def __init__(self, cfg: Config, *, resume: bool = False, splits: Splits | None = None,
                 target: Observer | None = None) -> None:
        self.cfg = cfg
        self.device = _resolve_device(cfg.device)
        self.world = _init_distributed(self.device)
        self.out_dir = Path(cfg.output.dir)
        self.splits = splits if splits is not None else load_splits(cfg.data)
        torch.manual_seed(cfg.seed)
        in_shape = encoded_shape(self.splits.in_shape, cfg.encoding)
        # Event-driven networks (model.method ttfs/eventprop, spikeforge.train.event) or time-stepped ones.
        self.event = EventTask(cfg) if cfg.model.method != "surrogate" else None
        self.model = (self.event.build(in_shape, self.splits.n_classes) if self.event is not None
                      else build_model(cfg.model, in_shape, self.splits.n_classes)).to(self.device)
        self.in_shape = in_shape
        # Quantisation-aware training: compiled for the target now, so a model that does not fit fails at once.
        self.qat = QuantisedModel(self.model, in_shape, cfg.quantise.target) if cfg.quantise.target else None
        # Hardware-in-the-loop: ``target`` (an observer) or the config's ``hil`` section; None trains in software.
        self.hil = hil_from_config(self.model, cfg, target)
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_val = -math.inf
        if resume and (self.out_dir / "last.pt").is_file():
            self._restore(load_checkpoint(self.out_dir / "last.pt", map_location=self.device))

    # ----------------------------------------------------------------- set-up
    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.train.optimizer
        params = self.model.parameters()
        if o.name == "adam":
            return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        if o.name == "adamw":
            return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        if o.name == "sgd":
            return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        raise SpikeforgeError(f"train.optimizer.name must be 'adam', 'adamw' or 'sgd', got {o.name!r}.")

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler | None:
        s = self.cfg.train.schedule
        if s.name == "none":
            return None
        if s.name == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=max(self.cfg.train.epochs, 1), eta_min=s.min_lr)
        if s.name == "step":
            return torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=s.step_size, gamma=s.gamma)
        raise SpikeforgeError(f"train.schedule.name must be 'none', 'cosine' or 'step', got {s.name!r}.")

    # ------------------------------------------------------------- checkpoints
    def _payload(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "config": config_to_dict(self.cfg),
            "in_shape": list(self.splits.in_shape),
            "n_classes": self.splits.n_classes,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "epoch": self.epoch,
            "history": self.history,
            "best_val": self.best_val,
            "rng": torch.get_rng_state(),
            "qat_peaks": ({k: [torch.from_numpy(a) for a in v] for k, v in self.qat.peaks.items()}
                          if self.qat is not None and self.qat.peaks is not None else None),
        }

    def _restore(self, ck: dict[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.scheduler is not None and ck.get("scheduler") is not None:
            self.scheduler.load_state_dict(ck["scheduler"])
        self.epoch = int(ck["epoch"])
        self.history = list(ck["history"])
        self.best_val = float(ck["best_val"])
        torch.set_rng_state(ck["rng"].cpu())
        if self.qat is not None and ck.get("qat_peaks"):
            self.qat.peaks = {k: tuple(t.numpy() for t in v) for k, v in ck["qat_peaks"].items()}

    def _save(self, name: str) -> None:
        if self.world.main:
            save_checkpoint(self.out_dir / name, self._payload())

    # ---------------------------------------------------------------- training
    def _batches(self, n: int, batch_size: int, order: Tensor | None):
        idx = torch.arange(n) if order is None else order
        for k, start in enumerate(range(0, n, batch_size)):
            yield k, idx[start:start + batch_size]

    def _local(self, idx: Tensor) -> slice:
        """This process's contiguous slice of a global batch."""
        n, w = len(idx), self.world
        per, extra = divmod(n, w.size)
        start = w.rank * per + min(w.rank, extra)
        return slice(start, start + per + (1 if w.rank < extra else 0))

    def quantised(self, *, training: bool = False) -> bool:
        """Whether the forward pass uses the target's quantised values now: QAT runs from epoch
        ``quantise.start_epoch`` on; evaluation uses them once at least one QAT epoch has run."""
        if self.qat is None:
            return False
        start = self.cfg.quantise.start_epoch
        return self.epoch >= start if training else self.epoch > start

    def _forward(self, x: Tensor, y: Tensor, *, quantised: bool = False):
        if self.event is not None:
            return self.event.forward(self.model, x, y)
        if quantised:
            out, _, outs = self.qat(x)
        else:
            if self.hil is not None:
                out, _, outs = self.hil.layer_outputs(x)
            else:  # as forward runs the layers (donated buffers, fused Linear -> neuron pairs): a fused or donated
                out, _, outs = self.model.layer_outputs(x, every=False)  # Linear's output is None, never needed
        spikes = spiking_outputs(self.model, outs)
        loss_cfg = self.cfg.train.loss
        per_sample = cross_entropy(out, y, loss_cfg.readout, logit_scale=loss_cfg.logit_scale)
        hidden = spikes[:-1] if spikes and spikes[-1] is out else spikes
        if loss_cfg.rate_weight > 0 and hidden:
            per_sample = per_sample + loss_cfg.rate_weight * rate_regularizer(hidden, loss_cfg.rate_target)
        return out, per_sample, spikes

    def _predict(self, out: Tensor) -> Tensor:
        """Predicted classes ``[B]`` from the network's output."""
        if self.event is not None:
            return self.event.predict(out)
        return logits_from_output(out, self.cfg.train.loss.readout).argmax(dim=1)

    def train_epoch(self) -> dict[str, float]:
        """Run one epoch of training; returns mean loss and accuracy on the training set."""
        cfg = self.cfg
        x_all, y_all = self.splits.train
        n = len(y_all)
        order = torch.randperm(n, generator=_generator(cfg.seed, self.epoch, 1))
        self.model.train()
        qat = self.quantised(training=True)
        bs = cfg.train.batch_size
        totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
        bar = tqdm(total=math.ceil(n / bs), desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}",
                   disable=not (cfg.output.progress and self.world.main), leave=False, dynamic_ncols=True,
                   mininterval=0.5)
        for k, idx in self._batches(n, bs, order):
            gen = _generator(cfg.seed, self.epoch, 2, k)
            seq = encode_batch(x_all[idx], cfg.encoding, gen)
            part = self._local(idx)
            xb = seq[:, part].to(self.device)
            yb = y_all[idx][part].to(self.device)
            self.optimizer.zero_grad(set_to_none=False)
            if len(yb):
                out, per_sample, _ = self._forward(xb, yb, quantised=qat)
                loss = per_sample.sum() / len(idx)
                loss.backward()
                pred = self._predict(out.detach())
                stats = torch.tensor([per_sample.detach().sum().item(), (pred == yb).sum().item(), len(yb)],
                                     dtype=torch.float64)
            else:
                stats = torch.zeros(3, dtype=torch.float64)
            if self.world.size > 1:
                for p in self.model.parameters():
                    if p.grad is None:  # a process with an empty slice still joins the reduction
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
                dist.all_reduce(stats)
            if cfg.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
            self.optimizer.step()
            if self.event is not None:  # event networks: weight bumping for silent neurons (train/event.py)
                self.event.after_step(self.model)
            totals += stats
            bar.update(1)
            bar.set_postfix(loss=f"{totals[0] / totals[2]:.4f}", acc=f"{totals[1] / totals[2]:.3f}")
        bar.close()
        if self.scheduler is not None:
            self.scheduler.step()
        return {"train_loss": float(totals[0] / totals[2]), "train_acc": float(totals[1] / totals[2])}

    @torch.no_grad()
    def evaluate(self, split: str = "test", *, quantised: bool | None = None) -> dict[str, float]:
        """Loss, accuracy and mean spikes per sample on ``"train"``, ``"validation"`` or ``"test"``.

        ``quantised``: run with the QAT target's values (default: as training does by now, see
        :meth:`quantised`); ``False`` evaluates the float weights."""
        data = getattr(self.splits, split, None)
        if data is None:
            raise SpikeforgeError(f"split {split!r} is not available; this run has "
                                  f"{[s for s in ('train', 'validation', 'test') if getattr(self.splits, s)]}.")
        cfg = self.cfg
        self.model.eval()
        if quantised is None:
            quantised = self.quantised()
        elif quantised and self.qat is None:
            raise SpikeforgeError("quantised=True needs a QAT target: set quantise.target in the config.")
        x_all, y_all = data
        totals = torch.zeros(4, dtype=torch.float64)  # loss, correct, count, spikes
        for k, idx in self._batches(len(y_all), cfg.train.eval_batch_size, None):
            part = self._local(idx)
            if part.stop <= part.start:
                continue
            seq = encode_batch(x_all[idx], cfg.encoding, eval_generator(cfg.seed, k))
            xb, yb = seq[:, part].to(self.device), y_all[idx][part].to(self.device)
            out, per_sample, spikes = self._forward(xb, yb, quantised=quantised)
            pred = self._predict(out)
            n_spk = count_spikes(spikes).sum().item() if spikes else 0.0
            totals += torch.tensor([per_sample.sum().item(), (pred == yb).sum().item(), len(yb), n_spk],
                                   dtype=torch.float64)
        if self.world.size > 1:
            dist.all_reduce(totals)
        return {"loss": float(totals[0] / totals[2]), "acc": float(totals[1] / totals[2]),
                "spikes_per_sample": float(totals[3] / totals[2])}

    def fit(self, *, stop_after: int | None = None) -> dict[str, Any]:
        """Train until ``train.epochs`` (or for at most ``stop_after`` more epochs); returns final metrics.

        Writes ``last.pt`` after every epoch (atomically) and the log files; plots at the end.
        """
        start = time.perf_counter()
        ran = 0
        while self.epoch < self.cfg.train.epochs and (stop_after is None or ran < stop_after):
            t0 = time.perf_counter()
            row: dict[str, Any] = {"epoch": self.epoch + 1, **self.train_epoch()}
            self.epoch += 1
            ran += 1
            if self.splits.validation is not None:
                val = self.evaluate("validation")
                row.update(val_loss=val["loss"], val_acc=val["acc"])
            else:
                test = self.evaluate("test")
                row.update(test_loss=test["loss"], test_acc=test["acc"])
            row.update(lr=self.optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0)
            self.history.append(row)
            self._log_epoch(row)
            if self.splits.validation is not None and row["val_acc"] > self.best_val:
                self.best_val = row["val_acc"]
                self._save("best.pt")
            self._save("last.pt")
            self._write_logs()
        test = self.evaluate("test")
        final = {"epochs": self.epoch, "test_acc": test["acc"], "test_loss": test["loss"],
                 "spikes_per_sample": test["spikes_per_sample"], "wall_seconds": time.perf_counter() - start}
        if self.world.main:
            dump_json(self.out_dir / "final.json", final)
        return final

    # ------------------------------------------------------------- logs, plots
    def _log_epoch(self, row: dict[str, Any]) -> None:
        if not (self.world.main and self.cfg.output.progress):
            return
        parts = [f"epoch {row['epoch']:>3}/{self.cfg.train.epochs}",
                 f"loss {row['train_loss']:.4f}", f"train acc {row['train_acc']:.4f}"]
        for key in ("val_acc", "test_acc"):
            if key in row:
                parts.append(f"{key.replace('_', ' ')} {row[key]:.4f}")
        parts.append(f"{row['seconds']:.1f}s")
        tqdm.write(" | ".join(parts))

    def _write_logs(self) -> None:
        if not self.world.main:
            return
        dump_json(self.out_dir / "log.json", self.history)
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(self.out_dir / "log.csv", buf.getvalue())

    @torch.no_grad()
    def plot(self, *, n_samples: int = 8) -> dict[str, Path]:
        """Save PNG plots; returns their paths.

        ``learning_curves.png`` (loss and accuracy per epoch), ``raster.png`` (spikes of every spiking
        layer for the first test sample), ``membrane.png`` (membrane of the four most active neurons of
        the first spiking layer after reset, so below threshold; spikes marked) and ``readout.png`` (the output layer's
        membrane per class, when the network ends in a leaky integrator).
        """
        from ..viz import plot_learning_curves, plot_membrane, plot_raster

        paths: dict[str, Path] = {}
        if not self.world.main:
            return paths
        if self.history:
            paths["learning_curves"] = self.out_dir / "learning_curves.png"
            plot_learning_curves(self.history, path=paths["learning_curves"])
        if self.event is not None:  # event networks: no time-stepped traces to plot
            return paths
        self.model.eval()
        x, _ = self.splits.test
        seq = encode_batch(x[:n_samples], self.cfg.encoding, _generator(self.cfg.seed, 7)).to(self.device)
        _, _, records = self.model.trace(seq)
        spiking = [(i, out, rec) for i, (layer, (out, rec)) in enumerate(zip(self.model.layers, records, strict=True))
                   if (isinstance(layer, Neuron) and layer.spiking) or isinstance(layer, Recurrent)]
        dt = self.cfg.model.dt
        if spiking:
            paths["raster"] = self.out_dir / "raster.png"
            plot_raster([out.cpu() for _, out, _ in spiking], names=[f"layer {i}" for i, _, _ in spiking],
                        dt=dt, path=paths["raster"])
            i, out, rec = spiking[0]
            layer = self.model.layers[i]
            neuron = layer.neuron if isinstance(layer, Recurrent) else layer
            v, z = rec.v[:, :1].flatten(2).cpu(), out[:, :1].flatten(2).cpu()
            active = tuple(int(n) for n in z.sum(dim=(0, 1)).argsort(descending=True)[:4])
            threshold = float(neuron.v_th.flatten()[0])
            paths["membrane"] = self.out_dir / "membrane.png"
            plot_membrane(v, spikes=z, threshold=threshold, neurons=active, dt=dt, path=paths["membrane"])
        last = self.model.layers[len(self.model) - 1]
        if isinstance(last, Neuron) and not last.spiking:
            out = records[-1][0][:, :1].cpu()
            paths["readout"] = self.out_dir / "readout.png"
            plot_membrane(out, neurons=tuple(range(out.shape[-1])), dt=dt, path=paths["readout"])
        return paths

    def close(self) -> None:
        """Leave the process group (data-parallel runs); a no-op for a single process."""
        if self.world.size > 1 and dist.is_initialized():
            dist.destroy_process_group()

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_checkpoint(cls, path: str | Path, *, splits: Splits | None = None,
                        overrides: dict[str, Any] | None = None) -> Trainer:
        """Rebuild a trainer (model weights included) from a checkpoint, e.g. to evaluate it."""
        ck = load_checkpoint(path)
        trainer = cls(config_from_dict(apply_overrides(ck["config"], overrides)), splits=splits)
        trainer._restore(ck)
        return trainer
