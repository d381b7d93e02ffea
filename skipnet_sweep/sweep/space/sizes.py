"""How many images a space's dataset holds, without reading the data: for the checks and the
estimates made before anything runs (``DatasetInfo`` does not carry sizes)."""

from __future__ import annotations

from skipnet_sweep.data import val_count
from skipnet_sweep.errors import SpaceError
from skipnet_sweep.sweep.space.schema import DatasetSpec

# Images per split of each dataset, as data/ builds it.
SPLIT_SIZES: dict[str, tuple[int, int]] = {
    "fashion_mnist": (60_000, 10_000),
    "cifar10": (50_000, 10_000),
    "cifar100": (50_000, 10_000),
    "svhn": (73_257 + 531_131, 26_032),  # train + extra (data.build_datasets' default)
    "imagenet": (1_281_167, 50_000),  # ILSVRC2012 train / val
}
SYNTHETIC_DEFAULT_SIZE = 512  # data.build_datasets: synthetic_size; the test set is a quarter


def training_images(dataset: DatasetSpec) -> int | None:
    """Images each step of a stage draws from, without reading the data: the training split
    cut to ``train_subset``, less the validation split; None where the dataset's size is not
    known here.

    Raises:
        SpaceError: a validation split that leaves no training or no validation image.
    """
    sizes = split_sizes(dataset)
    if sizes is None:
        return None
    n = sizes[0] if dataset.train_subset is None else min(sizes[0], dataset.train_subset)
    split = dataset.to_data_config().val_split
    if split is None:
        return n
    try:
        return n - val_count(split, n)
    except ValueError as err:
        raise SpaceError(f"dataset.val_split: {err}") from None


def split_sizes(dataset: DatasetSpec) -> tuple[int, int] | None:
    """Images in the (train, test) splits of ``dataset`` before any subset, without reading
    it; None for a dataset whose size is not known here."""
    if dataset.name == "synthetic":
        size = dataset.synthetic.get("size", SYNTHETIC_DEFAULT_SIZE)
        return size, max(1, size // 4)
    return SPLIT_SIZES.get(dataset.name)
