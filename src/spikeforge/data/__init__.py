"""Datasets: Yin-Yang (generated), MNIST and Fashion-MNIST (IDX files), and where to find them."""

from spikeforge.data.idx import (
    MNIST_FILES,
    MNIST_MIRRORS,
    MNIST_SHA256,
    download_mnist,
    load_mnist,
    read_idx,
    sha256_file,
    to_float_images,
)
from spikeforge.data.locate import (
    DATA_ENV_VAR,
    candidate_roots,
    data_root,
    default_cache_root,
    find_dataset_dir,
)
from spikeforge.data.yinyang import (
    R_BIG,
    R_SMALL,
    YINYANG_CLASS_NAMES,
    YINYANG_SPLITS,
    load_yinyang,
    yinyang_class,
    yinyang_dataset,
)

__all__ = [
    "DATA_ENV_VAR",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST_SHA256",
    "R_BIG",
    "R_SMALL",
    "YINYANG_CLASS_NAMES",
    "YINYANG_SPLITS",
    "candidate_roots",
    "data_root",
    "default_cache_root",
    "download_mnist",
    "find_dataset_dir",
    "load_mnist",
    "load_yinyang",
    "read_idx",
    "sha256_file",
    "to_float_images",
    "yinyang_class",
    "yinyang_dataset",
]
