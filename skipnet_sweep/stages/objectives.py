"""What each stage adds to the one training loop: the gate mode and the loss.

The model returns data (logits, decisions, log-probabilities); these objectives own the loss.

- baseline / SP: cross-entropy; SP runs straight-through hard gates (Eq. 9) or, for the
  Table 3 ablation, soft gates.
- HRL (§3.2, Eq. 5-8): gates sample their actions; gate ``i`` earns ``(alpha / N) (1 - g_i) C_i``
  for skipping, the episode ends with the negative per-sample prediction loss, and each gate
  is credited with its discounted future return ``R_i``. REINFORCE on the log-probabilities
  (scaled by ``rl_weight``) plus the supervised cross-entropy of the sampled network (Eq. 8).
  Pure RL drops the cross-entropy term.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from skipnet_sweep import metrics as M
from skipnet_sweep.models import SkipOutput
from skipnet_sweep.stages.config import TrainConfig


@dataclass
class LossResult:
    """A stage's loss for one batch and the scalars worth logging."""

    loss: Tensor
    logs: dict[str, float]


class Supervised:
    """Cross-entropy on the gated (or plain) network: the baseline and SP stages."""

    def __init__(self, gate_mode: str = "hard"):
        self.gate_mode = gate_mode

    def __call__(self, out: SkipOutput, target: Tensor) -> LossResult:
        loss = F.cross_entropy(out.logits, target)
        return LossResult(loss, {M.TRAIN_LOSS: loss.item()})


def gate_costs(savings: Sequence[int] | None, num_gates: int) -> Tensor:
    """C_i per gate: 1 (the paper), or the MACs a skip saves normalised to mean 1."""
    if savings is None:
        return torch.ones(num_gates)
    s = torch.tensor(savings, dtype=torch.float32)
    return s * (num_gates / s.sum())


def discounted_returns(rewards: Tensor, final: Tensor, gamma: float) -> Tensor:
    """Future return of each gate: ``R_i = r_i + gamma * R_{i+1}``, ``R_{N+1} = final``.

    Args:
        rewards: (B, N) immediate gate rewards.
        final: (B,) terminal reward (the negative prediction loss).
        gamma: discount.

    Returns:
        (B, N) returns.
    """
    returns = torch.empty_like(rewards)
    running = final
    for i in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, i] + gamma * running
        returns[:, i] = running
    return returns


class HybridRL:
    """The HRL objective (Eq. 8), or pure REINFORCE when ``supervised`` is False.

    Args:
        cfg: the stage's training config (alpha, gamma, rl_weight, supervised, baseline).
        costs: C_i per gate, shape (N,).
    """

    gate_mode = "sample"

    def __init__(self, cfg: TrainConfig, costs: Tensor):
        self.cfg = cfg
        self.costs = costs

    def __call__(self, out: SkipOutput, target: Tensor) -> LossResult:
        cfg = self.cfg
        ce = F.cross_entropy(out.logits, target, reduction="none")
        skipped = (~out.executed).to(ce.dtype)
        n = skipped.shape[1]
        rewards = (cfg.alpha / n) * skipped * self.costs.to(ce.device)
        returns = discounted_returns(rewards, -ce.detach(), cfg.gamma)
        if cfg.reward_baseline:
            returns = returns - returns.mean(0, keepdim=True)
        # REINFORCE: maximise E[R] -> minimise -log pi(g) * R, averaged over the batch and
        # summed over gates (as the reference implementation).
        rl_loss = -(out.log_probs * returns).mean(0).sum() * cfg.rl_weight
        loss = rl_loss + ce.mean() if cfg.supervised else rl_loss
        total_reward = rewards.sum(1) - ce.detach()
        return LossResult(
            loss,
            {
                M.TRAIN_LOSS: ce.mean().item(),
                M.REWARD: total_reward.mean().item(),
                "rl_loss": rl_loss.item(),
                "train_skip_ratio": skipped.mean().item(),
            },
        )


def build_objective(cfg: TrainConfig, skip_savings: Sequence[int] | None, num_gates: int):
    """The objective of ``cfg.stage``.

    Args:
        cfg: training config.
        skip_savings: MACs each gated block saves when skipped (for ``cost: flops``).
        num_gates: gates in the network.
    """
    if cfg.stage == "baseline":
        return Supervised("threshold")
    if cfg.stage == "sp":
        return Supervised(cfg.gating)
    if cfg.stage in ("act", "sact"):
        # Imported here: the ponder objective builds on this module's LossResult.
        from skipnet_sweep.stages.ponder import PonderObjective

        return PonderObjective(cfg.tau)
    savings = skip_savings if cfg.cost == "flops" else None
    return HybridRL(cfg, gate_costs(savings, num_gates))
