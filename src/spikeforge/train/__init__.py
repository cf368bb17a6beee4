"""Training: configs, model building, losses, checkpoints and the trainer."""

from .build import LAYER_TYPES, build_model
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, config_from_dict, load_config
from .hil import InTheLoop, in_the_loop
from .losses import cross_entropy, logits_from_output, mse_membrane, rate_regularizer
from .trainer import Trainer

__all__ = [
    "LAYER_TYPES",
    "Config",
    "InTheLoop",
    "Trainer",
    "build_model",
    "config_from_dict",
    "cross_entropy",
    "in_the_loop",
    "load_checkpoint",
    "load_config",
    "logits_from_output",
    "mse_membrane",
    "rate_regularizer",
    "save_checkpoint",
]
