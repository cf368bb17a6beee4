"""The Yin-Yang classification dataset, generated bit-exactly like the published reference.

Yin-Yang is a small 2-D, 3-class problem built to separate shallow from deep networks: a linear
classifier reaches about 64 %, a small hidden-layer network about 98 %.

Geometry. The picture lies in the unit square. The big circle has radius ``R_BIG = 0.5`` and is
centred at (0.5, 0.5). Two small "dots" of radius ``R_SMALL = 0.1`` sit on the horizontal midline,
the left one centred at (0.25, 0.5), the right one at (0.75, 0.5). With ``d_L`` and ``d_R`` the
distances of a point (x, y) to the left and right dot centres, a point inside the big circle gets:

1. label 2 ("dot") if ``d_R < R_SMALL`` or ``d_L < R_SMALL``;
2. otherwise label 1 if ``d_R <= R_SMALL``, or ``R_SMALL < d_L <= 0.5 * R_BIG``, or
   (``y > R_BIG`` and ``d_R > 0.5 * R_BIG``);
3. otherwise label 0.

The reference names the classes ``["yin", "yang", "dot"]`` (so label 1 is *named* "yang"); the
numeric rule above is what matters.

Sampling. One ``numpy.random.RandomState(seed)`` per dataset. For each sample a target class is
drawn with ``randint(3)``, then points ``(x, y) = rand(2)`` are drawn until one lies inside the big
circle and has the target class (balanced rejection sampling). The stored input is
``(x, y, 1 - x, 1 - y)``: the mirrored copies give every input feature the same mean.

The standard splits are train (5000 samples, seed 42), validation (1000, seed 41) and test
(1000, seed 40); they reproduce the published ``publication_data`` arrays bit for bit.

Credit: L. Kriener, J. Göltz, M. A. Petrovici, "The Yin-Yang dataset", NICE 2022
(arXiv 2102.08211, doi 10.1145/3517343.3517380). The reference code and data
(github.com/lkriener/yin_yang_data_set) are MIT-licensed, (c) 2020 lkriener. This module is an
independent re-implementation from the written definition.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from spikeforge.core.checks import SpikeforgeError, check_positive_int, describe

__all__ = [
    "R_BIG",
    "R_SMALL",
    "YINYANG_CLASS_NAMES",
    "YINYANG_SPLITS",
    "load_yinyang",
    "yinyang_class",
    "yinyang_dataset",
]

R_BIG: float = 0.5
"""Radius of the big circle (the picture spans ``[0, 2 * R_BIG]^2``)."""

R_SMALL: float = 0.1
"""Radius of the two small dots."""

YINYANG_CLASS_NAMES: tuple[str, str, str] = ("yin", "yang", "dot")
"""Class names by numeric label, as in the reference code."""

YINYANG_SPLITS: dict[str, tuple[int, int]] = {
    "train": (5000, 42),
    "validation": (1000, 41),
    "test": (1000, 40),
}
"""Standard splits: name -> (size, seed)."""

_MAX_SEED = 2**32 - 1  # numpy's RandomState accepts seeds in [0, 2**32 - 1]


def _dist(x: float, y: float, cx: float, cy: float) -> float:
    dx = x - cx
    dy = y - cy
    return math.sqrt(dx * dx + dy * dy)


def yinyang_class(x: float, y: float) -> int:
    """Numeric Yin-Yang label of a point (x, y) that lies inside the big circle.

    Args:
        x: Horizontal coordinate in [0, 1].
        y: Vertical coordinate in [0, 1].

    Returns:
        0, 1 or 2 by the class rule in the module docstring. Points outside the big circle are not
        rejected here; the generator does that before classifying.
    """
    d_right = _dist(x, y, 1.5 * R_BIG, R_BIG)
    d_left = _dist(x, y, 0.5 * R_BIG, R_BIG)
    if d_right < R_SMALL or d_left < R_SMALL:
        return 2
    is_one = (
        d_right <= R_SMALL
        or R_SMALL < d_left <= 0.5 * R_BIG
        or (y > R_BIG and d_right > 0.5 * R_BIG)
    )
    return int(is_one)


def yinyang_dataset(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate a Yin-Yang dataset exactly as the reference generator does.

    Args:
        size: Number of samples, an integer >= 1.
        seed: Seed of the ``numpy.random.RandomState`` that drives the sampling, in
            [0, 2**32 - 1]. Different splits need different seeds (equal seeds give equal data).

    Returns:
        ``(samples, labels)``: float64 inputs ``(x, y, 1 - x, 1 - y)`` and int64 labels in
        {0, 1, 2}.

    Shape:
        - samples: ``(size, 4)``, float64.
        - labels: ``(size,)``, int64.

    Raises:
        SpikeforgeError: if ``size`` or ``seed`` is not a valid integer.
    """
    size = check_positive_int("size", size)
    seed = check_positive_int("seed", seed, allow_zero=True)
    if seed > _MAX_SEED:
        raise SpikeforgeError(f"seed must be an integer in [0, {_MAX_SEED}], got {seed}.")
    rng = np.random.RandomState(seed)
    samples = np.empty((size, 4), dtype=np.float64)
    labels = np.empty(size, dtype=np.int64)
    diameter = 2.0 * R_BIG
    for i in range(size):
        goal = int(rng.randint(3))
        while True:
            x, y = (rng.rand(2) * diameter).tolist()
            if _dist(x, y, R_BIG, R_BIG) > R_BIG:
                continue
            if yinyang_class(x, y) == goal:
                break
        samples[i] = (x, y, 1.0 - x, 1.0 - y)
        labels[i] = goal
    return samples, labels


def load_yinyang(split: str) -> tuple[Tensor, Tensor]:
    """Generate one of the standard Yin-Yang splits as torch tensors.

    Args:
        split: ``"train"`` (5000 samples, seed 42), ``"validation"`` (1000, seed 41) or
            ``"test"`` (1000, seed 40).

    Returns:
        ``(inputs, labels)``: float32 inputs ``(x, y, 1 - x, 1 - y)`` in [0, 1] and int64 labels.

    Shape:
        - inputs: ``[N, 4]``, float32.
        - labels: ``[N]``, int64.

    Raises:
        SpikeforgeError: if ``split`` is not one of the standard split names.
    """
    if not isinstance(split, str) or split not in YINYANG_SPLITS:
        allowed = ", ".join(repr(s) for s in YINYANG_SPLITS)
        raise SpikeforgeError(f"split must be one of {allowed}, got {describe(split)}.")
    size, seed = YINYANG_SPLITS[split]
    samples, labels = yinyang_dataset(size, seed)
    return torch.from_numpy(samples).to(torch.float32), torch.from_numpy(labels)
