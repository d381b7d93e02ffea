"""The official-code options and the GPU-grade loop: gradients reach every parameter in
every HRL variant, precisions (all runnable on the CPU), gradient accumulation, warm-up,
gate sharpening and per-block recurrent projections."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from skipnet_sweep import metrics as M
from skipnet_sweep.flops import count_costs
from skipnet_sweep.models import SkipOutput, SkipResNet, build_model, input_layout, model_input
from skipnet_sweep.models.gates import GATE_DESIGNS, RNNGate, build_gates, gate_heads
from skipnet_sweep.stages import TrainConfig
from skipnet_sweep.stages.loop import (
    _DeviceLogs,
    _load_scheduler,
    log_interval,
    make_optimizer,
    resolve_precision,
    train_loop,
)
from skipnet_sweep.stages.objectives import HybridRL, Supervised, gate_costs

SHAPE = (3, 16, 16)


def tiny_net(gate: str = "rnn", projections: str = "per_block", seed: int = 0) -> SkipResNet:
    torch.manual_seed(seed)
    return SkipResNet(
        "basic", [2, 2, 2], [4, 8, 8], "cifar", 5, gate=gate, rnn_projections=projections
    )


def image_loader(n: int = 16, batch: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, *SHAPE, generator=g)
    y = torch.randint(0, 5, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def hrl(**kw) -> TrainConfig:
    return TrainConfig(**{"phase": "hrl", "iterations": 1, "lr": 0.01, "alpha": 0.5, **kw})


def objective(model: SkipResNet, cfg: TrainConfig) -> HybridRL:
    return HybridRL(cfg, gate_costs(None, model.num_gates))


# --- every parameter learns in every variant ---------------------------------------------

GATES = [(g, "per_block") for g in GATE_DESIGNS] + [("rnn", "shared")]


@pytest.mark.parametrize(("gate", "projections"), GATES)
@pytest.mark.parametrize("variant", ["hrl+sp", "hrl+s", "rl"])
def test_every_parameter_gets_a_finite_gradient(variant, gate, projections):
    model = tiny_net(gate, projections)
    x, y = next(iter(image_loader(batch=16)))
    if variant == "hrl+sp":
        # Start from supervised pre-training (one SP step with straight-through gates).
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        Supervised("hard")(model(x, mode="hard"), y).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    obj = objective(model, hrl(supervised=variant != "rl"))
    obj(model(x, mode="sample"), y).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert bad == []
    # Pure RL reaches the classifier only through the sampled prediction's REINFORCE term.
    assert model.fc.weight.grad.abs().sum() > 0


def test_pure_rl_reward_raises_the_label_probability_in_expectation():
    """REINFORCE on the sampled prediction with reward 1[pred == label] is an unbiased
    gradient of p(label): averaged over many samples it matches the exact gradient."""
    torch.manual_seed(0)
    logits = torch.tensor([[0.5, -0.2, 1.0]]).repeat(40_000, 1).requires_grad_(True)
    target = torch.zeros(40_000, dtype=torch.long)
    b = logits.shape[0]
    out = SkipOutput(
        logits, torch.ones(b, 1, dtype=torch.bool), torch.ones(b, 1), torch.zeros(b, 1)
    )
    cfg = hrl(supervised=False, rl_reduction="mean", rl_weight=1.0, alpha=0.0)
    HybridRL(cfg, torch.ones(1))(out, target).loss.backward()
    exact = torch.autograd.functional.jacobian(
        lambda z: torch.softmax(z, 0)[0], torch.tensor([0.5, -0.2, 1.0])
    )
    # The loss is -E[reward]: its gradient is minus the gradient of p(label).
    torch.testing.assert_close(logits.grad.sum(0), -exact, atol=0.01, rtol=0)


# --- precision -----------------------------------------------------------------------------


def test_auto_precision_is_fp32_on_the_cpu_and_explicit_choices_stand():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert TrainConfig(iterations=1, precision="fast").precision == "fast"
    with pytest.raises(
        ValueError, match="precision 'fp8' is not allowed; allowed: auto, fast, fp32"
    ):
        TrainConfig(iterations=1, precision="fp8")


@pytest.mark.parametrize(("flags", "want"), [((), "fp32"), (("amx_bf16",), "bf16")])
def test_fast_precision_is_bf16_only_on_a_cpu_that_computes_it(monkeypatch, flags, want):
    import skipnet_sweep.stages.loop as loop

    monkeypatch.setattr(loop, "cpu_bf16_flags", lambda: flags)
    assert resolve_precision("fast", "cpu") == want
    assert resolve_precision("auto", "cpu") == "fp32"  # auto keeps its meaning
    line = loop.describe_precision("fast")
    assert line.startswith(f"precision fast: {want}")
    assert loop.describe_precision("auto") is None


def test_cpu_bf16_flags_reads_the_cpus_flags():
    with open("/proc/cpuinfo") as f:
        text = f.read()
    import skipnet_sweep.stages.loop as loop

    expected = tuple(flag for flag in ("amx_bf16", "avx512_bf16") if f" {flag}" in text)
    assert loop.cpu_bf16_flags() == expected


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_reinforce_terms_stay_float32_under_autocast(precision, dtype):
    model = tiny_net("rnn")
    x, y = next(iter(image_loader()))
    with torch.autocast("cpu", dtype=dtype):
        out = model(x, mode="sample")
    assert out.logits.dtype == dtype  # autocast is active on the network
    assert out.log_probs.dtype == torch.float32 and out.probs.dtype == torch.float32
    res = objective(model, hrl(precision=precision))(out, y)
    assert res.loss.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in res.logs.values())
    res.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_every_precision_trains_on_the_cpu(precision):
    model = tiny_net("rnn")
    before = copy.deepcopy(model.state_dict())
    seen: list[dict] = []
    state = train_loop(
        model,
        objective(model, hrl(iterations=3, precision=precision, eval_every=3)),
        image_loader(),
        hrl(iterations=3, precision=precision, eval_every=3),
        on_eval=lambda s, logs: seen.append(logs),
        progress=False,
    )
    assert state.step == 3 and len(seen) == 1
    assert all(isinstance(v, float) for v in seen[0].values())
    assert seen[0][M.TRAIN_LOSS] == seen[0][M.TRAIN_LOSS]  # not NaN
    assert state.scaler.is_enabled() == (precision == "fp16")
    after = model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert not torch.equal(after["fc.weight"], before["fc.weight"])


# --- gradient accumulation ---------------------------------------------------------------


class Linear(nn.Module):
    """No batch-norm: a batch's gradient is the mean of per-sample gradients, whatever the
    batch is split into, so accumulation is exact up to float summation order."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(6, 3)

    def forward(self, x, mode=None, path="masked"):
        logits = self.fc(x)
        b = x.shape[0]
        return SkipOutput(logits, logits.new_zeros(b, 0).bool(), logits.new_zeros(b, 0), None)


def test_accumulating_k_batches_of_b_equals_one_batch_of_k_times_b():
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(48, 6, generator=g), torch.randint(0, 3, (48,), generator=g))
    models = {}
    for k, b in ((1, 12), (3, 4)):
        cfg = TrainConfig(
            phase="sp", iterations=4, batch_size=b, accum_steps=k, lr=0.5, weight_decay=1e-3
        )
        models[k] = Linear()
        # Unshuffled: the k batches of b of each step are the one batch of k * b.
        loader = DataLoader(data, batch_size=b, shuffle=False)
        state = train_loop(models[k], Supervised(), loader, cfg, progress=False)
        assert state.step == 4
    for name, p in models[1].named_parameters():
        torch.testing.assert_close(dict(models[3].named_parameters())[name], p)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_hybrid_rl_accumulates_to_the_full_batch_loss(reduction):
    """The loop divides each batch's loss by accum_steps; a REINFORCE sum over the batch must
    still come out as the sum over the accumulated batch."""
    g = torch.Generator().manual_seed(0)
    b, n = 8, 3
    gate_logits = torch.randn(b, n, generator=g)
    actions = torch.rand(b, n, generator=g) < 0.5
    log_probs = -F.binary_cross_entropy_with_logits(gate_logits, actions.float(), reduction="none")
    out = SkipOutput(torch.randn(b, 4, generator=g), actions, torch.sigmoid(gate_logits), log_probs)
    target = torch.randint(0, 4, (b,), generator=g)
    full = HybridRL(hrl(rl_reduction=reduction), torch.ones(n))(out, target).loss
    halves_cfg = hrl(rl_reduction=reduction, accum_steps=2)
    halves = sum(
        HybridRL(halves_cfg, torch.ones(n))(SkipOutput(*(t[s] for t in out[:4])), target[s]).loss
        / 2
        for s in (slice(0, 4), slice(4, 8))
    )
    torch.testing.assert_close(halves, full)


def test_accum_steps_beyond_one_pass_is_refused():
    with pytest.raises(ValueError, match=r"accum_steps \(3\) exceeds the 2 batches"):
        train_loop(
            Linear(),
            Supervised(),
            DataLoader(TensorDataset(torch.randn(4, 6), torch.zeros(4).long()), batch_size=2),
            TrainConfig(phase="sp", iterations=1, accum_steps=3),
            progress=False,
        )


# --- warm-up -------------------------------------------------------------------------------


def lrs_of(sched, opt, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])  # the lr this step runs at
        opt.step()
        sched.step()
    return out


def test_warmup_runs_the_first_steps_at_warmup_lr_and_resumes():
    cfg = TrainConfig(
        phase="sp", iterations=8, lr=0.1, warmup_iterations=3, warmup_lr=0.01,
        lr_milestones=(0.5, 0.75),
    )  # fmt: skip
    expect = [0.01] * 3 + [0.1] + [0.01] * 2 + [0.001] * 2
    opt, sched = make_optimizer(Linear(), cfg, 8)
    assert lrs_of(sched, opt, 8) == pytest.approx(expect)
    # Interrupted inside the warm-up, restored from the scheduler's state.
    model = Linear()
    opt, sched = make_optimizer(model, cfg, 8)
    first = lrs_of(sched, opt, 2)
    saved = (opt.state_dict(), sched.state_dict())
    opt, sched = make_optimizer(model, cfg, 8)
    opt.load_state_dict(saved[0])
    _load_scheduler(sched, saved[1])
    assert first + lrs_of(sched, opt, 6) == pytest.approx(expect)
    with pytest.raises(ValueError, match="warmup_iterations needs lr > 0"):
        TrainConfig(iterations=1, lr=0.0, warmup_iterations=5)


def test_scheduler_state_of_a_multistep_checkpoint_still_resumes():
    cfg = TrainConfig(phase="sp", iterations=8, lr=0.1, lr_milestones=(0.5,))
    opt = torch.optim.SGD(Linear().parameters(), lr=0.1)
    old = torch.optim.lr_scheduler.MultiStepLR(opt, [4], gamma=0.1)
    for _ in range(5):
        opt.step()
        old.step()
    opt2, sched = make_optimizer(Linear(), cfg, 8)
    _load_scheduler(sched, old.state_dict())
    assert sched.last_epoch == 5 and sched.get_last_lr()[0] == pytest.approx(0.01)


# --- gate sharpening ------------------------------------------------------------------------


@pytest.mark.parametrize("gate", GATE_DESIGNS)
def test_gate_sharpening_multiplies_logits_on_a_fresh_run_only(gate):
    model = tiny_net(gate).eval()
    x, _ = next(iter(image_loader()))
    force = torch.ones(x.shape[0], model.num_gates, dtype=torch.bool)

    def gate_logits() -> torch.Tensor:
        seen = []
        hooks = [
            h.register_forward_hook(lambda m, i, o: seen.append(o)) for h in gate_heads(model.gates)
        ]
        with torch.no_grad():
            model(x, force=force)
        for h in hooks:
            h.remove()
        return torch.cat(seen)

    before = gate_logits()
    objective(model, hrl(gate_sharpen=20.0)).begin(model)
    # Forced decisions: every gate sees the same input, so only its logit changes.
    torch.testing.assert_close(gate_logits(), 20 * before, rtol=1e-5, atol=1e-5)

    # Through the loop: sharpened when starting, not when resuming (lr 0: nothing else moves).
    heads = lambda m: [h.weight.clone() for h in gate_heads(m.gates)]  # noqa: E731
    cfg = hrl(gate_sharpen=20.0, lr=0.0, iterations=1)
    fresh = tiny_net(gate)
    start = heads(fresh)
    state = train_loop(fresh, objective(fresh, cfg), image_loader(), cfg, progress=False)
    assert all(torch.allclose(a, 20 * b) for a, b in zip(heads(fresh), start, strict=True))
    resumed = tiny_net(gate)
    start = heads(resumed)
    resume = {"optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(), "step": 0}  # fmt: skip
    cfg2 = hrl(gate_sharpen=20.0, lr=0.0, iterations=1)
    train_loop(
        resumed, objective(resumed, cfg2), image_loader(), cfg2, resume=resume, progress=False
    )
    assert all(torch.equal(a, b) for a, b in zip(heads(resumed), start, strict=True))
    with pytest.raises(ValueError, match="gate_sharpen must be > 0"):
        hrl(gate_sharpen=0.0)


# --- recurrent gate projections and the gate init ---------------------------------------------


def test_rnn_gate_has_one_projection_per_block_by_default():
    per_block = build_model("cifar_resnet110", gate="rnn")
    assert isinstance(per_block.gates, RNNGate)
    assert len(per_block.gates.proj) == per_block.num_gates == 53
    shared = SkipResNet(
        "basic", [18] * 3, [16, 32, 64], "cifar", 10, gate="rnn", rnn_projections="shared"
    )
    assert len(shared.gates.proj) == 3
    # Same operations per gate: the cost table does not depend on the sharing.
    a = count_costs(per_block, (3, 32, 32)).to_dict()
    b = count_costs(shared, (3, 32, 32)).to_dict()
    assert a["gate_macs_each"] == b["gate_macs_each"] and a["total_macs"] == b["total_macs"]
    with pytest.raises(ValueError, match="rnn_projections 'shared' applies to the rnn gate only"):
        build_gates("ff1", [16, 16], "shared")
    with pytest.raises(ValueError, match="unknown projections 'all'; allowed: per_block, shared"):
        RNNGate([16], projections="all")


def test_gate_out_std_sets_the_logit_layer_init():
    def pooled_std(model: SkipResNet) -> float:
        return torch.cat([h.weight.flatten() for h in gate_heads(model.gates)]).std().item()

    torch.manual_seed(0)
    default = SkipResNet("basic", [18] * 3, [16, 32, 64], "cifar", 10, gate="ff2")
    torch.manual_seed(0)
    official_rnn_cifar = SkipResNet(
        "basic", [18] * 3, [16, 32, 64], "cifar", 10, gate="ff2", gate_out_std=0.447
    )
    assert pooled_std(default) == pytest.approx(2**0.5, rel=0.1)  # He fan-out, one logit
    assert pooled_std(official_rnn_cifar) == pytest.approx(0.447, rel=0.1)
    with pytest.raises(ValueError, match="gate_out_std must be > 0"):
        SkipResNet("basic", [1] * 3, [4, 8, 8], "cifar", 10, gate="rnn", gate_out_std=0.0)


def test_channels_last_except_where_torch_corrupts_the_heap():
    """The stages' layout is channels-last; a network with a strided 1x1 convolution of 2-7
    input channels stays contiguous (torch 2.14.1's CPU backward of it in channels-last
    corrupts the heap: this file's precision tests aborted with it)."""
    assert input_layout(build_model("cifar_resnet20", in_channels=1)) == torch.channels_last
    tiny = tiny_net("rnn")  # stages of 4 and 8 channels: a 4 -> 8 projection, stride 2
    assert input_layout(tiny) == torch.contiguous_format
    x = torch.randn(2, *SHAPE)
    assert model_input(x, "cpu", torch.channels_last).is_contiguous(
        memory_format=torch.channels_last
    )
    assert model_input(x, "cpu", input_layout(tiny)).is_contiguous()


# --- training curves between evaluations ---------------------------------------------------


def test_log_interval_gives_short_stages_ten_points_and_long_ones_a_point_every_100_steps():
    assert [log_interval(n) for n in (1, 30, 45, 200, 64_000)] == [1, 2, 3, 10, 100]
    assert 30 // log_interval(30) >= 10  # the quickstart's shortest stage (ACT, 30 steps)


def test_curves_are_logged_between_evaluations_with_one_device_read_per_point(monkeypatch):
    """``on_log`` gets the training logs every ``log_every`` steps, never at an evaluation
    (which carries its own); each point reads the device once, no step in between does."""
    reads = []
    real_read = _DeviceLogs.read
    monkeypatch.setattr(
        _DeviceLogs, "read", lambda self: reads.append(1) or real_read(self), raising=True
    )
    model = tiny_net("rnn")
    cfg = hrl(iterations=12, eval_every=6)
    logged, evals = [], []
    train_loop(
        model,
        objective(model, cfg),
        image_loader(),
        cfg,
        on_eval=lambda s, logs: evals.append(s.step),
        on_log=lambda s, logs: logged.append((s.step, logs)),
        log_every=2,
        cost=count_costs(model, SHAPE).per_sample,
        progress=False,
    )
    assert [s for s, _ in logged] == [2, 4, 8, 10] and evals == [6, 12]
    assert len(reads) == len(logged) + len(evals)
    full = count_costs(model, SHAPE).full_total
    for _, logs in logged:
        assert {M.TRAIN_LOSS, M.LR, M.EPOCH, M.IMAGES_PER_S, M.REWARD} <= set(logs)
        # The running skip ratio and MACs of the sampled gates, MACs within the network's.
        assert 0.0 <= logs[M.TRAIN_SKIP_RATIO] <= 1.0
        assert 0 < logs[M.TRAIN_MACS_MEAN] <= full
        assert logs[M.IMAGES_PER_S] > 0


def test_running_macs_are_the_mean_of_the_batches_per_sample_macs():
    """What the curve shows equals the per-sample count averaged over the interval's
    batches (a SkipNet's MACs are linear in its decisions)."""
    model = tiny_net("ff1")
    costs = count_costs(model, SHAPE)
    cfg = hrl(iterations=2, eval_every=2)
    seen, executed = [], []

    class Recording(HybridRL):
        def __call__(self, out, target):
            executed.append(out.executed.detach())
            return super().__call__(out, target)

    train_loop(
        model,
        Recording(cfg, gate_costs(None, model.num_gates)),
        image_loader(),
        cfg,
        on_log=lambda s, logs: seen.append(logs),
        log_every=2,
        on_eval=lambda s, logs: seen.append(logs),
        cost=costs.per_sample,
        progress=False,
    )
    (logs,) = seen  # step 2 is the evaluation: it carries the logs of both steps
    expected = torch.cat([costs.per_sample(e) for e in executed]).mean().item()
    assert logs[M.TRAIN_MACS_MEAN] == pytest.approx(expected, rel=1e-6)
    skipped = torch.cat([(~e).float() for e in executed]).mean().item()
    assert logs[M.TRAIN_SKIP_RATIO] == pytest.approx(skipped, rel=1e-6)


def test_a_network_without_gates_logs_no_skip_ratio():
    seen = []
    train_loop(
        Linear(),
        Supervised(),
        DataLoader(TensorDataset(torch.randn(8, 6), torch.randint(0, 3, (8,))), batch_size=4),
        TrainConfig(phase="baseline", iterations=4, lr=0.1, eval_every=4),
        on_log=lambda s, logs: seen.append(logs),
        log_every=1,
        progress=False,
    )
    assert len(seen) == 3
    assert all(M.TRAIN_SKIP_RATIO not in logs and M.TRAIN_LOSS in logs for logs in seen)
