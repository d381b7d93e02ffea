"""The dataset registry: names, their ``DatasetInfo``, and ``build_datasets``.

A builder registers itself with ``register(info, class_names)`` (``builders.py``,
``synthetic.py``); ``build_datasets(name)`` checks the keywords, calls the builder and
applies what every dataset shares (no augmentation on request, seeded subsets).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from skipnet_sweep.data.transforms import Split, unaugmented

__all__ = [
    "DATASETS",
    "BuildOptions",
    "DatasetInfo",
    "build_datasets",
    "dataset_info",
    "list_datasets",
    "register",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a transform need to know about a dataset."""

    name: str
    num_classes: int
    in_channels: int
    input_size: tuple[int, int]  # (H, W) of the tensors the dataset returns
    mean: tuple[float, ...]  # per-channel, in [0, 1] pixel units
    std: tuple[float, ...]
    # By label, as the dataset's authors name them; empty where there are none to ship
    # (ImageNet's are its folders, synthetic's are numbers).
    class_names: tuple[str, ...] = ()

    def class_name(self, label: int) -> str:
        """The name of class ``label``, or the label as text where the dataset names none."""
        label = int(label)
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)


@dataclass(frozen=True)
class BuildOptions:
    """Everything build_datasets passes on to a per-dataset builder."""

    download: bool
    seed: int
    svhn_extra: bool
    synthetic_size: int
    synthetic_channels: int
    synthetic_image_size: int
    synthetic_classes: int


Builder = Callable[[Path | None, BuildOptions, DatasetInfo], tuple[Split, Split, DatasetInfo]]

DATASETS: dict[str, DatasetInfo] = {}
_BUILDERS: dict[str, Builder] = {}


def register(info: DatasetInfo, class_names: Sequence[str] = ()) -> Callable[[Builder], Builder]:
    """Decorator: register a builder under ``info.name``.

    Args:
        info: the dataset's static description (its ``class_names`` are replaced).
        class_names: one name per class, in label order, or none.

    Raises:
        ValueError: as many names as there are classes was not given.
    """
    if class_names and len(class_names) != info.num_classes:
        raise ValueError(f"{info.name}: {len(class_names)} class names for {info.num_classes}")
    info = replace(info, class_names=tuple(class_names))

    def add(build: Builder) -> Builder:
        DATASETS[info.name] = info
        _BUILDERS[info.name] = build
        return build

    return add


def list_datasets() -> list[str]:
    """Names accepted by ``dataset_info`` and ``build_datasets``, sorted."""
    return sorted(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """Static description of a registered dataset.

    Args:
        name: a registered name (see ``list_datasets``).

    Returns:
        The dataset's ``DatasetInfo``. For ``synthetic`` and ``imagenet`` this is the
        default; ``build_datasets`` returns the one matching the data it built.

    Raises:
        ValueError: ``name`` is not registered.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}")
    return DATASETS[name]


def _subset(dataset: Split, size: int | None, seed: int, what: str) -> Split:
    """A seeded random subset of ``size`` items, or ``dataset`` itself.

    Random rather than first-k because several datasets are stored sorted by class
    (ImageFolder, SVHN extra), where the first k would hold few classes.
    """
    if size is None:
        return dataset
    if size <= 0:
        raise ValueError(f"{what} must be positive, got {size}")
    n = len(dataset)  # type: ignore[arg-type]
    if size >= n:
        return dataset
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(n, generator=generator)[:size].sort().values.tolist()
    return Subset(dataset, indices)


def _options(
    info: DatasetInfo,
    download: bool,
    seed: int,
    svhn_extra: bool | None,
    synthetic: dict[str, int | None],
) -> BuildOptions:
    """The builder's options, defaults filled in; a keyword given for another dataset is
    refused."""
    only_for = {"svhn_extra": ("svhn", svhn_extra)}
    only_for.update({f"synthetic_{k}": ("synthetic", v) for k, v in synthetic.items()})
    for keyword, (owner, value) in only_for.items():
        if value is not None and info.name != owner:
            raise ValueError(f"{keyword} applies only to {owner}, not {info.name}")

    def given(key: str, default: int) -> int:
        value = synthetic[key]
        return default if value is None else value

    return BuildOptions(
        download=download,
        seed=seed,
        svhn_extra=True if svhn_extra is None else svhn_extra,
        synthetic_size=given("size", 512),
        synthetic_channels=given("channels", info.in_channels),
        synthetic_image_size=given("image_size", info.input_size[0]),
        synthetic_classes=given("classes", info.num_classes),
    )


def build_datasets(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    seed: int = 0,
    augment: bool = True,
    train_subset: int | None = None,
    test_subset: int | None = None,
    svhn_extra: bool | None = None,
    synthetic_size: int | None = None,
    synthetic_channels: int | None = None,
    synthetic_image_size: int | None = None,
    synthetic_classes: int | None = None,
) -> tuple[Dataset[tuple[torch.Tensor, int]], Dataset[tuple[torch.Tensor, int]], DatasetInfo]:
    """Train and test datasets for ``name``, with their transforms.

    Items are ``(image, label)``: a normalised float tensor (C, H, W) and an int.
    Training items are augmented (random crop and flip for Fashion-MNIST, CIFAR
    and ImageNet) unless ``augment`` is False; test items never are.

    Args:
        name: a registered name (see ``list_datasets``).
        root: where the files are. ``None`` means ``FASHION_MNIST_ROOT`` for
            fashion_mnist and ``DEFAULT_DOWNLOAD_ROOT`` for cifar10, cifar100 and
            svhn; imagenet needs it. Unused by synthetic.
        download: fetch a missing dataset (fashion_mnist, cifar10, cifar100, svhn)
            into ``root`` or ``DEFAULT_DOWNLOAD_ROOT``.
        seed: seeds the synthetic data and the subsets.
        augment: False reads the training items the way the test items are read.
        train_subset: keep a seeded random subset of this many training items.
        test_subset: the same for the test set.
        svhn_extra: svhn only; train on train+extra (default, as in the paper) or
            train alone.
        synthetic_size: synthetic only; training items (default 512); the test set
            has a quarter as many.
        synthetic_channels: synthetic only; image channels (default 3).
        synthetic_image_size: synthetic only; square image side (default 32).
        synthetic_classes: synthetic only; number of classes (default 10).

    Returns:
        ``(train, test, info)``; ``info`` describes the data built (for imagenet its
        class count is the number of class folders found).

    Raises:
        ValueError: unknown name, or a keyword given for another dataset.
        DatasetNotFoundError: the files are missing (the message says where it
            looked and how to get them).
        DatasetFormatError: a file is malformed.
    """
    info = dataset_info(name)
    synthetic = {
        "size": synthetic_size,
        "channels": synthetic_channels,
        "image_size": synthetic_image_size,
        "classes": synthetic_classes,
    }
    opts = _options(info, download, seed, svhn_extra, synthetic)
    train, test, info = _BUILDERS[name](None if root is None else Path(root), opts, info)
    if not augment:
        train = unaugmented(train, test)
    train = _subset(train, train_subset, seed, "train_subset")
    test = _subset(test, test_subset, seed, "test_subset")
    return train, test, info
