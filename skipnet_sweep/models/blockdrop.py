"""BlockDrop's network (Wu et al., CVPR 2018): a policy network reads the image once and
decides up front which residual blocks of the ResNet run for it; the ResNet then runs on
those decisions by the shared executor (``SkipResNet.run_decided``, masked or sparse).

Official code: github.com/Tushar-N/blockdrop @ ec52b36d (file:line below refer to it).

- The policy is a plain ResNet of this package's registry with one output per decided block:
  ``cifar_resnet8`` for the CIFAR-style backbones, as the official ``Policy32 =
  FlatResNet32(BasicBlock, [1, 1, 1])`` (models/resnet.py L205-226), ``resnet18`` for the
  ImageNet ones, as ``Policy224`` (L235-236; here from scratch, not ImageNet weights). Its
  logits go through a sigmoid, one Bernoulli per block. The official dead value head
  (``vnet``, never used in training: cl_training.py L69) is left out.
- It decides blocks 1..N-1: the first block always runs, as under every method of this
  platform (the official policy decides the first block too, utils.py L176-198).
- ``policy_pool`` > 1 average-pools the image before the policy, as the official ImageNet
  policy does by 2 (models/resnet.py L252-254); 1 (the official CIFAR policy) by default.
- The policy's downsampling blocks use this package's projection shortcuts (1x1 conv + BN),
  like the backbone, where the official ``DownsampleB`` is parameter-free (base.py L81-90).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skipnet_sweep.models.registry import ModelConfig, build_model
from skipnet_sweep.models.resnet import EXEC_PATHS, SkipOutput, SkipResNet

KIND = "blockdrop"
MODES = ("sample", "threshold")


def policy_arch(backbone: str) -> str:
    """The policy network of a backbone: ResNet-8 for the CIFAR family, ResNet-18 else."""
    return "cifar_resnet8" if backbone.startswith("cifar") else "resnet18"


class BlockDropResNet(SkipResNet):
    """A plain ResNet run on the decisions of a policy network that reads the image.

    The backbone's ``stem``, ``stages`` and ``fc`` are used as they are, under the same names
    (as ``HaltingResNet`` does), so a plain-ResNet state_dict loads with only ``policy.*``
    and ``policy_pool`` missing. ``SkipResNet.__init__`` is not run: the registry's factory
    built the backbone, and this class adds the policy and its own forward.

    Args:
        backbone: a plain ``SkipResNet`` (no gates).
        policy: a plain ``SkipResNet`` whose ``num_classes`` is the number of decided blocks.
        pool: average-pool the image by this factor before the policy reads it.
    """

    def __init__(self, backbone: SkipResNet, policy: SkipResNet, pool: int = 1):
        nn.Module.__init__(self)
        if backbone.gates is not None or policy.gates is not None:
            raise ValueError("BlockDrop wraps plain ResNets; build both with gate=None")
        if policy.fc.out_features != len(backbone.blocks) - 1:
            raise ValueError(
                f"the policy decides {len(backbone.blocks) - 1} blocks, it has "
                f"{policy.fc.out_features} outputs"
            )
        self.stem, self.stages, self.fc = backbone.stem, backbone.stages, backbone.fc
        self.gate_design, self.gates, self.recurrent_gates = None, None, False
        self.policy = policy
        # A ModelConfig has no field for a network kind's own shape options, so the pooling
        # factor travels in the weights (a checkpoint restores it); ``pool`` mirrors it as a
        # Python int so a forward never reads a device tensor.
        self.register_buffer("policy_pool", torch.tensor(1))
        self.set_pool(pool)

    @property
    def num_gates(self) -> int:
        """Decided blocks (all but the first): the columns of ``executed``."""
        return len(self.blocks) - 1

    def backbone_parts(self) -> tuple[nn.Module, ...]:
        """The ResNet's modules (the policy excluded)."""
        return self.stem, self.stages, self.fc

    def set_pool(self, pool: int) -> None:
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
            raise ValueError(f"policy_pool must be a whole number >= 1, got {pool!r}")
        self.pool = pool
        self.policy_pool.fill_(pool)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "policy_pool" in state_dict:
            self.pool = int(state_dict[prefix + "policy_pool"])

    def policy_logits(self, x: Tensor) -> Tensor:
        """(B, G) float32 logits of the policy for images ``x``."""
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        logits = self.policy(x).logits
        return logits.to(torch.promote_types(logits.dtype, torch.float32))

    def forward(
        self,
        x: Tensor,
        mode: str | None = None,
        path: str = "masked",
        force: Tensor | None = None,
        *,
        explore: float = 1.0,
        keep: int = 0,
    ) -> SkipOutput:
        """Run the policy, then the ResNet on its decisions.

        Args:
            x: images (B, C, H, W).
            mode: ``sample`` (training: u ~ Bernoulli(p'), with log-probabilities) or
                ``threshold`` (inference: p >= 0.5, official test.py L70-72); default
                ``sample`` in training mode, ``threshold`` in eval mode.
            path: ``masked`` or ``sparse`` (``SkipResNet.run_decided``).
            force: optional (B, G) bool decisions that replace the policy's (the policy
                still runs, so costs and probabilities stay the real network's).
            explore: the exploration bound alpha of ``sample``: p' = alpha p + (1 - alpha)
                (1 - p) (official 0.8, cl_training.py L78-80); 1 samples from p itself.
            keep: the first ``keep`` decided blocks run whatever the policy says (the
                curriculum, cl_training.py L82-84); their log-probabilities are 0.

        Returns:
            a ``SkipOutput``: ``probs`` the policy's p, ``log_probs`` log p'(u) (``sample``),
            ``extras["bounded_probs"]`` p' (``sample``).
        """
        mode = mode or ("sample" if self.training else "threshold")
        if mode not in MODES:
            raise ValueError(
                f"BlockDrop's policy decides in mode {' or '.join(MODES)}, not {mode!r}"
            )
        if path not in EXEC_PATHS:
            raise ValueError(f"unknown execution path {path!r}; allowed: {', '.join(EXEC_PATHS)}")
        n = self.num_gates
        if force is not None and force.shape != (x.shape[0], n):
            raise ValueError(f"force must have shape {(x.shape[0], n)}, got {tuple(force.shape)}")
        if not 0 <= keep <= n:
            raise ValueError(f"keep must be in [0, {n}], got {keep}")
        logit = self.policy_logits(x)
        prob = torch.sigmoid(logit)
        log_probs, extras = None, None
        if mode == "threshold":
            run = logit >= 0
        else:
            bounded = explore * prob + (1 - explore) * (1 - prob)
            with torch.no_grad():
                # NaN probabilities (diverged weights) would make Bernoulli fail on CUDA; the
                # NaN still reaches the loss, where the loop's check reports it.
                run = torch.bernoulli(torch.nan_to_num(bounded, nan=0.5)).bool()
            # log p'(u), clamped as the official entropy term is (cl_training.py L108).
            chosen = torch.where(run, bounded, 1 - bounded)
            log_probs = chosen.clamp(min=1e-15).log()
            extras = {"bounded_probs": bounded}
        if keep:
            kept = torch.arange(n, device=run.device) < keep
            run = run | kept
            if log_probs is not None:
                log_probs = log_probs.masked_fill(kept, 0.0)
        if force is not None:
            run = force.to(torch.bool)
        logits = self.run_decided(x, run, path=path)
        return SkipOutput(logits, run, prob, log_probs, extras=extras)


def build_blockdrop(cfg: ModelConfig) -> BlockDropResNet:
    """The BlockDrop network of ``cfg`` (``cfg.gate == "blockdrop"``), fresh weights: the
    registry's plain ``cfg.arch`` and its policy network (pool 1; the method sets the stage's
    ``policy_pool``)."""
    backbone = build_model(cfg.arch, num_classes=cfg.num_classes, in_channels=cfg.in_channels)
    policy = build_model(
        policy_arch(cfg.arch),
        num_classes=len(backbone.blocks) - 1,
        in_channels=cfg.in_channels,
    )
    return BlockDropResNet(backbone, policy)
