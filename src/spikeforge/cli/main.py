"""The ``spikeforge`` command: ``train``, ``evaluate``, ``deploy`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ..core.checks import SpikeforgeError

__all__ = ["main"]

#: the demo trains the configs/yinyang-xylo.yaml recipe for this many epochs (the last third quantisation-aware).
DEMO_EPOCHS = 60


def _parse_set(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        if "=" not in item:
            raise SpikeforgeError(f"--set expects KEY=VALUE (e.g. train.epochs=5), got {item!r}.")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _cmd_train(args: argparse.Namespace) -> int:
    from ..train.config import load_config
    from ..train.trainer import Trainer

    overrides = _parse_set(args.set)
    if args.out:
        overrides["output.dir"] = args.out
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.download:
        overrides["data.download"] = True
    cfg = load_config(args.config, overrides)
    trainer = Trainer(cfg, resume=args.resume)
    if args.resume and trainer.world.main:
        if trainer.epoch:
            print(f"resuming {cfg.output.dir}/last.pt after epoch {trainer.epoch}")
        else:
            print(f"--resume: no checkpoint in {cfg.output.dir}/last.pt yet; starting from scratch")
    final = trainer.fit()
    if cfg.output.plots:
        final["plots"] = {k: str(v) for k, v in trainer.plot().items()}
    if trainer.world.main:
        print(json.dumps(final, indent=2))
    trainer.close()
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..train.trainer import Trainer

    overrides = {"output.progress": False}
    if args.root:
        overrides["data.root"] = args.root
    trainer = Trainer.from_checkpoint(args.checkpoint, overrides=overrides)
    result = {"checkpoint": str(args.checkpoint), "split": args.split, "epoch": trainer.epoch,
              **trainer.evaluate(args.split)}
    print(json.dumps(result, indent=2))
    if args.json:
        from ..train.checkpoint import dump_json

        dump_json(args.json, result)
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from .deploy import deploy, format_report

    report = deploy(args.checkpoint, args.target, out=args.out, split=args.split, limit=args.limit,
                    device=args.device, root=args.root, clock_hz=args.clock_hz,
                    energy_per_cycle=args.energy_per_cycle, progress=not args.quiet)
    print(format_report(report))
    if args.json:
        from ..train.checkpoint import dump_json

        dump_json(args.json, report)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..train.config import load_config
    from ..train.trainer import Trainer
    from .deploy import deploy

    config = Path(__file__).resolve().parent.parent / "configs" / "yinyang-xylo.yaml"
    epochs = args.epochs
    if epochs < 1:
        raise SpikeforgeError(f"--epochs must be >= 1, got {epochs}.")
    overrides: dict[str, Any] = {"output.dir": args.out, "train.epochs": epochs, "device": "cpu",
                                 "quantise.start_epoch": (2 * epochs) // 3}
    cfg = load_config(config, overrides)
    print(f"spikeforge demo: training a spiking network on Yin-Yang for the Xylo-like chip ({epochs} epochs, "
          f"the last {epochs - cfg.quantise.start_epoch} quantisation-aware, CPU)")
    start = time.perf_counter()
    trainer = Trainer(cfg)
    final = trainer.fit()
    plots = trainer.plot()
    trained = time.perf_counter() - start
    ckpt = Path(cfg.output.dir) / "last.pt"
    print("deploying to the Xylo Audio 2-like target (bit-accurate emulator) ...")
    r = deploy(ckpt, "xylo-audio2", progress=cfg.output.progress)
    acc, cost = r["accuracy"], r["cost"]
    wall = time.perf_counter() - start
    print()
    print(f"float model accuracy : {100 * acc['float']:.2f} %  (the trained weights in float, spikeforge's "
          f"simulator; published test split, 1000 samples)")
    print(f"on the chip          : {100 * acc['chip_emulator']:.2f} %  (Xylo-like emulator, int8 weights, "
          f"int16 states; {100 * final['test_acc']:.2f} % in the quantisation-aware forward pass)")
    print(f"spikes per sample    : {r['spikes_per_sample']['float']:.1f} (float), "
          f"{r['spikes_per_sample']['chip_emulator']:.1f} (chip)")
    print(f"power estimate       : {1e6 * cost['dynamic_power_w']:.1f} µW dynamic, "
          f"{1e6 * cost['total_power_w']:.1f} µW with idle; {1e9 * cost['energy_per_sample_j']:.0f} nJ per "
          f"sample (energy per cycle and clock are assumptions: docs/targets/xylo.md)")
    print(f"wall time            : {wall:.1f} s ({trained:.1f} s training)")
    print(f"checkpoint           : {ckpt}")
    for name, path in r["files"].items():
        print(f"{name:<21}: {path}")
    for name, path in plots.items():
        print(f"plot ({name:<15}): {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikeforge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a network from a YAML config")
    p.add_argument("config", help="path to a YAML config (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue from <output.dir>/last.pt")
    p.add_argument("--out", help="output folder (overrides output.dir)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--seed", type=int, help="override seed")
    p.add_argument("--download", action="store_true", help="download missing data files (checksummed)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.optimizer.lr=0.01 (repeatable)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint")
    p.add_argument("checkpoint", help="a checkpoint written by 'spikeforge train' (last.pt/best.pt)")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--root", help="data folder (overrides data.root)")
    p.add_argument("--json", help="also write the result as JSON here")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("deploy", help="compile a checkpoint for a chip, emulate it, report accuracy and cost")
    p.add_argument("checkpoint", help="a checkpoint written by 'spikeforge train' (last.pt/best.pt)")
    p.add_argument("--target", default="xylo-audio2", choices=("xylo-audio2", "xylo-imu", "loihi"))
    p.add_argument("--out", help="folder for the chip config, NIR file and report (default: next to the checkpoint)")
    p.add_argument("--json", help="also write the report as JSON here")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--limit", type=int, help="evaluate only the first N samples")
    p.add_argument("--device", default="cpu", help="where the emulator runs (cpu or cuda)")
    p.add_argument("--root", help="data folder (overrides data.root)")
    p.add_argument("--clock-hz", type=float, help="Xylo: master clock for the latency estimate (assumption)")
    p.add_argument("--energy-per-cycle", type=float, help="Xylo: joules per clock cycle (assumption)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_deploy)

    p = sub.add_parser("demo", help="train Yin-Yang for the Xylo-like chip, deploy it, report accuracy and power")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS,
                   help=f"epochs of the configs/yinyang-xylo.yaml recipe (default {DEMO_EPOCHS}, about 2 minutes)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spikeforge`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpikeforgeError as err:
        print(f"spikeforge {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spikeforge {args.command}: interrupted; the last finished epoch is in last.pt "
              f"(continue with --resume).", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
