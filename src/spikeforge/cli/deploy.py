"""``spikeforge deploy``: a trained checkpoint onto an emulated chip, with the report a deployment needs.

Steps: rebuild the model from the checkpoint; extract its graph and compile it for the target (the fit
report lists every limited resource, used against the limit; a network that does not fit is refused with
the target's message); encode the evaluation split exactly as training does; run the *same* input
sequences through the float model, the quantised model (when it was trained quantisation-aware) and the
bit-accurate chip emulator; report the accuracies, spikes per sample, and the target's cost estimate
(energy, power, latency where modelled); write the chip configuration and a NIR file of the float model.

Read-out on the chip follows the training config's ``loss.readout``: ``max_membrane``/``mean_membrane``
read the output neurons' membrane potentials (Xylo's "Vmem" output mode; on Loihi the last layer's ``v``),
``spike_count`` counts output spikes (ties broken by the largest membrane potential).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.atomic import atomic_write, atomic_write_text
from ..core.checks import SpikeforgeError
from ..graph import extract_graph
from ..train.datasets import encode_batch
from ..train.losses import logits_from_output
from ..train.qat import state_peaks
from ..train.trainer import Trainer, eval_generator

__all__ = ["CHIP_READOUTS", "deploy", "format_report"]

#: read-outs that a chip can compute from what it outputs
CHIP_READOUTS = ("max_membrane", "mean_membrane", "spike_count")


def _chip_logits(readout: str, spikes: torch.Tensor, vmem: torch.Tensor | None) -> torch.Tensor:
    """Class scores from the chip's output spikes ``[T, B, K]`` and membrane potentials ``[T, B, K]``."""
    if readout in ("max_membrane", "mean_membrane"):
        if vmem is None:
            raise SpikeforgeError("this target records no output membrane potential; train with "
                                  "loss.readout: spike_count.")
        v = vmem.to(torch.float64)
        return v.amax(dim=0) if readout == "max_membrane" else v.mean(dim=0)
    count = spikes.to(torch.float64).sum(dim=0)
    if vmem is None:
        return count
    v = vmem.to(torch.float64).amax(dim=0)
    return count + (v - v.min()) / (v.max() - v.min() + 1.0) * 0.5  # ties: the larger membrane wins


class _Chip:
    """One target's compiled config, emulator and cost model behind one interface."""

    def __init__(self, target: str, graph, device: str, cost_options: dict[str, Any], peaks=None) -> None:
        from .. import targets

        self.target = target
        self.is_xylo = target in targets.XYLO_TARGETS
        self.config = targets.compile(graph, target, peaks=peaks if self.is_xylo else None)
        if self.is_xylo:
            from ..targets import xylo

            self.emulator = xylo.XyloEmulator(self.config, device=device)
            self.usage = xylo.usage(self.config)
            model = {k: v for k, v in cost_options.items() if v is not None}
            self._cost_model = xylo.XyloPowerModel(**model)
        else:
            from ..targets import loihi

            self.emulator = loihi.LoihiEmulator(self.config, device=device)
            self.usage = loihi.usage(self.config)
            self._cost_model = loihi.LoihiEnergyModel()
        self.input_events: list[np.ndarray] = []
        self.layer_spikes: list[list[np.ndarray]] = []

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """The encoded input as the chip's integer events, or a clear refusal."""
        bad = (x < 0) | (x != x.round())
        if bool(bad.any()):
            raise SpikeforgeError(
                f"the encoded input holds values that are not event counts (e.g. {float(x[bad][0]):g}); "
                f"{self.target} takes input events: train with encoding.type 'events' (or 'poisson'/'latency').")
        if self.is_xylo:
            cap = self.config.spec.max_input_spikes
            if float(x.max()) > cap:
                raise SpikeforgeError(f"the encoding gives up to {int(x.max())} input events per channel and step; "
                                      f"{self.target} takes at most {cap}: set encoding.max_events <= {cap}.")
        elif float(x.max()) > 1:
            raise SpikeforgeError(f"the encoding gives up to {int(x.max())} events per channel and step; {self.target} "
                                  f"takes binary spikes: use encoding.type 'poisson' or 'latency', or 'events' with "
                                  f"max_events 1.")
        return x.to(torch.int64)

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output spikes and membrane potentials ``[T, B, K]`` for event input ``x [T, B, n_in]``."""
        out, rec = self.emulator.run(x, record=True)
        self.input_events.append(x.sum(dim=0).cpu().numpy())
        if self.is_xylo:
            self.layer_spikes.append([rec["spikes"].sum(dim=0).cpu().numpy(), out.sum(dim=0).cpu().numpy()])
            return out, rec["vmem_out"]
        last = self.config.layers[-1].name
        self.layer_spikes.append([rec[layer.name]["spikes"].sum(dim=0).cpu().numpy() for layer in self.config.layers])
        return out, rec[last]["v"]

    def _per_layer(self) -> list[np.ndarray]:
        """Per spiking layer, spikes per neuron summed over steps, ``[samples, n]`` (all batches joined)."""
        return [np.concatenate([b[i] for b in self.layer_spikes]) for i in range(len(self.layer_spikes[0]))]

    def spikes_per_sample(self) -> float:
        return float(sum(p.sum(axis=1) for p in self._per_layer()).mean())

    def cost(self, steps: int) -> dict[str, Any]:
        from .. import targets

        inputs = np.concatenate(self.input_events)
        layers = self._per_layer()
        if self.is_xylo:
            return targets.xylo.estimate_cost(self.config, inputs.sum(axis=1), layers[0].sum(axis=1), steps,
                                              self._cost_model)
        return targets.loihi.estimate_cost(self.config, inputs, layers, steps, self._cost_model)

    def save(self, folder: Path) -> dict[str, str]:
        """Write the chip configuration: ``chip_config.npz`` (every integer array) and ``chip_config.json``."""
        import dataclasses

        arrays: dict[str, np.ndarray] = {}
        scalars: dict[str, Any] = {"target": self.target}
        if self.is_xylo:
            items = [("", self.config)]
        else:
            items = [(f"{layer.name}.", layer) for layer in self.config.layers]
            scalars["n_in"] = self.config.n_in
        for prefix, obj in items:
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                if isinstance(value, np.ndarray):
                    arrays[prefix + f.name] = value
                elif isinstance(value, (int, float, bool, str, np.integer)):
                    scalars[prefix + f.name] = value.item() if isinstance(value, np.integer) else value
        scalars["info"] = _plain(self.config.info)
        scalars["spec"] = dataclasses.asdict(self.config.spec)
        npz, js = folder / "chip_config.npz", folder / "chip_config.json"
        atomic_write(npz, lambda fh: np.savez(fh, **arrays))
        atomic_write_text(js, json.dumps(scalars, indent=2) + "\n")
        return {"chip_config": str(npz), "chip_config_json": str(js)}


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def deploy(checkpoint: str | Path, target: str = "xylo-audio2", *, out: str | Path | None = None,
           split: str = "test", limit: int | None = None, device: str = "cpu", root: str | None = None,
           clock_hz: float | None = None, energy_per_cycle: float | None = None,
           calibration_samples: int = 1000, progress: bool = True) -> dict[str, Any]:
    """Deploy ``checkpoint`` to ``target`` and return the report (see the module docstring).

    Args:
        checkpoint: a ``last.pt``/``best.pt`` written by ``spikeforge train``.
        target: ``xylo-audio2``, ``xylo-imu`` or ``loihi``.
        out: folder for ``chip_config.npz``/``.json``, ``model.nir`` and ``deploy.json`` (default: a
            ``deploy-<target>`` folder next to the checkpoint).
        split: data split to evaluate on. limit: use only the first ``limit`` samples.
        device: where the emulator runs (``cpu`` or ``cuda``).
        root: data folder (overrides the config's ``data.root``).
        clock_hz, energy_per_cycle: override the Xylo cost model's assumptions.
        calibration_samples: training samples whose float state peaks set the Xylo state ranges (unless the
            checkpoint was trained quantisation-aware for this target: then its saved peaks are used).
        progress: show a progress bar.
    """
    from .. import targets
    from ..export.nir import to_nir

    if target not in targets.TARGETS:
        raise SpikeforgeError(f"unknown target {target!r}; known targets: {', '.join(sorted(targets.TARGETS))}.")
    start = time.perf_counter()
    overrides: dict[str, Any] = {"output.progress": False, "device": "cpu"}
    if root:
        overrides["data.root"] = root
    trainer = Trainer.from_checkpoint(checkpoint, overrides=overrides)
    cfg = trainer.cfg
    readout = cfg.train.loss.readout
    if readout not in CHIP_READOUTS:
        raise SpikeforgeError(f"the model is read out by {readout!r}; a chip deployment supports "
                              f"{', '.join(CHIP_READOUTS)}.")
    model = trainer.model.eval()
    graph = extract_graph(model, trainer.in_shape)
    if trainer.qat is not None and trainer.qat.peaks is not None and trainer.qat.target == target:
        peaks, calibration = trainer.qat.peaks, "state peaks saved by quantisation-aware training"
    else:  # calibrate the state ranges on training data, never on the split evaluated
        x_cal = trainer.splits.train[0][:calibration_samples]
        peaks = state_peaks(model, encode_batch(x_cal, cfg.encoding, eval_generator(cfg.seed, 10**6)))
        calibration = f"state peaks of the float model on {len(x_cal)} training samples"
    chip = _Chip(target, graph, device, {"clock_hz": clock_hz, "energy_per_cycle": energy_per_cycle}, peaks)
    data = getattr(trainer.splits, split, None)
    if data is None:
        raise SpikeforgeError(f"split {split!r} is not available for {cfg.data.dataset}.")
    x_all, y_all = data
    if limit is not None:
        x_all, y_all = x_all[:limit], y_all[:limit]
    qat = trainer.qat is not None and trainer.quantised()
    correct = {"float": 0, "quantised": 0, "chip": 0}
    float_spikes = 0.0
    bs = cfg.train.eval_batch_size
    n = len(y_all)
    with torch.no_grad(), tqdm(total=n, desc=f"deploy {target}", disable=not progress, leave=False) as bar:
        for k, lo in enumerate(range(0, n, bs)):
            xb = encode_batch(x_all[lo:lo + bs], cfg.encoding, eval_generator(cfg.seed, k))
            yb = y_all[lo:lo + bs]
            events = chip.check_input(xb)
            f_out, _, outs = model.layer_outputs(xb)
            correct["float"] += int((logits_from_output(f_out, readout).argmax(1) == yb).sum())
            float_spikes += sum(float(o.sum()) for o, layer in zip(outs, model.layers, strict=True)
                                if getattr(layer, "spiking", False) or hasattr(layer, "neuron"))
            if qat:
                q_out, _, _ = trainer.qat(xb)
                correct["quantised"] += int((logits_from_output(q_out, readout).argmax(1) == yb).sum())
            spikes, vmem = chip.run(events)
            correct["chip"] += int((_chip_logits(readout, spikes, vmem).argmax(1) == yb.to(spikes.device)).sum())
            bar.update(len(yb))
    folder = Path(out) if out else Path(checkpoint).resolve().parent / f"deploy-{target}"
    folder.mkdir(parents=True, exist_ok=True)
    files = chip.save(folder)
    nir_path = folder / "model.nir"
    tmp = nir_path.with_name(nir_path.name + ".tmp")
    to_nir(model, trainer.in_shape, path=tmp)
    tmp.replace(nir_path)
    files["nir"] = str(nir_path)
    steps = cfg.encoding.steps
    report = {
        "checkpoint": str(checkpoint), "target": target, "split": split, "samples": n, "readout": readout,
        "trained_quantisation_aware": bool(trainer.qat is not None),
        "calibration": calibration if chip.is_xylo else "fixed headroom (Loihi quantiser)",
        "fit": chip.usage,
        "accuracy": {"float": correct["float"] / n, "quantised_model": correct["quantised"] / n if qat else None,
                     "chip_emulator": correct["chip"] / n},
        "spikes_per_sample": {"float": float_spikes / n, "chip_emulator": chip.spikes_per_sample()},
        "cost": chip.cost(steps),
        "files": files, "wall_seconds": time.perf_counter() - start,
    }
    report["accuracy"]["loss_points"] = 100 * (report["accuracy"]["float"] - report["accuracy"]["chip_emulator"])
    files["report"] = str(folder / "deploy.json")
    atomic_write_text(folder / "deploy.json", json.dumps(report, indent=2) + "\n")
    return report


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "not modelled"
    for factor, prefix in ((1e-12, "p"), (1e-9, "n"), (1e-6, "µ"), (1e-3, "m"), (1.0, "")):
        if abs(value) < factor * 1000:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def format_report(r: dict[str, Any]) -> str:
    """The report as the text ``spikeforge deploy`` prints."""
    acc = r["accuracy"]
    lines = [f"deploy {r['checkpoint']} -> {r['target']} ({r['samples']} {r['split']} samples, read-out "
             f"{r['readout']})", "", "fit report:"]
    for row in r["fit"]:
        lines.append(f"  {row['resource']:<48} {row['used']:>7} / {row['limit']:<7}")
    lines += ["", "accuracy:", f"  float model (spikeforge)        : {100 * acc['float']:.2f} %"]
    if acc["quantised_model"] is not None:
        lines.append(f"  quantised model (QAT forward)   : {100 * acc['quantised_model']:.2f} %")
    lines += [f"  chip emulator (bit-accurate)    : {100 * acc['chip_emulator']:.2f} %  "
              f"({acc['loss_points']:+.2f} points lost)",
              f"spikes per sample: float {r['spikes_per_sample']['float']:.1f}, chip "
              f"{r['spikes_per_sample']['chip_emulator']:.1f}", "", "cost estimate (see assumptions):"]
    c = r["cost"]
    if "cycles_per_step" in c:
        lines += [f"  cycles per step      : {c['cycles_per_step']:.0f} (every unit one event per step: "
                  f"{c['cycles_per_step_every_unit_once']:.0f})",
                  f"  clock for real time  : {_si(c['clock_needed_hz'], 'Hz')}",
                  f"  latency              : {_si(c['latency_per_step_s'], 's')} per step, "
                  f"{_si(c['latency_per_sample_s'], 's')} per sample at {_si(c['model']['clock_hz'], 'Hz')}",
                  f"  energy per sample    : {_si(c['energy_per_sample_j'], 'J')} (dynamic)",
                  f"  power                : {_si(c['dynamic_power_w'], 'W')} dynamic, "
                  f"{_si(c['total_power_w'], 'W')} with idle"]
    else:
        lines += [f"  synaptic ops / sample: {c['synops_per_sample']:.0f}",
                  f"  energy per sample    : {_si(c['energy_per_sample_j'], 'J')}",
                  f"  power                : {_si(c['power_w'], 'W')}", "  latency              : not modelled"]
    lines += [f"  assumptions          : {c['assumptions']}", ""]
    lines += [f"wrote {name}: {path}" for name, path in r["files"].items()]
    return "\n".join(lines)
