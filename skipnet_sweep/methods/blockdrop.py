"""BlockDrop (Wu et al., CVPR 2018) as a method: a policy network chooses every block of the
ResNet from the image up front, trained from the plain ResNet with REINFORCE, a
self-critical greedy baseline and a curriculum, then fine-tuned jointly with the ResNet;
the reward's penalty for a wrong prediction is the sweep axis.

Where the paper is silent the official code decides (github.com/Tushar-N/blockdrop @
ec52b36d, cited by file:line); any other choice is an option, not the default. The official
code runs two scripts (``cl_training.py``: curriculum, ResNet frozen; ``finetune.py``: joint);
here they are the two phases of one job, split at ``curriculum`` of its steps
(docs/blockdrop.md).
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields, make_dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skipnet_sweep import metrics as M
from skipnet_sweep.errors import SpaceError
from skipnet_sweep.flops import CostTable, count_costs
from skipnet_sweep.methods import register_method
from skipnet_sweep.methods.base import Job, Method, PlanContext, recipe
from skipnet_sweep.methods.plain import finetune_jobs
from skipnet_sweep.models import register_network
from skipnet_sweep.models.blockdrop import (
    KIND,
    BlockDropResNet,
    build_blockdrop,
)
from skipnet_sweep.stages.checkpoint import unwrap
from skipnet_sweep.stages.config import FieldError, StageConfig, TrainConfig
from skipnet_sweep.stages.objective import LossResult, Objective

# The curriculum's Adam rate and weight decay (cl_training.py L21, L23) and batch size
# (L28, as finetune.py L27).
LR, WEIGHT_DECAY, BATCH_SIZE = 1e-3, 0.0, 256
# The TrainConfig fields the phase reads: the optimiser is Adam (SGD's momentum, milestones,
# warm-up and one-cycle fields would be accepted and ignored, so they are not offered).
TRAIN_FIELDS = (
    "iterations",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "eval_every",
    "eval_path",
    "precision",
    "nan_check_every",
    "accum_steps",
    "seed",
)
# The space section's recipe fields (TrainConfig's; an empty lr takes LR).
RECIPE_FIELDS = ("iterations", "epochs", "lr", "batch_size")
# Training logs beyond metrics.py's: how many blocks the policy controls (the curriculum).
CONTROLLED = "blockdrop_controlled_blocks"


@dataclass(frozen=True)
class BlockDropOptions:
    """BlockDrop's own settings of one stage (``StageConfig.options``).

    Attributes:
        penalty: reward of a wrong prediction in the fine-tuning phase (the official
            --penalty, -gamma: finetune.py L34 defaults to -5, the README's CIFAR-10
            ResNet-110 run uses -10); a right one earns 1 - (blocks used / blocks decided)^2
        curriculum_penalty: reward of a wrong prediction in the curriculum phase
            (cl_training.py L35 default, which the README's curriculum run keeps)
        explore_alpha: exploration bound: actions are sampled from alpha p + (1 - alpha)
            (1 - p) (cl_training.py L36, L78-80)
        entropy: weight beta of the curriculum's entropy bonus (cl_training.py L22)
        curriculum: share of the run's steps in the curriculum phase (ResNet frozen, the
            policy alone); the rest fine-tunes both. 0.7: the official 5000 curriculum epochs
            (Readme L34) before 2000 fine-tuning epochs (finetune.py L30)
        epochs_per_block: the curriculum hands the policy one more block (from the last)
            every this many epochs (official: every epoch, cl_training.py L215-218)
        finetune_lr: Adam's rate in the fine-tuning phase (finetune.py L21)
        finetune_decay_at: the fine-tuning rate is multiplied by 0.1 at this share of the
            fine-tuning phase (epoch 1600 of 2000, finetune.py L29-31)
        policy_pool: average-pool the image by this factor before the policy reads it (1:
            the official CIFAR policy; 2: as the official ImageNet policy, a quarter of the
            policy's cost)
    """

    penalty: float = -5.0
    curriculum_penalty: float = -1.0
    explore_alpha: float = 0.8
    entropy: float = 0.1
    curriculum: float = 0.7
    epochs_per_block: float = 1.0
    finetune_lr: float = 1e-4
    finetune_decay_at: float = 0.8
    policy_pool: int = 1

    def __post_init__(self) -> None:
        for name in ("penalty", "curriculum_penalty"):
            if not getattr(self, name) <= 0:
                raise FieldError(
                    name,
                    f"must be <= 0 (the reward of a wrong prediction), got {getattr(self, name)}",
                )
        if not 0.5 <= self.explore_alpha <= 1:
            raise FieldError(
                "explore_alpha", f"must be in [0.5, 1] (1: no bound), got {self.explore_alpha}"
            )
        for name in ("curriculum", "finetune_decay_at"):
            if not 0 <= getattr(self, name) <= 1:
                raise FieldError(name, f"must be in [0, 1], got {getattr(self, name)}")
        for name in ("entropy", "finetune_lr"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"must be >= 0, got {getattr(self, name)}")
        if not self.epochs_per_block > 0:
            raise FieldError("epochs_per_block", f"must be > 0, got {self.epochs_per_block}")
        if isinstance(self.policy_pool, bool) or self.policy_pool < 1:
            raise FieldError("policy_pool", f"must be a whole number >= 1, got {self.policy_pool}")


def _settings() -> type:
    """The space's ``blockdrop:`` section: ``penalty`` as a list (the sweep axis), the
    recipe (TrainConfig's fields, their types), and every other option with its default,
    each declared once (in ``BlockDropOptions`` or ``TrainConfig``)."""
    train = typing.get_type_hints(TrainConfig)
    own = typing.get_type_hints(BlockDropOptions)
    spec = [("penalty", tuple[float, ...], field(default=(BlockDropOptions.penalty,)))]
    spec += [(n, train[n] | None, field(default=None)) for n in RECIPE_FIELDS]
    spec += [
        (f.name, own[f.name], field(default=f.default))
        for f in fields(BlockDropOptions)
        if f.name != "penalty"
    ]
    cls = make_dataclass("BlockDropSettings", spec, frozen=True)
    cls.__module__ = __name__  # pickled by reference with the plan that ships it to Ray
    return cls


BlockDropSettings = _settings()
BlockDropSettings.__doc__ = (
    "The space's ``blockdrop:`` section: ``penalty`` (a list: one job per value and "
    "backbone), the recipe (iterations or epochs, lr, batch_size) and the options of "
    "``BlockDropOptions``."
)


def _reward(logits: Tensor, target: Tensor, executed: Tensor, penalty: float) -> Tensor:
    """(B,) official ``get_reward`` (cl_training.py L43-55): 1 - (blocks used / blocks
    decided)^2 if the prediction is right, else ``penalty``."""
    used = executed.float().mean(1)
    right = logits.argmax(1) == target
    return torch.where(right, 1 - used**2, torch.full_like(used, penalty))


class BlockDropObjective(Objective):
    """The curriculum, then joint fine-tuning, with the self-critical REINFORCE reward.

    Curriculum (``cl_training.py``): the ResNet frozen in eval mode (L91, L205), Adam over
    the policy only (L208); the policy controls the last k blocks, k growing by one every
    ``epochs_per_block`` epochs (L215-218), the others forced on in both policies (L82-84);
    loss ``(sum(-log p'(u) A) - beta sum(-p' log p')) / B`` (L100-112).
    Fine-tuning (``finetune.py``): every block controlled, the ResNet in training mode for
    both forwards (L59-60), Adam over both at ``finetune_lr`` (L196); loss ``sum_b(-sum_k log
    p'(u) A) + CE(sampled)`` (L89-95): the REINFORCE term summed over the batch.
    Both: A = R(sampled u) - R(greedy p >= 0.5 on the unbounded p), the greedy pass without
    gradient (L73-76, L91-98).
    """

    gate_mode = "sample"

    def __init__(self, train: TrainConfig, opts: BlockDropOptions, num_decided: int):
        self.train, self.opts, self.n = train, opts, num_decided
        self.finetune = False
        self.controlled = 1

    def curriculum_steps(self, total: int) -> int:
        return round(self.opts.curriculum * total)

    def configure_optimizer(self, model, params, cfg, total):
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        cl = self.curriculum_steps(total)
        decay_at = cl + int(self.opts.finetune_decay_at * (total - cl))
        ft = self.opts.finetune_lr / cfg.lr if cfg.lr else 0.0

        def factor(s: int) -> float:
            if s < cl:
                return 1.0  # no decay in the curriculum (epoch_step 10000, cl_training.py L29)
            return ft * (0.1 if s >= decay_at else 1.0)

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)

    def at_step(self, step: int, total: int, epoch: float) -> None:
        self.finetune = step >= self.curriculum_steps(total)
        grown = 1 + int(epoch / self.opts.epochs_per_block)
        self.controlled = self.n if self.finetune else min(self.n, grown)

    def _phase(self, net: BlockDropResNet) -> None:
        # Frozen: no gradient and batch-norm statistics left as the plain ResNet has them.
        # Set at every step: the loop puts the whole network back in training mode after
        # each evaluation, and a resumed run starts here too.
        for part in net.backbone_parts():
            part.train(self.finetune and net.training)
            part.requires_grad_(self.finetune)

    def forward(self, model: nn.Module, x: Tensor):
        net = unwrap(model)
        self._phase(net)
        keep = self.n - self.controlled
        out = model(x, mode="sample", path="masked", explore=self.opts.explore_alpha, keep=keep)
        greedy = out.probs >= 0.5
        if keep:
            greedy[:, :keep] = True
        with torch.no_grad():
            greedy_logits = net.run_decided(x, greedy, path="masked")
        extras = {**out.extras, "greedy_logits": greedy_logits, "greedy_executed": greedy}
        return out._replace(extras=extras)

    def __call__(self, out, target: Tensor) -> LossResult:
        opts = self.opts
        penalty = opts.penalty if self.finetune else opts.curriculum_penalty
        logits = out.logits.float()
        sampled = _reward(logits, target, out.executed, penalty)
        greedy = _reward(
            out.extras["greedy_logits"].float(), target, out.extras["greedy_executed"], penalty
        )
        advantage = (sampled - greedy).detach()
        # Forced blocks have log-probability 0: the curriculum's mask (L86-87, L103-104).
        pg = -(out.log_probs.float() * advantage[:, None]).sum()
        batch = target.shape[0]
        if self.finetune:
            # A sum over the batch; the loop divides every loss by accum_steps (right for
            # means), so the sum over the accumulated batch is scaled back.
            pg = pg * self.train.accum_steps
            loss = pg + F.cross_entropy(logits, target)
        else:
            p = out.extras["bounded_probs"].float().clamp(1e-15, 1 - 1e-15)
            entropy = -(p * p.log()).sum()
            loss = (pg - opts.entropy * entropy) / batch
        logs = {
            M.TRAIN_LOSS: loss.detach(),
            M.REWARD: sampled.mean(),
            M.RL_LOSS: pg.detach(),
            M.SAMPLED_TOP1: (logits.argmax(1) == target).float().mean(),
            CONTROLLED: torch.tensor(float(self.controlled), device=loss.device),
        }
        return LossResult(loss, logs)


@register_method
class BlockDrop(Method):
    name = "blockdrop"
    label = "BlockDrop"
    marker = "X"
    phases = ("blockdrop",)
    cost_weight = "penalty"
    space_key = "blockdrop"
    settings = BlockDropSettings

    def register_parts(self) -> None:
        # The same builder every time (a Ray worker registers it again): no clash.
        register_network(KIND, build_blockdrop, replace=True)

    def _options(self, spec, penalty: float) -> BlockDropOptions:
        own = {f.name: getattr(spec, f.name) for f in fields(BlockDropOptions)}
        try:
            return BlockDropOptions(**{**own, "penalty": penalty})
        except FieldError as err:
            raise SpaceError(f"{self.space_key}.{err.field}: {err.reason}") from None

    def _train(self, spec, seed: int) -> TrainConfig:
        return recipe(
            self.space_key,
            self.name,
            spec,
            LR,
            (),
            weight_decay=WEIGHT_DECAY,
            batch_size=spec.batch_size or BATCH_SIZE,
            seed=seed,
        )

    def validate(self, space) -> None:
        spec = self.options(space)
        if not spec.penalty:
            raise SpaceError(f"{self.space_key}.penalty: give at least one value")
        for value in spec.penalty:
            self._options(spec, value)
        self._train(spec, space.seed)

    def jobs(self, ctx: PlanContext) -> list[Job]:
        spec = self.options(ctx.space)
        train = self._train(spec, ctx.space.seed)

        def config_of(base: Job, penalty: float) -> StageConfig:
            model = replace(base.config.model, gate=KIND)
            options = asdict(self._options(spec, penalty))
            return StageConfig(model, ctx.data, train, options=options)

        return finetune_jobs(ctx, self, spec.penalty, config_of)

    def phase_gate(self, phase: str) -> str:
        return KIND

    def phase_options(self, phase: str) -> type:
        return BlockDropOptions

    def train_config(self, phase: str, given: dict) -> TrainConfig:
        kw = {"lr": LR, "weight_decay": WEIGHT_DECAY, "batch_size": BATCH_SIZE}
        return TrainConfig(phase=phase, lr_milestones=(), **{**kw, **given})

    def train_fields(self, phase: str) -> tuple[str, ...]:
        return TRAIN_FIELDS

    def build_model(self, cfg: StageConfig) -> nn.Module:
        model = super().build_model(cfg)
        model.set_pool(BlockDropOptions(**cfg.options).policy_pool)
        return model

    def objective(self, cfg: StageConfig, costs) -> BlockDropObjective:
        return BlockDropObjective(cfg.train, BlockDropOptions(**cfg.options), costs.num_gates)

    def count_costs(self, model: nn.Module, input_shape: tuple[int, int, int]):
        return count_blockdrop_costs(unwrap(model), input_shape)

    def params(self, job: Job) -> dict:
        opts = dict(job.config.options)
        opts.pop("penalty", None)  # a coordinate already
        return opts


# --- exact MACs: the backbone's table plus the policy, counted once per sample ------------


class BlockDropCostTable(CostTable):
    """``CostTable`` of the backbone plus the policy network, which runs for every sample
    whatever it decides (official test.py L81 counts it too: ``count_flops(agent) +
    count_flops(rnet)``). The backbone's gate lists are zeros; the policy is its own term.

    Attributes (beyond ``CostTable``'s):
        policy_conv: convolution MACs of the policy network (at its pooled input).
        policy_linear: linear MACs of its output layer.
    """

    def __init__(self, backbone: CostTable, policy_conv: int, policy_linear: int):
        super().__init__(**asdict(backbone))
        self.policy_conv = policy_conv
        self.policy_linear = policy_linear

    @property
    def num_gates(self) -> int:
        return len(self.block) - 1

    @property
    def gate_total(self) -> int:
        return self.policy_conv + self.policy_linear

    @property
    def full_conv(self) -> int:
        return self.plain_conv + self.policy_conv

    def per_sample(self, executed: Tensor, *, conv_only: bool = False) -> Tensor:
        policy = self.policy_conv + (0 if conv_only else self.policy_linear)
        return super().per_sample(executed, conv_only=conv_only) + policy

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(
            gate_macs=self.gate_total,
            gate_conv_macs=self.policy_conv,
            gate_share_pct=100.0 * self.gate_total / self.full_total,
            num_gates=self.num_gates,
            gate_macs_each=[],
            policy_conv_macs=self.policy_conv,
            policy_linear_macs=self.policy_linear,
        )
        return d


def count_blockdrop_costs(
    model: BlockDropResNet, input_shape: tuple[int, int, int]
) -> BlockDropCostTable:
    """The per-sample cost table of ``model`` at ``input_shape`` (C, H, W): the backbone's
    as ``flops.count_costs`` measures it (which attributes layers by name and leaves the
    ``policy.*`` ones out), and the policy's own, at the input it reads."""
    c, h, w = input_shape
    k = model.pool
    policy = count_costs(model.policy, (c, h // k, w // k))
    return BlockDropCostTable(count_costs(model, input_shape), policy.plain_conv, policy.head)
