"""A validation set held out of the training set, the same in every process."""

from __future__ import annotations

import torch
from torch.utils.data import Subset

from skipnet_sweep.data.transforms import Split, unaugmented

__all__ = ["check_val_split", "split_validation", "val_count"]


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


def split_validation(
    train: Split, test: Split, val_split: float | int, seed: int
) -> tuple[Split, Split]:
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
    return Subset(train, train_idx), Subset(unaugmented(train, test), val_idx)
