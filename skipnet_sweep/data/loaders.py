"""DataLoaders for a registered dataset: shuffled training batches, ordered evaluation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from skipnet_sweep.data.registry import DatasetInfo, build_datasets
from skipnet_sweep.data.split import split_validation
from skipnet_sweep.data.transforms import Split

__all__ = ["Loaders", "build_loaders", "loader_options", "make_loaders"]


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

    def ordered(dataset: Split) -> DataLoader[tuple[Tensor, int]]:
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
