"""IDX files and the MNIST / Fashion-MNIST datasets.

IDX is the big-endian array format of MNIST. A file starts with a 4-byte magic number: two zero
bytes, a dtype code (0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64)
and the number of dimensions; then one big-endian uint32 per dimension; then the data.

:func:`load_mnist` reads the four standard ``*.gz`` files from ``mnist/`` or ``fashion-mnist/``
below a data root (see :mod:`spikeforge.data.locate`), checks their SHA-256 and can download them
with ``download=True`` (urllib only, written to a temporary file and renamed into place).

Credits: MNIST by Y. LeCun, C. Cortes and C. J. C. Burges (from NIST SD-1 and SD-3);
Fashion-MNIST by H. Xiao, K. Rasul and R. Vollgraf, (c) 2017 Zalando SE, MIT licence.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spikeforge.core.atomic import atomic_write
from spikeforge.core.checks import SpikeforgeError, check_rank, describe
from spikeforge.data.locate import DATA_ENV_VAR, candidate_roots, find_dataset_dir

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST_SHA256",
    "download_mnist",
    "load_mnist",
    "read_idx",
    "sha256_file",
    "to_float_images",
]

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
"""Split -> (images file, labels file); the names are the same for both datasets."""

_SPLIT_SIZES = {"train": 60000, "test": 10000}

MNIST_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz":
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz":
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz":
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz":
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz":
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz":
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz":
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz":
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}
"""Dataset -> file name -> SHA-256 of the original gzip file."""

MNIST_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
"""Dataset -> base addresses to download from, tried in order."""

_CHUNK = 1 << 20


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw (detected from the content).

    Args:
        path: File to read.

    Returns:
        The array in native byte order, with the shape given by the header.

    Raises:
        SpikeforgeError: if the file is missing, not valid gzip, has a bad magic number or a length
            that disagrees with its header.
    """
    path = Path(path)
    if not path.is_file():
        raise SpikeforgeError(f"path must be an existing IDX file, got {str(path)!r} (not found).")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise SpikeforgeError(
                f"{path} looks gzip-compressed but could not be decompressed ({exc}); the file is "
                "probably truncated or corrupted. Delete it and download it again."
            ) from exc
    if len(raw) < 4:
        raise SpikeforgeError(
            f"{path} is not an IDX file: expected a 4-byte header, got {len(raw)} bytes."
        )
    zero, code, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        codes = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise SpikeforgeError(
            f"{path} has a bad IDX magic number: expected 0x0000 followed by a dtype code in "
            f"({codes}) and ndim >= 1, got 0x{raw[:4].hex().upper()}."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise SpikeforgeError(
            f"{path} is truncated: expected a {header}-byte header for {ndim} dimensions, got "
            f"{len(raw)} bytes."
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise SpikeforgeError(
            f"{path} has the wrong length for its header (dims {dims}, dtype {dtype}): expected "
            f"{expected} bytes (decompressed), got {len(raw)}."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _check_choice(name: str, value: object, allowed: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        raise SpikeforgeError(f"{name} must be one of {names}, got {describe(value)}.")
    return value


def _verify(path: Path, expected: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise SpikeforgeError(
            f"Checksum mismatch for {path}: expected SHA-256 {expected}, got {got}. The file is "
            "corrupted or not the original; delete it and download it again (download=True)."
        )


class _ChecksumMismatch(Exception):
    pass


def _fetch(urls: list[str], dest: Path, expected: str, timeout: float) -> None:
    """Download the first working address to ``dest`` atomically, verifying SHA-256."""
    failures: list[str] = []
    for url in urls:
        def stream(out, url: str = url) -> None:
            h = hashlib.sha256()
            request = urllib.request.Request(url, headers={"User-Agent": "spikeforge"})
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                while chunk := resp.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != expected:  # abort: the temporary file is removed, dest is untouched
                raise _ChecksumMismatch(h.hexdigest())

        try:
            atomic_write(dest, stream)
            return
        except _ChecksumMismatch as bad:
            failures.append(
                f"{url}: checksum mismatch for {dest.name}, expected SHA-256 {expected}, got {bad}"
            )
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"{url}: {exc}")
    raise SpikeforgeError(
        f"Could not download {dest.name} to {dest.parent}; tried: " + "; ".join(failures)
        + f". Check the network connection, or copy the original file into {dest.parent} "
        f"(or set {DATA_ENV_VAR} to a data root that holds it)."
    )


def download_mnist(
    dataset: str = "mnist",
    *,
    root: str | os.PathLike[str] | None = None,
    splits: tuple[str, ...] = ("train", "test"),
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download the MNIST or Fashion-MNIST files that are missing and return their folder.

    Files go to ``<root>/<dataset>/`` for an explicit root, else ``$SPIKEFORGE_DATA/<dataset>/``
    when that variable is set, else ``~/.cache/spikeforge/data/<dataset>/``. Each file is written to
    a temporary file in that folder, checked against its SHA-256 and then renamed into place, so an
    interrupted download never leaves a partial file under the final name.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        root: Explicit data root.
        splits: Which splits to fetch (``"train"``, ``"test"``).
        force: Download again even when a verified file is already there.
        timeout: Socket timeout in seconds per request.

    Returns:
        The dataset folder.

    Raises:
        SpikeforgeError: for bad arguments, when an existing file has the wrong checksum (and
            ``force`` is False), or when every address failed for a file.
    """
    dataset = _check_choice("dataset", dataset, list(MNIST_SHA256))
    for split in splits:
        _check_choice("splits entry", split, list(MNIST_FILES))
    folder = find_dataset_dir(dataset, root, must_exist=False)
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        for fname in MNIST_FILES[split]:
            dest = folder / fname
            expected = MNIST_SHA256[dataset][fname]
            if dest.is_file() and not force:
                _verify(dest, expected)
                continue
            _fetch([base + fname for base in MNIST_MIRRORS[dataset]], dest, expected, timeout)
    return folder


def load_mnist(
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    dataset: str = "mnist",
    download: bool = False,
    verify: bool = True,
) -> tuple[Tensor, Tensor]:
    """Load the MNIST or Fashion-MNIST images and labels of one split.

    Args:
        split: ``"train"`` (60000 items) or ``"test"`` (10000 items).
        root: Explicit data root holding ``<dataset>/``; by default the roots listed in
            :mod:`spikeforge.data.locate` are searched.
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        download: Fetch missing files from the official addresses (see :func:`download_mnist`).
        verify: Check the SHA-256 of the files before reading them.

    Returns:
        ``(images, labels)`` with raw pixel values 0..255 and class labels 0..9.

    Shape:
        - images: ``[N, 28, 28]``, uint8.
        - labels: ``[N]``, int64.

    Raises:
        SpikeforgeError: for bad arguments, missing files (the message lists the folders searched
            and the files needed), a checksum mismatch or malformed files.
    """
    split = _check_choice("split", split, list(MNIST_FILES))
    dataset = _check_choice("dataset", dataset, list(MNIST_SHA256))
    files = MNIST_FILES[split]
    try:
        folder = find_dataset_dir(dataset, root, files=files)
    except SpikeforgeError:
        if not download:
            searched = ", ".join(str(r / dataset) for r in candidate_roots(root))
            raise SpikeforgeError(
                f"{dataset} {split} files not found. Needed: {files[0]} and {files[1]}. Searched: "
                f"{searched}. Pass download=True (or --download on the command line) to fetch "
                f"them, or set {DATA_ENV_VAR} to a folder that contains '{dataset}/'."
            ) from None
        folder = download_mnist(dataset, root=root, splits=(split,))
    paths = [folder / f for f in files]
    if verify:
        for p in paths:
            _verify(p, MNIST_SHA256[dataset][p.name])
    images = read_idx(paths[0])
    labels = read_idx(paths[1])
    n = _SPLIT_SIZES[split]
    if images.shape != (n, 28, 28) or images.dtype != np.uint8:
        raise SpikeforgeError(
            f"{paths[0]} must hold uint8 images of shape {(n, 28, 28)}, got shape {images.shape} "
            f"and dtype {images.dtype}."
        )
    if labels.shape != (n,) or labels.dtype != np.uint8 or int(labels.max()) > 9:
        raise SpikeforgeError(
            f"{paths[1]} must hold {n} uint8 labels in 0..9, got shape {labels.shape}, dtype "
            f"{labels.dtype} and maximum {int(labels.max()) if labels.size else None}."
        )
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def to_float_images(images: Tensor | np.ndarray, *, flatten: bool = True) -> Tensor:
    """Turn uint8 images into float32 values in [0, 1] (``x / 255``), flattened by default.

    Args:
        images: uint8 tensor or array of images, ``[N, H, W]`` (e.g. from :func:`load_mnist`).
        flatten: If True, merge the pixel dimensions into one.

    Returns:
        Float32 tensor on the same device as ``images``.

    Shape:
        - images: ``[N, H, W]``, uint8.
        - output: ``[N, H * W]`` (``[N, 784]`` for MNIST) if ``flatten``, else ``[N, H, W]``.

    Raises:
        SpikeforgeError: if ``images`` is not a rank-3 uint8 tensor or array.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    check_rank("images", images, 3, layout="[N, H, W]")
    if images.dtype != torch.uint8:
        raise SpikeforgeError(
            f"images must have dtype torch.uint8 (raw pixels 0..255), got {describe(images)}."
        )
    out = images.to(torch.float32).div_(255.0)
    return out.reshape(out.shape[0], -1) if flatten else out
