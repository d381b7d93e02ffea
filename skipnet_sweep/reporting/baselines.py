"""Published baselines: cited results to draw next to a sweep's runs.

Each CSV (the bundled ones are package data in ``skipnet_sweep/reporting/baselines/``) has
exactly these columns::

    method,backbone,dataset,setting,macs,top1,top5,source,note

- ``method``: the curve the row belongs to (``plain``, ``skipnet-rnn``, ``act``, ``sact``,
  ``blockdrop``, ...). Several rows of one method on one backbone are drawn as a curve
  sorted by MACs (e.g. an ACT/SACT sweep over tau).
- ``backbone``: the project's architecture name where the network is the same
  (``cifar_resnet110``, ``resnet101``); a distinct name where it is not
  (``preact_resnet101``), so it is never taken for a result on the project's network.
  A pre-activation ResNet of the same depth is a *related* backbone (:func:`related`):
  figures may draw it, marked as such (SkipNet's Fig. 7 compares SkipNet-101 with ACT and
  SACT on the pre-activation ResNet-101).
- ``dataset``: one of :data:`DATASETS`.
- ``setting``: free text (``tau=0.005``, ``computation_pct=70.27 (blocks)``).
- ``macs``: multiply-adds per image, empty when the source gives none (then the row is
  listed, not plotted). Sources that count 2 FLOPs per multiply-add are halved and the
  ``note`` says so.
- ``top1``, ``top5``: percent; ``top5`` may be empty.
- ``source``: the citation (required on every row); ``note``: anything a reader must know.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import pandas as pd

__all__ = [
    "COLUMNS",
    "DATASETS",
    "BaselineError",
    "ResNetName",
    "default_baselines_dir",
    "load_baselines",
    "matching",
    "parse_resnet",
    "read_baseline_csv",
    "related",
]

COLUMNS = ("method", "backbone", "dataset", "setting", "macs", "top1", "top5", "source", "note")
# The datasets published results exist for (the paper's four).
DATASETS = ("cifar10", "cifar100", "svhn", "imagenet")
_REQUIRED_TEXT = ("method", "backbone", "dataset", "source")
# How a row relates to the backbone of the runs it is drawn with (column ``match``).
EXACT, RELATED = "exact", "related"
_RESNET = re.compile(r"(preact_)?(cifar_)?resnet(\d+)")


@dataclass(frozen=True)
class ResNetName:
    """The parts of a ResNet architecture name (``preact_cifar_resnet110``)."""

    preact: bool
    cifar: bool
    depth: int


def parse_resnet(backbone: str) -> ResNetName | None:
    """``preact_resnet101`` -> ResNetName(preact=True, cifar=False, depth=101); None for a
    name that is not a ResNet's."""
    m = _RESNET.fullmatch(str(backbone))
    if not m:
        return None
    return ResNetName(preact=bool(m.group(1)), cifar=bool(m.group(2)), depth=int(m.group(3)))


def related(a: str, b: str) -> bool:
    """True when two different backbones are the same ResNet but for pre-activation blocks:
    same family (CIFAR or ImageNet layout) and same depth, one pre-activation and one not
    (``preact_resnet101`` / ``resnet101``, ``preact_cifar_resnet110`` / ``cifar_resnet110``).
    Another depth, layout or network is never related."""
    pa, pb = parse_resnet(a), parse_resnet(b)
    if pa is None or pb is None:
        return False
    return pa.cifar == pb.cifar and pa.depth == pb.depth and pa.preact != pb.preact


class BaselineError(ValueError):
    """A baseline CSV that does not follow the format; the message names file and line."""


def default_baselines_dir() -> Traversable:
    """The bundled baseline CSVs: package data read through importlib.resources, so that an
    installed wheel has them as well as a checkout (a ``Path`` when installed as files)."""
    return files("skipnet_sweep.reporting") / "baselines"


def _number(text: str, where: str, column: str, *, required: bool) -> float:
    if text.strip() == "":
        if required:
            raise BaselineError(f"{where}: {column} is empty")
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise BaselineError(f"{where}: {column}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise BaselineError(f"{where}: {column}={text!r} is not finite")
    return value


def _check_row(row: dict[str, str], where: str) -> dict[str, object]:
    for column in _REQUIRED_TEXT:
        if not (row[column] or "").strip():
            raise BaselineError(f"{where}: {column} is empty")
    if row["dataset"] not in DATASETS:
        raise BaselineError(
            f"{where}: dataset={row['dataset']!r} is not one of {', '.join(DATASETS)}"
        )
    macs = _number(row["macs"], where, "macs", required=False)
    if not math.isnan(macs) and macs <= 0:
        raise BaselineError(f"{where}: macs={row['macs']} must be positive (multiply-adds)")
    top1 = _number(row["top1"], where, "top1", required=True)
    top5 = _number(row["top5"], where, "top5", required=False)
    for column, value in (("top1", top1), ("top5", top5)):
        if not math.isnan(value) and not 0.0 <= value <= 100.0:
            raise BaselineError(f"{where}: {column}={value:g} is not a percentage in [0, 100]")
    if not math.isnan(top5) and top5 < top1:
        raise BaselineError(f"{where}: top5={top5:g} is below top1={top1:g}")
    out: dict[str, object] = {c: (row[c] or "").strip() for c in COLUMNS}
    out.update(macs=macs, top1=top1, top5=top5)
    return out


def read_baseline_csv(path: str | Path | Traversable) -> pd.DataFrame:
    """Read and validate one baseline CSV.

    Returns:
        One row per baseline with :data:`COLUMNS`; ``macs``/``top5`` are NaN when empty.

    Raises:
        BaselineError: ``<file>:<line>: <problem>`` for the first bad row or header.
    """
    path = path if isinstance(path, Traversable) else Path(path)
    with path.open("r", newline="") as f:
        reader = csv.DictReader(f)
        header = tuple(reader.fieldnames or ())
        if header != COLUMNS:
            raise BaselineError(
                f"{path}:1: columns are {','.join(header) or '(none)'}, "
                f"expected exactly {','.join(COLUMNS)}"
            )
        rows = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or any(v is None for v in row.values()):
                raise BaselineError(f"{where}: expected {len(COLUMNS)} fields")
            rows.append(_check_row(row, where))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def load_baselines(
    paths: str | Path | Traversable | Iterable[str | Path | Traversable],
) -> pd.DataFrame:
    """Read baseline CSVs: each path is a CSV file or a folder of them (``*.csv``, sorted),
    on disk or a package resource (:func:`default_baselines_dir`).

    Returns:
        All rows, validated, with :data:`COLUMNS` (empty when there are no files).

    Raises:
        BaselineError: a bad file (file and line named) or a path that does not exist.
    """
    if isinstance(paths, str | Path | Traversable):
        paths = [paths]
    found: list[Traversable] = []
    for p in paths:
        p = p if isinstance(p, Traversable) else Path(p)
        if p.is_dir():
            csvs = (f for f in p.iterdir() if f.name.endswith(".csv") and f.is_file())
            found.extend(sorted(csvs, key=lambda f: f.name))
        elif p.is_file():
            found.append(p)
        else:
            raise BaselineError(f"{p}: no such baseline file or folder")
    frames = [read_baseline_csv(f) for f in found]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)


def matching(
    df: pd.DataFrame,
    dataset: str,
    backbones: str | Iterable[str],
    *,
    include_related: bool = False,
) -> pd.DataFrame:
    """Rows measured on ``dataset`` with one of ``backbones``: both must match, as a
    baseline on another dataset or another network is never comparable.

    Args:
        df: from :func:`load_baselines`.
        dataset: the runs' dataset.
        backbones: the runs' backbones.
        include_related: also rows on a :func:`related` backbone of one of ``backbones``
            (same dataset and depth, pre-activation or not).

    Returns:
        The rows, plus ``match`` (``exact`` or ``related``) and ``run_backbone`` (the
        backbone of ``backbones`` the row is compared with: its own when exact).
    """
    wanted = [backbones] if isinstance(backbones, str) else list(dict.fromkeys(backbones))
    rows = df[df["dataset"] == dataset]
    match, against = [], []
    for b in rows["backbone"]:
        if b in wanted:
            match.append(EXACT)
            against.append(b)
            continue
        near = next((w for w in wanted if include_related and related(b, w)), None)
        match.append(RELATED if near else None)
        against.append(near)
    out = rows.assign(match=match, run_backbone=against)
    return out[out["match"].notna()].reset_index(drop=True)
