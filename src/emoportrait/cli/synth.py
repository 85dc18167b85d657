"""`emoportrait synth`: render the synthetic talking-head world (procedural faces + espeak-ng speech).

    emoportrait synth --out world/ --identities 40 --clips-per-identity 20 --workers 2
    emoportrait synth --out world/ --identities 8 --clips-per-identity 4 --sheet   # + contact_sheet.png
    emoportrait synth --out world/ --no-render --sheet --check                      # an existing world

Every `SynthConfig` key is also an option (`--sung_fraction 0.3`), applied after `--config`.
Rerunning the same command resumes. See docs/synth.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from emoportrait.data.synth.config import SynthConfig
from emoportrait.errors import EMOError

_PREFIX = "cfg:"
_MAIN = {"identities", "clips_per_identity", "seconds", "size", "seed"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synth",
        help="render the synthetic talking-head world: procedural identities speaking/singing, with ground truth",
        description="Render procedural identities speaking espeak-ng sentences (English, German, Mandarin) or "
                    "singing held vowels, as H.264/AAC mp4 clips at 25 fps with a per-frame ground-truth sidecar "
                    "(face box, head yaw/pitch/roll and speed, mouth opening/width, blink) and a manifest with "
                    "train / held-out-identity / held-out-sentence splits. Deterministic in --seed; rerunning "
                    "resumes. See docs/synth.md.",
        allow_abbrev=False,
    )
    p.add_argument("--out", required=True, help="output folder (clips/, manifest.json, synth_config.json)")
    p.add_argument("--identities", type=int, default=None, help="number of identities (default 8)")
    p.add_argument("--clips-per-identity", type=int, default=None, help="clips per identity (default 4)")
    p.add_argument("--seconds", type=float, default=None, help="length of every clip in seconds (default 4)")
    p.add_argument("--size", type=int, default=None, help="frame side in pixels, multiple of 16 (default 128)")
    p.add_argument("--seed", type=int, default=None, help="world seed; same seed, same files (default 0)")
    p.add_argument("--workers", type=int, default=1, help="parallel rendering processes (default 1)")
    p.add_argument("--config", default=None, help="YAML file of SynthConfig keys")
    p.add_argument("--sheet", action="store_true",
                   help="write OUT/contact_sheet.png: identities, a strip of frames and its mouth/head curves")
    p.add_argument("--check", action="store_true",
                   help="measure pixels/audio/face-detector agreement with the ground truth -> OUT/check.json")
    p.add_argument("--check-clips", type=int, default=24, help="clips measured by --check (default 24)")
    p.add_argument("--no-render", action="store_true",
                   help="render nothing; only --sheet / --check the world already in OUT")
    p.add_argument("--overwrite", action="store_true", help="replace a world made with other settings in OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    keys = p.add_argument_group("config keys", "any other SynthConfig key, applied after --config")
    hints = typing.get_type_hints(SynthConfig)
    for f in dataclasses.fields(SynthConfig):
        if f.name not in _MAIN:
            tp = hints[f.name]
            keys.add_argument(f"--{f.name}", dest=_PREFIX + f.name, default=None, metavar="V",
                              help=f"({getattr(tp, '__name__', str(tp))}, default {f.default!r})")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from emoportrait.config import load_config

    out = Path(args.out)
    if args.no_render:
        if not (args.sheet or args.check):
            raise EMOError("--no-render needs --sheet and/or --check")
        _report(out, args)
        return 0
    if args.workers < 1:
        raise EMOError("--workers must be >= 1")
    overrides = [f"{k[len(_PREFIX):]}={v}" for k, v in vars(args).items() if k.startswith(_PREFIX) and v is not None]
    overrides += [f"{k}={getattr(args, k)}" for k in sorted(_MAIN) if getattr(args, k) is not None]
    cfg = load_config(SynthConfig, args.config, overrides)
    cfg.check()

    from emoportrait.data.synth.world import synthesize_world

    start = time.perf_counter()
    manifest = synthesize_world(cfg, out, workers=args.workers, progress=not args.no_progress,
                                overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    seconds = sum(c["seconds"] for c in manifest["clips"])
    splits = ", ".join(f"{k}={len(v)}" for k, v in manifest["splits"].items())
    print(f"emoportrait synth: {len(manifest['clips'])} clips ({seconds:.0f} clip-seconds; {splits}) "
          f"in {out} after {elapsed:.1f} s")
    _report(out, args)
    return 0


def _report(out, args: argparse.Namespace) -> None:
    import json

    if args.sheet:
        from emoportrait.data.synth.sheet import make_sheet

        print(f"emoportrait synth: contact sheet {make_sheet(out)}")
    if args.check:
        from emoportrait.data.synth.check import check_world

        report = check_world(out, max_clips=max(1, args.check_clips))
        print(f"emoportrait synth: check of {report['clips']} clips -> {out / 'check.json'}")
        print(json.dumps(report, indent=1))
