"""Datasets and their transforms, by name.

``build_datasets(name)`` returns a train and a test ``Dataset`` plus the
``DatasetInfo`` a model needs (classes, channels, input size). Small datasets
(Fashion-MNIST, CIFAR, SVHN, synthetic) are held in memory as uint8 tensors and
augmented with cheap tensor ops; ImageNet goes through ``ImageFolder``.

Files are read from disk in their published formats. Nothing is downloaded unless
``download=True`` is passed, and a missing dataset fails with one line saying where
it looked and how to get it.

Modules: ``registry`` (names, ``DatasetInfo``, ``build_datasets``), ``formats`` (the file
readers), ``builders`` (the datasets read from files), ``synthetic``, ``transforms``
(in-memory datasets and augmentation), ``split`` (the validation split), ``loaders``.
"""

from skipnet_sweep.data.builders import DEFAULT_DOWNLOAD_ROOT, FASHION_MNIST_ROOT
from skipnet_sweep.data.errors import DatasetFormatError, DatasetNotFoundError
from skipnet_sweep.data.formats import read_idx
from skipnet_sweep.data.loaders import Loaders, build_loaders, loader_options, make_loaders
from skipnet_sweep.data.registry import (
    DATASETS,
    DatasetInfo,
    build_datasets,
    dataset_info,
    list_datasets,
)
from skipnet_sweep.data.split import check_val_split, split_validation, val_count
from skipnet_sweep.data.synthetic import make_synthetic, synthetic_info
from skipnet_sweep.data.transforms import InMemoryImageDataset, RandomCropFlip

__all__ = [
    "DATASETS",
    "DEFAULT_DOWNLOAD_ROOT",
    "FASHION_MNIST_ROOT",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "InMemoryImageDataset",
    "Loaders",
    "RandomCropFlip",
    "build_datasets",
    "build_loaders",
    "check_val_split",
    "dataset_info",
    "list_datasets",
    "loader_options",
    "make_loaders",
    "make_synthetic",
    "synthetic_info",
    "read_idx",
    "split_validation",
    "val_count",
]
