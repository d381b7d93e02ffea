"""BlockDrop as a registered method: its space section, its plan (one job per penalty from
the plain baseline), its network (starts from plain weights; modes and paths), exact MACs
with the policy counted, the curriculum and the phases' gradients, and the train CLI."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from sweep_helpers import write_space
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from skipnet_sweep.methods import get_method, load_trained, method_for_phase
from skipnet_sweep.methods.blockdrop import (
    BlockDropObjective,
    BlockDropOptions,
    BlockDropSettings,
    _reward,
)
from skipnet_sweep.models import ModelConfig, build_from_config
from skipnet_sweep.models.blockdrop import BlockDropResNet
from skipnet_sweep.reporting.baselines import default_baselines_dir, load_baselines, matching
from skipnet_sweep.reporting.style import method_style
from skipnet_sweep.stages import DataConfig, StageConfig
from skipnet_sweep.stages.checkpoint import make_payload, save_checkpoint
from skipnet_sweep.sweep import SpaceError, load_space, make_plan
from skipnet_sweep.train import main

SHAPE = (1, 12, 12)
METHOD = get_method("blockdrop")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def stage(options: dict | None = None, init: str | None = None, **train) -> StageConfig:
    train = {"iterations": 10, **train}
    return StageConfig(
        ModelConfig("cifar_resnet14", "blockdrop", 4, 1),
        DataConfig("synthetic"),
        METHOD.train_config("blockdrop", train),
        init=init,
        options=options or {},
    )


def make(options: dict | None = None) -> BlockDropResNet:
    torch.manual_seed(0)
    return METHOD.build_model(stage(options))


def images(batch: int = 8) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, *SHAPE)


def calibrate(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Batch-norm running statistics from one batch, then eval mode."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x, mode="threshold")
    return model.eval()


def flops(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# --- the space and the plan -------------------------------------------------------------


def test_plan_has_one_job_per_penalty_starting_from_the_baseline(tmp_path: Path) -> None:
    section = {"penalty": [-1, -5.0], "iterations": 4, "policy_pool": 2}
    plan = make_plan(load_space(str(write_space(tmp_path, changes={"blockdrop": section}))))
    assert plan.space.methods["blockdrop"] == BlockDropSettings(
        penalty=(-1.0, -5.0), iterations=4, policy_pool=2
    )
    assert "blockdrop" in [m.name for m in plan.methods]
    jobs = [j for j in plan.trials if j.method == "blockdrop"]
    assert [j.cost_weight_value for j in jobs] == [-1.0, -5.0]
    base = plan.find("baseline", "cifar_resnet8")
    for job, penalty in zip(jobs, (-1.0, -5.0), strict=True):
        assert job.needs == base.id and job.curve == "blockdrop" and job.cost_weight == "penalty"
        assert plan.config_of(job).init == str(plan.checkpoint(base))
        cfg = job.config
        assert cfg.model == ModelConfig("cifar_resnet8", "blockdrop", 4, 1)
        assert BlockDropOptions(**cfg.options) == BlockDropOptions(penalty=penalty, policy_pool=2)
        # The official optimiser's recipe: Adam at 1e-3, no weight decay, batch 256.
        t = cfg.train
        assert (t.phase, t.iterations, t.lr, t.weight_decay, t.batch_size) == (
            "blockdrop",
            4,
            1e-3,
            0.0,
            256,
        )
    assert len({j.id for j in jobs}) == 2


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"penalty": [-1], "iterations": "many"}, r"blockdrop\.iterations: expected an integer"),
        ({"penalty": "high", "iterations": 2}, r"blockdrop\.penalty\[0\]: expected a number"),
        ({"penalties": [-1], "iterations": 2}, r"blockdrop\.penalties: unknown field"),
        ({"penalty": [-1, 0.5], "iterations": 2}, r"blockdrop\.penalty: must be <= 0"),
        ({"penalty": [], "iterations": 2}, r"blockdrop\.penalty: give at least one value"),
        ({"iterations": 2, "explore_alpha": 0.3}, r"blockdrop\.explore_alpha: must be in"),
        ({"iterations": 2, "curriculum": 1.5}, r"blockdrop\.curriculum: must be in \[0, 1\]"),
        ({"iterations": 2, "policy_pool": 0}, r"blockdrop\.policy_pool: must be a whole"),
        ({"iterations": 2, "lr": -1.0}, r"blockdrop\.lr: must be >= 0"),
        ({"penalty": [-1]}, r"blockdrop\.iterations: \(or epochs\)"),
    ],
)
def test_section_is_typed_and_validated_naming_the_field(tmp_path, section, message) -> None:
    with pytest.raises(SpaceError, match=message):
        make_plan(load_space(str(write_space(tmp_path, changes={"blockdrop": section}))))


def test_published_points_are_drawn_in_the_method_s_style() -> None:
    rows = matching(load_baselines(default_baselines_dir()), "cifar10", ["cifar_resnet110"])
    assert "blockdrop" in set(rows["method"])
    style = method_style("blockdrop")
    assert (style.label, style.marker) == (METHOD.label, METHOD.marker)


# --- the network ------------------------------------------------------------------------


def test_starts_from_a_plain_checkpoint_with_the_same_backbone_keys(tmp_path: Path) -> None:
    torch.manual_seed(5)
    plain = build_from_config(ModelConfig("cifar_resnet14", None, 4, 1))
    path = save_checkpoint(tmp_path / "base.pt", make_payload(plain, {}))
    model = METHOD.build_model(stage({"policy_pool": 2}, init=str(path)))
    assert isinstance(model, BlockDropResNet) and model.pool == 2
    own = model.state_dict()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0)
    extra = {k.split(".")[0] for k in own.keys() - plain.state_dict().keys()}
    assert extra == {"policy", "policy_pool"}


def test_forward_shapes_and_modes() -> None:
    model, x = make(), images()
    g = model.num_gates
    assert g == len(model.blocks) - 1 == 5
    model.train()
    out = model(x, mode="sample", explore=0.8)
    assert out.logits.shape == (8, 4) and out.executed.shape == (8, g)
    assert out.executed.dtype == torch.bool and out.probs.shape == out.log_probs.shape == (8, g)
    bounded = out.extras["bounded_probs"]
    assert bounded.min() >= 0.2 - 1e-6 and bounded.max() <= 0.8 + 1e-6
    expect = torch.where(out.executed, bounded, 1 - bounded).log()
    torch.testing.assert_close(out.log_probs, expect)
    model.eval()
    a, b = model(x), model(x, mode="threshold")
    assert a.log_probs is None and torch.equal(a.executed, b.executed)
    torch.testing.assert_close(a.executed, a.probs >= 0.5)
    with pytest.raises(ValueError, match="sample or threshold, not 'soft'"):
        model(x, mode="soft")


def test_sparse_equals_masked_in_eval_mode() -> None:
    model = make()
    x = images(16)
    calibrate(model, x)
    # A mixed pattern, so the sparse path really gathers and scatters.
    force = torch.rand(16, model.num_gates, generator=torch.Generator().manual_seed(3)) < 0.5
    masked = model(x, path="masked", force=force)
    sparse = model(x, path="sparse", force=force)
    torch.testing.assert_close(sparse.logits, masked.logits, rtol=1e-5, atol=1e-5)
    own = model(x, path="masked")
    torch.testing.assert_close(model(x, path="sparse").logits, own.logits, rtol=1e-5, atol=1e-5)


def test_keep_forces_the_first_blocks_with_certain_log_probability() -> None:
    model = make().train()
    with torch.no_grad():
        model.policy.fc.bias.fill_(-30.0)  # the policy would skip every block
    out = model(images(), mode="sample", explore=1.0, keep=3)
    assert out.executed[:, :3].all() and not out.executed[:, 3:].any()
    assert (out.log_probs[:, :3] == 0).all()


# --- exact MACs -------------------------------------------------------------------------


@pytest.mark.parametrize("pool", [1, 2])
def test_full_total_is_what_flop_counter_counts_policy_included(pool: int) -> None:
    model = make({"policy_pool": pool}).eval()
    x = images(1)
    costs = METHOD.count_costs(model, SHAPE)
    force = torch.ones(1, model.num_gates, dtype=torch.bool)
    assert costs.full_total * 2 == flops(lambda: model(x, path="masked", force=force))
    # The policy alone, at the input it reads.
    pooled = torch.nn.functional.avg_pool2d(x, pool) if pool > 1 else x
    assert costs.gate_total * 2 == flops(lambda: model.policy(pooled))
    assert costs.full_total == costs.plain_total + costs.gate_total


def test_per_sample_macs_are_what_the_sparse_path_computes() -> None:
    model = make().eval()
    x = images(6)
    costs = METHOD.count_costs(model, SHAPE)
    force = torch.tensor(
        [[1, 0, 1, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 1, 0], [1, 1, 0, 0, 1],
         [0, 0, 1, 1, 0]], dtype=torch.bool
    )  # fmt: skip
    counted = flops(lambda: model(x, path="sparse", force=force))
    assert costs.per_sample(force).sum().item() * 2 == counted


# --- the objective: reward, curriculum, phases --------------------------------------------


def test_reward_is_the_official_one() -> None:
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    executed = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    r = _reward(logits, torch.tensor([0, 0, 0]), executed, -5.0)
    torch.testing.assert_close(r, torch.tensor([1 - 0.5**2, 0.0, -5.0]))


def objective_for(model, options: dict, total: int = 10):
    cfg = stage(options, iterations=total)
    obj = METHOD.objective(cfg, METHOD.count_costs(model, SHAPE))
    assert isinstance(obj, BlockDropObjective)
    opt, sched = obj.configure_optimizer(model, list(model.parameters()), cfg.train, total)
    return obj, opt, sched


def test_curriculum_hands_over_one_block_per_epochs_per_block_then_all() -> None:
    model = make()
    options = {"curriculum": 0.5, "epochs_per_block": 2.0, "explore_alpha": 1.0}
    obj, *_ = objective_for(model, options, total=10)
    seen = []
    for step, epoch in [(0, 0.0), (1, 1.9), (2, 2.0), (3, 7.0), (4, 99.0), (5, 99.0)]:
        obj.at_step(step, 10, epoch)
        seen.append((obj.controlled, obj.finetune))
    assert seen == [(1, False), (1, False), (2, False), (4, False), (5, False), (5, True)]
    # Early on the first blocks run for every image, whatever the policy says; later not.
    with torch.no_grad():
        model.policy.fc.bias.fill_(-30.0)
    obj.at_step(0, 10, 0.0)
    early = obj.forward(model.train(), images())
    assert early.executed[:, :4].all() and not early.executed[:, 4].any()
    assert early.extras["greedy_executed"][:, :4].all()
    obj.at_step(5, 10, 0.0)
    late = obj.forward(model, images())
    assert not late.executed.any()


def _train_steps(model, obj, opt, sched, steps: range, total: int) -> list[float]:
    """Train ``steps``; the learning rate of each."""
    x, y = images(16), torch.arange(16) % 4
    lrs = []
    for step in steps:
        lrs.append(opt.param_groups[0]["lr"])
        obj.at_step(step, total, step / 2)
        opt.zero_grad(set_to_none=True)
        res = obj(obj.forward(model, x), y)
        res.loss.backward()
        opt.step()
        sched.step()
    return lrs


def test_curriculum_trains_the_policy_alone_then_finetuning_both() -> None:
    model = make().train()
    obj, opt, sched = objective_for(model, {"curriculum": 0.5, "explore_alpha": 0.8}, total=4)
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("policy")}
    policy = {k: v.clone() for k, v in model.policy.state_dict().items()}
    assert _train_steps(model, obj, opt, sched, range(2), 4) == pytest.approx([1e-3, 1e-3])
    for k, v in model.state_dict().items():
        if k in backbone:  # weights and batch-norm statistics alike
            torch.testing.assert_close(v, backbone[k], rtol=0, atol=0, msg=k)
    changed = [k for k, v in model.policy.state_dict().items() if not torch.equal(v, policy[k])]
    assert any(k.startswith("fc.") for k in changed)
    grads = [p.grad for p in model.policy.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # Fine-tuning at 1e-4, times 0.1 from 80% of its steps (finetune.py L29-31).
    assert _train_steps(model, obj, opt, sched, range(2, 4), 4) == pytest.approx([1e-4, 1e-5])
    assert obj.finetune
    moved = [k for k, v in backbone.items() if not torch.equal(model.state_dict()[k], v)]
    assert any(k.startswith("stages.") and k.endswith("conv1.weight") for k in moved)
    assert any(k.endswith("running_mean") for k in moved)


def test_curriculum_loss_is_per_image_finetuning_loss_a_batch_sum() -> None:
    model = make().train()
    obj, *_ = objective_for(model, {"curriculum": 0.5, "entropy": 0.0}, total=4)
    x, y = images(16), torch.arange(16) % 4
    obj.at_step(0, 4, 0.0)
    out = obj.forward(model, x)
    cl = obj(out, y)
    torch.testing.assert_close(cl.loss, cl.logs["rl_loss"] / 16)
    obj.at_step(3, 4, 0.0)
    out = obj.forward(model, x)
    ft = obj(out, y)
    ce = torch.nn.functional.cross_entropy(out.logits, y)
    torch.testing.assert_close(ft.loss, ft.logs["rl_loss"] + ce)


# --- the CLI, checkpoints ---------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_help_lists_the_options_and_only_the_flags_it_reads() -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(out):
        main(["blockdrop", "--help"])
    text = out.getvalue()
    for flag in ("--penalty", "--explore-alpha", "--curriculum", "--epochs-per-block",
                 "--finetune-lr", "--policy-pool", "--entropy", "--init"):  # fmt: skip
        assert flag in text, flag
    for flag in ("--momentum", "--lr-milestones", "--alpha", "--gate"):
        assert flag + " " not in text, flag


def test_cli_trains_from_a_baseline_and_eval_rebuilds_it(tmp_path: Path) -> None:
    data = ["--dataset", "synthetic", "--train-subset", "64", "--test-subset", "32",
            "--batch-size", "32", "--no-progress"]  # fmt: skip
    base, out = tmp_path / "base.pt", tmp_path / "bd.pt"
    code, _, err = cli("baseline", "--arch", "cifar_resnet8", *data, "--iterations", "2",
                       "--out", str(base))  # fmt: skip
    assert code == 0, err
    code, text, err = cli("blockdrop", "--init", str(base), *data, "--iterations", "4",
                          "--penalty", "-2", "--policy-pool", "2", "--curriculum", "0.5",
                          "--json", "--out", str(out))  # fmt: skip
    assert code == 0, err
    model, payload = load_trained(out)
    assert isinstance(model, BlockDropResNet) and model.pool == 2
    assert payload["stage_config"]["options"]["penalty"] == -2.0
    assert method_for_phase("blockdrop") is METHOD

    trained = json.loads(text)
    code, evaluated, err = cli("eval", "--checkpoint", str(out), "--json")
    assert code == 0, err
    evaluated = json.loads(evaluated)
    for key in ("top1", "flops_mean", "routing_share"):
        assert evaluated[key] == pytest.approx(trained[key]), key
    # The policy's MACs are in every sample's count.
    costs = METHOD.count_costs(model, (3, 32, 32))
    assert evaluated["flops_mean"] > costs.plain_total - sum(costs.skip_savings())
    rebuilt, _ = METHOD.load_network(out)
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v)
