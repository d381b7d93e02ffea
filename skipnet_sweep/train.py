"""Run or debug one stage on one machine, without Ray.

python -m skipnet_sweep.train baseline --arch cifar_resnet20 --epochs 2 --out base.pt
python -m skipnet_sweep.train sp  --arch cifar_resnet20 --gate rnn --epochs 2 --out sp.pt
python -m skipnet_sweep.train hrl --init sp.pt --alpha 0.5 --iterations 300 --out hrl.pt
python -m skipnet_sweep.train eval --checkpoint hrl.pt --artifacts eval/
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import types
import typing
from dataclasses import MISSING, Field, asdict, fields

from torch.utils.data import DataLoader

from skipnet_sweep import metrics as M
from skipnet_sweep.data import build_datasets, list_datasets
from skipnet_sweep.methods import load_trained, method_for_phase, phase_names
from skipnet_sweep.methods.plugins import PluginError, load_plugins
from skipnet_sweep.models import EXEC_PATHS, ModelConfig
from skipnet_sweep.routing import describe_routing
from skipnet_sweep.runner import run_stage, summary_line
from skipnet_sweep.stages import (
    CheckpointError,
    DataConfig,
    StageConfig,
    TrainConfig,
    evaluate,
    load_checkpoint,
)
from skipnet_sweep.stages.config import SP_GATINGS, saved_phase
from skipnet_sweep.stages.evaluate import check_gating
from skipnet_sweep.yamlio import OneLineParser


# The TrainConfig fields each registered phase reads (its method says which). A phase's flags
# are built from exactly these: type and default from the field, help from TrainConfig's
# docstring, so a flag of another phase is an error, not a silent no-op.
def phase_fields() -> dict[str, tuple[str, ...]]:
    """Each registered phase's TrainConfig fields (plugins loaded by ``--plugin`` included)."""
    return {phase: method_for_phase(phase).train_fields(phase) for phase in phase_names()}


def _gate_of(phase: str) -> str | tuple[str, ...] | None:
    """The network a phase trains (its method's ``phase_gate``): a fixed kind or designs to
    choose from with ``--gate`` (the first is the default)."""
    return method_for_phase(phase).phase_gate(phase)


def field_help(cls: type) -> dict[str, str]:
    """Each field's description, from the ``Attributes:`` section of ``cls``'s docstring
    (``name: text``, or ``a, b: text`` shared by several, continued on deeper lines)."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    _, found, section = doc.partition("Attributes:")
    groups: list[tuple[list[str], str]] = []
    for line in section.splitlines() if found else []:
        head = re.fullmatch(r" {4}(\w+(?:, \w+)*): (.*)", line)
        if head:
            groups.append((head.group(1).split(", "), head.group(2).strip()))
        elif line.startswith(" " * 8) and groups:
            groups[-1] = (groups[-1][0], f"{groups[-1][1]} {line.strip()}")
        elif line.strip() and groups:  # the next section
            break
    out = {}
    for names, text in groups:
        text = text.replace("``", "").rstrip(".")
        for name in names:  # a shared line ("lr, momentum: SGD") says which one it is
            out[name] = text if len(names) == 1 else f"{name.replace('_', ' ')}: {text}"
    return out


def _floats(text: str) -> tuple[float, ...]:
    """``0.5,0.75`` -> (0.5, 0.75); an empty string is the empty tuple."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _int_or_float(text: str) -> int | float:
    """``5000`` -> 5000 (a count), ``0.1`` -> 0.1 (a fraction): for ``float | int`` fields,
    where ``float`` alone would turn a count into a float the config rejects."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _add_field_flag(
    parser: argparse.ArgumentParser, f: Field, hint, help_text: str, default
) -> None:
    """``--name`` for dataclass field ``f`` (type ``hint``); unset, it stays None and the
    config's default applies."""
    flag = "--" + f.name.replace("_", "-")
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    shown = "" if default is None else f" (default: {_show_default(default)})"
    help_text = (help_text + shown).replace("%", "%%")
    if base is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
    elif typing.get_origin(base) is tuple:
        parser.add_argument(flag, type=_floats, metavar="X,Y", help=help_text)
    elif set(args) == {int, float}:
        parser.add_argument(flag, type=_int_or_float, help=help_text)
    elif base in (int, float, str):
        parser.add_argument(flag, type=base, help=help_text)
    else:
        raise AssertionError(f"no command-line form for {f.name}: {hint}")


def _show_default(value) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _train_config(phase: str, given: dict) -> TrainConfig:
    """The phase's TrainConfig from the flags given: one epoch unless a length is given;
    HRL starts from the paper's recipe (``hrl_defaults``)."""
    kw = dict(given)
    if "iterations" not in kw and "epochs" not in kw:
        kw["epochs"] = 1.0
    return method_for_phase(phase).train_config(phase, kw)


def _data_fields() -> list[Field]:
    """DataConfig's fields that have a command-line form (all but the synthetic sizes)."""
    hints = typing.get_type_hints(DataConfig)
    return [f for f in fields(DataConfig) if hints[f.name] is not dict]


def phase_parser(phase: str, parser: argparse.ArgumentParser | None = None):
    """The flags of one phase's training: the model, the data (DataConfig's fields), the
    phase's ``phase_fields()`` and the outputs, each with its help.

    Args:
        phase: one of ``phase_fields()``.
        parser: the (sub)parser to fill; a new one by default.

    Returns:
        The parser.
    """
    s = parser or OneLineParser(prog=f"python -m skipnet_sweep.train {phase}")
    model = s.add_argument_group("model")
    model.add_argument(
        "--arch",
        default=None,
        help="registered architecture (default: from --init, else cifar_resnet20)",
    )
    gates = _gate_of(phase)
    if isinstance(gates, tuple):
        model.add_argument(
            "--gate",
            default=None,
            help=f"{', '.join(gates)} (default: from --init, else {gates[0]})",
        )
        model.add_argument(
            "--gate-out-std",
            type=float,
            default=None,
            help="std of the fresh gates' logit-layer init (default: He, 1.41; the official "
            "CIFAR RNNGate's is 0.447)",
        )
    model.add_argument(
        "--init", default=None, help="checkpoint to start from (SP for HRL+SP, baseline for ACT)"
    )
    model.add_argument(
        "--backbone-weights",
        default=None,
        help="torchvision-format ResNet state_dict to start the backbone from",
    )
    data = s.add_argument_group("data")
    data_help = field_help(DataConfig)
    data_help["dataset"] = f"{data_help.get('dataset', '')} ({', '.join(list_datasets())})"
    data_hints = typing.get_type_hints(DataConfig)
    for f in _data_fields():
        default = f.default if f.default is not MISSING else None
        _add_field_flag(data, f, data_hints[f.name], data_help.get(f.name, ""), default)
    train = s.add_argument_group(f"{phase} phase")
    train_help = field_help(TrainConfig)
    train_hints = typing.get_type_hints(TrainConfig)
    defaults = _train_config(phase, {})
    by_name = {f.name: f for f in fields(TrainConfig)}
    for name in phase_fields()[phase]:
        f = by_name[name]
        _add_field_flag(
            train, f, train_hints[name], train_help.get(name, ""), getattr(defaults, name)
        )
    own = method_for_phase(phase).phase_options(phase)
    if own is not None:
        group = s.add_argument_group(f"{phase} options")
        own_help, own_hints = field_help(own), typing.get_type_hints(own)
        for f in fields(own):
            default = f.default if f.default is not MISSING else None
            _add_field_flag(group, f, own_hints[f.name], own_help.get(f.name, ""), default)
    out = s.add_argument_group("output")
    out.add_argument("--out", default=None, help="where to write the final checkpoint")
    out.add_argument("--artifacts", default=None, help="folder for per-sample evaluation files")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    return s


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m skipnet_sweep.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="a module or .py file that registers methods (repeatable), before the command",
    )
    for phase in phase_fields():
        phase_parser(phase, sub.add_parser(phase, help=f"train the {phase} phase"))
    e = sub.add_parser("eval", help="evaluate a checkpoint")
    e.add_argument("--checkpoint", required=True, help="the checkpoint to evaluate")
    e.add_argument("--dataset", default=None, help="default: the one it was trained on")
    e.add_argument(
        "--root", default=None, help="dataset folder (default: the one it was trained on)"
    )
    e.add_argument("--test-subset", type=int, default=None, help="evaluate on this many images")
    e.add_argument(
        "--path",
        default=None,
        choices=EXEC_PATHS,
        help="execution path (default: sparse; masked with --gating soft)",
    )
    e.add_argument(
        "--gating",
        default="hard",
        choices=SP_GATINGS,
        help="hard: thresholded gates, SkipNet's inference (default); soft: every block's "
        "output mixed by its gate's probability, as soft gating trains (Table 3's ablation: "
        "a soft-trained network evaluated both ways shows the gap thresholding opens); soft "
        "runs every block, so it counts the whole network's MACs",
    )
    e.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    e.add_argument("--artifacts", default=None, help="folder for per-sample evaluation files")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    return p


def _refuse_extra(parser: argparse.ArgumentParser, command: str, extra: list[str]) -> None:
    """Arguments the command does not take: a flag of another phase says whose it is."""
    token = extra[0]
    name = token.split("=", 1)[0]
    if not name.startswith("-"):
        raise ValueError(f"unexpected argument {token!r} for the {command} command")
    owners = [
        phase for phase in phase_fields() if name in phase_parser(phase)._option_string_actions
    ]
    if owners:
        raise ValueError(
            f"{name} does not apply to the {command} phase (a flag of {', '.join(owners)})"
        )
    raise ValueError(f"{name}: unknown flag of {command}; see {parser.prog} {command} --help")


def _stage_config(args: argparse.Namespace) -> StageConfig:
    init_model = None
    if args.init:
        init_model = ModelConfig(**load_checkpoint(args.init)["model_config"])
    arch = args.arch or (init_model.arch if init_model else "cifar_resnet20")
    gates = _gate_of(args.command)
    if isinstance(gates, tuple):
        gate = args.gate or (init_model.gate if init_model and init_model.gate else gates[0])
    else:
        gate = gates
    given = {
        k: getattr(args, k) for k in phase_fields()[args.command] if getattr(args, k) is not None
    }
    train = _train_config(args.command, given)
    data = DataConfig(
        **{
            f.name: getattr(args, f.name)
            for f in _data_fields()
            if getattr(args, f.name) is not None
        }
    )
    gate_out_std = getattr(args, "gate_out_std", None)
    if gate_out_std is not None and init_model is not None and init_model.gate is not None:
        raise ValueError(
            f"--gate-out-std draws fresh gates, but --init {args.init} brings its own "
            f"({init_model.gate} gates); drop one of the two"
        )
    own = method_for_phase(args.command).phase_options(args.command)
    options = {}
    if own is not None:
        chosen = {f.name: getattr(args, f.name) for f in fields(own)}
        options = asdict(own(**{k: v for k, v in chosen.items() if v is not None}))
    return StageConfig(
        ModelConfig(arch, gate, gate_out_std=gate_out_std),
        data,
        train,
        init=args.init,
        backbone_weights=args.backbone_weights,
        options=options,
    )


def _saved_seed(saved: dict) -> int:
    """The seed a checkpoint's stage config trained with (TrainConfig's default if absent)."""
    return saved.get("train", {}).get("seed", TrainConfig.seed)


def init_split_note(cfg: StageConfig) -> str | None:
    """One line when this stage's validation images are not held out from ``--init``'s run.

    The split is a permutation seeded by the stage's seed (``data.split_validation``): a
    stage started from a checkpoint with another seed or another ``val_split`` of the same
    training images, or from one trained on all of them, validates on images that trained
    the checkpoint, and its val top-1 overstates. A sweep gives SP and HRL one seed; this is
    the ``train`` CLI's seed-variance run. None when the sets are held out alike.
    """
    if cfg.init is None or cfg.data.val_split is None:
        return None
    saved = load_checkpoint(cfg.init).get("stage_config") or {}
    data = saved.get("data")
    if not data or any(
        data.get(k) != getattr(cfg.data, k) for k in ("dataset", "train_subset", "synthetic")
    ):
        return None  # another pool of training images: nothing to compare
    seed = _saved_seed(saved)
    if data.get("val_split") is None:
        why = "trained on every training image"
    elif (data["val_split"], seed) != (cfg.data.val_split, cfg.train.seed):
        why = f"held out val_split {data['val_split']} with seed {seed}"
    else:
        return None
    return (
        f"note: the validation set (val_split {cfg.data.val_split}, seed {cfg.train.seed}) "
        f"holds images that trained --init {cfg.init}, which {why}: val top-1 overstates "
        "and test top-1 is the held-out measure"
    )


def _evaluate(args: argparse.Namespace) -> dict:
    model, payload = load_trained(args.checkpoint)
    saved = payload.get("stage_config") or {}
    method = method_for_phase(saved_phase(saved) or "baseline")
    path = check_gating(model, args.gating, args.path)  # refused before any data is read
    # Rebuild the data the checkpoint was trained on (seed and synthetic sizes included),
    # with the command line's overrides.
    data = DataConfig(**saved["data"]) if "data" in saved else DataConfig()
    seed = _saved_seed(saved)
    if args.dataset and args.dataset != data.dataset:
        data = DataConfig(dataset=args.dataset)
    kwargs = data.loader_kwargs()
    kwargs["root"] = args.root or kwargs["root"]
    if args.test_subset is not None:
        kwargs["test_subset"] = args.test_subset
    kwargs.pop("num_workers")
    _, test_set, info = build_datasets(data.dataset, seed=seed, **kwargs)
    test_loader = DataLoader(test_set, batch_size=args.batch_size, shuffle=False)
    costs = method.count_costs(model, (info.in_channels, *info.input_size))
    result = evaluate(model, test_loader, costs, path=path, gating=args.gating)
    if args.artifacts:
        result.write_artifacts(
            args.artifacts,
            test_loader.dataset,
            mean=info.mean,
            std=info.std,
            class_name=info.class_name,
        )
    return result.metrics


def main(argv: list[str] | None = None) -> int:
    try:
        load_plugins(sys.argv[1:] if argv is None else argv)
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if extra:
            _refuse_extra(parser, args.command, extra)
        if args.command == "eval":
            metrics = _evaluate(args)
            line = (
                f"eval {args.checkpoint}: test top-1 {metrics[M.TOP1]:.2f}% | "
                f"{metrics['computation_pct']:.1f}% of the plain ResNet's MACs | "
                + describe_routing(metrics)
            )
        else:
            cfg = _stage_config(args)
            note = init_split_note(cfg)
            if note:
                print(note, file=sys.stderr)
            result = run_stage(
                cfg, args.out, progress=not args.no_progress, artifacts=args.artifacts
            )
            metrics = result.metrics
            line = summary_line(cfg, metrics)
    except (ValueError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(metrics) if args.json else line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
