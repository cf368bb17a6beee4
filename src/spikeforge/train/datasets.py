"""Data sets for the trainer as static tensors ``x [N, *features]`` (float, in [0, 1]) and labels ``[N]``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.checks import SpikeforgeError
from ..data import load_mnist, load_yinyang, to_float_images

__all__ = ["DATASETS", "Splits", "load_splits"]

DATASETS = ("yinyang", "mnist", "fashion-mnist")


@dataclass
class Splits:
    """Train, validation (may be empty) and test tensors plus the number of classes."""

    train: tuple[Tensor, Tensor]
    validation: tuple[Tensor, Tensor] | None
    test: tuple[Tensor, Tensor]
    n_classes: int

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])


def _limit(pair: tuple[Tensor, Tensor], n: int | None) -> tuple[Tensor, Tensor]:
    return pair if n is None else (pair[0][:n], pair[1][:n])


def load_splits(data_cfg) -> Splits:
    """Load the data set named in a :class:`~spikeforge.train.config.DataConfig`."""
    name = data_cfg.dataset
    if name == "yinyang":
        train, val, test = (load_yinyang(s) for s in ("train", "validation", "test"))
        n_classes = 3
    elif name in ("mnist", "fashion-mnist"):
        def get(split: str) -> tuple[Tensor, Tensor]:
            x, y = load_mnist(split, root=data_cfg.root, dataset=name, download=data_cfg.download)
            return to_float_images(x), y

        train, test = get("train"), get("test")
        n_val = data_cfg.validation
        if not 0 <= n_val < len(train[1]):
            raise SpikeforgeError(
                f"data.validation must be in [0, {len(train[1]) - 1}] samples, got {n_val}."
            )
        if n_val:
            val = (train[0][-n_val:], train[1][-n_val:])
            train = (train[0][:-n_val], train[1][:-n_val])
        else:
            val = None
        n_classes = 10
    else:
        raise SpikeforgeError(f"data.dataset must be one of {', '.join(DATASETS)}, got {name!r}.")
    train = _limit(train, data_cfg.limit_train)
    test = _limit(test, data_cfg.limit_test)
    if val is not None:
        val = _limit(val, data_cfg.limit_test)
    return Splits(train, val, test, n_classes)


def encode_batch(x: Tensor, enc_cfg, generator: torch.Generator | None) -> Tensor:
    """Turn static samples ``[B, *features]`` into an input sequence ``[T, B, *features(+1)]``."""
    from ..encode import constant_current, event_counts, latency, poisson

    if enc_cfg.type == "spike_times":  # event networks: [K, B, n_in] spike times
        from .event import encode_spike_times

        return encode_spike_times(x, enc_cfg)
    if enc_cfg.type == "current":
        seq = constant_current(x, enc_cfg.steps) * enc_cfg.gain
    elif enc_cfg.type == "poisson":
        seq = poisson(x, enc_cfg.steps, gain=enc_cfg.gain, generator=generator)
    elif enc_cfg.type == "latency":
        seq = latency(x, enc_cfg.steps)
    elif enc_cfg.type == "events":
        seq = event_counts(x, enc_cfg.steps, gain=enc_cfg.gain, max_events=enc_cfg.max_events)
    else:
        raise SpikeforgeError(
            f"encoding.type must be 'current', 'poisson', 'latency' or 'events', got {enc_cfg.type!r}."
        )
    if enc_cfg.bias:
        seq = torch.cat([seq, seq.new_ones(*seq.shape[:-1], 1)], dim=-1)
    return seq


def encoded_shape(in_shape: tuple[int, ...], enc_cfg) -> tuple[int, ...]:
    """Feature shape after :func:`encode_batch`."""
    if enc_cfg.type == "spike_times":
        from .event import encoded_channels

        return encoded_channels(in_shape, enc_cfg)
    if enc_cfg.bias:
        return (*in_shape[:-1], in_shape[-1] + 1)
    return in_shape
