"""Stages: config validation, the HRL objective (Eq. 5-8) against hand computation, the
training loop's step/lr/NaN/resume accounting, and end-to-end runs of tiny stages on
synthetic data (determinism, SP -> HRL+SP hand-over, alpha's effect, evaluation metrics)."""

from __future__ import annotations

import copy
import csv
import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from skipnet_sweep import metrics as M
from skipnet_sweep.data import build_loaders, dataset_info
from skipnet_sweep.flops import count_costs
from skipnet_sweep.methods import build_objective
from skipnet_sweep.models import ModelConfig, SkipOutput
from skipnet_sweep.runner import complete_model_config, run_stage, summary_line
from skipnet_sweep.stages import (
    DataConfig,
    NonFiniteLossError,
    StageConfig,
    TrainConfig,
    evaluate,
    hrl_defaults,
    load_checkpoint,
    load_model,
    train_loop,
)
from skipnet_sweep.stages.checkpoint import make_payload, save_checkpoint
from skipnet_sweep.stages.loop import IMAGES_PER_S, PEAK_MEM_MB
from skipnet_sweep.stages.objectives import (
    HybridRL,
    LossResult,
    Supervised,
    discounted_returns,
    gate_costs,
)

# A tiny synthetic task: 1x16x16 images, 4 classes, 256 training and 64 test images.
SYN = {"size": 256, "channels": 1, "image_size": 16, "classes": 4}
DATA = DataConfig(dataset="synthetic", synthetic=SYN)
ARCH, GATE = "cifar_resnet8", "ff2"  # 3 blocks, 2 gates


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the CPU is shared, and oversubscribed threads made these tiny
    networks several times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sp_config(**train) -> StageConfig:
    kw = {"phase": "sp", "iterations": 16, "batch_size": 32, "lr": 0.05, "seed": 0, **train}
    return StageConfig(ModelConfig(ARCH, GATE), DATA, TrainConfig(**kw))


def params(path) -> dict[str, torch.Tensor]:
    """Trainable parameters stored in a checkpoint (BN running stats excluded: they move
    in a training-mode forward pass even at lr 0)."""
    model, _ = load_model(path)
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.fixture(scope="module")
def sp_run(tmp_path_factory):
    """One SP stage, shared: (result, checkpoint path)."""
    out = tmp_path_factory.mktemp("sp") / "sp.pt"
    result = run_stage(sp_config(), out, progress=False)
    return result, out


@pytest.fixture(scope="module")
def eval_setup(sp_run):
    """The SP network, the synthetic test loader and the cost table at 1x16x16."""
    model, _ = load_model(sp_run[1])
    _, test_loader, info = build_loaders("synthetic", batch_size=32, **DATA.loader_kwargs())
    costs = count_costs(model, (info.in_channels, *info.input_size))
    return model, test_loader, costs


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"iterations": 5, "epochs": 1.0}, "iterations or epochs"),
        ({}, "iterations or epochs"),
        ({"iterations": 0}, "iterations"),
        ({"epochs": 0.0}, "epochs"),
        ({"iterations": 1, "alpha": -0.1}, "alpha"),
        ({"iterations": 1, "lr": -1.0}, "lr"),
        ({"iterations": 1, "rl_weight": -1.0}, "rl_weight"),
        ({"iterations": 1, "batch_size": 0}, "batch_size"),
        ({"iterations": 1, "phase": "finetune"}, "phase 'finetune'"),
        ({"iterations": 1, "gating": "gumbel"}, "gating 'gumbel'"),
        ({"iterations": 1, "cost": "latency"}, "cost 'latency'"),
        ({"iterations": 1, "eval_path": "dense"}, "eval_path 'dense'"),
        ({"iterations": 1, "gamma": 1.5}, "gamma"),
        ({"iterations": 1, "gamma": -0.1}, "gamma"),
        ({"iterations": 1, "gamma": float("nan")}, "gamma"),
        ({"iterations": 1, "lr_milestones": (0.5, 1.0)}, "lr_milestones"),
        ({"iterations": 1, "lr_schedule": "cosine"}, "lr_schedule 'cosine'"),
        ({"iterations": 1, "one_cycle_peak": 1.0}, "one_cycle_peak"),
        ({"iterations": 1, "one_cycle_peak": -0.1}, "one_cycle_peak"),
    ],
)
def test_train_config_rejects_bad_values_naming_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kw)


@pytest.mark.parametrize("kw", [{"eval_every": 0}, {"eval_every": -2}, {"lr_decay": -0.1}])
def test_train_config_rejects_nonsense_eval_every_and_lr_decay(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        TrainConfig(iterations=1, **kw)


def test_train_config_normalises_milestones_and_hrl_defaults():
    assert TrainConfig(iterations=1, lr_milestones=[0.25, 0.5]).lr_milestones == (0.25, 0.5)
    h = hrl_defaults()
    assert (h.phase, h.lr, h.lr_milestones, h.iterations, h.epochs) == (
        "hrl",
        1e-4,
        (),
        10_000,
        None,
    )
    h = hrl_defaults(epochs=2.0, alpha=0.3)
    assert (h.iterations, h.epochs, h.alpha) == (None, 2.0, 0.3)


def test_stage_config_refuses_gate_mismatch():
    with pytest.raises(ValueError, match="baseline.*gate"):
        StageConfig(ModelConfig(ARCH, "rnn"), DATA, TrainConfig(phase="baseline", iterations=1))
    for phase in ("sp", "hrl"):
        with pytest.raises(ValueError, match=f"the {phase} phase needs a gate"):
            StageConfig(ModelConfig(ARCH, None), DATA, TrainConfig(phase=phase, iterations=1))


def test_a_methods_config_check_runs_on_every_config_of_its_phase():
    """StageConfig names no method: the network a stage needs is its method's check."""
    from skipnet_sweep.methods import register_method, unregister_method
    from skipnet_sweep.methods.base import Method

    class Fixed(Method):
        name = "fixedkind"
        phases = ("fixedkind",)

        def phase_gate(self, phase):
            return "act"

        def jobs(self, ctx):
            return []

        def objective(self, cfg, costs):
            raise AssertionError("not trained here")

    register_method(Fixed)
    try:
        train = TrainConfig(phase="fixedkind", iterations=1)
        with pytest.raises(ValueError, match="the fixedkind phase trains a act network: set gate"):
            StageConfig(ModelConfig(ARCH, "rnn"), DATA, train)
        assert StageConfig(ModelConfig(ARCH, "act"), DATA, train).model.gate == "act"
    finally:
        unregister_method("fixedkind")
    with pytest.raises(ValueError, match="'fixedkind' is not registered"):
        TrainConfig(phase="fixedkind", iterations=1)


@pytest.mark.parametrize(
    ("gate", "train", "init", "variant"),
    [
        (GATE, {"phase": "sp"}, None, "sp"),
        (GATE, {"phase": "sp", "gating": "soft"}, None, "soft"),
        (GATE, {"phase": "hrl"}, "sp.pt", "hrl+sp"),
        (GATE, {"phase": "hrl"}, None, "hrl+s"),
        (GATE, {"phase": "hrl", "supervised": False}, "sp.pt", "rl"),
        (GATE, {"phase": "hrl", "supervised": False}, None, "rl"),
        (None, {"phase": "baseline"}, None, "baseline"),
    ],
)
def test_stage_config_variant(gate, train, init, variant):
    cfg = StageConfig(ModelConfig(ARCH, gate), DATA, TrainConfig(iterations=1, **train), init)
    assert cfg.variant == variant


def test_stage_config_round_trip_and_key():
    cfg = StageConfig(
        ModelConfig(ARCH, "rnn", 4, 1),
        DATA,
        hrl_defaults(alpha=0.5, lr_milestones=(0.5,), iterations=7),
        init="sp.pt",
    )
    d = cfg.to_dict()
    assert d["train"]["alpha"] == 0.5 and d["data"]["synthetic"] == SYN and d["init"] == "sp.pt"
    back = StageConfig.from_dict(d)
    assert back == cfg and back.train.lr_milestones == (0.5,)
    # The same config built again has the same key; the key is a short hex digest.
    again = StageConfig.from_dict(copy.deepcopy(d))
    assert again.key() == cfg.key() == back.key()
    assert len(cfg.key()) == 16 and int(cfg.key(), 16) >= 0
    # Anything that changes the result changes the key.
    assert cfg.with_train(alpha=0.6).key() != cfg.key()
    assert cfg.with_train(seed=1).key() != cfg.key()
    assert StageConfig(cfg.model, cfg.data, cfg.train, init=None).key() != cfg.key()


def test_complete_model_config_fills_from_synthetic_keywords():
    cfg = complete_model_config(sp_config())
    assert (cfg.model.num_classes, cfg.model.in_channels) == (4, 1)
    assert (cfg.model.arch, cfg.model.gate) == (ARCH, GATE)


def test_complete_model_config_takes_classes_and_channels_from_the_data():
    cfg = StageConfig(ModelConfig(ARCH, GATE, 7, 2), DATA, TrainConfig(iterations=1))
    model = complete_model_config(cfg).model
    info = DATA.synthetic
    assert (model.num_classes, model.in_channels) == (info["classes"], info["channels"])


# --------------------------------------------------------------------------- objectives


def test_discounted_returns_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.5, 0.0]])
    final = torch.tensor([-1.0, -2.0])
    expect1 = torch.tensor([[5.0, 4.0, 2.0], [-1.5, -1.5, -2.0]])
    torch.testing.assert_close(discounted_returns(rewards, final, 1.0), expect1)
    # gamma 0.5: R3 = r3 + final/2, R2 = r2 + R3/2, R1 = r1 + R2/2.
    expect_half = torch.tensor([[2.625, 3.25, 2.5], [0.0, 0.0, -1.0]])
    torch.testing.assert_close(discounted_returns(rewards, final, 0.5), expect_half)
    torch.testing.assert_close(discounted_returns(rewards, final, 0.0), rewards)
    assert final.tolist() == [-1.0, -2.0]  # inputs untouched


# Two samples, three gates: sample 0 skips gates 1 and 3, sample 1 skips gate 2.
EXECUTED = torch.tensor([[False, True, False], [True, False, True]])
CLASS_LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]])
TARGET = torch.tensor([0, 2])
GATE_LOGITS = [[-0.4, 1.2, 0.3], [0.8, -1.5, 2.0]]


def fake_output() -> tuple[SkipOutput, torch.Tensor]:
    """A SkipOutput whose log-probabilities come from gate logits that require grad."""
    gate_logits = torch.tensor(GATE_LOGITS, requires_grad=True)
    actions = EXECUTED.float()
    log_probs = -F.binary_cross_entropy_with_logits(gate_logits, actions, reduction="none")
    out = SkipOutput(CLASS_LOGITS.clone(), EXECUTED.clone(), torch.sigmoid(gate_logits), log_probs)
    return out, gate_logits


def hand_hrl(
    alpha,
    gamma,
    rl_weight,
    supervised,
    costs=(1.0, 1.0, 1.0),
    baseline=False,
    reduction="mean",
    terminal_scale=1.0,
):
    """Eq. 5-8 written out with Python floats (gate actions only)."""
    n, b = 3, 2
    ce = []
    for s in range(b):
        row = CLASS_LOGITS[s].tolist()
        lse = math.log(sum(math.exp(v) for v in row))
        ce.append(lse - row[int(TARGET[s])])
    returns = []
    for s in range(b):
        r = [alpha / n * (0.0 if EXECUTED[s, i] else 1.0) * costs[i] for i in range(n)]
        ret, running = [0.0] * n, -ce[s] * terminal_scale
        for i in reversed(range(n)):
            running = r[i] + gamma * running
            ret[i] = running
        returns.append(ret)
    if baseline:
        means = [sum(returns[s][i] for s in range(b)) / b for i in range(n)]
        returns = [[returns[s][i] - means[i] for i in range(n)] for s in range(b)]
    logp = []
    for s in range(b):
        row = []
        for i in range(n):
            p = 1 / (1 + math.exp(-GATE_LOGITS[s][i]))
            row.append(math.log(p if EXECUTED[s, i] else 1 - p))
        logp.append(row)
    per_gate = [sum(logp[s][i] * returns[s][i] for s in range(b)) for i in range(n)]
    rl = -sum(per_gate) / (b if reduction == "mean" else 1) * rl_weight
    return rl + (sum(ce) / b if supervised else 0.0), rl, ce


def hrl_cfg(**kw) -> TrainConfig:
    base = {
        "phase": "hrl",
        "iterations": 1,
        "alpha": 0.6,
        "gamma": 0.9,
        "rl_weight": 0.5,
        "rl_reduction": "mean",
    }
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize(("terminal", "scale"), [("one", 1.0), ("alpha_over_n", 0.2)])
def test_hybrid_rl_loss_matches_hand_computation(reduction, terminal, scale):
    out, _ = fake_output()
    cfg = hrl_cfg(rl_reduction=reduction, terminal_scale=terminal)
    res = HybridRL(cfg, torch.ones(3))(out, TARGET)
    loss, rl, ce = hand_hrl(
        0.6, 0.9, 0.5, supervised=True, reduction=reduction, terminal_scale=scale
    )
    assert res.loss.item() == pytest.approx(loss, rel=1e-5)
    assert res.logs["rl_loss"].item() == pytest.approx(rl, rel=1e-5)
    assert res.logs[M.TRAIN_LOSS].item() == pytest.approx(sum(ce) / 2, rel=1e-5)
    # Episode reward: skip rewards (2 and 1 skips of alpha/3) minus the scaled prediction loss.
    reward = ((2 * 0.2 - scale * ce[0]) + (1 * 0.2 - scale * ce[1])) / 2
    assert res.logs[M.REWARD].item() == pytest.approx(reward, rel=1e-5)


def test_pure_rl_drops_cross_entropy_and_reinforces_the_sampled_prediction():
    logits = CLASS_LOGITS.clone().requires_grad_(True)
    out = fake_output()[0]._replace(logits=logits)
    torch.manual_seed(3)
    res = HybridRL(hrl_cfg(supervised=False), torch.ones(3))(out, TARGET)
    torch.manual_seed(3)
    pred = torch.multinomial(torch.softmax(CLASS_LOGITS, 1), 1).squeeze(1)
    log_p = torch.log_softmax(CLASS_LOGITS, 1)
    correct = (pred == TARGET).float()
    _, rl_gates, _ = hand_hrl(0.6, 0.9, 0.5, supervised=False)
    # The prediction's REINFORCE term, averaged like the gates': no cross-entropy anywhere.
    rl_pred = -(log_p[torch.arange(2), pred] * correct).mean().item() * 0.5
    assert res.loss.item() == pytest.approx(rl_gates + rl_pred, rel=1e-5)
    assert res.logs["train_sampled_top1"].item() == pytest.approx(correct.mean().item())
    res.loss.backward()
    # d/dlogits of -w/B * r * log p(pred) = w/B * r * (softmax - onehot(pred)).
    expect = 0.5 / 2 * correct[:, None] * (torch.softmax(CLASS_LOGITS, 1) - F.one_hot(pred, 3))
    torch.testing.assert_close(logits.grad, expect)


def test_reward_baseline_subtracts_per_gate_batch_mean():
    out, _ = fake_output()
    res = HybridRL(hrl_cfg(reward_baseline=True), torch.ones(3))(out, TARGET)
    loss, _, _ = hand_hrl(0.6, 0.9, 0.5, supervised=True, baseline=True)
    assert res.loss.item() == pytest.approx(loss, rel=1e-5)
    plain = HybridRL(hrl_cfg(), torch.ones(3))(fake_output()[0], TARGET)
    assert res.loss.item() != pytest.approx(plain.loss.item(), rel=1e-3)


def test_larger_alpha_pushes_a_skipped_gate_further_towards_skipping():
    grads = {}
    for alpha in (0.0, 3.0, 30.0):
        out, gate_logits = fake_output()
        HybridRL(hrl_cfg(alpha=alpha), torch.ones(3))(out, TARGET).loss.backward()
        grads[alpha] = gate_logits.grad.clone()
    # Sample 0 skipped gate 0. d loss / d logit = rl_weight * p * R / B for a skip, so a
    # larger alpha gives a larger positive gradient: SGD lowers the logit, i.e. the
    # execute probability, i.e. skips more.
    assert grads[0.0][0, 0] < grads[3.0][0, 0] < grads[30.0][0, 0]
    assert grads[30.0][0, 0] > 0
    p = torch.sigmoid(torch.tensor(GATE_LOGITS[0][0])).item()
    _, _, ce = hand_hrl(30.0, 0.9, 0.5, supervised=True)
    r0 = 10 + 0.9 * 0 + 0.81 * 10 - 0.729 * ce[0]  # gates 0 and 2 skipped, alpha/N = 10
    assert grads[30.0][0, 0].item() == pytest.approx(0.5 * p * r0 / 2, rel=1e-4)
    # Summed over the batch (official CIFAR), the same gradient without the 1 / B.
    out, gate_logits = fake_output()
    HybridRL(hrl_cfg(alpha=30.0, rl_reduction="sum"), torch.ones(3))(out, TARGET).loss.backward()
    assert gate_logits.grad[0, 0].item() == pytest.approx(0.5 * p * r0, rel=1e-4)


def test_flops_cost_uses_normalised_savings():
    savings = [10, 30, 20]
    costs = gate_costs(savings, 3)
    torch.testing.assert_close(costs, torch.tensor([0.5, 1.5, 1.0]))
    assert costs.mean().item() == pytest.approx(1.0)
    torch.testing.assert_close(gate_costs(None, 4), torch.ones(4))
    obj = objective_of(hrl_cfg(cost="flops"), savings)
    torch.testing.assert_close(obj.costs, costs)
    res = obj(fake_output()[0], TARGET)
    loss, _, _ = hand_hrl(0.6, 0.9, 0.5, supervised=True, costs=(0.5, 1.5, 1.0))
    assert res.loss.item() == pytest.approx(loss, rel=1e-5)
    # cost: uniform ignores the savings.
    torch.testing.assert_close(objective_of(hrl_cfg(), savings).costs, torch.ones(3))


class _Savings:
    """A cost table reduced to what an objective reads of it."""

    def __init__(self, savings):
        self.savings = list(savings or [])

    def skip_savings(self):
        return self.savings


def objective_of(train: TrainConfig, savings=None):
    """The objective the method registry gives ``train``'s phase."""
    gate = {"baseline": None, "act": "act", "sact": "sact"}.get(train.phase, "rnn")
    cfg = StageConfig(ModelConfig("cifar_resnet8", gate), DataConfig("synthetic"), train)
    return build_objective(cfg, _Savings(savings))


def test_supervised_objective_and_build_objective_per_phase():
    out, _ = fake_output()
    res = Supervised()(out, TARGET)
    assert res.loss.item() == pytest.approx(F.cross_entropy(CLASS_LOGITS, TARGET).item())
    assert list(res.logs) == [M.TRAIN_LOSS]
    assert res.logs[M.TRAIN_LOSS].item() == pytest.approx(res.loss.item())
    modes = {
        "baseline": objective_of(TrainConfig(phase="baseline", iterations=1)),
        "sp": objective_of(TrainConfig(phase="sp", iterations=1), [1, 2]),
        "soft": objective_of(TrainConfig(phase="sp", gating="soft", iterations=1), [1, 2]),
        "hrl": objective_of(hrl_cfg(), [1, 2]),
    }
    assert {k: o.gate_mode for k, o in modes.items()} == {
        "baseline": "threshold",
        "sp": "hard",
        "soft": "soft",
        "hrl": "sample",
    }
    assert isinstance(modes["sp"], Supervised) and isinstance(modes["hrl"], HybridRL)


# --------------------------------------------------------------------------- training loop


class TinyNet(nn.Module):
    """A linear classifier that speaks the SkipOutput protocol (no gates)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)

    def forward(self, x, mode=None, path="masked"):
        logits = self.fc(x)
        b = x.shape[0]
        return SkipOutput(logits, logits.new_zeros(b, 0).bool(), logits.new_zeros(b, 0), None)


class Counting(Supervised):
    """Cross-entropy that counts its calls and can return NaN at a given call."""

    def __init__(self, nan_at: int | None = None, value: float = float("nan")):
        super().__init__("hard")
        self.calls, self.nan_at, self.value = 0, nan_at, value

    def __call__(self, out, target):
        self.calls += 1
        res = super().__call__(out, target)
        if self.calls == self.nan_at:
            return LossResult(res.loss * self.value, res.logs)
        return res


def tiny_loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)  # 4 steps per epoch


def loop_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"phase": "sp", "lr": 0.1, "weight_decay": 0.0, **kw})


def test_train_loop_runs_exactly_the_configured_iterations():
    obj, seen = Counting(), []
    state = train_loop(
        TinyNet(),
        obj,
        tiny_loader(),
        loop_cfg(iterations=10, eval_every=3),
        on_eval=lambda s, logs: seen.append((s.step, logs[M.EPOCH])),
        progress=False,
    )
    assert (state.step, state.total, obj.calls) == (10, 10, 10)
    assert state.scheduler.last_epoch == 10  # one scheduler step per optimiser step
    assert [s for s, _ in seen] == [3, 6, 9, 10]  # every 3 steps and at the last one
    assert seen[-1][1] == pytest.approx(2.5)


def test_train_loop_epochs_evaluates_once_per_epoch():
    obj, seen = Counting(), []
    state = train_loop(
        TinyNet(),
        obj,
        tiny_loader(),
        loop_cfg(epochs=1.5),
        on_eval=lambda s, logs: seen.append((s.step, logs[M.EPOCH], logs[M.TRAIN_LOSS])),
        progress=False,
    )
    assert state.step == obj.calls == 6  # ceil(1.5 * 4)
    assert [(s, e) for s, e, _ in seen] == [(4, 1.0), (6, 1.5)]
    assert all(math.isfinite(loss) for *_, loss in seen)


def test_train_loop_applies_lr_milestones_at_the_right_steps():
    lrs = []
    state = train_loop(
        TinyNet(),
        Counting(),
        tiny_loader(),
        loop_cfg(iterations=8, eval_every=1, lr_milestones=(0.5, 0.75), lr_decay=0.1),
        on_eval=lambda s, logs: lrs.append(logs[M.LR]),
        progress=False,
    )
    # Milestones at steps 4 and 6 of 8: lr after each step.
    assert lrs == pytest.approx([0.1] * 3 + [0.01] * 2 + [0.001] * 3)
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1**2)


def test_one_cycle_rises_to_lr_at_its_peak_then_falls_to_near_zero():
    lrs = []
    train_loop(
        TinyNet(),
        Counting(),
        tiny_loader(),
        loop_cfg(iterations=10, eval_every=1, lr_schedule="one_cycle", one_cycle_peak=0.2),
        on_eval=lambda s, logs: lrs.append(logs[M.LR]),
        progress=False,
    )
    # Peak at step 2 of 10; the lr logged after step k is the rate of the next step
    # (0-based index k): (k + 1) / 2 up to the peak, (10 - k) / 8 from it.
    assert lrs == pytest.approx(
        [0.1 * f for f in (1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0)]
    )


def test_one_cycle_keeps_the_constant_warm_up_first():
    lrs = []
    train_loop(
        TinyNet(),
        Counting(),
        tiny_loader(),
        loop_cfg(
            iterations=4,
            eval_every=1,
            lr_schedule="one_cycle",
            one_cycle_peak=0.0,
            warmup_iterations=2,
            warmup_lr=0.01,
        ),
        on_eval=lambda s, logs: lrs.append(logs[M.LR]),
        progress=False,
    )
    # The rate of the step after each: warm-up for steps 0-1, then (4 - s) / 4 of lr.
    assert lrs == pytest.approx([0.01, 0.05, 0.025, 0.0])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_train_loop_non_finite_loss_names_the_step(value):
    model = TinyNet()
    with pytest.raises(NonFiniteLossError, match=r"sp loss became (nan|inf) at step 3"):
        train_loop(
            model,
            Counting(nan_at=3, value=value),
            tiny_loader(),
            loop_cfg(iterations=5),
            progress=False,
        )


def test_non_finite_check_runs_every_n_steps_and_before_any_evaluation():
    """The check reads the device every ``nan_check_every`` steps, not every step, yet names
    the first bad step, and no evaluation ever sees the weights after it."""
    obj, evals = Counting(nan_at=3), []
    with pytest.raises(NonFiniteLossError, match=r"sp loss became nan at step 3$"):
        train_loop(
            TinyNet(),
            obj,
            tiny_loader(),
            loop_cfg(iterations=20, eval_every=10, nan_check_every=5),
            on_eval=lambda s, logs: evals.append(s.step),
            progress=False,
        )
    assert obj.calls == 5 and evals == []  # found at the step-5 check
    obj = Counting(nan_at=3)
    with pytest.raises(NonFiniteLossError, match=r"at step 3$"):
        train_loop(
            TinyNet(),
            obj,
            tiny_loader(),
            loop_cfg(iterations=20, eval_every=4, nan_check_every=50),
            on_eval=lambda s, logs: evals.append(s.step),
            progress=False,
        )
    assert obj.calls == 4 and evals == []  # found at the first evaluation instead


class Interrupt(Exception):
    pass


def test_train_loop_resume_continues_from_saved_step():
    cfg = loop_cfg(iterations=10, eval_every=4, lr_milestones=(0.5,))
    # Uninterrupted reference.
    ref = TinyNet()
    train_loop(ref, Counting(), tiny_loader(), cfg, progress=False)
    # Interrupted at step 4 (an epoch boundary, so the unshuffled data order matches).
    saved = {}

    def stop(state, logs):
        saved.update(
            model=copy.deepcopy(state.model.state_dict()),
            optimizer=copy.deepcopy(state.optimizer.state_dict()),
            scheduler=copy.deepcopy(state.scheduler.state_dict()),
            step=state.step,
        )
        raise Interrupt

    with pytest.raises(Interrupt):
        train_loop(TinyNet(), Counting(), tiny_loader(), cfg, on_eval=stop, progress=False)
    assert saved["step"] == 4
    model, obj, steps = TinyNet(), Counting(), []
    model.load_state_dict(saved["model"])
    state = train_loop(
        model,
        obj,
        tiny_loader(),
        cfg,
        resume=saved,
        on_eval=lambda s, logs: steps.append(s.step),
        progress=False,
    )
    assert (state.step, obj.calls, steps) == (10, 6, [8, 10])
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)


# --------------------------------------------------------------------------- run_stage


def without_timing(metrics: dict[str, float]) -> dict[str, float]:
    return {
        k: v
        for k, v in metrics.items()
        if k not in (IMAGES_PER_S, PEAK_MEM_MB) and not M.is_latency(k)
    }


def test_run_stage_is_deterministic_per_seed(sp_run, tmp_path):
    first, first_path = sp_run
    again = run_stage(sp_config(), tmp_path / "again.pt", progress=False)
    run_stage(sp_config(seed=1), tmp_path / "other.pt", progress=False)
    # Everything but the wall-clock throughput repeats exactly.
    assert without_timing(again.metrics) == without_timing(first.metrics)
    assert [without_timing(h) for h in again.history] == [without_timing(h) for h in first.history]
    assert first.metrics[IMAGES_PER_S] > 0 and PEAK_MEM_MB not in first.metrics  # CPU run
    a, b, c = params(first_path), params(tmp_path / "again.pt"), params(tmp_path / "other.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_run_stage_final_metrics_and_checkpoint(sp_run):
    result, path = sp_run
    # Evaluated every epoch (8 steps of 32) and at the end; the final evaluation of the
    # unchanged network repeats the last report.
    assert len(result.history) == 2 and result.history[-1][M.EPOCH] == pytest.approx(2.0)
    for k in M.EVAL_METRICS:
        assert result.metrics[k] == result.history[-1][k]
    payload = load_checkpoint(path)
    assert payload["step"] == 16 and payload["input_shape"] == [1, 16, 16]
    assert payload["model_config"] == {
        "arch": ARCH,
        "gate": GATE,
        "num_classes": 4,
        "in_channels": 1,
        "gate_out_std": None,
    }
    assert StageConfig.from_dict(payload["stage_config"]) == complete_model_config(sp_config())
    assert payload["metrics"][M.TOP1] == result.metrics[M.TOP1]
    assert "optimizer" not in payload  # the final checkpoint is for inference


def test_hrl_starts_from_the_sp_weights(sp_run, tmp_path):
    _, sp_path = sp_run
    cfg = StageConfig(
        ModelConfig(ARCH, GATE),
        DATA,
        hrl_defaults(iterations=1, lr=0.0, batch_size=32),
        init=str(sp_path),
    )
    assert cfg.variant == "hrl+sp"
    run_stage(cfg, tmp_path / "hrl.pt", progress=False)
    before, after = params(sp_path), params(tmp_path / "hrl.pt")
    assert before.keys() == after.keys() and any(k.startswith("gates.") for k in after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert load_checkpoint(tmp_path / "hrl.pt")["stage_config"]["init"] == str(sp_path)


def test_baseline_checkpoint_initialises_the_backbone_only(tmp_path):
    base_cfg = StageConfig(
        ModelConfig(ARCH, None),
        DATA,
        TrainConfig(phase="baseline", iterations=4, batch_size=32, lr=0.05),
    )
    run_stage(base_cfg, tmp_path / "base.pt", progress=False)
    frozen = {"iterations": 1, "lr": 0.0}
    run_stage(
        StageConfig(
            ModelConfig(ARCH, GATE), DATA, sp_config(**frozen).train, str(tmp_path / "base.pt")
        ),
        tmp_path / "from_base.pt",
        progress=False,
    )
    run_stage(sp_config(**frozen), tmp_path / "fresh.pt", progress=False)
    base, init, fresh = (params(tmp_path / f) for f in ("base.pt", "from_base.pt", "fresh.pt"))
    backbone = [k for k in init if not k.startswith("gates.")]
    gates = [k for k in init if k.startswith("gates.")]
    assert gates and sorted(backbone) == sorted(base)
    assert all(torch.equal(init[k], base[k]) for k in backbone)
    assert any(not torch.equal(init[k], fresh[k]) for k in backbone)
    # The gates are the fresh initialisation of the same seed.
    assert all(torch.equal(init[k], fresh[k]) for k in gates)


def test_large_alpha_skips_more_than_alpha_zero(sp_run, tmp_path):
    # Start from the SP network with its gates biased to execute (p = 0.88) so that only
    # the reward can make them skip; alpha 0 rewards accuracy alone.
    model, payload = load_model(sp_run[1])
    with torch.no_grad():
        for gate in model.gates:
            gate.fc.weight.mul_(0.1)
            gate.fc.bias.fill_(2.0)
    start = save_checkpoint(tmp_path / "sp_open.pt", make_payload(model, payload["stage_config"]))
    ratios = {}
    for alpha in (0.0, 50.0):
        train = hrl_defaults(alpha=alpha, iterations=24, batch_size=32, lr=0.05, rl_weight=1.0)
        cfg = StageConfig(ModelConfig(ARCH, GATE), DATA, train, init=str(start))
        ratios[alpha] = run_stage(cfg, progress=False).metrics[M.SKIP_RATIO]
    assert ratios[50.0] >= ratios[0.0] + 0.5, ratios


def test_run_stage_reports_and_resumes_from_a_reported_checkpoint(tmp_path):
    cfg = sp_config(iterations=8, eval_every=4, lr_milestones=(0.5,))
    mid = tmp_path / "mid.pt"
    reports = []

    def on_report(step, metrics, save):
        reports.append(step)
        if step == 4:
            save(mid)

    run_stage(cfg, progress=False, on_report=on_report)
    assert reports == [4, 8]
    payload = load_checkpoint(mid)
    assert payload["step"] == 4 and {"optimizer", "scheduler"} <= payload.keys()
    reports.clear()
    resumed = run_stage(cfg, tmp_path / "end.pt", progress=False, on_report=on_report, resume=mid)
    assert reports == [8] and len(resumed.history) == 1
    assert load_checkpoint(tmp_path / "end.pt")["step"] == 8
    assert resumed.metrics[M.LR] == pytest.approx(0.05 * 0.1)


@pytest.mark.parametrize("stage", ["sp", "hrl"])
def test_a_resumed_stage_ends_where_the_uninterrupted_one_ends(stage, sp_run, tmp_path):
    # Reports every 3 steps of 8-step passes: the checkpoint at step 12 is in the middle of
    # the second pass. HRL+SP samples its gate actions and starts from an SP checkpoint.
    init = tmp_path / "sp.pt"
    init.write_bytes(sp_run[1].read_bytes())
    hrl = hrl_defaults(iterations=16, eval_every=3, batch_size=32, lr=0.05, rl_weight=1.0)
    cfg = {
        "sp": sp_config(iterations=16, eval_every=3),
        "hrl": StageConfig(ModelConfig(ARCH, GATE), DATA, hrl, init=str(init)),
    }[stage]
    mid = tmp_path / "mid.pt"

    def keep(step, metrics, save):
        if step == 12:
            save(mid)

    whole = run_stage(cfg, tmp_path / "whole.pt", progress=False, on_report=keep)
    # What the resume must not depend on: the initial checkpoint (its cache entry may have
    # changed since) and the random state the resuming process starts in.
    init.write_bytes(b"")
    torch.manual_seed(123)
    resumed = run_stage(cfg, tmp_path / "resumed.pt", progress=False, resume=mid)
    assert [without_timing(h) for h in resumed.history] == [
        without_timing(h) for h in whole.history[4:]
    ]
    assert without_timing(resumed.metrics) == without_timing(whole.metrics)
    a = load_checkpoint(tmp_path / "whole.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "resumed.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_random_streams_round_trip_through_a_checkpoint_file(tmp_path):
    import random

    from skipnet_sweep.stages.streams import rng_state, set_rng_state

    cpu, g = torch.device("cpu"), torch.Generator().manual_seed(5)
    np.random.seed(1), random.seed(2), torch.manual_seed(3)
    torch.save(rng_state(cpu, g), tmp_path / "streams.pt")

    def draws():
        return (
            np.random.rand(3).tolist(),
            random.random(),
            torch.rand(3),
            torch.rand(3, generator=g),
        )

    first = draws()
    np.random.seed(9), random.seed(9), torch.manual_seed(9), g.manual_seed(9)
    # As checkpoints are read: weights_only, so the state must hold no arbitrary objects.
    set_rng_state(torch.load(tmp_path / "streams.pt", weights_only=True), cpu, g)
    again = draws()
    assert first[:2] == again[:2] and all(
        torch.equal(a, b) for a, b in zip(first[2:], again[2:], strict=True)
    )


def test_a_checkpoint_without_streams_still_resumes(tmp_path):
    cfg = sp_config(iterations=12, eval_every=3)
    mid = tmp_path / "mid.pt"
    run_stage(cfg, progress=False, on_report=lambda step, m, save: step == 6 and save(mid))
    payload = load_checkpoint(mid)
    del payload["streams"]  # as written before the random streams were saved
    save_checkpoint(mid, payload)
    resumed = run_stage(cfg, tmp_path / "end.pt", progress=False, resume=mid)
    assert [h[M.EPOCH] for h in resumed.history] == [9 / 8, 12 / 8]


def test_summary_line():
    metrics = {
        M.TOP1: 91.234,
        M.TOP5: 99.5,
        M.FLOPS_MEAN: 1.5e6,
        M.FLOPS_STD: 0.25e6,
        M.COMPUTATION_PCT: 40.04,
        M.REDUCTION_PCT: 59.96,
        M.SKIPPED_MEAN: 1.2,
    }
    line = summary_line(sp_config(), metrics)
    assert line == (
        "sp cifar_resnet8+ff2 | test top-1 91.23% | test top-5 99.50% | MACs 1.50M ± 0.25M | "
        "40.0% of the plain ResNet (reduction 60.0%) | skipped 1.20 blocks/sample"
    )
    base = StageConfig(ModelConfig(ARCH), DATA, TrainConfig(phase="baseline", iterations=1))
    assert summary_line(base, metrics).startswith("baseline cifar_resnet8 | test top-1 91.23%")
    assert "skipped" not in summary_line(base, metrics)


# --------------------------------------------------------------------------- evaluation


def test_evaluation_metrics_follow_the_recorded_decisions(eval_setup):
    model, loader, costs = eval_setup
    res = evaluate(model, loader, costs)
    n, g = len(loader.dataset), model.num_gates
    assert res.executed.shape == (n, g) and res.labels.shape == res.preds.shape == (n,)
    assert res.executed.any() and not res.executed.all()  # a mix, so the check means something
    # Per-sample MACs from the table's parts, written out independently of per_sample().
    fixed = costs.stem + costs.block[0] + costs.gate_total + costs.head
    ex = res.executed.astype(np.float64)
    macs = fixed + ex @ np.array(costs.block[1:]) + (1 - ex) @ np.array(costs.shortcut[1:])
    np.testing.assert_allclose(res.macs, macs)
    m = res.metrics
    assert m[M.FLOPS_MEAN] == pytest.approx(macs.mean())
    assert m[M.FLOPS_STD] == pytest.approx(macs.std())
    assert m[M.FLOPS_PLAIN] == costs.plain_total and m[M.FLOPS_FULL] == costs.full_total
    assert m[M.COMPUTATION_PCT] == pytest.approx(100 * m[M.FLOPS_MEAN] / m[M.FLOPS_PLAIN])
    assert m[M.REDUCTION_PCT] == pytest.approx(100 - m[M.COMPUTATION_PCT])
    assert 0 <= m[M.TOP1] <= m[M.TOP5] <= 100
    labels = torch.cat([y for _, y in loader]).numpy()
    np.testing.assert_array_equal(res.labels, labels)
    assert m[M.TOP1] == pytest.approx(100 * (res.preds == labels).mean())
    np.testing.assert_array_equal(res.skipped, (1 - ex).sum(1))
    assert m[M.SKIPPED_MEAN] == pytest.approx((1 - ex).sum(1).mean())
    assert m[M.SKIP_RATIO] == pytest.approx((1 - ex).mean())
    for i in range(g):
        assert m[M.gate_skip_ratio(i)] == pytest.approx((1 - ex[:, i]).mean())
    assert M.gate_skip_ratio(g) not in m
    assert set(M.EVAL_METRICS) <= m.keys()


def test_sparse_and_masked_evaluation_agree(eval_setup):
    model, loader, costs = eval_setup
    sparse = evaluate(model, loader, costs, path="sparse")
    masked = evaluate(model, loader, costs, path="masked")
    np.testing.assert_array_equal(sparse.executed, masked.executed)
    np.testing.assert_array_equal(sparse.preds, masked.preds)
    assert sparse.metrics == pytest.approx(masked.metrics)
    assert not model.training  # evaluation restores the mode it found


@pytest.mark.parametrize("gating", ["hard", "soft"])
def test_evaluation_records_no_autograd_graph(eval_setup, monkeypatch, gating):
    """Evaluation runs under no_grad: logits with a graph would hold every activation of the
    test set's batches (the memory of a training step per batch)."""
    # The module, not the function of the same name the package exports.
    ev = importlib.import_module("skipnet_sweep.stages.evaluate")
    model, loader, costs = eval_setup
    seen = []
    fold = ev.folded

    def folded_and_watched(net):
        copy = fold(net)
        copy.register_forward_hook(lambda m, i, out: seen.append(out.logits.requires_grad))
        return copy

    monkeypatch.setattr(ev, "folded", folded_and_watched)
    ev.evaluate(model, loader, costs, path="masked", gating=gating)
    assert seen and not any(seen)


def test_write_artifacts(eval_setup, tmp_path):
    model, loader, costs = eval_setup
    res = evaluate(model, loader, costs)
    n = len(res.labels)
    fashion = dataset_info("fashion_mnist")
    files = res.write_artifacts(
        tmp_path, loader.dataset, k=8, mean=[0.5], std=[0.25], class_name=fashion.class_name
    )
    assert [f.name for f in files] == [M.PER_SAMPLE_CSV, M.PER_CLASS_CSV, M.EASY_HARD_NPZ]
    with (tmp_path / M.PER_SAMPLE_CSV).open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n
    assert [int(r["label"]) for r in rows] == res.labels.tolist()
    skipped = np.array([float(r["skipped"]) for r in rows])
    np.testing.assert_array_equal(skipped, res.skipped)
    np.testing.assert_allclose([float(r["macs"]) for r in rows], res.macs)
    with (tmp_path / M.PER_CLASS_CSV).open() as f:
        per_class = {int(r["label"]): r for r in csv.DictReader(f)}
    labels = res.labels
    assert sorted(per_class) == sorted(set(labels.tolist()))
    for c, r in per_class.items():
        assert r["name"] == fashion.class_names[c]
        assert float(r["median_skipped"]) == float(np.median(skipped[labels == c]))
        assert int(r["count"]) == int((labels == c).sum())
        acc = 100 * (res.preds[labels == c] == c).mean()
        assert float(r["top1"]) == pytest.approx(acc, abs=1e-4)
    with np.load(tmp_path / M.EASY_HARD_NPZ) as z:
        assert set(z.files) == {
            "easy_images",
            "easy_skipped",
            "easy_labels",
            "hard_images",
            "hard_skipped",
            "hard_labels",
            "mean",
            "std",
        }
        assert z["easy_images"].shape == z["hard_images"].shape == (8, 1, 16, 16)
        assert z["easy_skipped"].min() >= z["hard_skipped"].max()
        assert z["easy_skipped"].max() == res.skipped.max()
        assert z["hard_skipped"].min() == res.skipped.min()
        np.testing.assert_array_equal(z["mean"], [0.5])
        np.testing.assert_array_equal(z["std"], [0.25])
        # The stored images are dataset items, matched by their label and skip count.
        first = int(np.argsort(res.skipped, kind="stable")[0])
        np.testing.assert_array_equal(z["hard_images"][0], loader.dataset[first][0].numpy())
        assert z["hard_labels"][0] == res.labels[first]
    # Without the dataset only the tables are written; without names, classes are numbers.
    assert len(res.write_artifacts(tmp_path / "tables")) == 2
    with (tmp_path / "tables" / M.PER_CLASS_CSV).open() as f:
        assert all(r["name"] == r["label"] for r in csv.DictReader(f))
