"""What each phase adds to the one training loop: the gate mode and the loss.

The model returns data (logits, decisions, log-probabilities); these objectives own the loss.

- baseline / SP: cross-entropy; SP runs straight-through hard gates (Eq. 9) or, for the
  Table 3 ablation, soft gates.
- HRL (§3.2, Eq. 5-8): gates sample their actions; gate ``i`` earns ``(alpha / N) (1 - g_i) C_i``
  for skipping, the episode ends with the negative per-sample prediction loss, and each gate
  is credited with its discounted future return ``R_i``. REINFORCE on the log-probabilities
  (scaled by ``rl_weight``) plus the supervised cross-entropy of the sampled network (Eq. 8).
  Pure RL drops the cross-entropy term and samples the prediction as one more action.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skipnet_sweep import metrics as M
from skipnet_sweep.metrics import RL_LOSS, SAMPLED_TOP1
from skipnet_sweep.models import SkipOutput
from skipnet_sweep.models.gates import sharpen_gates
from skipnet_sweep.stages.config import TrainConfig
from skipnet_sweep.stages.objective import LossResult, Objective


class Supervised(Objective):
    """Cross-entropy on the gated (or plain) network: the baseline and SP phases."""

    def __init__(self, gate_mode: str = "hard"):
        self.gate_mode = gate_mode

    def __call__(self, out: SkipOutput, target: Tensor) -> LossResult:
        # float32 logits: under autocast the classifier's output may be bf16/fp16.
        loss = F.cross_entropy(out.logits.float(), target)
        return LossResult(loss, {M.TRAIN_LOSS: loss.detach()})


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


def sample_prediction(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Sample a class per sample from ``softmax(logits)``: the prediction as an action.

    Returns:
        the sampled classes (B,) and their log-probabilities (B,), with gradient.
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    with torch.no_grad():
        pred = torch.multinomial(log_p.exp(), 1)
    return pred.squeeze(1), log_p.gather(1, pred).squeeze(1)


class HybridRL(Objective):
    """The HRL objective (Eq. 8), or pure REINFORCE when ``supervised`` is False.

    Pure RL (§4.3.1, Fig. 9) samples the class from the softmax as one more action and
    reinforces it with reward 1 when it is the label (the classification reward of recurrent
    attention, Mnih et al. 2014, the paper's [22]); the gates keep ``-CE`` as their terminal
    reward. The official scripts have no pure-RL run to follow: the RNN model saves its
    sampled prediction (ucbdrive/skipnet cifar/models.py L1265-1272) but cifar/train_rl.py
    reinforces only ``control.saved_actions`` (L153, L240-241) and always adds the
    cross-entropy (L244-248). ``-CE`` does not depend on the sampled class, so it could not
    teach the classifier anything (docs/fidelity.md).

    Args:
        cfg: the stage's training config (alpha, gamma, rl_weight, rl_reduction,
            terminal_scale, supervised, reward_baseline, accum_steps).
        costs: C_i per gate, shape (N,).
    """

    gate_mode = "sample"

    def __init__(self, cfg: TrainConfig, costs: Tensor):
        self.cfg = cfg
        self.costs = costs
        self._costs_on: dict[torch.device, Tensor] = {}

    def _costs(self, device: torch.device) -> Tensor:
        # One host-to-device copy per device, not one per step (each would wait for the device).
        if device not in self._costs_on:
            self._costs_on[device] = self.costs.to(device, torch.float32)
        return self._costs_on[device]

    def begin(self, model: nn.Module) -> None:
        """Called by the loop once before a fresh (not resumed) run: sharpen the gates."""
        if self.cfg.gate_sharpen != 1.0:
            sharpen_gates(getattr(model, "module", model).gates, self.cfg.gate_sharpen)

    def __call__(self, out: SkipOutput, target: Tensor) -> LossResult:
        cfg = self.cfg
        # Rewards, returns and log-probabilities in float32 whatever the autocast dtype.
        logits = out.logits.float()
        log_probs = out.log_probs.float()
        ce = F.cross_entropy(logits, target, reduction="none")
        skipped = (~out.executed).float()
        n = skipped.shape[1]
        rewards = (cfg.alpha / n) * skipped * self._costs(ce.device)
        # Official CIFAR: R = -pred_loss (cifar/train_rl.py L232); official ImageNet:
        # R = -pred_loss * alpha / N (imagenet/train_rl.py L252, L258).
        scale = cfg.alpha / n if cfg.terminal_scale == "alpha_over_n" else 1.0
        final = -ce.detach() * scale
        returns = discounted_returns(rewards, final, cfg.gamma)
        if cfg.reward_baseline:
            returns = returns - returns.mean(0, keepdim=True)
        # REINFORCE: maximise E[R] -> minimise -log pi(g) * R, summed over gates.
        per_sample = (log_probs * returns).sum(1)
        logs = {}
        if not cfg.supervised:
            pred, pred_log_prob = sample_prediction(logits)
            correct = (pred == target).float()
            pred_reward = correct - correct.mean() if cfg.reward_baseline else correct
            per_sample = per_sample + pred_log_prob * pred_reward
            logs[SAMPLED_TOP1] = correct.mean().detach()
        if cfg.rl_reduction == "sum":
            # Official CIFAR: ``action.reinforce(rl_weight * R)`` (cifar/train_rl.py L240-241)
            # backpropagates each sample's term unaveraged: a sum over the batch. The loop
            # divides every loss by accum_steps (right for means); a sum over the
            # accumulated batch must not be divided, hence the factor.
            rl_loss = -per_sample.sum() * cfg.rl_weight * cfg.accum_steps
        else:
            # Official ImageNet: ``_loss.mean()`` per gate, then summed over gates
            # (imagenet/train_rl.py L269-271).
            rl_loss = -per_sample.mean() * cfg.rl_weight
        loss = rl_loss + ce.mean() if cfg.supervised else rl_loss
        total_reward = rewards.sum(1) + final
        logs.update(
            {
                M.TRAIN_LOSS: ce.mean().detach(),
                M.REWARD: total_reward.mean(),
                RL_LOSS: rl_loss.detach(),
            }
        )
        return LossResult(loss, logs)
