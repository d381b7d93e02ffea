"""SkipNet's Fig. 7: published ACT/SACT on the pre-activation ResNet-101 drawn beside the
platform's own runs on ResNet-101 -- hollow, faint and captioned -- while a backbone of
another depth or dataset is never drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex, to_rgba

from skipnet_sweep import metrics as M
from skipnet_sweep.reporting import figures as F
from skipnet_sweep.reporting import style as S
from skipnet_sweep.reporting.baselines import (
    COLUMNS,
    default_baselines_dir,
    load_baselines,
    read_baseline_csv,
)

G = 1e9
PLAIN_MACS = 7.8 * G


def imagenet_runs() -> pd.DataFrame:
    rows = [
        ("plain", "baseline", "none", "baseline", np.nan, np.nan, 77.4, 7.8 * G),
        ("hrl-0.1", "hrl", "rnn", "hrl+sp", 0.1, np.nan, 77.0, 5.5 * G),
        ("hrl-0.5", "hrl", "rnn", "hrl+sp", 0.5, np.nan, 75.5, 4.0 * G),
        ("act-0.005", "act", "none", "act", np.nan, 0.005, 75.2, 6.1 * G),
        ("sact-0.005", "sact", "none", "sact", np.nan, 0.005, 75.8, 5.9 * G),
    ]
    return pd.DataFrame(
        [
            {
                "run_id": f"{name:0<16}",
                "run_name": name,
                M.TAG_STAGE: stage,
                M.TAG_METHOD: M.method_of(stage, gate),
                M.PARAM_DATASET: "imagenet",
                M.PARAM_ARCH: "resnet101",
                M.PARAM_GATE: gate,
                M.PARAM_VARIANT: variant,
                M.PARAM_ALPHA: alpha,
                M.PARAM_TAU: tau,
                "status": "FINISHED",
                M.TOP1: top1,
                M.FLOPS_MEAN: macs,
                M.FLOPS_PLAIN: PLAIN_MACS,
            }
            for name, stage, gate, variant, alpha, tau, top1, macs in rows
        ]
    )


def baselines(tmp_path: Path) -> pd.DataFrame:
    rows = [
        ("sact", "preact_resnet101", "imagenet", "tau=0.005", 5.55 * G, 75.61, "", "SACT, CVPR 2017", ""),
        ("sact", "preact_resnet101", "imagenet", "tau=0.01", 4.9 * G, 74.9, "", "SACT, CVPR 2017", ""),
        ("act", "preact_resnet101", "imagenet", "tau=0.005", 6.4 * G, 75.1, "", "SACT, CVPR 2017", ""),
        ("plain", "resnet101", "imagenet", "", 7.8 * G, 77.37, "", "SkipNet Table 2", ""),
        ("sact", "preact_resnet50", "imagenet", "tau=0.005", 3.3 * G, 74.4, "", "other depth", ""),
        ("sact", "preact_resnet101", "cifar10", "tau=0.005", 2.2 * G, 91.0, "", "other dataset", ""),
        ("act", "resnet101", "cifar100", "", 2.1 * G, 70.0, "", "other dataset", ""),
    ]  # fmt: skip
    path = tmp_path / "b.csv"
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)
    return read_baseline_csv(path)


def drawn_at(ax, x: float, y: float) -> list[tuple[str, str, float]]:
    """(face colour or '' when hollow, edge colour, edge alpha) of every scatter point at
    (x, y) in data units."""
    out = []
    for coll in ax.collections:
        offsets = np.asarray(coll.get_offsets())
        for i, (px, py) in enumerate(offsets):
            if np.isclose(px, x) and np.isclose(py, y):
                faces, edges = coll.get_facecolor(), coll.get_edgecolor()
                edge = to_rgba(edges[i % len(edges)]) if len(edges) else (0, 0, 0, 0)
                face = to_hex(faces[i % len(faces)]) if len(faces) else ""
                out.append((face, to_hex(edge), round(edge[3], 2)))
    return out


@pytest.fixture(scope="module")
def fig7(tmp_path_factory: pytest.TempPathFactory) -> F.ParetoData:
    tmp = tmp_path_factory.mktemp("fig7")
    return F.pareto_figure(imagenet_runs(), tmp / "pareto", baselines=baselines(tmp),
                           flops_unit="G")  # fmt: skip


def test_related_backbone_is_hollow_faint_and_captioned(fig7: F.ParetoData) -> None:
    ax = fig7.figure.axes[0]
    related = fig7.baselines_plotted[fig7.baselines_plotted["match"] == "related"]
    assert sorted(related["top1"]) == [74.9, 75.1, 75.61]
    assert set(related["run_backbone"]) == {"resnet101"}
    for _, r in related.iterrows():
        colour = S.method_style(r.method).color.lower()
        assert ("", colour, 0.6) in drawn_at(ax, r.macs / G, r.top1), r.setting
    caption = [n for n in fig7.notes if "related" in n]
    assert len(caption) == 1
    assert "ACT, SACT on PreAct ResNet-101" in caption[0]
    assert "runs' ResNet-101" in caption[0]
    assert "Filled: this platform's runs on ResNet-101" in caption[0]
    # The caption is on the figure, not only in the returned data.
    texts = " ".join(t.get_text().replace("\n", " ") for t in fig7.figure.texts)
    assert "PreAct ResNet-101" in texts and "SACT, CVPR 2017" in texts
    legend = [h.get_label() for h in fig7.figure.legends[0].legend_handles]
    assert "SACT, published on PreAct ResNet-101\nSACT, CVPR 2017" in legend


def test_platform_runs_on_the_exact_backbone_are_filled(fig7: F.ParetoData) -> None:
    ax = fig7.figure.axes[0]
    for name in ("act-0.005", "sact-0.005"):
        r = fig7.points.set_index("run_name").loc[name]
        colour = S.method_style(r[M.TAG_METHOD]).color.lower()
        assert (colour, "#ffffff", 1.0) in drawn_at(ax, r[M.FLOPS_MEAN] / G, r[M.TOP1]), name
    # Exact-backbone published rows stay as they were: hollow, full strength.
    exact = fig7.baselines_plotted[fig7.baselines_plotted["match"] == "exact"]
    assert list(exact["top1"]) == [77.37]
    plain = S.method_style("plain").color.lower()
    assert ("", plain, 1.0) in drawn_at(ax, 7.8, 77.37)


def test_unrelated_backbones_are_never_drawn(fig7: F.ParetoData) -> None:
    ax = fig7.figure.axes[0]
    shown = set(zip(fig7.baselines_plotted["backbone"], fig7.baselines_plotted["top1"],
                    strict=True))  # fmt: skip
    assert ("preact_resnet50", 74.4) not in shown  # another depth
    assert not {91.0, 70.0} & {t for _, t in shown}  # another dataset
    assert drawn_at(ax, 3.3, 74.4) == []
    assert drawn_at(ax, 2.2, 91.0) == [] and drawn_at(ax, 2.1, 70.0) == []


def test_shipped_sact_row_joins_an_imagenet_resnet101_figure(tmp_path: Path) -> None:
    data = F.pareto_figure(
        imagenet_runs(), tmp_path / "p", baselines=load_baselines(default_baselines_dir())
    )
    related = data.baselines_plotted[data.baselines_plotted["match"] == "related"]
    assert "sact" in set(related["method"])
    assert set(related["backbone"]) == {"preact_resnet101"}
    # Other depths' and datasets' rows (CIFAR ResNet-110, ResNet-50) stay out.
    assert set(data.baselines_plotted["backbone"]) <= {"preact_resnet101", "resnet101"}
