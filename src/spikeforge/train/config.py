"""Training configuration: typed sections, loaded from YAML and validated.

Every key is checked: an unknown key or a value of the wrong type raises a
:class:`~spikeforge.core.checks.SpikeforgeError` that names the key's full path (e.g.
``train.optimizer.lr``), what was expected and what was found. Layers in ``model.layers`` are checked
against the constructor of their type (see :mod:`spikeforge.train.build`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from ..core.checks import SpikeforgeError

__all__ = [
    "Config",
    "DataConfig",
    "EncodingConfig",
    "HILConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "OutputConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
]


@dataclass
class DataConfig:
    """Which data set and where it lives.

    ``dataset``: ``yinyang``, ``mnist`` or ``fashion-mnist``. ``root``: data folder (default: search,
    see :func:`spikeforge.data.data_root`). ``download``: fetch missing files (checksummed).
    ``validation``: samples held out of the training set for validation (MNIST-like sets; Yin-Yang
    has its own published validation split). ``limit_train``/``limit_test``: use only the first N
    samples (quick runs)."""

    dataset: str = "yinyang"
    root: str | None = None
    download: bool = False
    validation: int = 0
    limit_train: int | None = None
    limit_test: int | None = None


@dataclass
class EncodingConfig:
    """How static samples become input sequences ``[T, B, features]``.

    ``type``: ``current`` (the value injected as a constant current at every step), ``poisson``
    (Bernoulli spikes with probability ``gain * value`` per step), ``latency`` (one spike per
    input, larger values earlier) or ``events`` (``round(gain * value)`` input events per step, at most
    ``max_events``: the integer input of an event-driven chip such as Xylo). ``steps``: number of time
    steps T. ``bias``: append a constant input channel of value 1 (a bias neuron, as in the Yin-Yang
    papers). ``spike_times`` (event networks, see :mod:`spikeforge.train.event`): continuous spike times from
    :func:`spikeforge.encode.spike_times.spike_times` with the keyword arguments in ``times``."""

    type: str = "current"
    steps: int = 30
    gain: float = 1.0
    bias: bool = False
    max_events: int = 15
    times: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """The network: ``dt`` (seconds), a default surrogate, and a list of layers.

    Each layer is a mapping with ``type`` (``linear``, ``lif``, ``if``, ``cuba_lif``, ``adaptive_lif``,
    ``li``, ``recurrent``, ``dropout``, ``conv1d``, ``conv2d``, ``maxpool2d``, ``avgpool2d``,
    ``flatten``, ``delay``) and that layer's arguments. Sizes are inferred: ``linear`` needs only
    ``out``. ``method``: ``surrogate`` (time-stepped BPTT) or, for event-driven networks of ``event_lif``/``event_li``
    layers, ``ttfs`` (exact spike-time gradients) or ``eventprop`` (see :mod:`spikeforge.train.event`)."""

    dt: float = 1e-3
    surrogate: dict[str, Any] = field(default_factory=lambda: {"name": "fast_sigmoid", "scale": 10.0})
    layers: list[dict[str, Any]] = field(default_factory=list)
    init_gain: float = 1.0
    method: str = "surrogate"


@dataclass
class OptimizerConfig:
    """``name``: ``adam``, ``adamw`` or ``sgd``; learning rate and weight decay; ``momentum``
    for SGD."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9


@dataclass
class ScheduleConfig:
    """Learning-rate schedule per epoch: ``none``, ``cosine`` (to ``min_lr``) or ``step``
    (multiply by ``gamma`` every ``step_size`` epochs)."""

    name: str = "none"
    min_lr: float = 0.0
    step_size: int = 10
    gamma: float = 0.5


@dataclass
class LossConfig:
    """Classification loss: cross-entropy on the network's output reduced by ``readout``
    (``max_membrane``, ``mean_membrane``, ``spike_count`` or ``first_spike_time``), times
    ``logit_scale``; plus a firing-rate regulariser ``rate_weight * mean((rate - rate_target)^2)``
    over the hidden spiking layers (rates in spikes per step). Event networks (``model.method`` ``ttfs`` or
    ``eventprop``) use ``readout`` ``ttfs``, ``spike_count``, ``max_membrane`` or ``integral`` with the loss's
    keyword arguments in ``options`` (:mod:`spikeforge.train.time_losses`)."""

    readout: str = "max_membrane"
    logit_scale: float = 1.0
    rate_weight: float = 0.0
    rate_target: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Epochs, batch sizes, optimiser, schedule, loss and gradient clipping."""

    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 1000
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    grad_clip: float | None = None


@dataclass
class QuantiseConfig:
    """Quantisation-aware training (QAT) for a chip. From epoch ``start_epoch`` (0-based) on, the forward
    pass uses the values the chip will hold -- weights, thresholds, biases and time constants quantised by
    the target's own quantiser (:func:`spikeforge.targets.dequantised`) -- with straight-through gradients
    to the float weights. ``target``: ``xylo-audio2`` or ``xylo-imu``; ``null`` trains in float."""

    target: str | None = None
    start_epoch: int = 0


@dataclass
class HILConfig:
    """Hardware-in-the-loop training (:mod:`spikeforge.train.hil`): every forward pass runs on the target and
    the backward pass through the float model with the target's spikes and membranes injected. ``target``:
    ``null`` trains in software; ``xylo-audio2``/``xylo-imu`` (bit-accurate Xylo emulator) or ``bss2`` (the
    BrainScaleS-2-like analog target); ``instance``: which chip (for ``bss2``, the emulated chip instance);
    ``options``: further arguments of the target's observer. Evaluation then runs on the target too."""

    target: str | None = None
    instance: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputConfig:
    """Where results go: ``dir`` (checkpoints, ``log.csv``/``log.json``, plots), ``plots``,
    ``progress`` (a progress bar per epoch)."""

    dir: str = "runs/spikeforge"
    plots: bool = True
    progress: bool = True


@dataclass
class Config:
    """A whole training run."""

    seed: int = 0
    device: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quantise: QuantiseConfig = field(default_factory=QuantiseConfig)
    hil: HILConfig = field(default_factory=HILConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except SpikeforgeError as err:
                errors.append(err)
        raise SpikeforgeError(
            f"config key '{path}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__})."
        )
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise SpikeforgeError(f"config key '{path}' must be a list, got {value!r}.")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpikeforgeError(f"config key '{path}' must be a mapping, got {value!r}.")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise SpikeforgeError(
        f"config key '{path}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__})."
    )


def _from_dict(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    where = f"'{path}'" if path else "the top level"
    if not isinstance(data, dict):
        raise SpikeforgeError(f"config section {where} must be a mapping, got {data!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = f"{path}.{unknown[0]}" if path else unknown[0]
        raise SpikeforgeError(
            f"unknown config key '{key}'; allowed keys in {where}: {', '.join(names)}."
        )
    kwargs = {k: _coerce(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate a nested mapping and return a :class:`Config` (layers checked when built)."""
    cfg = _from_dict(Config, data, "")
    from .build import validate_config  # local import: build depends on this module

    validate_config(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of a config (for checkpoints and logs)."""
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Set dotted-key ``overrides`` (``{"train.epochs": 3}``) in the nested config dict ``data`` (in place, and
    returned)."""
    for key, value in (overrides or {}).items():
        node = data
        *head, last = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    return data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config file, apply dotted-key ``overrides`` (``{"train.epochs": 3}``), validate."""
    path = Path(path)
    if not path.is_file():
        raise SpikeforgeError(f"config file {str(path)!r} does not exist.")
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    return config_from_dict(apply_overrides(data, overrides))
