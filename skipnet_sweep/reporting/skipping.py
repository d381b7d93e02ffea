"""Which inputs skip how much (Fig. 11): median skipped blocks per class of a matched SP
and HRL+SP run, and the distribution of skipped blocks of the easiest and hardest class."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from skipnet_sweep.reporting import style as S
from skipnet_sweep.reporting.common import FigureData, NotEnoughData, new_figure, save

__all__ = ["per_class_figure", "per_class_from_samples", "skip_histogram_figure"]


def per_class_from_samples(per_sample: pd.DataFrame) -> pd.DataFrame:
    """``per_class.csv`` rebuilt from ``per_sample.csv``: label, count, top1 (percent),
    median_skipped, mean_skipped."""
    g = per_sample.assign(_hit=(per_sample["pred"] == per_sample["label"]) * 100.0)
    out = g.groupby("label").agg(
        count=("label", "size"),
        top1=("_hit", "mean"),
        median_skipped=("skipped", "median"),
        mean_skipped=("skipped", "mean"),
    )
    return out.reset_index()


def per_class_figure(
    sp_per_class: pd.DataFrame,
    hrl_per_class: pd.DataFrame,
    out_stem: str | Path,
    *,
    dataset: str | None = None,
    backbone: str | None = None,
    method: str | None = None,
    shown: str | None = None,
    labels: tuple[str, str] = ("SkipNet+SP", "SkipNet+HRL+SP"),
    title: str | None = None,
) -> FigureData:
    """Median skipped blocks per class, SP (hatched) vs. HRL+SP (solid) in the method's
    colour (Fig. 11a); classes ordered by the HRL+SP model's accuracy, which is printed
    under each class name.

    Args:
        sp_per_class, hrl_per_class: ``per_class.csv`` tables of the two runs.
        dataset: for class names (CIFAR-10, SVHN, Fashion-MNIST) and the title.
        backbone, method: the runs' backbone and ``method`` tag (title, colour).
        shown: the runs shown, for the title (e.g. ``SkipNet, RNNGate, HRL+SP α=0.1``).
        title: replaces the default title.

    Returns:
        ``data``: label, name, sp_median, hrl_median, top1 (HRL+SP), in drawing order.
    """
    merged = hrl_per_class[["label", "top1", "median_skipped"]].merge(
        sp_per_class[["label", "median_skipped"]], on="label", suffixes=("_hrl", "_sp")
    )
    if merged.empty:
        raise NotEnoughData("the SP and HRL+SP per-class tables share no class")
    names = S.class_names(dataset, merged["label"])
    data = pd.DataFrame(
        {
            "label": merged["label"].astype(int),
            "name": [names[int(c)] for c in merged["label"]],
            "sp_median": merged["median_skipped_sp"].astype(float),
            "hrl_median": merged["median_skipped_hrl"].astype(float),
            "top1": merged["top1"].astype(float),
        }
    )
    data = data.sort_values(["top1", "label"], kind="stable").reset_index(drop=True)
    x = np.arange(len(data))
    colour = S.method_style(method).color if method else "0.3"
    with matplotlib.rc_context(S.RC):
        fig = new_figure(figsize=(max(4.6, 0.55 * len(data) + 1.5), 3.2))
        ax = fig.add_subplot()
        ax.bar(x - 0.2, data["sp_median"], 0.38, color=colour, alpha=0.45, hatch="///",
               edgecolor=colour, label=labels[0])  # fmt: skip
        ax.bar(x + 0.2, data["hrl_median"], 0.38, color=colour, label=labels[1])
        ticks = [f"{n}\n{a:.0f}%" for n, a in zip(data["name"], data["top1"], strict=True)]
        ax.set_xticks(x, ticks, fontsize=7 if len(data) > 8 else 8)
        ax.set_xlabel("Class (test top-1 accuracy of HRL+SP), easiest on the right")
        ax.set_ylabel("Median skipped blocks")
        ax.set_title(
            title
            or S.title("Skipped blocks per class", dataset=dataset, backbones=backbone, shown=shown)
        )
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper left")
        files = save(fig, out_stem)
    return FigureData(data, files, figure=fig)


def skip_histogram_figure(
    per_sample: pd.DataFrame,
    out_stem: str | Path,
    *,
    dataset: str | None = None,
    backbone: str | None = None,
    shown: str | None = None,
    title: str | None = None,
) -> FigureData:
    """Distribution of skipped blocks of the easiest and the hardest class, by accuracy
    (Fig. 11b), each normalised to its class size.

    Args:
        per_sample: the run's ``per_sample.csv``.
        dataset, backbone: of the run (class names, title).
        shown: the run, for the title (:func:`.style.describe_run`).
        title: replaces the default title.

    Returns:
        ``data``: bin_left, bin_right, easy (fraction), hard (fraction);
        ``extra``: easy_label, hard_label, easy_name, hard_name, easy_top1, hard_top1.
    """
    if per_sample.empty:
        raise NotEnoughData("empty per_sample table")
    acc = per_class_from_samples(per_sample).sort_values(["top1", "label"], kind="stable")
    if len(acc) < 2:
        raise NotEnoughData("fewer than two classes in per_sample.csv")
    hard, easy = acc.iloc[0], acc.iloc[-1]
    skipped = per_sample["skipped"].to_numpy(dtype=float)
    if np.allclose(skipped, np.round(skipped)):
        lo, hi = int(skipped.min()), int(skipped.max())
        bins = np.arange(lo - 0.5, hi + 1.5)
    else:  # fractional (halting networks)
        bins = np.histogram_bin_edges(skipped, bins="auto")
    names = S.class_names(dataset, [easy.label, hard.label])
    counts = {}
    for key, row in (("easy", easy), ("hard", hard)):
        values = per_sample.loc[per_sample["label"] == row.label, "skipped"].to_numpy(float)
        counts[key] = np.histogram(values, bins)[0] / max(len(values), 1)
    data = pd.DataFrame(
        {"bin_left": bins[:-1], "bin_right": bins[1:], "easy": counts["easy"],
         "hard": counts["hard"]}
    )  # fmt: skip
    extra = {
        "easy_label": int(easy.label),
        "hard_label": int(hard.label),
        "easy_name": names[int(easy.label)],
        "hard_name": names[int(hard.label)],
        "easy_top1": float(easy.top1),
        "hard_top1": float(hard.top1),
    }
    centres = (bins[:-1] + bins[1:]) / 2
    w = np.diff(bins) * 0.42
    with matplotlib.rc_context(S.RC):
        fig = new_figure(figsize=(4.8, 3.2))
        ax = fig.add_subplot()
        ax.bar(centres - w / 2, counts["hard"], w, color=S.KIND_COLOURS["hard"],
               label=f"hardest: {extra['hard_name']} ({extra['hard_top1']:.0f}%)")  # fmt: skip
        ax.bar(centres + w / 2, counts["easy"], w, color=S.KIND_COLOURS["easy"],
               label=f"easiest: {extra['easy_name']} ({extra['easy_top1']:.0f}%)")  # fmt: skip
        ax.set_xlabel("Skipped blocks per image")
        ax.set_ylabel("Fraction of the class's images")
        ax.set_title(
            title
            or S.title(
                "Skipped blocks, easiest vs. hardest class",
                dataset=dataset,
                backbones=backbone,
                shown=shown,
            )
        )
        ax.grid(axis="x", visible=False)
        ax.legend(loc="best")
        files = save(fig, out_stem)
    return FigureData(data, files, extra=extra, figure=fig)
