"""The ``spikeforge`` command: ``train``, ``evaluate`` and ``demo``."""

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

#: the demo trains the configs/yinyang.yaml recipe for this many epochs (the full recipe runs longer).
DEMO_EPOCHS = 40


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


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..train.config import load_config
    from ..train.trainer import Trainer

    config = Path(__file__).resolve().parent.parent / "configs" / "yinyang.yaml"
    overrides: dict[str, Any] = {"output.dir": args.out, "train.epochs": args.epochs, "device": "cpu"}
    cfg = load_config(config, overrides)
    print(f"spikeforge demo: training a spiking network on Yin-Yang ({cfg.train.epochs} epochs, CPU)")
    start = time.perf_counter()
    trainer = Trainer(cfg)
    final = trainer.fit()
    plots = trainer.plot()
    wall = time.perf_counter() - start
    print()
    print(f"test accuracy        : {100 * final['test_acc']:.2f} %  (published test split, 1000 samples)")
    print(f"spikes per sample    : {final['spikes_per_sample']:.1f}")
    print(f"wall time            : {wall:.1f} s")
    print(f"checkpoint           : {Path(cfg.output.dir) / 'last.pt'}")
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

    p = sub.add_parser("demo", help="train a Yin-Yang network on the CPU and report the result")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS,
                   help=f"epochs of the configs/yinyang.yaml recipe (default {DEMO_EPOCHS}, under 3 minutes)")
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
