"""Simulation engines. ``scan`` is the reference loop over a model's step function."""

from . import scan

__all__ = ["scan"]
