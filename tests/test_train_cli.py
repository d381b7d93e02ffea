"""The train CLI in-process: sp -> hrl (--init) -> eval on the synthetic dataset, and the
one-line errors (exit 2) for bad input.

The CLI has no flags for the synthetic dataset's sizes, so these runs use its defaults
(512 train / 128 test images, 3x32x32, 10 classes) cut down with --train-subset and
--test-subset.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from dataclasses import fields

import pytest
import torch

import skipnet_sweep.train as train_cli
from skipnet_sweep import metrics as M
from skipnet_sweep.data import build_datasets
from skipnet_sweep.methods import phase_names
from skipnet_sweep.models import ModelConfig
from skipnet_sweep.routing import describe_routing
from skipnet_sweep.runner import run_stage
from skipnet_sweep.stages import DataConfig, StageConfig, TrainConfig, load_checkpoint, load_model
from skipnet_sweep.stages.checkpoint import save_checkpoint
from skipnet_sweep.train import _parser, _stage_config, field_help, main, phase_fields, phase_parser

DATA = ["--dataset", "synthetic", "--train-subset", "64", "--test-subset", "32"]
FAST = [*DATA, "--batch-size", "32", "--iterations", "2", "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the CPU is shared, and oversubscribed threads made these tiny
    networks several times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cli(*argv: str) -> tuple[int, str, str]:
    """Run ``main(argv)``; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """SP, then HRL from the SP checkpoint (arch and gate inherited), then eval of both."""
    d = tmp_path_factory.mktemp("cli")
    sp, hrl = d / "sp.pt", d / "hrl.pt"
    r = {
        "sp": cli(
            "sp", *FAST, "--arch", "cifar_resnet8", "--gate", "ff2", "--out", str(sp), "--json"
        ),
        "hrl": cli("hrl", *FAST, "--init", str(sp), "--alpha", "0.5", "--out", str(hrl)),
    }
    r["eval_json"] = cli("eval", "--checkpoint", str(hrl), "--test-subset", "32", "--json")
    r["eval"] = cli("eval", "--checkpoint", str(sp), "--test-subset", "32", "--path", "masked")
    return r, sp, hrl


def test_sp_writes_checkpoint_and_json_metrics(runs):
    r, sp, _ = runs
    code, out, err = r["sp"]
    assert code == 0 and err == ""
    metrics = json.loads(out)
    assert set(M.EVAL_METRICS) <= metrics.keys()
    assert {M.gate_skip_ratio(0), M.gate_skip_ratio(1)} <= metrics.keys()
    assert M.gate_skip_ratio(2) not in metrics  # cifar_resnet8 has two gates
    assert 0 <= metrics[M.TOP1] <= 100
    assert metrics[M.COMPUTATION_PCT] == pytest.approx(
        100 * metrics[M.FLOPS_MEAN] / metrics[M.FLOPS_PLAIN]
    )
    payload = load_checkpoint(sp)
    assert payload["model_config"] == ModelConfig("cifar_resnet8", "ff2", 10, 3).to_dict()
    assert payload["step"] == 2 and payload["metrics"][M.TOP1] == metrics[M.TOP1]
    cfg = StageConfig.from_dict(payload["stage_config"])
    assert (cfg.variant, cfg.train.iterations, cfg.train.batch_size) == ("sp", 2, 32)
    assert (cfg.data.dataset, cfg.data.train_subset, cfg.data.test_subset) == ("synthetic", 64, 32)


def test_gate_init_with_a_gated_init_checkpoint_is_refused(runs):
    """The checkpoint's gates would replace the freshly drawn ones: the flag would do nothing."""
    _, sp, _ = runs
    code, out, err = cli("hrl", *FAST, "--init", str(sp), "--gate-out-std", "0.447")
    assert code == 2 and out == ""
    assert err.strip() == (
        f"error: --gate-out-std draws fresh gates, but --init {sp} brings its own (ff2 gates); "
        "drop one of the two"
    )


def test_a_validation_set_that_trained_the_init_checkpoint_is_noted(runs, tmp_path):
    """The split follows the stage's seed: another seed, or a checkpoint trained on every
    training image, puts --init's training images in this run's validation set."""
    _, sp, _ = runs  # trained on all 64 images, seed 0
    code, _, err = cli(
        "hrl", *FAST, "--init", str(sp), "--val-split", "16", "--out", str(tmp_path / "a.pt")
    )
    assert code == 0
    assert err.strip() == (
        f"note: the validation set (val_split 16, seed 0) holds images that trained --init {sp}, "
        "which trained on every training image: val top-1 overstates and test top-1 is the "
        "held-out measure"
    )
    held = tmp_path / "held.pt"
    assert (
        cli("sp", *FAST, "--arch", "cifar_resnet8", "--val-split", "16", "--out", str(held))[0] == 0
    )
    code, _, err = cli(
        "hrl",
        *FAST,
        "--init",
        str(held),
        "--val-split",
        "16",
        "--seed",
        "1",
        "--out",
        str(tmp_path / "b.pt"),
    )
    assert code == 0
    assert err.strip().startswith("note: the validation set (val_split 16, seed 1) holds images")
    assert "which held out val_split 16 with seed 0: val top-1 overstates" in err
    # The same split as the checkpoint's: held out, nothing to say.
    code, _, err = cli(
        "hrl", *FAST, "--init", str(held), "--val-split", "16", "--out", str(tmp_path / "c.pt")
    )
    assert (code, err) == (0, "")


def test_hrl_from_sp_prints_the_summary_line(runs):
    r, sp, hrl = runs
    code, out, err = r["hrl"]
    assert code == 0 and err == ""
    payload = load_checkpoint(hrl)
    m = payload["metrics"]
    line = out.strip()
    assert "\n" not in line
    assert line.startswith("hrl+sp cifar_resnet8+ff2 | ")  # arch and gate from --init
    assert f"test top-1 {m[M.TOP1]:.2f}%" in line  # no validation split: the test set
    assert f"{m[M.COMPUTATION_PCT]:.1f}% of the plain ResNet" in line
    assert re.search(r"skipped \d+\.\d\d blocks/sample \| ", line)
    assert line.endswith(describe_routing(m))  # routes, prunes or skips nothing, in words
    cfg = StageConfig.from_dict(payload["stage_config"])
    assert cfg.init == str(sp) and cfg.model.gate == "ff2"
    assert (cfg.train.phase, cfg.train.alpha, cfg.train.lr) == ("hrl", 0.5, 1e-4)  # HRL recipe


def test_eval_reproduces_the_training_metrics(runs):
    r, sp, hrl = runs
    code, out, err = r["eval_json"]
    assert code == 0 and err == ""
    metrics = json.loads(out)
    trained = load_checkpoint(hrl)["metrics"]
    for k in (M.TOP1, M.FLOPS_MEAN, M.COMPUTATION_PCT, M.SKIP_RATIO, M.ROUTING_SHARE):
        assert metrics[k] == pytest.approx(trained[k]), k
    code, out, err = r["eval"]
    trained = load_checkpoint(sp)["metrics"]
    assert code == 0 and err == ""
    assert out.strip() == (
        f"eval {sp}: test top-1 {trained[M.TOP1]:.2f}% | "
        f"{trained[M.COMPUTATION_PCT]:.1f}% of the plain ResNet's MACs | "
        + describe_routing(trained)
    )


def test_eval_writes_artifacts(runs, tmp_path):
    _, sp, _ = runs
    code, _, _ = cli(
        "eval", "--checkpoint", str(sp), "--test-subset", "20", "--artifacts", str(tmp_path)
    )
    assert code == 0
    assert (tmp_path / M.PER_SAMPLE_CSV).read_text().count("\n") == 21  # header + 20 rows
    assert (tmp_path / M.EASY_HARD_NPZ).is_file()


def test_eval_uses_the_seed_the_checkpoint_was_trained_with(tmp_path):
    path = tmp_path / "seed1.pt"
    code, out, _ = cli("sp", *FAST, "--arch", "cifar_resnet8", "--gate", "ff2", "--seed", "1",
                       "--out", str(path), "--json")  # fmt: skip
    assert code == 0
    code, out, _ = cli("eval", "--checkpoint", str(path), "--test-subset", "32", "--json")
    assert code == 0
    trained = load_checkpoint(path)["metrics"]
    got = json.loads(out)
    assert got[M.TOP1] == pytest.approx(trained[M.TOP1])
    assert got[M.FLOPS_MEAN] == pytest.approx(trained[M.FLOPS_MEAN])


def test_eval_of_a_checkpoint_trained_on_custom_synthetic_data(tmp_path):
    data = DataConfig(
        dataset="synthetic", synthetic={"size": 64, "channels": 1, "image_size": 8, "classes": 4}
    )
    train = TrainConfig(phase="sp", iterations=1, batch_size=32)
    result = run_stage(
        StageConfig(ModelConfig("cifar_resnet8", "ff2"), data, train),
        tmp_path / "c.pt",
        progress=False,
    )
    code, out, _ = cli("eval", "--checkpoint", str(tmp_path / "c.pt"), "--json")
    assert code == 0
    assert json.loads(out)[M.TOP1] == pytest.approx(result.metrics[M.TOP1])


def test_eval_soft_gating_runs_the_network_as_soft_gating_trains_it(tmp_path):
    """Table 3's ablation: a soft-trained network evaluated with its gates mixing every block,
    as in training. Every block runs, so the whole network's MACs and no skip, and its
    top-1 is that of the network's own soft forward on the same images."""
    path = tmp_path / "soft.pt"
    code, _, _ = cli("sp", *FAST, "--arch", "cifar_resnet8", "--gate", "rnn", "--gating",
                     "soft", "--out", str(path), "--json")  # fmt: skip
    assert code == 0
    # Every gate at p = 0.3 for every image: thresholded, each gated block is skipped; soft,
    # each is mixed in at 0.3, so the two evaluations differ in both cost and logits.
    payload = load_checkpoint(path)
    payload["state_dict"]["gates.fc.weight"].zero_()
    payload["state_dict"]["gates.fc.bias"].fill_(math.log(0.3 / 0.7))
    save_checkpoint(path, payload)
    code, out, err = cli(
        "eval", "--checkpoint", str(path), "--test-subset", "32", "--gating", "soft", "--json"
    )
    assert code == 0 and err == ""
    soft = json.loads(out)
    assert soft[M.FLOPS_MEAN] == pytest.approx(soft[M.FLOPS_FULL])
    assert soft[M.FLOPS_MEAN] > soft[M.FLOPS_PLAIN]  # the gates' own MACs on top
    assert soft[M.SKIP_RATIO] == 0 and soft[M.SKIPPED_MEAN] == 0
    hard = json.loads(cli("eval", "--checkpoint", str(path), "--test-subset", "32", "--json")[1])
    assert hard[M.SKIP_RATIO] == 1 and hard[M.FLOPS_MEAN] < hard[M.FLOPS_PLAIN]
    model, payload = load_model(path)
    kwargs = DataConfig(**payload["stage_config"]["data"]).loader_kwargs()
    kwargs.pop("num_workers")
    _, test, _ = build_datasets("synthetic", seed=0, **kwargs)
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    assert len(y) == 32
    with torch.no_grad():
        logits = model(x, mode="soft", path="masked").logits
        thresholded = model(x, mode="threshold", path="masked").logits
    assert not torch.allclose(logits, thresholded, atol=1e-3)
    assert soft[M.TOP1] == pytest.approx((logits.argmax(1) == y).double().mean().item() * 100)


def test_eval_soft_gating_refuses_what_it_cannot_run(runs, tmp_path, monkeypatch):
    """Refused in one line, before any data is read."""
    _, sp, _ = runs
    plain = tmp_path / "plain.pt"
    assert cli("baseline", *FAST, "--arch", "cifar_resnet8", "--out", str(plain))[0] == 0

    def no_data(*args, **kwargs):
        raise AssertionError("the dataset was read before the refusal")

    monkeypatch.setattr(train_cli, "build_datasets", no_data)
    code, out, err = cli("eval", "--checkpoint", str(sp), "--gating", "soft", "--path", "sparse")
    assert code == 2 and out == ""
    assert err == (
        "error: soft gating computes every block and mixes them: it needs the masked path, "
        "not 'sparse'\n"
    )
    code, out, err = cli("eval", "--checkpoint", str(plain), "--gating", "soft")
    assert code == 2 and out == ""
    assert err == "error: soft gating mixes gated blocks' outputs; this network has no gates\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sp", "--arch", "cifar_resnet9", *FAST], "unknown architecture 'cifar_resnet9'"),
        (["sp", "--gate", "ff3", *FAST], "unknown gate 'ff3'"),
        (["sp", "--dataset", "synth etic"], "unknown dataset 'synth etic'"),
        (["hrl", "--init", "{tmp}/missing.pt", *FAST], "missing.pt: no such file"),
        (["hrl", "--init", "{tmp}/junk.pt", *FAST], "junk.pt: unreadable"),
        (["eval", "--checkpoint", "{tmp}/missing.pt"], "missing.pt: no such file"),
        (["hrl", *FAST, "--gamma", "2"], "gamma must be in [0, 1]"),
        (["sp", *FAST, "--batch-size", "1000"], "batch_size=1000"),
        (["sp", *FAST, "--gate-out-std", "0"], "gate_out_std must be a finite number > 0"),
        (["sp", *FAST, "--gate-out-std", "inf"], "gate_out_std must be a finite number > 0"),
        (
            ["sp", *FAST, "--iterations", "3", "--epochs", "1"],
            "exactly one of iterations or epochs",
        ),
    ],
    ids=[
        "arch",
        "gate",
        "dataset",
        "init-missing",
        "init-junk",
        "eval-missing",
        "gamma",
        "batch",
        "gate-init",
        "gate-init-inf",
        "both",
    ],
)
def test_bad_input_exits_2_with_one_error_line(tmp_path, argv, message):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code, out, err = cli(*(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]


def test_baseline_refuses_a_gate():
    # The oversized batch makes the run stop before training whatever happens to --gate.
    code, _, err = cli("baseline", "--gate", "rnn", *FAST, "--batch-size", "1000")
    assert code == 2 and "gate" in err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["sp", "--gamma", "0.5"], "--gamma"),
        (["sp", "--alpha", "2"], "--alpha"),
        (["hrl", "--gating", "soft"], "--gating"),
        (["sact", "--alpha", "1"], "--alpha"),
        (["baseline", "--tau", "0.1"], "--tau"),
        (["act", "--gate", "rnn"], "--gate"),
    ],
)
def test_flags_of_another_phase_are_refused_not_ignored(argv, flag):
    code, out, err = cli(*argv, *FAST)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and flag in err and argv[0] in err


def test_unknown_subcommand_is_argparse_usage_error():
    with pytest.raises(SystemExit) as excinfo, contextlib.redirect_stderr(io.StringIO()):
        main(["finetune"])
    assert excinfo.value.code == 2


def test_unknown_flag_is_one_line():
    code, out, err = cli("sp", "--lerning-rate", "0.1")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--lerning-rate: unknown flag of sp" in err


def test_bad_flag_value_is_one_line():
    with pytest.raises(SystemExit) as excinfo, contextlib.redirect_stderr(io.StringIO()) as err:
        main(["sp", "--iterations", "ten"])
    assert excinfo.value.code == 2
    assert err.getvalue().count("\n") == 1 and "--iterations: invalid int value" in err.getvalue()


HRL_ONLY = {"--alpha", "--gamma", "--rl-weight", "--supervised", "--cost", "--reward-baseline"}


@pytest.mark.parametrize("phase", list(phase_fields()))
def test_phase_help_lists_only_its_own_flags_each_with_help(phase):
    parser = phase_parser(phase)
    flags = set(parser._option_string_actions)
    expected = {"--" + name.replace("_", "-") for name in phase_fields()[phase]}
    assert expected <= flags
    assert flags & HRL_ONLY == (HRL_ONLY if phase == "hrl" else set())
    assert ("--tau" in flags) == (phase in ("act", "sact"))
    assert ("--gating" in flags) == (phase == "sp")
    assert ("--gate" in flags) == (phase in ("sp", "hrl"))
    for action in parser._actions:
        assert action.help and action.help.strip(), action.option_strings


def test_sp_help_printed_lacks_hrl_flags():
    out = io.StringIO()
    with pytest.raises(SystemExit) as excinfo, contextlib.redirect_stdout(out):
        main(["sp", "--help"])
    assert excinfo.value.code == 0
    text = out.getvalue()
    assert "--gating" in text and "--lr-milestones" in text
    for flag in (*HRL_ONLY, "--tau"):
        assert flag not in text, flag
    # The help comes from TrainConfig's docstring, with the phase's own defaults.
    assert "straight-through gates (Eq. 9)" in text and "(default: 0.1)" in text


def test_hrl_help_shows_the_hrl_recipe_defaults():
    assert "(default: 0.0001)" in phase_parser("hrl").format_help()  # lr 1e-4, §4.1


def test_every_train_config_field_is_a_flag_of_some_phase():
    """A new TrainConfig field must get a STAGE_FIELDS entry (and a docstring line)."""
    assert set(phase_fields()) <= set(phase_names())
    used = {name for names in phase_fields().values() for name in names}
    assert used == {f.name for f in fields(TrainConfig)} - {"phase"}
    described = field_help(TrainConfig)
    assert used <= described.keys()
    assert described["lr"].startswith("lr: ")  # a shared description names its field


def test_flags_reach_the_config(tmp_path):
    """The table's flags land in the stage's TrainConfig (parsed, not run)."""
    argv = ["hrl", *DATA, "--iterations", "7", "--gamma", "0.5", "--no-supervised",
            "--lr-milestones", "0.25,0.5", "--cost", "flops", "--reward-baseline"]  # fmt: skip
    args, extra = _parser().parse_known_args(argv)
    assert extra == []
    train = _stage_config(args).train
    assert (train.iterations, train.gamma, train.supervised) == (7, 0.5, False)
    assert (train.lr_milestones, train.cost, train.reward_baseline) == ((0.25, 0.5), "flops", True)
    assert train.lr == 1e-4  # the HRL recipe where no flag is given
    args, _ = _parser().parse_known_args(["sp", *DATA, "--gate", "ff1", "--gate-out-std", "0.3"])
    assert _stage_config(args).model == ModelConfig("cifar_resnet20", "ff1", gate_out_std=0.3)


@pytest.mark.parametrize(("value", "expected"), [("5000", 5000), ("0.1", 0.1)])
def test_val_split_flag_takes_a_count_or_a_fraction(value, expected):
    """``float | int`` fields: a whole number is a count (an int), not the float 5000.0 that
    the config refuses."""
    args, extra = _parser().parse_known_args(["sp", *DATA, "--val-split", value])
    assert extra == []
    split = _stage_config(args).data.val_split
    assert split == expected and type(split) is type(expected)


def test_val_split_flag_refuses_a_word():
    with pytest.raises(SystemExit) as excinfo, contextlib.redirect_stderr(io.StringIO()) as err:
        main(["sp", "--val-split", "half"])
    assert excinfo.value.code == 2
    assert err.getvalue().count("\n") == 1 and "expected a number, got 'half'" in err.getvalue()
