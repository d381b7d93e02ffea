"""In-memory image datasets, their augmentation, and reading a training set without it."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Subset

__all__ = ["InMemoryImageDataset", "RandomCropFlip", "Split", "unaugmented"]

Split = Dataset[tuple[Tensor, int]]


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


def unaugmented(dataset: Split, test: Split) -> Split:
    """``dataset`` read the way ``test`` is, without the training augmentation: held-out
    images are evaluated like test images.

    Raises:
        TypeError: a dataset type whose augmentation cannot be told apart.
    """
    if isinstance(dataset, Subset):
        return Subset(unaugmented(dataset.dataset, test), dataset.indices)
    if isinstance(dataset, ConcatDataset):
        return ConcatDataset([unaugmented(d, test) for d in dataset.datasets])
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
