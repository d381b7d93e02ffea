"""The datasets read from files: Fashion-MNIST, CIFAR-10/100, SVHN, ImageNet.

Each builder finds its files (or downloads them when asked), reads them with
``formats.py`` and returns ``(train, test, info)``. Nothing is downloaded unless
``download=True``; a missing dataset fails with one line saying where it looked and how to
get it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset

from skipnet_sweep.data.errors import DatasetFormatError, DatasetNotFoundError
from skipnet_sweep.data.formats import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    check_labels,
    load_cifar_batch,
    load_svhn_mat,
    read_idx,
)
from skipnet_sweep.data.registry import BuildOptions, DatasetInfo, register
from skipnet_sweep.data.transforms import InMemoryImageDataset, RandomCropFlip, Split

__all__ = ["DEFAULT_DOWNLOAD_ROOT", "FASHION_MNIST_ROOT"]

# Debian/Ubuntu's `dataset-fashion-mnist` package installs the four IDX files here.
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
# Where `download=True` puts data when no root is given, and where `root=None` looks.
DEFAULT_DOWNLOAD_ROOT = Path("~/.cache/skipnet_sweep/data").expanduser()

_Built = tuple[Split, Split, DatasetInfo]


def _default_root(root: Path | None) -> Path:
    return root if root is not None else DEFAULT_DOWNLOAD_ROOT


# The labels' names as each dataset's authors list them (Fashion-MNIST's README, CIFAR's
# batches.meta / meta files; SVHN labels digits by themselves).
_FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                          "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                    "ship", "truck")  # fmt: skip
_CIFAR100_CLASSES = ("apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
                     "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
                     "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
                     "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
                     "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
                     "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
                     "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
                     "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
                     "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
                     "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark",
                     "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel",
                     "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
                     "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
                     "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm")  # fmt: skip


# --------------------------------------------------------------------------- Fashion-MNIST

_FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def find_fmnist(dirs: Sequence[Path]) -> dict[str, Path] | None:
    """The four IDX files from the first directory that has all of them, or None."""
    for d in dirs:
        found: dict[str, Path] = {}
        for key, stem in _FMNIST_FILES.items():
            for candidate in (d / f"{stem}.gz", d / stem):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(_FMNIST_FILES):
            return found
    return None


def _read_fmnist_split(
    images_path: Path, labels_path: Path, num_classes: int
) -> tuple[Tensor, Tensor]:
    images = read_idx(images_path, expected_magic=IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, expected_magic=IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DatasetFormatError(f"{images_path}: expected 28x28 images, got {images.shape[1:]}")
    if len(images) != len(labels):
        raise DatasetFormatError(
            f"{images_path}: {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    labels_t = torch.from_numpy(labels.astype(np.int64))
    check_labels(labels_t, num_classes, labels_path)
    return torch.from_numpy(images).unsqueeze(1), labels_t


@register(
    DatasetInfo("fashion_mnist", 10, 1, (28, 28), (0.2860,), (0.3530,)), _FASHION_MNIST_CLASSES
)
def _build_fashion_mnist(root: Path | None, opts: BuildOptions, info: DatasetInfo) -> _Built:
    # Also look where torchvision's FashionMNIST(download=True) leaves the raw files.
    if root is not None:
        dirs = [root, root / "FashionMNIST" / "raw"]
    else:
        dirs = [FASHION_MNIST_ROOT, DEFAULT_DOWNLOAD_ROOT / "FashionMNIST" / "raw"]
    files = find_fmnist(dirs)
    if files is None and opts.download:
        from torchvision import datasets as tv_datasets

        download_root = _default_root(root)
        tv_datasets.FashionMNIST(str(download_root), train=True, download=True)
        files = find_fmnist([download_root / "FashionMNIST" / "raw"])
    if files is None:
        raise DatasetNotFoundError(
            f"fashion_mnist not found: looked for {', '.join(_FMNIST_FILES.values())} (.gz or not) in "
            f"{', '.join(map(str, dirs))}; install it with `apt-get install dataset-fashion-mnist`, "
            f"or pass download=True to fetch it into {dirs[-1].parent.parent}"
        )
    train = _read_fmnist_split(files["train_images"], files["train_labels"], info.num_classes)
    test = _read_fmnist_split(files["test_images"], files["test_labels"], info.num_classes)
    augment = RandomCropFlip(padding=2)
    return (
        InMemoryImageDataset(*train, info.mean, info.std, augment),
        InMemoryImageDataset(*test, info.mean, info.std),
        info,
    )


# --------------------------------------------------------------------------- CIFAR

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class _CifarLayout:
    """Where one CIFAR variant's python batches are and how they name their labels."""

    folder: str  # the archive's top folder
    train_files: tuple[str, ...]
    test_file: str
    label_key: str
    torchvision_class: str  # whose url, filename and md5 a download uses


def _find_cifar(
    root: Path | None, opts: BuildOptions, info: DatasetInfo, layout: _CifarLayout
) -> Path:
    """The folder holding every batch of ``layout``, downloaded first when asked."""
    base = _default_root(root)
    # Accept both the parent of the extracted folder and the folder itself.
    dirs = [base / layout.folder, base]
    names = [*layout.train_files, layout.test_file]

    def find() -> Path | None:
        return next((d for d in dirs if all((d / n).is_file() for n in names)), None)

    found = find()
    if found is None and opts.download:
        from torchvision import datasets as tv_datasets
        from torchvision.datasets.utils import download_and_extract_archive

        # Fetch the archive without torchvision's loader, which unpickles unrestricted.
        cls = getattr(tv_datasets, layout.torchvision_class)
        download_and_extract_archive(cls.url, str(base), filename=cls.filename, md5=cls.tgz_md5)
        found = find()
    if found is None:
        raise DatasetNotFoundError(
            f"{info.name} not found: looked for {', '.join(names)} in {', '.join(map(str, dirs))}; "
            f"download the CIFAR python version from {_CIFAR_URL}, extract it and pass root=<its parent>, "
            "or pass download=True"
        )
    return found


def _build_cifar(
    root: Path | None, opts: BuildOptions, info: DatasetInfo, *, layout: _CifarLayout
) -> _Built:
    found = _find_cifar(root, opts, info, layout)
    parts = [load_cifar_batch(found / n, layout.label_key) for n in layout.train_files]
    train_images = torch.cat([p[0] for p in parts])
    train_labels = torch.cat([p[1] for p in parts])
    test_images, test_labels = load_cifar_batch(found / layout.test_file, layout.label_key)
    check_labels(train_labels, info.num_classes, found)
    check_labels(test_labels, info.num_classes, found / layout.test_file)
    augment = RandomCropFlip(padding=4)
    return (
        InMemoryImageDataset(train_images, train_labels, info.mean, info.std, augment),
        InMemoryImageDataset(test_images, test_labels, info.mean, info.std),
        info,
    )


def _register_cifar(info: DatasetInfo, class_names: Sequence[str], layout: _CifarLayout) -> None:
    register(info, class_names)(functools.partial(_build_cifar, layout=layout))


_register_cifar(
    DatasetInfo("cifar10", 10, 3, (32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    _CIFAR10_CLASSES,
    _CifarLayout(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "labels",
        "CIFAR10",
    ),
)
_register_cifar(
    DatasetInfo("cifar100", 100, 3, (32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    _CIFAR100_CLASSES,
    _CifarLayout("cifar-100-python", ("train",), "test", "fine_labels", "CIFAR100"),
)


# --------------------------------------------------------------------------- SVHN

_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


def _find_svhn(root: Path | None, opts: BuildOptions) -> dict[str, Path]:
    """The ``.mat`` file of each split the options ask for, downloaded first when asked."""
    base = _default_root(root)
    splits = ["train", "test", *(["extra"] if opts.svhn_extra else [])]
    paths = {s: base / f"{s}_32x32.mat" for s in splits}
    missing = [s for s in splits if not paths[s].is_file()]
    if missing and opts.download:
        from torchvision import datasets as tv_datasets
        from torchvision.datasets.utils import download_url

        for split in missing:
            url, filename, md5 = tv_datasets.SVHN.split_list[split]
            download_url(url, str(base), filename, md5)
        missing = [s for s in splits if not paths[s].is_file()]
    if missing == ["extra"]:
        raise DatasetNotFoundError(
            f"svhn extra split not found at {paths['extra']}; SkipNet trains on train+extra: "
            f"download extra_32x32.mat from {_SVHN_URL}, pass download=True, or pass svhn_extra=False"
        )
    if missing:
        raise DatasetNotFoundError(
            f"svhn not found: looked for {', '.join(str(paths[s]) for s in missing)}; download the "
            f"cropped-digits .mat files from {_SVHN_URL} and pass root=<their folder>, or pass download=True"
        )
    return paths


@register(
    DatasetInfo("svhn", 10, 3, (32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    tuple(str(d) for d in range(10)),
)
def _build_svhn(root: Path | None, opts: BuildOptions, info: DatasetInfo) -> _Built:
    paths = _find_svhn(root, opts)
    train: Split = InMemoryImageDataset(*load_svhn_mat(paths["train"]), info.mean, info.std)
    if opts.svhn_extra:
        extra = InMemoryImageDataset(*load_svhn_mat(paths["extra"]), info.mean, info.std)
        train = ConcatDataset([train, extra])
    test = InMemoryImageDataset(*load_svhn_mat(paths["test"]), info.mean, info.std)
    return train, test, info


# --------------------------------------------------------------------------- ImageNet


@register(
    DatasetInfo("imagenet", 1000, 3, (224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
)
def _build_imagenet(root: Path | None, opts: BuildOptions, info: DatasetInfo) -> _Built:
    how = (
        "get ILSVRC2012 from https://image-net.org (it cannot be downloaded automatically), "
        "arrange train/ and val/ as one folder per class, and pass root=<the folder holding them>"
    )
    if root is None:
        raise DatasetNotFoundError(f"imagenet needs root=...; {how}")
    dirs = [root / "train", root / "val"]
    if not all(d.is_dir() for d in dirs):
        raise DatasetNotFoundError(f"imagenet not found: looked for {dirs[0]} and {dirs[1]}; {how}")
    from torchvision import datasets as tv_datasets
    from torchvision import transforms as T

    normalize = T.Normalize(info.mean, info.std)
    train_tf = T.Compose(
        [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), normalize]
    )
    val_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalize])
    try:
        train = tv_datasets.ImageFolder(str(dirs[0]), transform=train_tf)
        val = tv_datasets.ImageFolder(str(dirs[1]), transform=val_tf)
    except FileNotFoundError as e:
        raise DatasetFormatError(f"imagenet: {e}; {how}") from None
    # Labels are folder indices, so both splits must list the same folders.
    if train.class_to_idx != val.class_to_idx:
        raise DatasetFormatError(
            f"imagenet: {dirs[0]} has {len(train.classes)} class folders and {dirs[1]} has "
            f"{len(val.classes)}, or their names differ; both need the same class folders"
        )
    return train, val, replace(info, num_classes=len(train.classes))
