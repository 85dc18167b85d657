"""`emoportrait init`: build an untrained EMO model folder (DESIGN.md section 7)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="assemble an untrained model folder from SD1.5 / wav2vec2 / AnimateDiff (or random)",
        description="Assemble an EMO model folder. With --sd15/--wav2vec2/--motion-adapter the public "
                    "pretrained parts are loaded in their usual on-disk layouts and a report of loaded / newly "
                    "initialised / skipped keys is printed (and saved as init_report.json); without them "
                    "every part is randomly initialised at the configured size (e.g. --config tiny).",
    )
    p.add_argument("--out", required=True, help="model folder to create")
    p.add_argument("--config", default="full", help="model size: tiny, full or a YAML path (default: full)")
    p.add_argument("--sd15", help="diffusers Stable Diffusion 1.5 folder (unet/, vae/, scheduler/)")
    p.add_argument("--wav2vec2", help="transformers wav2vec2 folder (e.g. wav2vec2-base-960h)")
    p.add_argument("--motion-adapter", help="AnimateDiff motion module: MotionAdapter folder or mm_sd_v15_v2.ckpt")
    p.add_argument("--seed", type=int, default=0, help="seed for newly initialised layers")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.epilog = "Any further --key=value overrides the model config, e.g. --reference_mode=concat --num_frames=16."
    p.set_defaults(func=run, accepts_overrides=True, overrides=[])


def run(args: argparse.Namespace) -> int:
    from emoportrait.models.assemble import assemble, format_report, write_model
    from emoportrait.models.config import load_model_config

    cfg = load_model_config(args.config, args.overrides)
    components, cfg, reports = assemble(cfg, args.sd15, args.wav2vec2, args.motion_adapter, seed=args.seed)
    if reports:
        print(format_report(reports))
    out = write_model(components, cfg, reports, args.out, overwrite=args.force)
    n = sum(p.numel() for c in components.values() if hasattr(c, "parameters") for p in c.parameters())
    print(f"wrote {cfg.name} model ({n / 1e6:.1f}M parameters) to {out}")
    return 0
