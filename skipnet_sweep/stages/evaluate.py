"""Evaluation: accuracy, per-sample FLOPs from each sample's own decisions, skip statistics.

Gates act deterministically (``threshold`` mode, the most likely action) and, by default, the
network runs the sparse path, so evaluation is also where skipping saves time. It runs a
copy of the network as it would be deployed: in eval mode, each BatchNorm folded into its
convolution (``models.folded``: the same function, one pass fewer over every activation).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from skipnet_sweep import metrics as M
from skipnet_sweep.flops import CostTable
from skipnet_sweep.models import folded, input_layout, model_input
from skipnet_sweep.routing import routing_metrics
from skipnet_sweep.stages.checkpoint import unwrap
from skipnet_sweep.stages.config import SP_GATINGS


@dataclass
class EvalResult:
    """What an evaluation found.

    Attributes:
        metrics: scalar metrics keyed by the names in ``skipnet_sweep.metrics``.
        labels, preds: (N,) per sample, in dataset order.
        skipped: (N,) number of skipped blocks per sample (fractional for SACT).
        macs: (N,) multiply-adds per sample.
        executed: (N, G) bool decisions.
    """

    metrics: dict[str, float]
    labels: np.ndarray
    preds: np.ndarray
    skipped: np.ndarray
    macs: np.ndarray
    executed: np.ndarray

    def per_class_median_skipped(self) -> dict[int, float]:
        """Median number of skipped blocks of each class's samples (paper Fig. 11a)."""
        return {
            int(c): float(np.median(self.skipped[self.labels == c])) for c in np.unique(self.labels)
        }

    def write_artifacts(
        self,
        out_dir: str | os.PathLike,
        dataset=None,
        k: int = 16,
        mean=None,
        std=None,
        class_name: Callable[[int], str] = str,
    ) -> list[Path]:
        """Write the per-sample table, the per-class medians (each class named by
        ``class_name``, e.g. ``DatasetInfo.class_name``) and (given the evaluated
        dataset) the ``k`` images with the most and the fewest skipped blocks (Fig. 10),
        normalised as the network saw them, with the channel ``mean``/``std`` to undo that.

        Returns:
            the files written.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        per_sample = out / "per_sample.csv"
        with per_sample.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "label", "pred", "skipped", "macs"])
            for i, row in enumerate(
                zip(self.labels, self.preds, self.skipped, self.macs, strict=True)
            ):
                w.writerow([i, int(row[0]), int(row[1]), f"{row[2]:g}", f"{row[3]:.0f}"])
        per_class = out / "per_class.csv"
        acc = {
            int(c): float((self.preds[self.labels == c] == c).mean() * 100)
            for c in np.unique(self.labels)
        }
        with per_class.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "name", "count", "top1", "median_skipped", "mean_skipped"])
            for c, med in self.per_class_median_skipped().items():
                sel = self.labels == c
                mean_skipped = f"{self.skipped[sel].mean():.4f}"
                w.writerow([c, class_name(c), int(sel.sum()), f"{acc[c]:.4f}", med, mean_skipped])
        files = [per_sample, per_class]
        if dataset is not None and len(self.skipped):
            order = np.argsort(self.skipped, kind="stable")
            hard, easy = order[:k], order[::-1][:k]
            images = lambda idx: np.stack([_image(dataset, int(i)) for i in idx])  # noqa: E731
            extremes = out / "easy_hard.npz"
            np.savez_compressed(
                extremes,
                easy_images=images(easy),
                easy_skipped=self.skipped[easy],
                easy_labels=self.labels[easy],
                hard_images=images(hard),
                hard_skipped=self.skipped[hard],
                hard_labels=self.labels[hard],
                mean=np.asarray(mean if mean is not None else [0.0], dtype=np.float32),
                std=np.asarray(std if std is not None else [1.0], dtype=np.float32),
            )
            files.append(extremes)
        return files


def _image(dataset, i: int) -> np.ndarray:
    x = dataset[i][0]
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


def check_gating(model: nn.Module, gating: str, path: str | None = None) -> str:
    """The execution path ``evaluate`` runs for ``gating`` (``path``, or by default sparse
    for hard gates and masked for soft ones); it refuses what it cannot run, so a caller can
    ask before reading any data.

    Raises:
        ValueError: an unknown ``gating``, or ``soft`` on an ungated network or a path other
            than ``masked``.
    """
    if gating not in SP_GATINGS:
        raise ValueError(f"unknown gating {gating!r}; allowed: {', '.join(SP_GATINGS)}")
    if gating == "hard":
        return path or "sparse"
    if getattr(unwrap(model), "gates", None) is None:
        raise ValueError("soft gating mixes gated blocks' outputs; this network has no gates")
    if path not in (None, "masked"):
        raise ValueError(
            f"soft gating computes every block and mixes them: it needs the masked path, "
            f"not {path!r}"
        )
    return "masked"


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    costs: CostTable,
    *,
    path: str | None = None,
    gating: str = "hard",
    device: torch.device | str = "cpu",
) -> EvalResult:
    """Evaluate ``model`` on ``loader`` (which must not shuffle, so rows follow the dataset).

    Args:
        model: the network (plain or gated; DDP-wrapped is fine).
        loader: evaluation data.
        costs: the network's cost table at this input size.
        path: ``sparse`` or ``masked``; None: as ``check_gating`` picks (sparse for hard).
        gating: ``hard`` thresholds each gate, SkipNet's inference (and the only one a
            training run reports); ``soft`` mixes every block's output by its gate's
            probability, as soft gating trains (the paper's Table 3 ablation, whose accuracy
            gap it conjectures comes from thresholding a network trained soft). Soft runs
            every block, so it counts the whole network's MACs and no skip; it needs a gated
            network and the masked path.
        device: where to run.

    Returns:
        an ``EvalResult``; its metrics are top-1/top-5 in percent, FLOPs statistics in
        multiply-adds per sample and per-gate skip ratios.

    Raises:
        ValueError: as ``check_gating``.
    """
    path = check_gating(model, gating, path)
    soft = gating == "soft"
    net = folded(unwrap(model))  # as deployed: eval mode, BatchNorm folded into the convs
    layout = input_layout(net)
    labels, preds, top5_hits, executed = [], [], [], []
    for x, y in loader:
        x, y = model_input(x, device, layout), y.to(device)
        out = net(x, mode="soft" if soft else "threshold", path=path)
        k = min(5, out.logits.shape[1])
        top = out.logits.topk(k, 1).indices
        labels.append(y.cpu())
        preds.append(top[:, 0].cpu())
        top5_hits.append((top == y[:, None]).any(1).cpu())
        executed.append(torch.ones_like(out.executed, device="cpu") if soft else out.executed.cpu())
    y = torch.cat(labels)
    pred = torch.cat(preds)
    ex = torch.cat(executed)
    macs = costs.per_sample(ex)
    conv = costs.per_sample(ex, conv_only=True)
    # Gated networks report bool decisions; halting networks the fraction of positions each
    # unit ran at. Both count a skipped unit as 1 - that.
    not_run = 1 - ex.double()
    skipped = not_run.sum(1)
    plain = float(costs.plain_total)
    m = {
        M.TOP1: (pred == y).double().mean().item() * 100,
        M.TOP5: torch.cat(top5_hits).double().mean().item() * 100,
        M.FLOPS_MEAN: macs.mean().item(),
        M.FLOPS_STD: macs.std(unbiased=False).item(),
        M.CONV_FLOPS_MEAN: conv.mean().item(),
        M.FLOPS_FULL: float(costs.full_total),
        M.FLOPS_PLAIN: plain,
        M.COMPUTATION_PCT: 100 * macs.mean().item() / plain,
        M.REDUCTION_PCT: 100 - 100 * macs.mean().item() / plain,
        M.GATE_FLOPS: float(costs.gate_total),
        M.SKIPPED_MEAN: skipped.double().mean().item(),
        M.SKIP_RATIO: not_run.mean().item() if ex.shape[1] else 0.0,
    }
    m.update(routing_metrics(ex.numpy()))
    if ex.shape[1]:
        ratios = not_run.mean(0)
        m.update({M.gate_skip_ratio(i): r.item() for i, r in enumerate(ratios)})
    return EvalResult(m, y.numpy(), pred.numpy(), skipped.numpy(), macs.numpy(), ex.numpy())
