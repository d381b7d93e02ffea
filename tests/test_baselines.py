"""Published baselines: the shipped CSVs validate, bad files fail naming file and line, and
only rows of the same dataset and backbone are ever matched."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import pytest

import skipnet_sweep.reporting
from skipnet_sweep.reporting.baselines import (
    COLUMNS,
    DATASETS,
    BaselineError,
    default_baselines_dir,
    load_baselines,
    matching,
    parse_resnet,
    read_baseline_csv,
    related,
)

HEADER = ",".join(COLUMNS)
GOOD = "plain,cifar_resnet38,cifar10,,83280512,92.5,,Table 2,"


def write(tmp_path: Path, *lines: str, name: str = "b.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_shipped_baselines_validate() -> None:
    folder = default_baselines_dir()
    # Package data beside the module, never the checkout's folders.
    assert folder == Path(skipnet_sweep.reporting.__file__).parent / "baselines"
    df = load_baselines(folder)
    assert list(df.columns) == list(COLUMNS)
    assert set(df["dataset"]) <= set(DATASETS)
    assert (df["source"].str.len() > 0).all()
    # Spot checks against the cited figures, converted to multiply-adds.
    sact = df[(df.method == "sact") & (df.dataset == "imagenet")].iloc[0]
    assert sact.backbone == "preact_resnet101"
    assert sact.macs == pytest.approx(1.1100941e10 / 2)
    assert (sact.top1, sact.top5) == (75.61, 92.75)
    blockdrop = df[(df.method == "blockdrop") & (df.dataset == "cifar10")].iloc[0]
    assert blockdrop.macs == pytest.approx(1.81e8 / 2)
    # SkipNet's published block percentages are kept without MACs.
    published = df[df.method == "skipnet-rnn"]
    assert len(published) == 5 and published["macs"].isna().all()
    assert published["setting"].str.contains("(blocks)", regex=False).all()
    act = df[df.method == "act"].iloc[0]
    assert math.isnan(act.macs) and act.top1 == 93.86


def test_empty_cells_become_nan(tmp_path: Path) -> None:
    df = read_baseline_csv(write(tmp_path, HEADER, GOOD))
    assert len(df) == 1
    assert math.isnan(df.top5[0]) and df.note[0] == ""
    assert df.macs[0] == 83280512


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("plain,cifar_resnet38,cifar10,,83280512,92.5,,,", "source is empty"),
        ("plain,cifar_resnet38,mnist,,1,92.5,,T2,", "dataset='mnist'"),
        ("plain,cifar_resnet38,cifar10,,lots,92.5,,T2,", "macs='lots' is not a number"),
        ("plain,cifar_resnet38,cifar10,,-5,92.5,,T2,", "macs=-5 must be positive"),
        ("plain,cifar_resnet38,cifar10,,1,0.925e3,,T2,", "top1=925 is not a percentage"),
        ("plain,cifar_resnet38,cifar10,,1,,,T2,", "top1 is empty"),
        ("plain,cifar_resnet38,cifar10,,1,92.5,90,T2,", "top5=90 is below top1"),
        ("plain,,cifar10,,1,92.5,,T2,", "backbone is empty"),
        ("plain,cifar_resnet38,cifar10,,1,92.5,,T2", "expected 9 fields"),
    ],
)
def test_bad_row_names_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    path = write(tmp_path, HEADER, GOOD, row)
    with pytest.raises(BaselineError) as err:
        read_baseline_csv(path)
    text = str(err.value)
    assert text.startswith(f"{path}:3: ")  # the header is line 1, the bad row line 3
    assert message in text
    assert "\n" not in text


def test_wrong_header(tmp_path: Path) -> None:
    path = write(tmp_path, "method,backbone,dataset,macs,top1", "a,b,cifar10,1,2")
    with pytest.raises(BaselineError, match=r":1: columns are method,backbone,dataset,macs,top1"):
        read_baseline_csv(path)


def test_load_folder_and_files(tmp_path: Path) -> None:
    write(tmp_path, HEADER, GOOD, name="a.csv")
    write(tmp_path, HEADER, "sact,preact_cifar_resnet32,cifar10,tau=0.01,1,91,,S,", name="b.csv")
    assert len(load_baselines(tmp_path)) == 2
    assert len(load_baselines([tmp_path / "a.csv"])) == 1
    with pytest.raises(BaselineError, match="no such baseline"):
        load_baselines(tmp_path / "missing.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert list(load_baselines(empty).columns) == list(COLUMNS)


def test_load_from_an_archive(tmp_path: Path) -> None:
    # A package imported from a zip gives its data as a Traversable, not a Path.
    archive = tmp_path / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pkg/baselines/a.csv", f"{HEADER}\n{GOOD}\n")
        z.writestr("pkg/baselines/b.csv", f"{HEADER}\nsact,x,cifar10,,1,91,,S,\n")
        z.writestr("pkg/baselines/notes.txt", "not a table")
        z.writestr("pkg/bad/c.csv", f"{HEADER}\nplain,x,cifar10,,1,101,,S,\n")
    folder = zipfile.Path(archive, "pkg/baselines/")
    df = load_baselines(folder)
    assert list(df["backbone"]) == ["cifar_resnet38", "x"]  # sorted by name, .txt left out
    assert len(load_baselines([folder / "b.csv"])) == 1
    with pytest.raises(BaselineError, match=r"pkg/bad/c.csv:2: top1=101 is not a percentage"):
        load_baselines(zipfile.Path(archive, "pkg/bad/"))


def test_matching_needs_dataset_and_backbone(tmp_path: Path) -> None:
    df = read_baseline_csv(
        write(
            tmp_path,
            HEADER,
            "plain,cifar_resnet110,cifar10,,1,93,,A,",
            "plain,cifar_resnet110,cifar100,,1,71,,A,",
            "act,preact_cifar_resnet110,cifar10,,,93.86,,B,",
            "plain,cifar_resnet38,cifar10,,1,92,,A,",
        )
    )
    hits = matching(df, "cifar10", "cifar_resnet110")
    assert list(hits.top1) == [93.0]  # never the CIFAR-100 row nor the pre-activation net
    assert list(hits["match"]) == ["exact"]
    assert len(matching(df, "cifar10", ["cifar_resnet110", "cifar_resnet38"])) == 2
    assert matching(df, "svhn", ["cifar_resnet110"]).empty


def test_related_backbones_same_layout_and_depth_only() -> None:
    assert parse_resnet("preact_cifar_resnet110").depth == 110
    assert parse_resnet("preact_cifar_resnet110").cifar and parse_resnet("resnet101").depth == 101
    assert parse_resnet("vgg16") is None
    assert related("preact_resnet101", "resnet101")
    assert related("cifar_resnet110", "preact_cifar_resnet110")
    assert not related("resnet101", "resnet101")  # the same is exact, not related
    assert not related("preact_resnet101", "resnet50")  # another depth
    assert not related("preact_cifar_resnet110", "resnet110")  # another layout
    assert not related("preact_cifar_resnet32", "cifar_resnet38")
    assert not related("vgg16", "resnet101")


def test_matching_related_backbones(tmp_path: Path) -> None:
    df = read_baseline_csv(
        write(
            tmp_path,
            HEADER,
            "sact,preact_resnet101,imagenet,tau=0.005,5e9,75.6,,S,",
            "act,preact_resnet101,imagenet,tau=0.005,6e9,75.0,,S,",
            "plain,resnet101,imagenet,,7.8e9,77.37,,T,",
            "sact,preact_resnet101,cifar10,,1,90,,S,",  # related depth, other dataset
            "sact,preact_resnet50,imagenet,,1,74,,S,",  # other depth
        )
    )
    exact = matching(df, "imagenet", ["resnet101"])
    assert list(exact.top1) == [77.37]  # related rows only when asked
    # Never the CIFAR-10 row; each related row names the runs' backbone it relates to.
    both = matching(df, "imagenet", ["resnet101", "resnet50"], include_related=True)
    assert list(both.top1) == [75.6, 75.0, 77.37, 74.0]
    assert list(both["match"]) == ["related", "related", "exact", "related"]
    assert list(both["run_backbone"]) == ["resnet101", "resnet101", "resnet101", "resnet50"]
    # ResNet-50 runs relate to the pre-activation ResNet-50 and nothing of depth 101.
    r50 = matching(df, "imagenet", "resnet50", include_related=True)
    assert list(r50.top1) == [74.0] and list(r50["match"]) == ["related"]
