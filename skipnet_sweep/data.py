"""Datasets and their transforms, by name.

``build_datasets(name)`` returns a train and a test ``Dataset`` plus the
``DatasetInfo`` a model needs (classes, channels, input size). Small datasets
(Fashion-MNIST, CIFAR, SVHN, synthetic) are held in memory as uint8 tensors and
augmented with cheap tensor ops; ImageNet goes through ``ImageFolder``.

Files are read from disk in their published formats. Nothing is downloaded unless
``download=True`` is passed, and a missing dataset fails with one line saying where
it looked and how to get it.
"""

from __future__ import annotations

import copy
import gzip
import math
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

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

# Debian/Ubuntu's `dataset-fashion-mnist` package installs the four IDX files here.
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
# Where `download=True` puts data when no root is given, and where `root=None` looks.
DEFAULT_DOWNLOAD_ROOT = Path("~/.cache/skipnet_sweep/data").expanduser()


class DatasetNotFoundError(ValueError):
    """A dataset's files are not where we looked."""


class DatasetFormatError(ValueError):
    """A dataset file exists but does not hold what its format promises."""


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
class _Options:
    """Everything build_datasets passes on to a per-dataset builder."""

    download: bool
    seed: int
    svhn_extra: bool
    synthetic_size: int
    synthetic_channels: int
    synthetic_image_size: int
    synthetic_classes: int


_Split = Dataset[tuple[Tensor, int]]
_Builder = Callable[[Path | None, _Options, DatasetInfo], tuple[_Split, _Split, DatasetInfo]]

DATASETS: dict[str, DatasetInfo] = {}
_BUILDERS: dict[str, _Builder] = {}


def _register(info: DatasetInfo, class_names: Sequence[str] = ()) -> Callable[[_Builder], _Builder]:
    if class_names and len(class_names) != info.num_classes:
        raise ValueError(f"{info.name}: {len(class_names)} class names for {info.num_classes}")
    info = replace(info, class_names=tuple(class_names))

    def add(build: _Builder) -> _Builder:
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


# --------------------------------------------------------------------------- transforms


@dataclass(frozen=True)
class RandomCropFlip:
    """Zero-pad, randomly crop back to the input size, and maybe mirror.

    Works on one uint8 CxHxW tensor. Draws from torch's global RNG, which DataLoader
    seeds per worker, so workers do not repeat each other's augmentations.
    """

    padding: int
    flip: bool = True

    def __call__(self, image: Tensor) -> Tensor:
        c, h, w = image.shape
        p = self.padding
        if p > 0:
            padded = image.new_zeros((c, h + 2 * p, w + 2 * p))
            padded[:, p : p + h, p : p + w] = image
            top, left = torch.randint(0, 2 * p + 1, (2,)).tolist()
            image = padded[:, top : top + h, left : left + w]
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image


class InMemoryImageDataset(Dataset[tuple[Tensor, int]]):
    """Images held as one uint8 tensor; items are normalised float tensors.

    Args:
        images: uint8 tensor (N, C, H, W).
        labels: integer tensor (N,).
        mean: per-channel mean in [0, 1] pixel units.
        std: per-channel standard deviation in the same units.
        augment: applied to the uint8 image before normalisation, or None.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}"
            )
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(
                f"mean/std need {images.shape[1]} channels, got {len(mean)}/{len(std)}"
            )
        self.images = images
        self.labels = labels.to(torch.int64)
        self.augment = augment
        # Fold the /255 into the normalisation so __getitem__ does one multiply-add.
        std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_t

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.augment is not None:
            image = self.augment(image)
        return image.float() * self._scale + self._shift, int(self.labels[index])


# --------------------------------------------------------------------------- file readers

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_IMAGES_MAGIC = 2051  # uint8, 3 dimensions
IDX_LABELS_MAGIC = 2049  # uint8, 1 dimension


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped if the file is gzip (judged by its magic, not its name)."""
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if not gzipped:
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise DatasetFormatError(f"{path}: corrupt gzip data ({e})") from None


def read_idx(path: str | os.PathLike[str], *, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped or not.

    Args:
        path: the file.
        expected_magic: if given, the file's magic number must equal it
            (2051 for MNIST-style images, 2049 for labels).

    Returns:
        A native-endian array with the shape the header declares.

    Raises:
        DatasetFormatError: wrong magic number, unknown type code, or a size that
            does not match the header.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetFormatError(f"{path}: not an IDX file ({len(raw)} bytes, header needs 4)")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DatasetFormatError(f"{path}: IDX magic number is {magic}, expected {expected_magic}")
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES:
        raise DatasetFormatError(f"{path}: not an IDX file (magic number {magic})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path}: IDX header truncated ({len(raw)} bytes, needs {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetFormatError(
            f"{path}: IDX header declares shape {dims} ({expected} bytes) but the file holds {len(raw) - header}"
        )
    # Copy into a writable native-endian array: torch.from_numpy rejects read-only buffers.
    return (
        np.frombuffer(raw, dtype=dtype, count=math.prod(dims), offset=header)
        .astype(dtype.newbyteorder("="), copy=True)
        .reshape(dims)
    )


# CIFAR's python batches are pickles; a pickle can run arbitrary code, so only the
# callables needed to rebuild numpy arrays are let through.
_CIFAR_PICKLE_ALLOWED = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol-5 pickles of contiguous arrays
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Python 3 pickles of bytes at protocol 2 go through _codecs.encode(str, "latin1"),
        # a pure data transform.
        ("_codecs", "encode"),
    }
)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_PICKLE_ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}; a CIFAR batch holds only dicts, lists and numpy arrays"
            )
        return super().find_class(module, name)


def _load_cifar_batch(path: Path, label_key: str) -> tuple[Tensor, Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) from one CIFAR python batch file."""
    try:
        with path.open("rb") as f:
            # The batches were written by Python 2; latin1 turns its str keys into str.
            batch = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DatasetFormatError(f"{path}: not a CIFAR python batch ({e})") from None
    if not isinstance(batch, dict):
        raise DatasetFormatError(f"{path}: not a CIFAR python batch (holds {type(batch).__name__})")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DatasetFormatError(
            f"{path}: CIFAR batch lacks 'data' or {label_key!r} (keys: {sorted(batch)})"
        )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if (
        data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
        or len(labels) != len(data)
    ):
        raise DatasetFormatError(
            f"{path}: expected uint8 data (N, 3072) and N labels, got {data.dtype} {data.shape} and {len(labels)}"
        )
    # Rows are stored channel-major (1024 R, then G, then B), each channel row-major.
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
    return images, torch.from_numpy(labels)


# --------------------------------------------------------------------------- helpers


def _check_labels(labels: Tensor, num_classes: int, source: object) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DatasetFormatError(
            f"{source}: labels span [{int(labels.min())}, {int(labels.max())}], expected [0, {num_classes - 1}]"
        )


def _subset(dataset: _Split, size: int | None, seed: int, what: str) -> _Split:
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


def _default_root(root: Path | None) -> Path:
    return root if root is not None else DEFAULT_DOWNLOAD_ROOT


# --------------------------------------------------------------------------- datasets

_FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_fmnist(dirs: Sequence[Path]) -> dict[str, Path] | None:
    """The four IDX files from the first directory that has all of them."""
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
    _check_labels(labels_t, num_classes, labels_path)
    return torch.from_numpy(images).unsqueeze(1), labels_t


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


@_register(
    DatasetInfo("fashion_mnist", 10, 1, (28, 28), (0.2860,), (0.3530,)), _FASHION_MNIST_CLASSES
)
def _build_fashion_mnist(
    root: Path | None, opts: _Options, info: DatasetInfo
) -> tuple[_Split, _Split, DatasetInfo]:
    # Also look where torchvision's FashionMNIST(download=True) leaves the raw files.
    if root is not None:
        dirs = [root, root / "FashionMNIST" / "raw"]
    else:
        dirs = [FASHION_MNIST_ROOT, DEFAULT_DOWNLOAD_ROOT / "FashionMNIST" / "raw"]
    files = _find_fmnist(dirs)
    if files is None and opts.download:
        from torchvision import datasets as tv_datasets

        download_root = _default_root(root)
        tv_datasets.FashionMNIST(str(download_root), train=True, download=True)
        files = _find_fmnist([download_root / "FashionMNIST" / "raw"])
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


_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def _build_cifar(
    root: Path | None,
    opts: _Options,
    info: DatasetInfo,
    *,
    folder: str,
    train_files: Sequence[str],
    test_file: str,
    label_key: str,
    torchvision_class: str,
) -> tuple[_Split, _Split, DatasetInfo]:
    base = _default_root(root)
    # Accept both the parent of the extracted folder and the folder itself.
    dirs = [base / folder, base]
    names = [*train_files, test_file]

    def find() -> Path | None:
        return next((d for d in dirs if all((d / n).is_file() for n in names)), None)

    found = find()
    if found is None and opts.download:
        from torchvision import datasets as tv_datasets
        from torchvision.datasets.utils import download_and_extract_archive

        # Fetch the archive without torchvision's loader, which unpickles unrestricted.
        cls = getattr(tv_datasets, torchvision_class)
        download_and_extract_archive(cls.url, str(base), filename=cls.filename, md5=cls.tgz_md5)
        found = find()
    if found is None:
        raise DatasetNotFoundError(
            f"{info.name} not found: looked for {', '.join(names)} in {', '.join(map(str, dirs))}; "
            f"download the CIFAR python version from {_CIFAR_URL}, extract it and pass root=<its parent>, "
            "or pass download=True"
        )
    parts = [_load_cifar_batch(found / n, label_key) for n in train_files]
    train_images = torch.cat([p[0] for p in parts])
    train_labels = torch.cat([p[1] for p in parts])
    test_images, test_labels = _load_cifar_batch(found / test_file, label_key)
    _check_labels(train_labels, info.num_classes, found)
    _check_labels(test_labels, info.num_classes, found / test_file)
    augment = RandomCropFlip(padding=4)
    return (
        InMemoryImageDataset(train_images, train_labels, info.mean, info.std, augment),
        InMemoryImageDataset(test_images, test_labels, info.mean, info.std),
        info,
    )


@_register(
    DatasetInfo("cifar10", 10, 3, (32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    _CIFAR10_CLASSES,
)
def _build_cifar10(
    root: Path | None, opts: _Options, info: DatasetInfo
) -> tuple[_Split, _Split, DatasetInfo]:
    return _build_cifar(
        root,
        opts,
        info,
        folder="cifar-10-batches-py",
        train_files=[f"data_batch_{i}" for i in range(1, 6)],
        test_file="test_batch",
        label_key="labels",
        torchvision_class="CIFAR10",
    )


@_register(
    DatasetInfo("cifar100", 100, 3, (32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    _CIFAR100_CLASSES,
)
def _build_cifar100(
    root: Path | None, opts: _Options, info: DatasetInfo
) -> tuple[_Split, _Split, DatasetInfo]:
    return _build_cifar(
        root,
        opts,
        info,
        folder="cifar-100-python",
        train_files=["train"],
        test_file="test",
        label_key="fine_labels",
        torchvision_class="CIFAR100",
    )


_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


def _load_svhn_mat(path: Path) -> tuple[Tensor, Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) in 0..9 from one SVHN .mat file."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ImportError("svhn needs scipy to read its .mat files: pip install scipy") from None
    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises several unrelated types for a bad file
        raise DatasetFormatError(f"{path}: cannot read as a .mat file ({e})") from None
    if "X" not in mat or "y" not in mat:
        raise DatasetFormatError(f"{path}: SVHN .mat file lacks 'X' or 'y'")
    x, y = mat["X"], mat["y"].reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DatasetFormatError(
            f"{path}: expected uint8 X (32, 32, 3, N) and N labels, got {x.dtype} {x.shape} and {len(y)}"
        )
    # (H, W, C, N) -> (N, C, H, W), made contiguous once so each sample is one block.
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    labels = torch.from_numpy(y.astype(np.int64))
    labels[labels == 10] = 0  # SVHN labels the digit 0 as 10
    _check_labels(labels, 10, path)
    return images, labels


@_register(
    DatasetInfo("svhn", 10, 3, (32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    tuple(str(d) for d in range(10)),
)
def _build_svhn(
    root: Path | None, opts: _Options, info: DatasetInfo
) -> tuple[_Split, _Split, DatasetInfo]:
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
    train: _Split = InMemoryImageDataset(*_load_svhn_mat(paths["train"]), info.mean, info.std)
    if opts.svhn_extra:
        extra = InMemoryImageDataset(*_load_svhn_mat(paths["extra"]), info.mean, info.std)
        train = ConcatDataset([train, extra])
    test = InMemoryImageDataset(*_load_svhn_mat(paths["test"]), info.mean, info.std)
    return train, test, info


@_register(
    DatasetInfo("imagenet", 1000, 3, (224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
)
def _build_imagenet(
    root: Path | None, opts: _Options, info: DatasetInfo
) -> tuple[_Split, _Split, DatasetInfo]:
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


def make_synthetic(
    train_size: int,
    test_size: int,
    *,
    channels: int = 3,
    image_size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
) -> tuple[InMemoryImageDataset, InMemoryImageDataset]:
    """Seeded images whose class is visible in a smooth per-class pattern plus noise.

    Each class gets a fixed low-frequency template (4x4 upsampled), so both a
    linear probe and a small conv net with global pooling can learn it in a few steps.

    Args:
        train_size: number of training images.
        test_size: number of test images.
        channels: image channels.
        image_size: side of the square images.
        num_classes: number of classes; labels are balanced.
        seed: same seed, same data.

    Returns:
        The train and test datasets, normalised with mean 0.5 and std 0.25.
    """
    if min(train_size, test_size, channels, image_size) <= 0 or num_classes < 2:
        raise ValueError(
            "synthetic data needs positive sizes, channels and image size and at least 2 classes, got "
            f"train_size={train_size} test_size={test_size} channels={channels} "
            f"image_size={image_size} num_classes={num_classes}"
        )
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num_classes, channels, 4, 4, generator=generator)
    templates = torch.nn.functional.interpolate(
        coarse, size=(image_size, image_size), mode="bilinear", align_corners=False
    )
    mean, std = (0.5,) * channels, (0.25,) * channels

    def split(n: int) -> InMemoryImageDataset:
        labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]
        noise = torch.randn(n, channels, image_size, image_size, generator=generator)
        pixels = 0.5 + 0.2 * templates[labels] + 0.1 * noise
        images = (pixels.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        return InMemoryImageDataset(images, labels, mean, std)

    # Train then test from one generator: the test set depends only on the arguments.
    train = split(train_size)
    return train, split(test_size)


def synthetic_info(
    channels: int | None = None, image_size: int | None = None, classes: int | None = None
) -> DatasetInfo:
    """The ``DatasetInfo`` of synthetic data of these sizes (None keeps the default)."""
    default = DATASETS["synthetic"]
    c = default.in_channels if channels is None else channels
    s = default.input_size[0] if image_size is None else image_size
    return replace(
        default,
        num_classes=default.num_classes if classes is None else classes,
        in_channels=c,
        input_size=(s, s),
        mean=(0.5,) * c,
        std=(0.25,) * c,
    )


@_register(DatasetInfo("synthetic", 10, 3, (32, 32), (0.5,) * 3, (0.25,) * 3))
def _build_synthetic(
    root: Path | None, opts: _Options, info: DatasetInfo
) -> tuple[_Split, _Split, DatasetInfo]:
    train, test = make_synthetic(
        opts.synthetic_size,
        max(1, opts.synthetic_size // 4),
        channels=opts.synthetic_channels,
        image_size=opts.synthetic_image_size,
        num_classes=opts.synthetic_classes,
        seed=opts.seed,
    )
    info = synthetic_info(
        opts.synthetic_channels, opts.synthetic_image_size, opts.synthetic_classes
    )
    return train, test, info


# --------------------------------------------------------------------------- public entry points


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
) -> tuple[Dataset[tuple[Tensor, int]], Dataset[tuple[Tensor, int]], DatasetInfo]:
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
    only_for = {
        "svhn_extra": ("svhn", svhn_extra),
        "synthetic_size": ("synthetic", synthetic_size),
        "synthetic_channels": ("synthetic", synthetic_channels),
        "synthetic_image_size": ("synthetic", synthetic_image_size),
        "synthetic_classes": ("synthetic", synthetic_classes),
    }
    for keyword, (owner, value) in only_for.items():
        if value is not None and name != owner:
            raise ValueError(f"{keyword} applies only to {owner}, not {name}")
    opts = _Options(
        download=download,
        seed=seed,
        svhn_extra=True if svhn_extra is None else svhn_extra,
        synthetic_size=512 if synthetic_size is None else synthetic_size,
        synthetic_channels=info.in_channels if synthetic_channels is None else synthetic_channels,
        synthetic_image_size=info.input_size[0]
        if synthetic_image_size is None
        else synthetic_image_size,
        synthetic_classes=info.num_classes if synthetic_classes is None else synthetic_classes,
    )
    train, test, info = _BUILDERS[name](None if root is None else Path(root), opts, info)
    if not augment:
        train = _unaugmented(train, test)
    train = _subset(train, train_subset, seed, "train_subset")
    test = _subset(test, test_subset, seed, "test_subset")
    return train, test, info


def check_val_split(val_split: float | int | None) -> None:
    """Check the form of a validation split (its size against the data: ``val_count``).

    Raises:
        ValueError: not None, a fraction in (0, 1) or a whole count >= 1.
    """
    ok = val_split is None or (
        not isinstance(val_split, bool)
        and (
            (isinstance(val_split, int) and val_split >= 1)
            or (isinstance(val_split, float) and 0 < val_split < 1)
        )
    )
    if not ok:
        raise ValueError(
            f"val_split must be None, a fraction in (0, 1) or a whole count >= 1 of training "
            f"images, got {val_split!r}"
        )


def val_count(val_split: float | int, n: int) -> int:
    """How many of ``n`` training images ``val_split`` holds out (a fraction is rounded).

    Raises:
        ValueError: a malformed split (``check_val_split``), or one that leaves no training
            or no validation image; the message says what is allowed.
    """
    check_val_split(val_split)
    n_val = val_split if isinstance(val_split, int) else round(val_split * n)
    if not 1 <= n_val < n:
        allowed = f"a count from 1 to {n - 1}" if n > 1 else "none: there is one image"
        raise ValueError(
            f"holds out {n_val} of the {n} training images; it must leave at least one image "
            f"on each side; allowed: {allowed}, or a fraction that does"
        )
    return n_val


def _unaugmented(dataset: _Split, test: _Split) -> _Split:
    """``dataset`` read the way ``test`` is, without the training augmentation: held-out
    images are evaluated like test images."""
    if isinstance(dataset, Subset):
        return Subset(_unaugmented(dataset.dataset, test), dataset.indices)
    if isinstance(dataset, ConcatDataset):
        return ConcatDataset([_unaugmented(d, test) for d in dataset.datasets])
    if isinstance(dataset, InMemoryImageDataset):
        view = copy.copy(dataset)  # shares the image tensor
        view.augment = None
        return view
    while isinstance(test, Subset):
        test = test.dataset
    if hasattr(dataset, "transform") and hasattr(test, "transform"):
        # torchvision datasets (ImageNet's ImageFolder): the test set's resize and crop.
        view = copy.copy(dataset)
        view.transform = test.transform
        return view
    raise TypeError(f"cannot read a {type(dataset).__name__} without its augmentation")


def split_validation(
    train: _Split, test: _Split, val_split: float | int, seed: int
) -> tuple[_Split, _Split]:
    """Hold a validation set out of ``train``.

    The held-out items are chosen by a permutation seeded by ``seed`` alone, so every
    process (data-parallel ranks, Ray workers) that builds the same data holds out the same
    items. They are read without augmentation, like ``test``.

    Args:
        train: the training set (after ``train_subset``).
        test: the test set, whose transforms the validation items get.
        val_split: a fraction in (0, 1) of ``train`` (rounded to whole items) or a count.
        seed: seeds the permutation.

    Returns:
        ``(train, val)``: disjoint subsets whose union is ``train``.

    Raises:
        ValueError: a malformed ``val_split``, or one that leaves no training or no
            validation item.
    """
    n = len(train)  # type: ignore[arg-type]
    try:
        n_val = val_count(val_split, n)
    except ValueError as err:
        raise ValueError(f"val_split={val_split!r} {err}") from None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx = order[:n_val].sort().values.tolist()
    train_idx = order[n_val:].sort().values.tolist()
    return Subset(train, train_idx), Subset(_unaugmented(train, test), val_idx)


@dataclass(frozen=True)
class Loaders:
    """What ``make_loaders`` builds.

    Attributes:
        train: shuffled training batches (without the validation items).
        val: the held-out validation set, in order; None without a split.
        test: the test set, in order.
        info: the dataset's ``DatasetInfo``.
    """

    train: DataLoader[tuple[Tensor, int]]
    val: DataLoader[tuple[Tensor, int]] | None
    test: DataLoader[tuple[Tensor, int]]
    info: DatasetInfo


def loader_options(
    num_workers: int, device: str | torch.device | None, prefetch_factor: int
) -> dict[str, Any]:
    """DataLoader keywords for a target device: pinned host memory when it is CUDA (copies
    to the GPU can then be asynchronous, the loop's ``non_blocking=True``), and workers that
    live across epochs and keep ``prefetch_factor`` batches each in flight (DataLoader
    refuses both without workers)."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if prefetch_factor < 1:
        raise ValueError(f"prefetch_factor must be >= 1, got {prefetch_factor}")
    options: dict[str, Any] = {
        "num_workers": num_workers,
        "pin_memory": device is not None and torch.device(device).type == "cuda",
    }
    if num_workers > 0:
        options.update(persistent_workers=True, prefetch_factor=prefetch_factor)
    return options


def make_loaders(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = 128,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    prefetch_factor: int = 4,
    val_split: float | int | None = None,
    seed: int = 0,
    **dataset_kwargs: Any,
) -> Loaders:
    """Train, validation and test loaders for ``name``.

    The train loader shuffles with a generator seeded by ``seed`` and drops the last
    partial batch (so every step sees ``batch_size`` items); the validation and test
    loaders keep order and every item. With ``num_workers=0`` augmentation draws from
    torch's global RNG, so call ``torch.manual_seed`` too for bit-identical epochs; with
    workers it is seeded from the loader's generator.

    Args:
        name: a registered name (see ``list_datasets``).
        root: passed to ``build_datasets``.
        batch_size: training batch size.
        eval_batch_size: validation and test batch size; defaults to ``batch_size``.
        num_workers: loader worker processes.
        device: where the batches go; CUDA pins host memory (see ``loader_options``).
        prefetch_factor: batches each worker prepares ahead (with workers only).
        val_split: hold out this fraction or count of the training set (see
            ``split_validation``), or None.
        seed: seeds shuffling and the validation split, and is passed to
            ``build_datasets``.
        **dataset_kwargs: the other keywords of ``build_datasets``.

    Returns:
        a ``Loaders``.

    Raises:
        ValueError: as ``build_datasets`` and ``split_validation``, or a training set
            smaller than one batch.
    """
    train, test, info = build_datasets(name, root, seed=seed, **dataset_kwargs)
    val = None
    if val_split is not None:
        train, val = split_validation(train, test, val_split, seed)
    n_train = len(train)  # type: ignore[arg-type]
    if batch_size <= 0 or n_train < batch_size:
        raise ValueError(
            f"batch_size={batch_size} must be positive and at most the {n_train} training items of {name}; "
            "drop_last would leave no batches"
        )
    common = loader_options(num_workers, device, prefetch_factor)
    train_loader = DataLoader(
        train,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
        **common,
    )

    def ordered(dataset: _Split) -> DataLoader[tuple[Tensor, int]]:
        return DataLoader(dataset, batch_size=eval_batch_size or batch_size, **common)

    return Loaders(train_loader, None if val is None else ordered(val), ordered(test), info)


def build_loaders(
    name: str, root: str | os.PathLike[str] | None = None, **kwargs: Any
) -> tuple[DataLoader[tuple[Tensor, int]], DataLoader[tuple[Tensor, int]], DatasetInfo]:
    """``make_loaders`` without a validation split, as ``(train, test, info)``.

    Args:
        name, root, **kwargs: as ``make_loaders`` (except ``val_split``).

    Returns:
        ``(train_loader, test_loader, info)``.
    """
    if kwargs.get("val_split") is not None:
        raise ValueError("build_loaders has no validation loader; use make_loaders for val_split")
    loaders = make_loaders(name, root, **kwargs)
    return loaders.train, loaders.test, loaders.info
