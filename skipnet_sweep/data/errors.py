"""The two ways a dataset on disk fails: missing, or not what its format promises."""

from __future__ import annotations

__all__ = ["DatasetFormatError", "DatasetNotFoundError"]


class DatasetNotFoundError(ValueError):
    """A dataset's files are not where we looked."""


class DatasetFormatError(ValueError):
    """A dataset file exists but does not hold what its format promises."""
