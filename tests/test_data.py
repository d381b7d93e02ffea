"""Datasets by name: file readers on tiny files written in the real on-disk formats."""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from skipnet_sweep import data
from skipnet_sweep.data import (
    DatasetFormatError,
    DatasetNotFoundError,
    build_datasets,
    build_loaders,
    builders,
    dataset_info,
    list_datasets,
    read_idx,
    registry,
)

HAS_SCIPY = importlib.util.find_spec("scipy") is not None


# --------------------------------------------------------------------------- writers


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> Path:
    """An IDX file as the MNIST distribution writes it (uint8 payload)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_fmnist(root: Path, n_train: int, n_test: int, *, compress: bool = False) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            root / f"{prefix}-images-idx3-ubyte",
            rng.integers(0, 256, (n, 28, 28)),
            compress=compress,
        )
        write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, compress=compress)


def cifar_pixels(n: int, offset: int = 0) -> np.ndarray:
    """uint8 (N, 3072) rows; image i has pixel value (i + offset + channel) in channel c."""
    channel = np.repeat(np.arange(3), 1024)
    return ((np.arange(n)[:, None] + offset + channel[None, :]) % 256).astype(np.uint8)


def write_pickle(path: Path, obj: object, protocol: int = 2) -> None:
    # Protocol 2 is what the Python 2 originals use.
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=protocol)


class Python2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2's cPickle wrote str: BINSTRING opcodes."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def python2_pickle(obj: object) -> bytes:
    """A protocol-2 stream shaped like the published CIFAR batches (numpy 1 module names)."""
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 5, protocol: int = 2) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        batch = {
            "batch_label": f"training batch {i} of 5",
            "labels": [(i + j) % 10 for j in range(per_batch)],
            "data": cifar_pixels(per_batch, offset=10 * i),
            "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)],
        }
        write_pickle(folder / f"data_batch_{i}", batch, protocol)
    test = {"labels": list(range(n_test)), "data": cifar_pixels(n_test)}
    write_pickle(folder / "test_batch", test, protocol)
    return folder


def write_cifar100(root: Path, n_train: int = 6, n_test: int = 3) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        labels = [99 - j for j in range(n)]
        batch = {
            "fine_labels": labels,
            "coarse_labels": [x // 5 for x in labels],
            "data": cifar_pixels(n),
        }
        write_pickle(folder / name, batch)
    return folder


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_dataset_with_consistent_info() -> None:
    assert list_datasets() == [
        "cifar10",
        "cifar100",
        "fashion_mnist",
        "imagenet",
        "svhn",
        "synthetic",
    ]
    for name in list_datasets():
        info = dataset_info(name)
        assert info.name == name
        assert len(info.mean) == len(info.std) == info.in_channels
    assert dataset_info("fashion_mnist").input_size == (28, 28)
    assert dataset_info("cifar100").num_classes == 100


def test_classes_are_named_as_their_datasets_name_them() -> None:
    for name in list_datasets():
        info = dataset_info(name)
        assert len(info.class_names) in (0, info.num_classes), name
    fashion = dataset_info("fashion_mnist")
    assert fashion.class_names == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
    assert [dataset_info("cifar10").class_name(c) for c in (0, 9)] == ["airplane", "truck"]
    cifar100 = dataset_info("cifar100")
    assert (cifar100.class_name(0), cifar100.class_name(99)) == ("apple", "worm")
    assert list(cifar100.class_names) == sorted(cifar100.class_names)  # the meta file's order
    assert dataset_info("svhn").class_name(0) == "0"  # the digit 0 (labelled 10 in the files)
    # Where a dataset names none, or past its classes, the label stands for itself.
    assert dataset_info("imagenet").class_name(417) == "417"
    assert dataset_info("synthetic").class_name(3) == "3"
    assert fashion.class_name(10) == "10"
    with pytest.raises(ValueError, match="2 class names for 10"):
        registry.register(dataset_info("cifar10"), ("a", "b"))


def test_unknown_name_lists_allowed_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'mnist'") as exc:
        build_datasets("mnist")
    message = str(exc.value)
    assert "\n" not in message
    assert all(name in message for name in list_datasets())


def test_keyword_for_another_dataset_is_rejected() -> None:
    with pytest.raises(ValueError, match="svhn_extra applies only to svhn"):
        build_datasets("synthetic", svhn_extra=False)
    with pytest.raises(ValueError, match="synthetic_size applies only to synthetic"):
        build_datasets("cifar10", synthetic_size=10)


# --------------------------------------------------------------------------- IDX / Fashion-MNIST


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips(tmp_path: Path, compress: bool) -> None:
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    path = write_idx(tmp_path / "x-idx3-ubyte", images, compress=compress)
    out = read_idx(path, expected_magic=2051)
    assert out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, images)


def test_read_idx_rejects_wrong_magic_and_size(tmp_path: Path) -> None:
    labels = write_idx(tmp_path / "labels", np.arange(5), compress=True)
    with pytest.raises(DatasetFormatError, match="magic number is 2049, expected 2051") as exc:
        read_idx(labels, expected_magic=2051)
    assert str(labels) in str(exc.value)

    truncated = tmp_path / "truncated"
    truncated.write_bytes(struct.pack(">HBBI", 0, 0x08, 1, 10) + bytes(7))
    with pytest.raises(
        DatasetFormatError, match=r"declares shape \(10,\) \(10 bytes\) but the file holds 7"
    ):
        read_idx(truncated)

    bad_gzip = tmp_path / "bad.gz"
    bad_gzip.write_bytes(b"\x1f\x8b" + bytes(10))
    with pytest.raises(DatasetFormatError, match="corrupt gzip"):
        read_idx(bad_gzip)


def test_fashion_mnist_from_uncompressed_files(tmp_path: Path) -> None:
    write_fmnist(tmp_path, n_train=12, n_test=7, compress=False)
    train, test, info = build_datasets("fashion_mnist", tmp_path)
    assert (len(train), len(test)) == (12, 7)
    x, y = test[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 3
    raw = read_idx(tmp_path / "t10k-images-idx3-ubyte")[3]
    expected = (torch.from_numpy(raw).float() / 255 - info.mean[0]) / info.std[0]
    torch.testing.assert_close(x[0], expected)
    assert train[0][0].shape == (1, 28, 28)


def test_fashion_mnist_malformed_file_names_it(tmp_path: Path) -> None:
    write_fmnist(tmp_path, n_train=4, n_test=4, compress=True)
    # Swap in a labels file where images belong.
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes((tmp_path / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DatasetFormatError, match="expected 2051") as exc:
        build_datasets("fashion_mnist", tmp_path)
    assert str(bad) in str(exc.value)


def test_fashion_mnist_missing_says_where_and_how(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as exc:
        build_datasets("fashion_mnist", root)
    message = str(exc.value)
    assert "\n" not in message
    assert str(root) in message and "fashion_mnist" in message
    assert "apt-get install dataset-fashion-mnist" in message and "download=True" in message


def test_fashion_mnist_download_falls_back_to_torchvision(tmp_path: Path, monkeypatch) -> None:
    calls: list[tuple[str, bool]] = []

    class FakeFashionMNIST:
        """Writes what torchvision's download leaves in root/FashionMNIST/raw."""

        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            calls.append((root, download))
            write_fmnist(Path(root) / "FashionMNIST" / "raw", n_train=5, n_test=3)

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    train, test, _ = build_datasets("fashion_mnist", tmp_path, download=True)
    assert calls == [(str(tmp_path), True)]
    assert (len(train), len(test)) == (5, 3)
    # Once downloaded it is found without downloading again.
    build_datasets("fashion_mnist", tmp_path)
    assert len(calls) == 1


@pytest.fixture(scope="module")
def real_fashion_mnist():
    if builders.find_fmnist([data.FASHION_MNIST_ROOT]) is None:
        pytest.skip(
            f"Fashion-MNIST not installed at {data.FASHION_MNIST_ROOT} (apt-get install dataset-fashion-mnist)"
        )
    return build_datasets("fashion_mnist")


def test_real_fashion_mnist_shapes_labels_and_normalisation(real_fashion_mnist) -> None:
    train, test, info = real_fashion_mnist
    assert (len(train), len(test)) == (60000, 10000)
    assert info.num_classes == 10 and info.in_channels == 1
    for dataset in (train, test):
        assert dataset.images.shape[1:] == (1, 28, 28)
        assert dataset.labels.min() == 0 and dataset.labels.max() == 9
        assert torch.bincount(dataset.labels).tolist() == [len(dataset) // 10] * 10
    # The test split through the eval pipeline is close to zero mean, unit std.
    xs = torch.stack([test[i][0] for i in range(0, 10000, 5)])
    assert abs(xs.mean().item()) < 0.05
    assert abs(xs.std().item() - 1.0) < 0.05


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reads_python_batches(tmp_path: Path, protocol: int) -> None:
    write_cifar10(tmp_path, protocol=protocol)
    train, test, info = build_datasets("cifar10", tmp_path)
    assert (len(train), len(test)) == (20, 5)
    assert info.num_classes == 10
    x, y = test[2]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 2
    # Row layout is channel-major: channel c of test image 2 is the constant 2 + c.
    for c in range(3):
        expected = ((2 + c) / 255 - info.mean[c]) / info.std[c]
        torch.testing.assert_close(x[c], torch.full((32, 32), expected))
    assert train.labels.tolist()[:4] == [1, 2, 3, 4]


def test_cifar_reads_a_python2_style_batch(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3072), dtype=np.uint8)
    stream = python2_pickle({"data": pixels, "fine_labels": [7, 8], "coarse_labels": [1, 1]})
    assert b"numpy.core.multiarray\n_reconstruct" in stream
    (folder / "test").write_bytes(stream)
    _, test, _ = build_datasets("cifar100", tmp_path)
    assert test.labels.tolist() == [7, 8]
    np.testing.assert_array_equal(test.images.reshape(2, -1).numpy(), pixels)


def test_cifar10_accepts_the_extracted_folder_as_root(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    train, _, _ = build_datasets("cifar10", folder)
    assert len(train) == 20


def test_cifar_train_augmentation_varies_and_keeps_shape(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_pickle(
            folder / name, {"labels": [0], "data": rng.integers(0, 256, (1, 3072), dtype=np.uint8)}
        )
    train, test, _ = build_datasets("cifar10", tmp_path)
    torch.manual_seed(0)
    draws = [train[0][0] for _ in range(10)]
    assert all(d.shape == (3, 32, 32) and d.dtype == torch.float32 for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    assert torch.equal(test[0][0], test[0][0])


def test_augment_false_reads_training_items_as_test_items_are_read(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    train, test, _ = build_datasets("cifar10", tmp_path, augment=False, train_subset=3)
    torch.manual_seed(0)
    draws = [train[0][0] for _ in range(10)]
    assert all(torch.equal(draws[0], d) for d in draws[1:])
    # The same bytes read the test set's way: normalised, never cropped or flipped.
    image = train.dataset.images[train.indices[0]].float()
    torch.testing.assert_close(draws[0], image * test._scale + test._shift)
    augmented, _, _ = build_datasets("cifar10", tmp_path, train_subset=3)
    assert augmented.dataset.augment is not None


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    train, test, info = build_datasets("cifar100", tmp_path)
    assert info.num_classes == 100
    assert (len(train), len(test)) == (6, 3)
    assert [test[i][1] for i in range(3)] == [99, 98, 97]
    assert train[0][0].shape == (3, 32, 32)


def test_cifar_pickle_refuses_anything_but_numpy_arrays(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path)
    write_pickle(folder / "test", {"fine_labels": [Fraction(1, 2)], "data": cifar_pixels(1)})
    with pytest.raises(DatasetFormatError, match="refusing to load fractions.Fraction") as exc:
        build_datasets("cifar100", tmp_path)
    assert str(folder / "test") in str(exc.value)


def test_cifar_missing_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as exc:
        build_datasets("cifar10", tmp_path)
    message = str(exc.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "python version" in message and "root=" in message


# --------------------------------------------------------------------------- SVHN


def write_svhn(root: Path, sizes: dict[str, int]) -> None:
    from scipy.io import savemat

    for split, n in sizes.items():
        x = np.zeros((32, 32, 3, n), dtype=np.uint8)
        for i in range(n):
            x[:, :, :, i] = i
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, 10 meaning 0
        savemat(str(root / f"{split}_32x32.mat"), {"X": x, "y": y})


@pytest.mark.skipif(not HAS_SCIPY, reason="svhn needs scipy (pip install scipy)")
def test_svhn_trains_on_train_plus_extra(tmp_path: Path) -> None:
    write_svhn(tmp_path, {"train": 10, "extra": 4, "test": 3})
    train, test, info = build_datasets("svhn", tmp_path)
    assert (len(train), len(test)) == (14, 3)
    assert [train[i][1] for i in range(10)] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    x, _ = test[2]
    assert x.shape == (3, 32, 32)
    torch.testing.assert_close(x[1], torch.full((32, 32), (2 / 255 - info.mean[1]) / info.std[1]))
    # No augmentation: the same index gives the same tensor.
    assert torch.equal(train[0][0], train[0][0])

    train_only, _, _ = build_datasets("svhn", tmp_path, svhn_extra=False)
    assert len(train_only) == 10


@pytest.mark.skipif(not HAS_SCIPY, reason="svhn needs scipy (pip install scipy)")
def test_svhn_missing_extra_is_an_error_unless_opted_out(tmp_path: Path) -> None:
    write_svhn(tmp_path, {"train": 2, "test": 2})
    with pytest.raises(DatasetNotFoundError, match="svhn_extra=False") as exc:
        build_datasets("svhn", tmp_path)
    assert str(tmp_path / "extra_32x32.mat") in str(exc.value)
    train, _, _ = build_datasets("svhn", tmp_path, svhn_extra=False)
    assert len(train) == 2


def test_svhn_missing_says_where(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as exc:
        build_datasets("svhn", tmp_path)
    assert str(tmp_path / "train_32x32.mat") in str(exc.value)
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------- ImageNet


def test_imagenet_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    train, val, info = build_datasets("imagenet", tmp_path)
    assert (len(train), len(val)) == (4, 4)
    assert info.num_classes == 2 and info.input_size == (224, 224)
    for dataset in (train, val):
        x, y = dataset[3]
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 1
    assert torch.equal(val[0][0], val[0][0])


def test_imagenet_missing_says_where(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="imagenet needs root"):
        build_datasets("imagenet")
    with pytest.raises(DatasetNotFoundError) as exc:
        build_datasets("imagenet", tmp_path)
    assert str(tmp_path / "train") in str(exc.value)


# --------------------------------------------------------------------------- synthetic, subsets, loaders


def test_synthetic_is_deterministic_and_configurable() -> None:
    kwargs = dict(
        synthetic_size=40, synthetic_channels=2, synthetic_image_size=8, synthetic_classes=4
    )
    a_train, a_test, info = build_datasets("synthetic", seed=3, **kwargs)
    b_train, b_test, _ = build_datasets("synthetic", seed=3, **kwargs)
    c_train, _, _ = build_datasets("synthetic", seed=4, **kwargs)
    assert (len(a_train), len(a_test)) == (40, 10)
    assert info.num_classes == 4 and info.in_channels == 2 and info.input_size == (8, 8)
    assert torch.equal(a_train.images, b_train.images) and torch.equal(a_test.images, b_test.images)
    assert torch.equal(a_train.labels, b_train.labels)
    assert not torch.equal(a_train.images, c_train.images)
    assert torch.bincount(a_train.labels).tolist() == [10] * 4
    assert a_train[0][0].shape == (2, 8, 8)


def test_synthetic_classes_differ_in_their_mean_image() -> None:
    train, _, _ = build_datasets("synthetic", synthetic_size=400, synthetic_classes=4)
    means = torch.stack([train.images[train.labels == k].float().mean(0) for k in range(4)])
    spread = (means[:, None] - means[None]).abs().mean((2, 3, 4))
    # Classes are told apart by a template far larger than the per-class-mean noise.
    assert spread[~torch.eye(4, dtype=torch.bool)].min() > 10


def test_subsets_are_seeded_and_sized() -> None:
    full, _, _ = build_datasets("synthetic", synthetic_size=100)
    a, at, _ = build_datasets(
        "synthetic", synthetic_size=100, train_subset=10, test_subset=5, seed=0
    )
    b, _, _ = build_datasets(
        "synthetic", synthetic_size=100, train_subset=10, test_subset=5, seed=0
    )
    assert (len(a), len(at)) == (10, 5)
    assert a.indices == b.indices
    torch.testing.assert_close(a[0][0], full[a.indices[0]][0])
    # A subset larger than the data keeps all of it.
    c, _, _ = build_datasets("synthetic", synthetic_size=100, train_subset=1000)
    assert len(c) == 100
    with pytest.raises(ValueError, match="train_subset must be positive"):
        build_datasets("synthetic", train_subset=0)


def test_loaders_shuffle_deterministically_and_drop_last() -> None:
    kwargs = dict(batch_size=16, synthetic_size=40, synthetic_image_size=8)
    train_a, test_a, info = build_loaders("synthetic", seed=1, **kwargs)
    train_b, _, _ = build_loaders("synthetic", seed=1, **kwargs)
    batches = list(train_a)
    assert len(batches) == 2  # 40 items, batches of 16, last 8 dropped
    x, y = batches[0]
    assert x.shape == (16, 3, 8, 8) and y.dtype == torch.int64
    assert torch.equal(y, next(iter(train_b))[1])
    assert sum(len(yb) for _, yb in test_a) == 10
    assert info.name == "synthetic"
    with pytest.raises(ValueError, match="drop_last would leave no batches"):
        build_loaders("synthetic", batch_size=64, synthetic_size=40)


# --------------------------------------------------------------------------- validation split


def _rows(dataset) -> set[bytes]:
    """The items of a dataset as raw bytes (synthetic images are distinct: noise per image)."""
    return {dataset[i][0].numpy().tobytes() for i in range(len(dataset))}


@pytest.mark.parametrize(("val_split", "n_val"), [(0.25, 25), (0.004, None), (10, 10), (99, 99)])
def test_validation_split_sizes(val_split, n_val) -> None:
    train, test, _ = build_datasets("synthetic", synthetic_size=100, synthetic_image_size=8)
    if n_val is None:  # 0.4 of an image rounds to none: refused rather than an empty set
        with pytest.raises(ValueError, match="holds out 0 of the 100 training images"):
            data.split_validation(train, test, val_split, seed=0)
        return
    kept, val = data.split_validation(train, test, val_split, seed=0)
    assert (len(kept), len(val)) == (100 - n_val, n_val)


def test_validation_split_is_disjoint_complete_and_seeded() -> None:
    train, test, _ = build_datasets("synthetic", synthetic_size=100, synthetic_image_size=8)
    kept, val = data.split_validation(train, test, 0.3, seed=3)
    assert not set(kept.indices) & set(val.indices)
    assert sorted(kept.indices + val.indices) == list(range(100))
    assert not _rows(kept) & _rows(val)  # disjoint in content, not only in index
    again_kept, again_val = data.split_validation(train, test, 0.3, seed=3)
    assert (again_kept.indices, again_val.indices) == (kept.indices, val.indices)
    _, other = data.split_validation(train, test, 0.3, seed=4)
    assert other.indices != val.indices


def test_validation_items_are_read_without_augmentation() -> None:
    train, test, info = build_datasets("synthetic", synthetic_size=40, synthetic_image_size=8)
    # An augmentation that changes every image, as the real datasets' crop and flip do.
    train.augment = lambda image: 255 - image
    kept, val = data.split_validation(train, test, 10, seed=0)
    i = val.indices[0]
    expected = train.images[i].float() * train._scale + train._shift
    torch.testing.assert_close(val[0][0], expected)
    assert not torch.equal(train[i][0], expected)  # training items stay augmented
    assert kept.dataset is train and train.augment is not None


def test_validation_split_of_a_torchvision_dataset_takes_the_test_transform() -> None:
    class Folder(torch.utils.data.Dataset):
        def __init__(self, transform):
            self.transform = transform

        def __len__(self):
            return 6

        def __getitem__(self, i):
            return self.transform(torch.full((1, 2, 2), float(i))), i

    train, test = Folder(lambda x: -x), torch.utils.data.Subset(Folder(lambda x: x), [0])
    _, val = data.split_validation(train, test, 2, seed=0)
    assert all(val[k][0].min() >= 0 for k in range(2))


def test_validation_split_of_a_subset_splits_the_subset() -> None:
    train, test, _ = build_datasets(
        "synthetic", synthetic_size=100, synthetic_image_size=8, train_subset=40
    )
    kept, val = data.split_validation(train, test, 0.25, seed=0)
    assert (len(kept), len(val)) == (30, 10)
    full = set(train.indices)
    assert {train.indices[i] for i in val.indices} <= full


@pytest.mark.parametrize("bad", [0, -1, 0.0, 1.0, 1.5, True, "0.1"])
def test_val_split_form_is_checked_once(bad) -> None:
    from skipnet_sweep.stages.config import DataConfig

    with pytest.raises(ValueError, match=r"val_split must be None, a fraction in \(0, 1\)"):
        DataConfig(dataset="synthetic", val_split=bad)


def test_val_split_count_must_leave_training_images() -> None:
    with pytest.raises(ValueError, match="holds out 40 of the 40 training images"):
        data.make_loaders("synthetic", batch_size=4, synthetic_size=40, val_split=40)


def test_make_loaders_with_a_split() -> None:
    kwargs = dict(batch_size=8, synthetic_size=40, synthetic_image_size=8)
    loaders = data.make_loaders("synthetic", seed=1, val_split=0.25, **kwargs)
    assert len(loaders.train.dataset) == 30 and len(loaders.val.dataset) == 10
    assert len(loaders.test.dataset) == 10 and loaders.info.name == "synthetic"
    seen = {x.numpy().tobytes() for xb, _ in loaders.train for x in xb}
    held = {x.numpy().tobytes() for xb, _ in loaders.val for x in xb}
    assert len(seen) == 24 and not seen & held  # 3 full batches, none of them held out
    assert data.make_loaders("synthetic", seed=1, **kwargs).val is None
    with pytest.raises(ValueError, match="use make_loaders for val_split"):
        build_loaders("synthetic", val_split=0.25, **kwargs)


# --------------------------------------------------------------------------- loader options


def test_loader_options_follow_device_and_workers() -> None:
    assert data.loader_options(0, "cpu", 4) == {"num_workers": 0, "pin_memory": False}
    assert data.loader_options(0, None, 4)["pin_memory"] is False
    assert data.loader_options(0, "cuda", 4)["pin_memory"] is True
    assert data.loader_options(0, torch.device("cuda", 1), 4)["pin_memory"] is True
    assert data.loader_options(2, "cpu", 3) == {
        "num_workers": 2,
        "pin_memory": False,
        "persistent_workers": True,
        "prefetch_factor": 3,
    }
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        data.loader_options(-1, "cpu", 4)
    with pytest.raises(ValueError, match="prefetch_factor must be >= 1"):
        data.loader_options(1, "cpu", 0)


def test_loaders_get_the_options() -> None:
    kwargs = dict(batch_size=8, synthetic_size=40, synthetic_image_size=8, val_split=8)
    # Building does not start workers or touch CUDA, so the arguments can be read back.
    loaders = data.make_loaders("synthetic", num_workers=2, device="cuda", **kwargs)
    for loader in (loaders.train, loaders.val, loaders.test):
        assert loader.pin_memory and loader.persistent_workers
        assert loader.num_workers == 2 and loader.prefetch_factor == 4
    plain = data.make_loaders("synthetic", **kwargs)
    for loader in (plain.train, plain.val, plain.test):
        assert not loader.pin_memory and not loader.persistent_workers
        assert loader.num_workers == 0
