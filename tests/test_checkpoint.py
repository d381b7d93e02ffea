"""Checkpoints: atomic writes, weights-only reads with one-line errors naming the file, and
rebuilding the stored network (whole, or the backbone of a gated network)."""

from __future__ import annotations

import pytest
import torch

from skipnet_sweep.models import ModelConfig, build_from_config
from skipnet_sweep.stages import CheckpointError, load_checkpoint, load_model
from skipnet_sweep.stages.checkpoint import FORMAT_VERSION, make_payload, save_checkpoint

STAGE = {"train": {"stage": "sp"}}  # make_payload stores whatever stage dict it is given


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the CPU is shared, and oversubscribed threads made these tiny
    networks several times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def gated(make_model):
    return make_model("cifar_resnet8", "ff2", num_classes=4, in_channels=1)


@pytest.fixture
def saved(gated, tmp_path):
    path = save_checkpoint(
        tmp_path / "ckpt.pt", make_payload(gated, STAGE, metrics={"top1": 50.0}, step=7)
    )
    return path, gated


def one_line_error(excinfo, path) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def test_round_trip_rebuilds_the_same_network(saved):
    path, model = saved
    assert path.is_file()
    loaded, payload = load_model(path)
    assert not loaded.training
    assert loaded.config == model.config == ModelConfig("cifar_resnet8", "ff2", 4, 1)
    assert payload["format"] == FORMAT_VERSION
    assert (payload["step"], payload["metrics"], payload["stage_config"]) == (
        7,
        {"top1": 50.0},
        STAGE,
    )
    own = model.state_dict()
    assert loaded.state_dict().keys() == own.keys()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, own[k]), k
    x = torch.randn(3, 1, 16, 16)
    model.eval()
    torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)
    # With the right expectation the load succeeds too.
    assert load_model(path, model.config)[0].config == model.config


def test_payload_holds_optimizer_state_for_resuming(gated, tmp_path):
    opt = torch.optim.SGD(gated.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2], 0.1)
    payload = make_payload(
        gated, STAGE, step=3, optimizer=opt, scheduler=sched, input_shape=(1, 16, 16)
    )
    back = load_checkpoint(save_checkpoint(tmp_path / "r.pt", payload))
    assert back["input_shape"] == [1, 16, 16]
    assert back["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert back["scheduler"]["milestones"] == {2: 1}


def test_save_is_atomic_and_leaves_no_temporary_files(saved):
    path, _ = saved
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    # Overwriting replaces the file in one step (still no stray files).
    save_checkpoint(path, {"model_config": {}, "marker": 1})
    assert load_checkpoint(path)["marker"] == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_save_leaves_nothing_behind(gated, tmp_path, monkeypatch, error):
    good = save_checkpoint(tmp_path / "good.pt", make_payload(gated, STAGE, step=1))
    before = good.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")  # a partial write, then the failure
        raise error

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(type(error)):
        save_checkpoint(tmp_path / "new.pt", make_payload(gated, STAGE))
    with pytest.raises(type(error)):
        save_checkpoint(good, make_payload(gated, STAGE, step=2))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.pt"]
    assert good.read_bytes() == before  # the old checkpoint survives a failed overwrite


def test_save_creates_missing_folders(gated, tmp_path):
    path = save_checkpoint(tmp_path / "a" / "b" / "c.pt", make_payload(gated, STAGE))
    assert load_checkpoint(path)["model_config"]["arch"] == "cifar_resnet8"


class Payload:
    """Unpickling this would run code (open a file for writing)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_load_is_weights_only(tmp_path, monkeypatch):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"model_config": {"arch": "cifar_resnet8"}, "x": Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as excinfo:
        load_checkpoint(path)
    assert "unreadable" in one_line_error(excinfo, path)
    assert not marker.exists()  # nothing was executed
    # And the flag is passed explicitly (not left to torch's version-dependent default).
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert calls == [True]


def test_truncated_file_is_one_line_error(saved, tmp_path):
    path, _ = saved
    cut = tmp_path / "cut.pt"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as excinfo:
        load_model(cut)
    assert "unreadable" in one_line_error(excinfo, cut)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError) as excinfo:
        load_checkpoint(empty)
    one_line_error(excinfo, empty)


def test_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file") as excinfo:
        load_model(tmp_path / "nope.pt")
    one_line_error(excinfo, tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path)  # a folder is not a checkpoint file


@pytest.mark.parametrize(
    "obj",
    [{"weights": torch.zeros(3)}, [torch.zeros(2)], torch.ones(4)],
    ids=["dict", "list", "tensor"],
)
def test_foreign_torch_file_is_not_a_checkpoint(tmp_path, obj):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="not a skipnet_sweep checkpoint") as excinfo:
        load_checkpoint(path)
    one_line_error(excinfo, path)


def test_load_model_names_every_mismatching_field(saved):
    path, _ = saved
    with pytest.raises(CheckpointError) as excinfo:
        load_model(path, ModelConfig("cifar_resnet14", "ff2", 4, 1))
    msg = one_line_error(excinfo, path)
    assert "arch is 'cifar_resnet8', expected 'cifar_resnet14'" in msg
    with pytest.raises(CheckpointError) as excinfo:
        load_model(path, ModelConfig("cifar_resnet8", "rnn", 10, 1))
    msg = one_line_error(excinfo, path)
    assert "gate is 'ff2', expected 'rnn'" in msg and "num_classes is 4, expected 10" in msg
    # A gated checkpoint cannot become a plain network either.
    with pytest.raises(CheckpointError, match="gate is 'ff2', expected None"):
        load_model(path, ModelConfig("cifar_resnet8", None, 4, 1))


def test_gate_init_is_not_part_of_a_checkpoints_identity(tmp_path):
    """``gate_out_std`` says how fresh gates are drawn; a checkpoint's gates are its weights,
    so an HRL config that leaves the std out still loads the SP checkpoint that set it."""
    drawn = ModelConfig("cifar_resnet8", "rnn", 4, 1, gate_out_std=0.447)
    net = build_from_config(drawn)
    path = save_checkpoint(tmp_path / "sp.pt", make_payload(net, STAGE))
    loaded, _ = load_model(path, ModelConfig("cifar_resnet8", "rnn", 4, 1))
    assert loaded.config == drawn
    for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"gate_out_std initialises gates .*plain"):
        ModelConfig("cifar_resnet8", None, gate_out_std=0.447)
    with pytest.raises(ValueError, match="gate_out_std must be a finite number > 0, got -1"):
        ModelConfig("cifar_resnet8", "ff1", gate_out_std=-1)


def test_plain_checkpoint_initialises_the_backbone_of_a_gated_network(make_model, tmp_path):
    plain = make_model("cifar_resnet8", None, num_classes=4, in_channels=1)
    path = save_checkpoint(
        tmp_path / "base.pt", make_payload(plain, {"train": {"stage": "baseline"}})
    )
    want = ModelConfig("cifar_resnet8", "rnn", 4, 1)
    torch.manual_seed(123)
    model, _ = load_model(path, want)
    torch.manual_seed(123)
    fresh = build_from_config(want).state_dict()
    assert model.config == want and model.gates is not None
    base = plain.state_dict()
    own = model.state_dict()
    backbone = [k for k in own if not k.startswith("gates.")]
    assert sorted(backbone) == sorted(base)
    assert all(torch.equal(own[k], base[k]) for k in backbone)
    # The gates keep their fresh initialisation.
    gates = [k for k in own if k.startswith("gates.")]
    assert gates and all(torch.equal(own[k], fresh[k]) for k in gates)
    # The backbone check still applies: a different architecture or class count is refused.
    with pytest.raises(CheckpointError, match="num_classes is 4, expected 10"):
        load_model(path, ModelConfig("cifar_resnet8", "rnn", 10, 1))
    with pytest.raises(CheckpointError, match="arch is 'cifar_resnet8', expected 'cifar_resnet20'"):
        load_model(path, ModelConfig("cifar_resnet20", "rnn", 4, 1))


def test_weights_that_do_not_fit_their_config(saved, tmp_path):
    path, _ = saved
    payload = load_checkpoint(path)
    payload["model_config"]["arch"] = "cifar_resnet14"  # config says 14, weights are of 8
    bad = save_checkpoint(tmp_path / "bad.pt", payload)
    with pytest.raises(CheckpointError, match="weights do not fit") as excinfo:
        load_model(bad)
    one_line_error(excinfo, bad)
