"""A trained network as a user deploys it: images in, class logits out, gates thresholded and
blocks skipped for real (the sparse path), as evaluation and the latency measurement run it.
This is what the sweep logs to MLflow for the frontier's runs."""

from __future__ import annotations

from torch import Tensor, nn


class Deployed(nn.Module):
    """Wraps a SkipNet, halting network or plain ResNet for inference.

    Args:
        net: the trained network (put in eval mode).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x, mode="threshold", path="sparse").logits
