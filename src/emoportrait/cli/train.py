"""`emoportrait train`: one stage of EMO training (paper section 3.3), on CPU, one GPU or many.

    emoportrait train --config configs/tiny/stage1.yaml --data SHARDS --init MODEL --output-dir OUT
    accelerate launch --config_file configs/accelerate/ddp.yaml -m emoportrait train ...

Every key of `TrainConfig` is also an option (`--optim.lr=1e-4`, `--batch_size=8`), applied after the
YAML. Inputs are checked before anything is written; the run ends with a model folder at OUT/model.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from emoportrait.errors import EMOError
from emoportrait.training.config import STAGES, TrainConfig

# Config keys that have their own, named option.
_NAMED = {"stage", "max_steps", "force", "data.train"}
_PREFIX = "cfg:"


def _config_keys(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, typing.Any]]:
    """Every leaf key of the config as (dotted name, default)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            keys += _config_keys(tp, f"{prefix}{f.name}.")
        else:
            keys.append((f"{prefix}{f.name}", default))
    return keys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train one stage of EMO (1 image, 2 video+audio, 3 speed; or the tiny VAE)",
        description="Train one EMO stage from a model folder on preprocessed shards, with accelerate "
                    "(one CPU process, DDP, FSDP/DeepSpeed). Ends with OUT/model. See docs/training.md.",
        allow_abbrev=False,
    )
    p.add_argument("--config", default=None, help="experiment YAML, e.g. configs/tiny/stage1.yaml")
    p.add_argument("--stage", choices=STAGES, default=None,
                   help="1 image, 2 video + audio, 3 speed, vae (tiny VAE stand-in); default: the config's")
    p.add_argument("--data", default=None, help="folder of training shards (from `emoportrait preprocess`)")
    p.add_argument("--init", required=True, help="model folder to start from (`emoportrait init` or the previous stage's OUT/model)")
    p.add_argument("--output-dir", required=True, help="run folder: checkpoints/, logs, loss.png, model/")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides the config)")
    p.add_argument("--resume", default=None, metavar="latest|STEP|PATH", help="continue a run from a checkpoint")
    p.add_argument("--force", action="store_true", help="start stage k from a model that has not finished stage k-1")
    keys = p.add_argument_group("config keys", "any TrainConfig key, applied after --config (values read as YAML)")
    for key, default in _config_keys():
        if key not in _NAMED:
            keys.add_argument(f"--{key}", dest=_PREFIX + key, default=None, metavar="V", help=f"(default {default!r})")
    p.set_defaults(func=run)
    return p


def build_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults -> YAML -> --key=value -> the named options; validated."""
    from emoportrait.config import load_config, read_yaml

    overrides = [f"{k[len(_PREFIX):]}={v}" for k, v in vars(args).items() if k.startswith(_PREFIX) and v is not None]
    cfg = load_config(TrainConfig, args.config, overrides)
    if args.stage is not None:
        yaml_stage = read_yaml(args.config).get("stage") if args.config else None
        if yaml_stage is not None and str(yaml_stage) != args.stage:
            raise EMOError(f"{args.config} is a stage-{yaml_stage} config but --stage {args.stage} was given; use the matching config")
        cfg.stage = args.stage
    if args.max_steps is not None:
        cfg.max_steps = args.max_steps
    if args.data is not None:
        cfg.data.train = args.data
    cfg.force = cfg.force or args.force
    return cfg.validate()


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    cfg = build_config(args)
    if cfg.data.train is None:
        raise EMOError("no training data: pass --data SHARDS_DIR (or data.train in the config)")
    if not Path(cfg.data.train).is_dir():
        raise EMOError(f"--data {cfg.data.train}: shards folder not found; create it with `emoportrait preprocess`")
    if not Path(args.init).is_dir():
        raise EMOError(f"--init {args.init}: model folder not found; create one with `emoportrait init`")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise EMOError(f"--output-dir {out} is a file; choose a folder")
    if not out.parent.is_dir():
        raise EMOError(f"--output-dir {out}: parent folder {out.parent} does not exist; create it first")

    from emoportrait.training.train import train

    train(cfg, args.init, out, resume=args.resume)
    return 0
