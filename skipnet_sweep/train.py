"""Run or debug one stage on one machine, without Ray.

python -m skipnet_sweep.train baseline --arch cifar_resnet20 --epochs 2 --out base.pt
python -m skipnet_sweep.train sp  --arch cifar_resnet20 --gate rnn --epochs 2 --out sp.pt
python -m skipnet_sweep.train hrl --init sp.pt --alpha 0.5 --iterations 300 --out hrl.pt
python -m skipnet_sweep.train eval --checkpoint hrl.pt --artifacts eval/
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from torch.utils.data import DataLoader

from skipnet_sweep.data import build_datasets, list_datasets
from skipnet_sweep.flops import count_costs
from skipnet_sweep.models import ModelConfig
from skipnet_sweep.stages import (
    CheckpointError,
    DataConfig,
    StageConfig,
    TrainConfig,
    evaluate,
    load_checkpoint,
    load_model,
    run_stage,
    summary_line,
)
from skipnet_sweep.stages.config import hrl_defaults

_TRAIN_FLAGS = {f.name for f in fields(TrainConfig)} - {"stage", "lr_milestones"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m skipnet_sweep.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("baseline", "sp", "hrl", "act", "sact"):
        s = sub.add_parser(name, help=f"train the {name} stage")
        s.add_argument(
            "--arch",
            default=None,
            help="registered architecture (default: from --init, else cifar_resnet20)",
        )
        s.add_argument(
            "--gate", default=None, help="ff1, ff2 or rnn (default: from --init, else rnn)"
        )
        s.add_argument("--dataset", default="fashion_mnist", help=", ".join(list_datasets()))
        s.add_argument("--root", default=None, help="dataset folder (default: its usual place)")
        s.add_argument("--train-subset", type=int, default=None)
        s.add_argument("--test-subset", type=int, default=None)
        s.add_argument("--num-workers", type=int, default=0)
        s.add_argument("--init", default=None, help="checkpoint to start from (SP for HRL+SP)")
        s.add_argument(
            "--backbone-weights",
            default=None,
            help="torchvision-format ResNet state_dict to start the backbone from",
        )
        s.add_argument("--out", default=None, help="where to write the final checkpoint")
        s.add_argument("--artifacts", default=None, help="folder for per-sample evaluation files")
        s.add_argument(
            "--milestones", default=None, help="lr decay points as fractions, e.g. 0.5,0.75"
        )
        s.add_argument("--soft", action="store_true", help="SP with soft gates (Table 3 ablation)")
        s.add_argument("--pure-rl", action="store_true", help="HRL without the supervised term")
        for flag in sorted(_TRAIN_FLAGS - {"gating", "supervised"}):
            kind = {"int": int, "float": float, "bool": None}.get(
                {f.name: f.type for f in fields(TrainConfig)}[flag].split(" ")[0], str
            )
            opt = "--" + flag.replace("_", "-")
            if kind is None:
                s.add_argument(opt, action="store_true", default=None)
            else:
                s.add_argument(opt, type=kind, default=None)
        s.add_argument("--no-progress", action="store_true")
        s.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    e = sub.add_parser("eval", help="evaluate a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--dataset", default=None, help="default: the one it was trained on")
    e.add_argument("--root", default=None)
    e.add_argument("--test-subset", type=int, default=None)
    e.add_argument("--path", default="sparse", choices=("sparse", "masked"))
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--artifacts", default=None)
    e.add_argument("--json", action="store_true")
    return p


_HRL_ONLY = ("alpha", "gamma", "rl_weight", "cost", "reward_baseline", "pure_rl")
_SP_ONLY = ("soft",)
_HALTING_ONLY = ("tau",)


def _refuse_foreign_flags(args: argparse.Namespace) -> None:
    """A flag that the chosen stage would ignore is an error, not a silent no-op."""
    foreign = [f for f in _HRL_ONLY if args.command != "hrl" and getattr(args, f, None)]
    foreign += [f for f in _SP_ONLY if args.command != "sp" and getattr(args, f, None)]
    foreign += [
        f for f in _HALTING_ONLY if args.command not in ("act", "sact") and getattr(args, f, None)
    ]
    if args.command in ("baseline", "act", "sact") and args.gate not in (None, "none"):
        foreign.append("gate")
    if foreign:
        flags = ", ".join("--" + f.replace("_", "-") for f in foreign)
        raise ValueError(f"{flags} do(es) not apply to the {args.command} stage")


def _stage_config(args: argparse.Namespace) -> StageConfig:
    _refuse_foreign_flags(args)
    init_model = None
    if args.init:
        init_model = ModelConfig(**load_checkpoint(args.init)["model_config"])
    arch = args.arch or (init_model.arch if init_model else "cifar_resnet20")
    if args.command in ("baseline", "act", "sact"):
        gate = None if args.command == "baseline" else args.command
    else:
        gate = args.gate or (init_model.gate if init_model and init_model.gate else "rnn")
    gate = None if gate == "none" else gate
    train_kw = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k, None) is not None}
    if args.milestones is not None:
        train_kw["lr_milestones"] = tuple(float(v) for v in args.milestones.split(",") if v)
    if args.soft:
        train_kw["gating"] = "soft"
    if args.pure_rl:
        train_kw["supervised"] = False
    if "iterations" not in train_kw and "epochs" not in train_kw:
        train_kw["epochs"] = 1.0
    if args.command == "hrl":
        train = hrl_defaults(**train_kw)
    else:
        train = TrainConfig(stage=args.command, **train_kw)
    data = DataConfig(
        dataset=args.dataset,
        root=args.root,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        num_workers=args.num_workers,
    )
    return StageConfig(
        ModelConfig(arch, gate), data, train, init=args.init, backbone_weights=args.backbone_weights
    )


def _evaluate(args: argparse.Namespace) -> dict:
    model, payload = load_model(args.checkpoint)
    stage = payload.get("stage_config") or {}
    # Rebuild the data the checkpoint was trained on (seed and synthetic sizes included),
    # with the command line's overrides.
    data = DataConfig(**stage["data"]) if "data" in stage else DataConfig()
    seed = stage.get("train", {}).get("seed", 0)
    if args.dataset and args.dataset != data.dataset:
        data = DataConfig(dataset=args.dataset)
    kwargs = data.loader_kwargs()
    kwargs["root"] = args.root or kwargs["root"]
    if args.test_subset is not None:
        kwargs["test_subset"] = args.test_subset
    kwargs.pop("num_workers")
    _, test_set, info = build_datasets(data.dataset, seed=seed, **kwargs)
    test_loader = DataLoader(test_set, batch_size=args.batch_size, shuffle=False)
    costs = count_costs(model, (info.in_channels, *info.input_size))
    result = evaluate(model, test_loader, costs, path=args.path)
    if args.artifacts:
        result.write_artifacts(args.artifacts, test_loader.dataset, mean=info.mean, std=info.std)
    return result.metrics


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "eval":
            metrics = _evaluate(args)
            line = (
                f"eval {args.checkpoint}: top1 {metrics['top1']:.2f}% | "
                f"{metrics['computation_pct']:.1f}% of the plain ResNet's MACs"
            )
        else:
            cfg = _stage_config(args)
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
