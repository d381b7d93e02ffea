"""Seeded synthetic images for tests and smoke runs: nothing to read from disk."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from skipnet_sweep.data.registry import DATASETS, BuildOptions, DatasetInfo, register
from skipnet_sweep.data.transforms import InMemoryImageDataset, Split

__all__ = ["make_synthetic", "synthetic_info"]


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


@register(DatasetInfo("synthetic", 10, 3, (32, 32), (0.5,) * 3, (0.25,) * 3))
def _build_synthetic(
    root: Path | None, opts: BuildOptions, info: DatasetInfo
) -> tuple[Split, Split, DatasetInfo]:
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
