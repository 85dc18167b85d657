"""`emoportrait generate`: one portrait + one voice clip -> a talking/singing mp4 (paper section 3.2).

Inputs are checked before the model loads (output folder, audio, image, face), so bad input fails
in a second with one line. Frames are streamed clip by clip into an H.264 mp4 (25 fps) that carries
the original audio as AAC; the file appears only when complete (Ctrl-C / SIGTERM leave nothing).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from emoportrait.errors import EMOError

DEFAULT_STEPS = 40  # paper 4.1: DDIM, 40 steps
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "generate",
        help="make a talking/singing portrait video from an image and an audio file",
        description="Generate a 25 fps talking/singing portrait video as long as the audio, with the audio "
                    "muxed in (H.264 + AAC mp4). See docs/generate.md.",
    )
    p.add_argument("--image", required=True, metavar="PATH", help="reference portrait (PNG/JPEG/WebP/..., any mode; one visible face)")
    p.add_argument("--audio", required=True, metavar="PATH", help="driving voice/singing audio (wav/mp3/m4a/ogg/flac/..., any rate)")
    p.add_argument("--out", required=True, metavar="OUT.mp4", help="output .mp4 path (written atomically)")
    p.add_argument("--model", default=None, metavar="DIR_OR_HUB_ID",
                   help="model folder or Hugging Face Hub id (default: the packaged default model)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N", help=f"denoising steps per clip (default {DEFAULT_STEPS})")
    p.add_argument("--speed", type=float, default=None, metavar="DEG",
                   help="target head rotation speed, degrees per frame (default 0.5)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    p.add_argument("--guidance-ref", type=float, default=None, metavar="SCALE", help="reference-image guidance scale (default: the model's; 1 = off)")
    p.add_argument("--guidance-audio", type=float, default=None, metavar="SCALE", help="audio guidance scale (default: the model's; 1 = off)")
    p.add_argument("--strength", type=float, default=None, metavar="S",
                   help="start each clip from the reference noised a fraction S into the schedule, running only "
                        "those steps (img2img's strength; 1 = pure noise, the paper; default: the model's)")
    p.add_argument("--eta", type=float, default=0.0, metavar="ETA",
                   help="DDIM's eta: 0 = deterministic steps (the paper's DDIM), 1 = as stochastic as DDPM (default 0)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                   help="weights dtype (default: float16/bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--free-init-iters", type=int, default=1, metavar="N",
                   help="FreeInit: denoise each clip N times, each pass from the last one's low-frequency noise "
                        "(less flicker, N x the time; starts from pure noise, strength 1; default 1 = off)")
    p.add_argument("--clip-overlap", type=int, default=None, metavar="O",
                   help="denoise each clip after the first over the previous clip's last O frames, so the temporal "
                        "layers see across the join (F / (F - O) x the time; 0 = the paper's clips; default: the model's)")
    p.add_argument("--decode-chunk-size", type=int, default=8, metavar="N", help="frames the VAE decodes at once (default 8)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def check_output_path(out: str | os.PathLike) -> Path:
    """The output must be a .mp4 in an existing, writable folder (checked before any work)."""
    path = Path(out)
    if path.suffix.lower() != ".mp4":
        raise EMOError(f"--out {path}: the output must be an .mp4 file")
    if path.is_dir():
        raise EMOError(f"--out {path}: is a folder; give a file name ending in .mp4")
    parent = path.parent
    if not parent.is_dir():
        raise EMOError(f"--out {path}: output folder {parent} does not exist; create it first")
    try:  # a real probe: os.access says yes to root even where the filesystem refuses
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError:
        raise EMOError(f"--out {path}: output folder {parent} is not writable") from None
    return path


def mux_rate(path: str | os.PathLike) -> int:
    """An AAC-supported sample rate at least the source's (capped at 48 kHz), to keep its quality."""
    import av

    try:
        with av.open(str(path)) as container:
            rate = int(container.streams.audio[0].rate or 16000)
    except Exception:  # already validated by read_audio; any oddity falls back to 16 kHz
        return 16000
    return next((r for r in AAC_RATES if r >= rate), AAC_RATES[-1])


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from emoportrait.data.media import FPS, VideoWriter, clip_layout_tags, read_audio
    from emoportrait.pipelines.loading import load_pipeline, resolve_model
    from emoportrait.pipelines.overlap import checked_overlap
    from emoportrait.pipelines.preprocessing import default_face_detector, load_audio, load_image
    from emoportrait.pipelines.strength import check_strength_option

    start = time.perf_counter()
    # Cheap checks first, so bad input never waits for the model.
    out = check_output_path(args.out)
    if args.steps < 1:
        raise EMOError(f"--steps must be at least 1, got {args.steps}")
    if args.decode_chunk_size < 1:
        raise EMOError(f"--decode-chunk-size must be at least 1, got {args.decode_chunk_size}")
    if args.free_init_iters < 1:
        raise EMOError(f"--free-init-iters must be at least 1, got {args.free_init_iters}")
    check_strength_option(args.strength, args.steps, args.free_init_iters)
    if args.clip_overlap is not None:
        checked_overlap(args.clip_overlap, name="--clip-overlap")  # against the model's F and N once it loads
    for name in ("speed", "guidance_ref", "guidance_audio"):
        value = getattr(args, name)
        if value is not None and not np.isfinite(value):
            raise EMOError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    if not (np.isfinite(args.eta) and args.eta >= 0):
        raise EMOError(f"--eta must be a number >= 0 (0 = deterministic DDIM), got {args.eta}")
    resolve_model(args.model)
    waveform = load_audio(args.audio)  # (S,) 16 kHz mono for the model
    rgb = load_image(args.image)  # (H, W, 3) uint8, upright, downscaled if huge
    face_box = default_face_detector().detect(rgb)
    if face_box is None:
        raise EMOError(f"{args.image}: no face found; use a photo with one clearly visible, roughly frontal face")

    import torch

    if not getattr(args, "verbose", False):
        # diffusers/transformers reset their loggers on import; keep their warnings out of the way.
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.set_verbosity_error()
        transformers_logging.set_verbosity_error()
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    pipe.set_progress_bar_config(disable=args.no_progress, unit="step", leave=False, dynamic_ncols=True)
    if args.free_init_iters > 1:
        pipe.enable_free_init(num_iters=args.free_init_iters)
    if args.eta and "eta" not in pipe.prepare_extra_step_kwargs(None, args.eta):  # the step kwargs it would pass
        raise EMOError(f"--eta {args.eta}: this model's scheduler ({type(pipe.scheduler).__name__}) has no eta; "
                       "leave --eta out or use a DDIM scheduler")
    rate = mux_rate(args.audio)
    soundtrack = read_audio(args.audio, sample_rate=rate)  # the original audio, for the mp4

    kwargs = {}
    if args.speed is not None:
        kwargs["speed"] = args.speed
    if args.guidance_ref is not None:
        kwargs["guidance_scale_ref"] = args.guidance_ref
    if args.guidance_audio is not None:
        kwargs["guidance_scale_audio"] = args.guidance_audio
    if args.strength is not None:
        kwargs["strength"] = args.strength
    kwargs["clip_overlap"] = pipe.resolve_clip_overlap(args.clip_overlap, name="--clip-overlap")  # checked against the model before any work
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    gen_start = time.perf_counter()
    try:
        # The clip layout goes into the mp4, so `emoportrait evaluate --videos` finds the seams where they are.
        layout = clip_layout_tags(pipe.num_frames, kwargs["clip_overlap"])
        with VideoWriter(out, fps=FPS, audio=soundtrack, sample_rate=rate, metadata=layout) as writer:
            for frame in pipe.iter_frames(rgb, waveform, num_inference_steps=args.steps, generator=generator, eta=args.eta,
                                          face_box=face_box, decode_chunk_size=args.decode_chunk_size, **kwargs):
                writer.write(frame)
    except OSError as e:  # disk full, folder removed meanwhile, ...: the temp file is already gone
        raise EMOError(f"--out {out}: could not write the video ({e.strerror or type(e).__name__})") from None
    gen_seconds = time.perf_counter() - gen_start
    frames = writer.num_frames
    print(f"wrote {out}: {frames} frames ({frames / FPS:.2f} s of video, {pipe.num_clips} clips x {pipe.steps_per_clip(args.steps, args.strength)} steps) "
          f"in {gen_seconds:.1f} s = {gen_seconds / frames:.2f} s/frame (total {time.perf_counter() - start:.1f} s)")
    return 0
