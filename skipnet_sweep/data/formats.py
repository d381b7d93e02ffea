"""Readers of the published file formats: IDX (MNIST), CIFAR's python batches, SVHN's .mat.

Each returns uint8 images (N, C, H, W) and int64 labels, or raises ``DatasetFormatError``
with the file and what was wrong in one line.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from skipnet_sweep.data.errors import DatasetFormatError

__all__ = [
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "check_labels",
    "load_cifar_batch",
    "load_svhn_mat",
    "read_idx",
]

# --------------------------------------------------------------------------- IDX

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


# --------------------------------------------------------------------------- CIFAR

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


def load_cifar_batch(path: Path, label_key: str) -> tuple[Tensor, Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) from one CIFAR python batch file.

    Args:
        path: one batch (``data_batch_1``, ``test``...).
        label_key: ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100).

    Returns:
        ``(images, labels)``.
    """
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


# --------------------------------------------------------------------------- SVHN


def load_svhn_mat(path: Path) -> tuple[Tensor, Tensor]:
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
    check_labels(labels, 10, path)
    return images, labels


def check_labels(labels: Tensor, num_classes: int, source: object) -> None:
    """Raise ``DatasetFormatError`` naming ``source`` if a label is outside ``[0, num_classes)``."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DatasetFormatError(
            f"{source}: labels span [{int(labels.min())}, {int(labels.max())}], expected [0, {num_classes - 1}]"
        )
