"""`emoportrait preprocess`: raw talking-head videos -> webdataset training shards (paper 4.1).

    emoportrait preprocess --videos raw/ --out shards/ --size 512 --workers 8
    emoportrait preprocess --videos list.txt --out shards/ --shard 3/16      # one of 16 cluster jobs
    emoportrait preprocess --out shards/ --manifest-only                     # merge the jobs' results
    emoportrait preprocess --out shards/ --audio-features MODEL              # cache wav2vec2 features
    emoportrait preprocess --out shards/ --latents MODEL                     # cache the VAE's latents (stages 1-3)

Every `PreprocessConfig` key is also an option (`--clip_seconds 5`, `--crop_scale 1.8`), applied
after `--config`. Rerunning the same command resumes; bad videos are skipped and reported.
See docs/data.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from emoportrait.data.preprocess_config import PreprocessConfig
from emoportrait.errors import EMOError

_PREFIX = "cfg:"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "preprocess",
        help="turn raw talking-head videos into training shards (faces, head speed, clips, audio)",
        description="Decode videos at 25 fps / 16 kHz, detect faces and head pose on every frame, cut clips, "
                    "crop squares around the face, and write webdataset shards + manifest.json. Resumable, "
                    "parallel (--workers), splittable over machines (--shard I/N). See docs/data.md.",
        allow_abbrev=False,
    )
    p.add_argument("--videos", default=None, help="folder of videos (recursive), a .txt list of paths, or one file")
    p.add_argument("--out", required=True, help="output folder of shards + manifest.json")
    p.add_argument("--config", default=None, help="YAML file of PreprocessConfig keys")
    p.add_argument("--size", type=int, default=None, help="side of the square training frames (default 512)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--shard", default=None, metavar="I/N", help="process only shards j with j %% N == I")
    p.add_argument("--overwrite", action="store_true", help="start over in an --out made from other videos/settings")
    p.add_argument("--manifest-only", action="store_true", help="only merge finished shards into manifest.json")
    p.add_argument("--audio-features", default=None, metavar="MODEL",
                   help="after preprocessing, cache the audio features of MODEL's audio_encoder per clip")
    p.add_argument("--audio-features-name", default="default", help="name of that cache (default: default)")
    p.add_argument("--latents", default=None, metavar="MODEL",
                   help="after preprocessing, cache the latent distribution of every frame under MODEL's VAE encoder "
                        "(stages 1-3 of a model with that encoder then skip encoding; data/latent_cache.py)")
    p.add_argument("--latents-name", default="default", help="name of that cache (default: default)")
    p.add_argument("--latents-dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="dtype the VAE encodes in for --latents (default float32; bfloat16 is fast on GPUs and on "
                        "CPUs with bf16 instructions, as training's vae_dtype)")
    p.add_argument("--device", default=None, help="device of the encoders of --audio-features / --latents "
                                                  "(default: cuda when available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    keys = p.add_argument_group("config keys", "any PreprocessConfig key, applied after --config")
    hints = typing.get_type_hints(PreprocessConfig)
    for f in dataclasses.fields(PreprocessConfig):
        if f.name != "size":
            keys.add_argument(f"--{f.name}", dest=_PREFIX + f.name, default=None, metavar="V",
                              help=f"({hints[f.name].__name__}, default {f.default!r})")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from emoportrait.config import load_config
    from emoportrait.data.pipeline import run_preprocess, write_manifest

    out = Path(args.out)
    if args.manifest_only:
        print(f"emoportrait preprocess: {write_manifest(out).line()}")
        return 0
    if args.videos is None and args.audio_features is None and args.latents is None:
        raise EMOError("--videos is required (or --manifest-only / --audio-features / --latents on an existing --out)")
    if args.workers < 1:
        raise EMOError("--workers must be >= 1")
    overrides = [f"{k[len(_PREFIX):]}={v}" for k, v in vars(args).items() if k.startswith(_PREFIX) and v is not None]
    if args.size is not None:
        overrides.append(f"size={args.size}")
    cfg = load_config(PreprocessConfig, args.config, overrides)
    if args.videos is not None:
        summary = run_preprocess(args.videos, out, cfg, workers=args.workers, shard=args.shard,
                                 overwrite=args.overwrite, progress=not args.no_progress)
        print(f"emoportrait preprocess: {summary.line()}")
    if args.audio_features is None and args.latents is None:
        return 0
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.audio_features is not None:
        from emoportrait.data.audio_cache import build_audio_cache, load_model_audio_encoder

        encoder = load_model_audio_encoder(args.audio_features).to(device)
        cache = build_audio_cache(out, encoder, args.audio_features_name, device=device, progress=not args.no_progress)
        print(f"emoportrait preprocess: audio features in {cache}")
    if args.latents is not None:
        from emoportrait.data.latent_cache import build_latent_cache, load_model_vae

        cache = build_latent_cache(out, load_model_vae(args.latents), args.latents_name, device=device,
                                   dtype=getattr(torch, args.latents_dtype), progress=not args.no_progress)
        print(f"emoportrait preprocess: latents in {cache}")
    return 0
