"""Tests for spikeforge.data: Yin-Yang generator, IDX/MNIST loading, data-root lookup.

Nothing here touches the network: an autouse fixture makes ``urllib.request.urlopen`` fail, and the
download tests replace it with a fake that serves bytes of local files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from spikeforge.core.checks import SpikeforgeError
from spikeforge.data import (
    MNIST_FILES,
    MNIST_SHA256,
    YINYANG_SPLITS,
    candidate_roots,
    data_root,
    download_mnist,
    find_dataset_dir,
    load_mnist,
    load_yinyang,
    read_idx,
    sha256_file,
    to_float_images,
    yinyang_class,
    yinyang_dataset,
)
from spikeforge.data import locate as locate_mod

YY_FILES = tuple(
    f"{split}_{kind}.npy" for split in YINYANG_SPLITS for kind in ("samples", "labels")
)
ALL_MNIST = MNIST_FILES["train"] + MNIST_FILES["test"]

GOLDEN_COUNTS = {"train": [1681, 1702, 1617], "validation": [316, 336, 348], "test": [350, 316, 334]}
GOLDEN_FIRST = {
    "train": ((0.6803, 0.4505, 0.3197, 0.5495), 2),
    "validation": ((0.6806, 0.3210, 0.3194, 0.6790), 0),
    "test": ((0.2341, 0.4017, 0.7659, 0.5983), 2),
}


def _shared(name: str, files: tuple[str, ...]) -> Path:
    """Folder of a dataset in shared/data, found through the locate helper, or skip."""
    try:
        return find_dataset_dir(name, files=files)
    except SpikeforgeError as exc:
        pytest.skip(f"shared dataset '{name}' not available offline ({exc})")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tests must never download; urlopen was called")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(scope="module")
def yy_dir() -> Path:
    return _shared("yin-yang", tuple(f"publication_data/{f}" for f in YY_FILES)) / "publication_data"


@pytest.fixture(scope="module")
def yy_generated() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {split: yinyang_dataset(size, seed) for split, (size, seed) in YINYANG_SPLITS.items()}


@pytest.fixture(scope="module")
def mnist_dir() -> Path:
    return _shared("mnist", ALL_MNIST)


@pytest.fixture(scope="module")
def fmnist_dir() -> Path:
    return _shared("fashion-mnist", ALL_MNIST)


# --------------------------------------------------------------------------------------- Yin-Yang


@pytest.mark.parametrize("split", list(YINYANG_SPLITS))
def test_yinyang_reproduces_publication_data(split, yy_dir, yy_generated):
    samples, labels = yy_generated[split]
    ref_samples = np.load(yy_dir / f"{split}_samples.npy")
    ref_labels = np.load(yy_dir / f"{split}_labels.npy")
    assert samples.dtype == np.float64 and samples.shape == (YINYANG_SPLITS[split][0], 4)
    assert labels.dtype == np.int64 and labels.shape == (YINYANG_SPLITS[split][0],)
    assert np.array_equal(samples, ref_samples)
    assert np.array_equal(labels, ref_labels)


@pytest.mark.parametrize("split", list(YINYANG_SPLITS))
def test_yinyang_golden_counts_and_first_sample(split, yy_generated):
    samples, labels = yy_generated[split]
    assert np.bincount(labels, minlength=3).tolist() == GOLDEN_COUNTS[split]
    first, cls = GOLDEN_FIRST[split]
    np.testing.assert_allclose(samples[0], first, atol=5e-5)
    assert labels[0] == cls
    np.testing.assert_array_equal(samples[:, 2:], 1.0 - samples[:, :2])
    assert np.all(((samples[:, 0] - 0.5) ** 2 + (samples[:, 1] - 0.5) ** 2) <= 0.25)


def test_load_yinyang_tensors(yy_generated):
    x, y = load_yinyang("validation")
    assert x.dtype == torch.float32 and x.shape == (1000, 4)
    assert y.dtype == torch.int64 and y.shape == (1000,)
    samples, labels = yy_generated["validation"]
    assert torch.equal(x, torch.from_numpy(samples.astype(np.float32)))
    assert torch.equal(y, torch.from_numpy(labels))


def test_yinyang_class_rule():
    assert yinyang_class(0.25, 0.5) == 2  # left dot centre
    assert yinyang_class(0.75, 0.5) == 2  # right dot centre
    assert yinyang_class(0.40, 0.5) == 1  # ring around the left dot
    assert yinyang_class(0.60, 0.5) == 0  # ring around the right dot, on the midline
    assert yinyang_class(0.50, 0.9) == 1  # upper half, far from the right dot
    assert yinyang_class(0.50, 0.1) == 0  # lower half, far from the left dot


def test_yinyang_errors():
    with pytest.raises(SpikeforgeError, match=r"split must be one of 'train', 'validation', 'test'"):
        load_yinyang("valid")
    with pytest.raises(SpikeforgeError, match=r"size must be an integer >= 1, got 0"):
        yinyang_dataset(0, 1)
    with pytest.raises(SpikeforgeError, match=r"seed must be an integer"):
        yinyang_dataset(10, 1.5)
    with pytest.raises(SpikeforgeError, match=r"seed must be an integer in \[0, 4294967295\]"):
        yinyang_dataset(10, 2**32)


# ------------------------------------------------------------------------------------------ locate


def test_locate_finds_shared_folder(mnist_dir):
    assert mnist_dir.name == "mnist"
    assert (mnist_dir / "train-images-idx3-ubyte.gz").is_file()
    assert data_root(dataset="mnist") == mnist_dir.parent


def test_locate_explicit_root_is_exclusive(tmp_path):
    assert candidate_roots(tmp_path) == [tmp_path.absolute()]
    with pytest.raises(SpikeforgeError, match="not found; searched: " + str(tmp_path / "mnist")):
        find_dataset_dir("mnist", tmp_path)
    assert find_dataset_dir("mnist", tmp_path, must_exist=False) == tmp_path / "mnist"
    (tmp_path / "mnist").mkdir()
    assert find_dataset_dir("mnist", tmp_path) == tmp_path / "mnist"
    assert data_root(tmp_path, dataset="mnist") == tmp_path


def test_locate_env_var_and_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(locate_mod, "_repo_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    env_root = tmp_path / "env"
    (env_root / "toy").mkdir(parents=True)
    monkeypatch.setenv("SPIKEFORGE_DATA", str(env_root))
    roots = candidate_roots()
    assert roots[0] == env_root
    assert roots[-1] == tmp_path / "home" / ".cache" / "spikeforge" / "data"
    assert find_dataset_dir("toy") == env_root / "toy"
    assert find_dataset_dir("other", must_exist=False) == env_root / "other"
    monkeypatch.delenv("SPIKEFORGE_DATA")
    cache = tmp_path / "home" / ".cache" / "spikeforge" / "data"
    assert find_dataset_dir("other", must_exist=False) == cache / "other"
    with pytest.raises(SpikeforgeError, match="name must be a dataset folder name"):
        find_dataset_dir("a/b")


# --------------------------------------------------------------------------------------- IDX files


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize(
    ("dtype", "code"),
    [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D),
     (np.float64, 0x0E)],
)
def test_read_idx_raw_and_gzip(tmp_path, dtype, code):
    arr = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    data = _idx_bytes(arr, code)
    (tmp_path / "a.idx").write_bytes(data)
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(data))
    for name in ("a.idx", "a.idx.gz"):
        out = read_idx(tmp_path / name)
        assert out.dtype == np.dtype(dtype) and out.dtype.isnative
        np.testing.assert_array_equal(out, arr)


def test_read_idx_errors(tmp_path):
    good = _idx_bytes(np.zeros((3, 2), np.uint8), 0x08)
    (tmp_path / "magic").write_bytes(b"\x01\x00" + good[2:])
    with pytest.raises(SpikeforgeError, match="bad IDX magic number.*got 0x01000802"):
        read_idx(tmp_path / "magic")
    (tmp_path / "code").write_bytes(b"\x00\x00\x07\x02" + good[4:])
    with pytest.raises(SpikeforgeError, match="bad IDX magic number"):
        read_idx(tmp_path / "code")
    (tmp_path / "short").write_bytes(good[:-1])
    with pytest.raises(SpikeforgeError, match="expected 18 bytes .*got 17"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(good + b"\x00")
    with pytest.raises(SpikeforgeError, match="expected 18 bytes .*got 19"):
        read_idx(tmp_path / "long")
    (tmp_path / "trunc.gz").write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(SpikeforgeError, match="could not be decompressed"):
        read_idx(tmp_path / "trunc.gz")
    with pytest.raises(SpikeforgeError, match="not found"):
        read_idx(tmp_path / "missing")


# ------------------------------------------------------------------------------- MNIST / FMNIST


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist(split, mnist_dir):
    x, y = load_mnist(split)
    n = 60000 if split == "train" else 10000
    assert x.shape == (n, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (n,) and y.dtype == torch.int64
    assert int(y.min()) == 0 and int(y.max()) == 9
    assert torch.bincount(y, minlength=10).min() > n // 20
    assert int(y[0]) == (5 if split == "train" else 7)
    assert int(x.max()) == 255


@pytest.mark.parametrize("split", ["train", "test"])
def test_fashion_mnist(split, fmnist_dir):
    x, y = load_mnist(split, root=fmnist_dir.parent, dataset="fashion-mnist")
    n = 60000 if split == "train" else 10000
    assert x.shape == (n, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (n,) and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == [n // 10] * 10  # exactly balanced
    assert int(y[0]) == 9  # ankle boot


def test_to_float_images():
    imgs = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8).repeat(3, 1, 1)
    flat = to_float_images(imgs)
    assert flat.shape == (3, 4) and flat.dtype == torch.float32
    torch.testing.assert_close(flat[0], torch.tensor([0.0, 1.0, 0.2, 0.4]))
    assert to_float_images(imgs.numpy(), flatten=False).shape == (3, 2, 2)
    with pytest.raises(SpikeforgeError, match="images must have dtype torch.uint8.*float32"):
        to_float_images(imgs.float())
    with pytest.raises(SpikeforgeError, match=r"images must have rank 3 laid out as \[N, H, W\]"):
        to_float_images(imgs[0])


def test_mnist_missing_files_error(tmp_path):
    with pytest.raises(SpikeforgeError) as info:
        load_mnist("test", root=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "mnist") in msg
    assert "t10k-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert "download=True" in msg and "--download" in msg and "SPIKEFORGE_DATA" in msg


def test_mnist_argument_errors(tmp_path):
    with pytest.raises(SpikeforgeError, match="split must be one of 'train', 'test', got 'val'"):
        load_mnist("val", root=tmp_path)
    with pytest.raises(SpikeforgeError, match="dataset must be one of 'mnist', 'fashion-mnist'"):
        load_mnist("test", root=tmp_path, dataset="kmnist")


def _copy_test_split(src: Path, root: Path) -> Path:
    dst = root / "mnist"
    dst.mkdir(parents=True)
    for name in MNIST_FILES["test"]:
        shutil.copyfile(src / name, dst / name)
    return dst


def test_mnist_checksum_mismatch(tmp_path, mnist_dir):
    dst = _copy_test_split(mnist_dir, tmp_path)
    x, y = load_mnist("test", root=tmp_path)  # an intact copy loads
    assert int(y[0]) == 7
    target = dst / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF  # flip bytes in the gzip CRC/size trailer
    target.write_bytes(bytes(data))
    expected = MNIST_SHA256["mnist"]["t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(SpikeforgeError) as info:
        load_mnist("test", root=tmp_path)
    msg = str(info.value)
    assert str(target) in msg and expected in msg and sha256_file(target) in msg
    with pytest.raises(SpikeforgeError, match="could not be decompressed"):
        load_mnist("test", root=tmp_path, verify=False)


def _fake_urlopen(served: dict[str, bytes], calls: list[str], fail_hosts: tuple[str, ...] = ()):
    def fake(request, timeout=None):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        calls.append(url)
        if any(host in url for host in fail_hosts):
            raise urllib.error.URLError("simulated outage")
        return io.BytesIO(served[url.rsplit("/", 1)[-1]])

    return fake


def test_mnist_download_offline(tmp_path, mnist_dir, monkeypatch):
    served = {name: (mnist_dir / name).read_bytes() for name in MNIST_FILES["test"]}
    calls: list[str] = []
    monkeypatch.setattr(
        urllib.request, "urlopen", _fake_urlopen(served, calls, fail_hosts=("ossci-datasets",))
    )
    x, y = load_mnist("test", root=tmp_path, download=True)
    assert x.shape == (10000, 28, 28) and int(y[0]) == 7
    assert calls == [
        "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
        "http://yann.lecun.com/exdb/mnist/t10k-images-idx3-ubyte.gz",
        "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
        "http://yann.lecun.com/exdb/mnist/t10k-labels-idx1-ubyte.gz",
    ]
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(MNIST_FILES["test"])
    # Files already present and verified are not fetched again.
    calls.clear()
    assert download_mnist(root=tmp_path, splits=("test",)) == tmp_path / "mnist"
    assert calls == []


def test_mnist_download_checksum_mismatch(tmp_path, monkeypatch):
    bogus = b"not the real file"
    calls: list[str] = []
    served = {name: bogus for name in MNIST_FILES["test"]}
    monkeypatch.setattr(urllib.request, "urlopen", _fake_urlopen(served, calls))
    with pytest.raises(SpikeforgeError) as info:
        load_mnist("test", root=tmp_path, dataset="fashion-mnist", download=True)
    msg = str(info.value)
    name = "t10k-images-idx3-ubyte.gz"
    assert calls == ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" + name]
    assert name in msg and "checksum mismatch" in msg
    assert MNIST_SHA256["fashion-mnist"][name] in msg
    assert hashlib.sha256(bogus).hexdigest() in msg
    assert list((tmp_path / "fashion-mnist").iterdir()) == []  # no partial or temp file left
