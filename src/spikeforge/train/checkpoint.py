"""Checkpoints written atomically (:mod:`spikeforge.core.atomic`): a crash never leaves a truncated
checkpoint behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..core.atomic import atomic_write, atomic_write_text
from ..core.checks import SpikeforgeError

__all__ = ["dump_json", "load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Save a checkpoint dict with :func:`torch.save`, atomically."""
    atomic_write(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, with a clear error when it is missing or
    unreadable."""
    path = Path(path)
    if not path.is_file():
        raise SpikeforgeError(f"checkpoint {str(path)!r} does not exist.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - report any unpickling failure the same way
        raise SpikeforgeError(f"checkpoint {str(path)!r} could not be read: {err}") from err
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise SpikeforgeError(
            f"{str(path)!r} is not a spikeforge checkpoint (expected a dict with 'model' and 'config')."
        )
    return payload


def dump_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (pretty-printed)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
