"""Behaviour checks of a trained model on a synthetic world (the default model's numbers).

Four checks, each generating with the model and measuring with the evaluation's own tools:

- `lipsync`: held-out clips driven by their own audio vs by *shuffled* audio (clip i gets the
  audio of clip i+1); both are scored against the ground truth of the clip's own audio, so the
  shuffled run is the control a model that ignores the audio would also reach. Identity
  similarity to the reference is read against the ground-truth video's own.
- `speed`: the same clips at several requested head speeds; the mean head speed measured in the
  generated frames (data.faces, as `speed_adherence`; and two more readings: the pose smoothed longer,
  and the pose read by the world's head-pose regressor) should grow with the request, at every seed of
  `--speed-seeds` (evaluation/speed_check.py).
- `long`: long videos (default one of 20 s, the held-out clips' audio concatenated) from one
  reference each (`--long-videos K`: K references spread over the split): jitter and identity
  similarity in the first vs the last quarter, and the clip-boundary seam ratio over the whole
  video; with K > 1 the means over the videos, and each video's numbers and per-clip jitter.
- `vae`: the lip-sync clips' ground truth encoded and decoded by the model's VAE, scored like the
  generated videos: the ceiling that any backbone decoding through this VAE can reach.

    python -m emoportrait.evaluation.model_checks --model M --set WORLD --out DIR [--checks lipsync,speed,long,vae]
        [--guidance-ref SCALE] [--guidance-audio SCALE] [--strength S] [--clip-overlap O] [--seed N]

The videos are generated with the model's own guidance scales, strength and clip overlap (its model_index.json)
unless `--guidance-*`, `--strength` or `--clip-overlap` name others, from the generation noise of `--seed`
(default 0); each check's JSON records the settings and the seed it used. The seams are read where each
generated clip's new frames begin.

Each check writes `DIR/<check>.json`; `DIR/checks.json` merges every check found in DIR (so the
checks can run in separate processes) and `DIR/long_sheet.png` shows the long video.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from emoportrait.atomic import atomic_write_text
from emoportrait.errors import EMOError
from emoportrait.evaluation.runner import finite_mean
from emoportrait.evaluation.speed_check import SPEED_LEVELS, check_speed
from emoportrait.pipelines.strength import check_strength_option

CHECKS = ("lipsync", "speed", "long", "vae")


def shuffled_sources(clips) -> dict:
    """Clip name -> the video whose audio drives it in the control: the next clip's (a derangement)."""
    return {c.name: clips[(i + 1) % len(clips)].video for i, c in enumerate(clips)}


def spread(items: list, k: int | None) -> list:
    """k items evenly spread over the list (all of them when k is None or too large)."""
    if k is None or k >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


def quarters(n: int) -> tuple[slice, slice]:
    """The first and the last quarter of n frames."""
    q = max(1, n // 4)
    return slice(0, q), slice(n - q, n)


def loudest_window(audio: np.ndarray, frames: int) -> np.ndarray:
    """The `frames`-frame window of 16 kHz `audio` (640 samples a frame) with the most energy: an open vowel."""
    from emoportrait.data.media import FPS, SAMPLE_RATE

    n = frames * SAMPLE_RATE // FPS
    start = int(np.argmax(np.convolve(audio.astype(np.float64) ** 2, np.ones(n), "valid")))
    return audio[start : start + n].astype(np.float32)


def mouth_change(vowel: np.ndarray, silence: np.ndarray, box) -> tuple[float, float]:
    """Mean change between (T, H, W, 3) frames driven by an open vowel and by silence, inside the mouth
    region of face `box` (as the training loss weights it, data.datasets.mouth_mask) and elsewhere."""
    from emoportrait.data.datasets import mouth_mask

    mouth = mouth_mask(np.asarray([box]), *vowel.shape[1:3])[0, 0].numpy() > 0  # (H, W)
    change = np.abs(vowel.astype(float) - silence.astype(float)).mean(axis=(0, 3))  # (H, W)
    return float(change[mouth].mean()), float(change[~mouth].mean())


def _sem(values) -> float | None:
    """The standard error of the mean of the finite values that are not None (sample std / sqrt(n)); None below two."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None


def _evaluate(world: Path, videos: Path, splits, clip_frames: int, max_frames: int | None, clip_overlap: int = 0):
    from emoportrait.evaluation.runner import EvalOptions, evaluate_set

    return evaluate_set(world, videos, EvalOptions(splits=splits, clip_frames=clip_frames, clip_overlap=clip_overlap,
                                                   max_frames=max_frames))


def _gt_mean(report, key: str) -> float | None:
    return finite_mean(v.get(f"{key}_gt") for v in report.per_video.values())


def _add_identity_ratio(out: dict, scores: dict) -> None:
    """out["identity_ratio"] = identity similarity / the ground truth's own, where both are measured."""
    if scores["identity_sim"] is not None and scores["identity_sim_gt"]:
        out["identity_ratio"] = scores["identity_sim"] / scores["identity_sim_gt"]


def check_lipsync(pipe, clips, world: Path, work: Path, splits, steps: int, max_frames: int | None, log,
                  seed: int = 0) -> dict:
    """Lip-sync r with own vs shuffled audio, and identity similarity vs the ground truth's."""
    from emoportrait.evaluation.generation import generate_for_set

    out = {}
    for name, audio_from in (("own", None), ("shuffled", shuffled_sources(clips))):
        videos = work / f"lipsync_{name}"
        videos.mkdir(parents=True, exist_ok=True)
        log(f"lipsync: generating {len(clips)} clips with {name} audio")
        clip_frames, overlap = generate_for_set("", clips, videos, steps, seed=seed, max_frames=max_frames, log=log,
                                                audio_from=audio_from, pipe=pipe)
        rep = _evaluate(world, videos, splits, clip_frames, max_frames, overlap)
        out[name] = {"lipsync_r": rep.values["lipsync_r"], "lipsync_r_gt_video": _gt_mean(rep, "lipsync_r"),
                     "identity_sim": rep.values["identity_sim"], "identity_sim_gt": _gt_mean(rep, "identity_sim"),
                     "per_video_lipsync_r": {k: v.get("lipsync_r") for k, v in rep.per_video.items()},
                     # each clip's identity (None: no face), and its ground truth's, for clip-by-clip comparisons
                     "per_video_identity_sim": {k: v.get("identity_sim") for k, v in rep.per_video.items()},
                     "per_video_identity_sim_gt": {k: v.get("identity_sim_gt") for k, v in rep.per_video.items()}}
    own, shuf = out["own"], out["shuffled"]
    for scores in (own, shuf):  # the standard error over the clips: one clip's r moves a lot, a few clips' mean too
        scores["lipsync_r_sem"] = _sem(scores["per_video_lipsync_r"].values())
    if own["lipsync_r"] is not None and shuf["lipsync_r"] is not None:
        out["lipsync_gap"] = own["lipsync_r"] - shuf["lipsync_r"]
        paired = [r - shuf["per_video_lipsync_r"].get(k) for k, r in own["per_video_lipsync_r"].items()
                  if r is not None and shuf["per_video_lipsync_r"].get(k) is not None]
        out["lipsync_gap_sem"] = _sem(paired)  # of the clip-by-clip differences (each clip with both audios)
    _add_identity_ratio(out, own)
    out["clips"] = len(clips)
    return out


def check_vae(pipe, clips, world: Path, work: Path, splits, max_frames: int | None, log) -> dict:
    """Identity and lip-sync of the ground truth after the VAE alone (encode -> mean latent -> decode)."""
    import torch

    from emoportrait.data.media import FPS, SAMPLE_RATE, read_audio, read_video, write_video

    videos = work / "vae_reconstruction"
    videos.mkdir(parents=True, exist_ok=True)
    vae = pipe.vae
    errors = []
    log(f"vae: reconstructing {len(clips)} ground-truth clips")
    for clip in clips:
        frames = read_video(clip.video, max_frames=max_frames)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).to(vae.device, torch.float32) / 127.5 - 1  # (T, 3, H, W)
        with torch.no_grad():
            rec = torch.cat([vae.decode(vae.encode(x[i:i + 8].to(vae.dtype)).latent_dist.mode()).sample.float()
                             for i in range(0, len(x), 8)]).clamp(-1, 1)
        errors.append(float(((rec - x) / 2).pow(2).mean()))
        audio = read_audio(clip.video)[: int(len(frames) * SAMPLE_RATE / FPS)]
        write_video(videos / f"{clip.name}.mp4", ((rec + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy(),
                    audio=audio)
    rep = _evaluate(world, videos, splits, int(pipe.num_frames), max_frames)
    out = {"identity_sim": rep.values["identity_sim"], "identity_sim_gt": _gt_mean(rep, "identity_sim"),
           "lipsync_r": rep.values["lipsync_r"], "mse": float(np.mean(errors)), "clips": len(clips)}
    _add_identity_ratio(out, out)
    return out


def _long_audio(clips, start: int, seconds: float) -> np.ndarray:
    """`seconds` of the clips' audio concatenated from clip `start` on (wrapping around)."""
    from emoportrait.data.media import SAMPLE_RATE, read_audio

    need = int(seconds * SAMPLE_RATE)
    parts, total, k = [], 0, start
    while total < need:
        if k - start == len(clips) and total == 0:
            raise EMOError("the long check's clips have no audio")
        parts.append(read_audio(clips[k % len(clips)].video))
        total += len(parts[-1])
        k += 1
    return np.concatenate(parts)[:need]


def check_long(pipe, clips, work: Path, steps: int, seconds: float, log, seed: int = 0, videos: int = 1,
               control: bool = False) -> dict:
    """Long videos: jitter and identity in the first vs last quarter, seams over the whole video.

    Video k starts at the k-th of `videos` clips spread over the set: that clip's first frame is the
    reference, the audio is the clips' own from it on, the noise is seed + k's (under one seed all
    videos' per-clip jitter follows one pattern: the noise sets it more than the content does). One
    video's first-vs-last-quarter jitter moves with the generation noise as much as with a model
    change (docs/experiments.md), so with several the top-level numbers are the means over the
    videos and `videos` keeps each one's. With `control` each video is generated a second time
    without motion frames (every clip as the first; nothing can be carried from clip to clip):
    `jitter_drift` = growth - that control's growth is the part the clip-to-clip feedback adds.
    """
    import torch

    from emoportrait.atomic import atomic_path
    from emoportrait.data.faces import FaceAnalyzer, FaceDetector
    from emoportrait.data.media import FPS, SAMPLE_RATE, VideoWriter, clip_layout_tags, read_video
    from emoportrait.demo import contact_sheet
    from emoportrait.evaluation import fsim, synthetic

    if videos < 1:
        raise EMOError(f"--long-videos must be at least 1, got {videos}")
    embedder, center = fsim.FaceEmbedder(), synthetic.load_identity_center()
    overlap = pipe.default_clip_overlap  # the seams sit at each later clip's first new frame

    def generate(path: Path, reference, ref_box, ref_desc, audio, seed_k: int,
                 motion_frames: bool) -> tuple[np.ndarray, dict]:
        with VideoWriter(path, fps=FPS, audio=audio, sample_rate=SAMPLE_RATE,
                         metadata=clip_layout_tags(pipe.num_frames, overlap)) as writer:
            for frame in pipe.iter_frames(reference, audio, num_inference_steps=steps, face_box=ref_box,
                                          generator=torch.Generator().manual_seed(seed_k), motion_frames=motion_frames):
                writer.write(frame)
        frames = read_video(path)
        with FaceAnalyzer() as analyzer:
            track = analyzer.analyze_frames(frames)
        one = {"frames": len(frames), "face_found": float(track.found.mean()),
               "seam": synthetic.seam_ratio(frames, int(pipe.num_frames), overlap)}
        for name, sl in zip(("first_quarter", "last_quarter"), quarters(len(frames))):
            descs = fsim.descriptors(embedder, frames[sl], track.boxes[sl], every=5)
            one[name] = {"jitter_hf": synthetic.temporal_hf_energy(frames[sl]),
                         "identity_sim": fsim.mean_similarity(descs, ref_desc, center)}
        first, last = one["first_quarter"]["jitter_hf"], one["last_quarter"]["jitter_hf"]
        one["jitter_growth"] = last / first - 1.0 if first and last is not None else None
        one["clip_jitter"] = synthetic.clip_hf_energy(frames, int(pipe.num_frames), overlap)
        return frames, one

    starts = spread(list(range(len(clips))), videos)
    per_video = []
    for k, start in enumerate(starts):
        audio = _long_audio(clips, start, seconds)
        reference = read_video(clips[start].video, max_frames=1)[0]
        with FaceDetector() as det:
            ref_box = det.detect(reference)
        if ref_box is None:
            raise EMOError(f"{clips[start].name}: no face in the reference frame")
        ref_desc = embedder.embed(reference, ref_box)  # once per video, for it and its control
        log(f"long: generating {seconds:g} s from {clips[start].name} ({k + 1}/{len(starts)})")
        name = "long" if k == 0 else f"long_{k}"
        frames, one = generate(work / f"{name}.mp4", reference, ref_box, ref_desc, audio, seed + k, True)
        one = {"reference": clips[start].name, "seed": seed + k, **one}
        if control:
            log(f"long: the same without motion frames ({k + 1}/{len(starts)})")
            _, one["no_motion"] = generate(work / f"{name}_no_motion.mp4", reference, ref_box, ref_desc, audio,
                                           seed + k, False)
            g, g0 = one["jitter_growth"], one["no_motion"]["jitter_growth"]
            one["jitter_drift"] = g - g0 if g is not None and g0 is not None else None
        per_video.append(one)
        if k == 0:
            with atomic_path(work.parent / "long_sheet.png") as tmp:
                contact_sheet(reference, frames, columns=10).save(tmp, format="PNG")

    out = {"frames": per_video[0]["frames"], "seconds": per_video[0]["frames"] / FPS,
           "face_found": finite_mean(v["face_found"] for v in per_video), "seam": finite_mean(v["seam"] for v in per_video)}
    for name in ("first_quarter", "last_quarter"):
        out[name] = {key: finite_mean(v[name][key] for v in per_video) for key in ("jitter_hf", "identity_sim")}
    out["jitter_growth"] = finite_mean(v["jitter_growth"] for v in per_video)
    # Standard errors over the videos (None for one): one video's growth moves by about +-10 points with its noise.
    out["jitter_growth_sem"], out["seam_sem"] = (_sem(v[k] for v in per_video) for k in ("jitter_growth", "seam"))
    out["seam_max"] = max((v["seam"] for v in per_video if v["seam"] is not None), default=None)
    if control:
        out["jitter_growth_no_motion"] = finite_mean(v["no_motion"]["jitter_growth"] for v in per_video)
        out["seam_no_motion"] = finite_mean(v["no_motion"]["seam"] for v in per_video)
        out["jitter_drift"] = finite_mean(v["jitter_drift"] for v in per_video)
        out["jitter_drift_sem"] = _sem(v["jitter_drift"] for v in per_video)
    out["videos"] = per_video
    return out


def merge(out: Path) -> dict:
    """checks.json = every `<check>.json` in `out`."""
    merged = {c: json.loads((out / f"{c}.json").read_text()) for c in CHECKS if (out / f"{c}.json").is_file()}
    atomic_write_text(out / "checks.json", json.dumps(merged, indent=1) + "\n")
    return merged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emoportrait.evaluation.model_checks", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model folder or hub id")
    p.add_argument("--set", required=True, type=Path, help="a synthetic world (emoportrait synth)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated, of {', '.join(CHECKS)}")
    p.add_argument("--split", default="heldout_identity,heldout_sentence")
    p.add_argument("--clips", type=int, default=None, help="K clips spread evenly over the split (lipsync, vae; default all)")
    p.add_argument("--speed-clips", type=int, default=4, help="clips per speed level, spread over the split")
    p.add_argument("--max-frames", type=int, default=100, help="frames per clip (lipsync, speed)")
    p.add_argument("--long-seconds", type=float, default=20.0)
    p.add_argument("--long-videos", type=int, default=1,
                   help="long videos, from references spread over the split (default 1); numbers are their means")
    p.add_argument("--long-control", action="store_true",
                   help="also generate each long video without motion frames: its jitter growth minus that "
                        "control's is the drift carried from clip to clip (doubles the long check's time)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--seed", type=int, default=0,
                   help="the generation noise's seed; another seed tells generation noise from a model's difference")
    p.add_argument("--speed-seeds", default=None, metavar="S,S,...",
                   help="generation seeds of the speed sweep (default: --seed alone); with several, `monotonic` "
                        "holds only where the sweep rises at every seed, and the readings are their means")
    p.add_argument("--guidance-ref", type=float, default=None, metavar="SCALE",
                   help="reference guidance scale for every check (default: the model's)")
    p.add_argument("--guidance-audio", type=float, default=None, metavar="SCALE",
                   help="audio guidance scale for every check (default: the model's)")
    p.add_argument("--strength", type=float, default=None, metavar="S",
                   help="start each clip from the reference noised a fraction S into the schedule (default: the model's)")
    p.add_argument("--free-init-iters", type=int, default=1, metavar="N",
                   help="generate with FreeInit, N denoising passes per clip from pure noise (strength 1; default 1 = off)")
    p.add_argument("--clip-overlap", type=int, default=None, metavar="O",
                   help="frames each clip after the first shares with the one before (default: the model's)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    checks = [c for c in args.checks.split(",") if c]
    try:
        try:
            speed_seeds = [int(x) for x in args.speed_seeds.split(",") if x.strip()] if args.speed_seeds else None
        except ValueError:
            raise EMOError(f"--speed-seeds {args.speed_seeds!r}: expected comma-separated integers, e.g. 0,1") from None
        if args.free_init_iters < 1:
            raise EMOError(f"--free-init-iters must be at least 1, got {args.free_init_iters}")
        check_strength_option(args.strength, args.steps, args.free_init_iters)
        unknown = set(checks) - set(CHECKS)
        if unknown:
            raise EMOError(f"unknown check(s) {', '.join(sorted(unknown))}; choose from {', '.join(CHECKS)}")
        from emoportrait.evaluation.dataset import load_set
        from emoportrait.pipelines.loading import load_pipeline

        splits = tuple(s for s in args.split.split(",") if s)
        clips = [c for c in load_set(args.set, splits) if c.truth is not None]
        if not clips:
            raise EMOError(f"--set {args.set}: no clips with ground-truth sidecars in split(s) {args.split}")
        pipe = load_pipeline(args.model, device=args.device) if checks else None  # no checks: merge only
        if pipe is not None:
            pipe.set_progress_bar_config(disable=True)
            # Checked against F and N before any check runs, then the default of every call.
            overlap = None if args.clip_overlap is None else pipe.resolve_clip_overlap(args.clip_overlap, "--clip-overlap")
            scales = {"guidance_scale_ref": args.guidance_ref, "guidance_scale_audio": args.guidance_audio,
                      "strength": args.strength, "clip_overlap": overlap}
            pipe.register_to_config(**{k: v for k, v in scales.items() if v is not None})  # the default for every call
            if args.free_init_iters > 1:
                pipe.enable_free_init(num_iters=args.free_init_iters)
        work = args.out / "videos"
        work.mkdir(parents=True, exist_ok=True)  # `--checks long` alone writes long.mp4 straight into it

        def log(m: str) -> None:
            print(m, file=sys.stderr, flush=True)

        for check in checks:
            if check == "lipsync":
                result = check_lipsync(pipe, spread(clips, args.clips), args.set, work, splits, args.steps,
                                       args.max_frames, log, args.seed)
            elif check == "speed":
                result = check_speed(pipe, spread(clips, args.speed_clips), work, args.steps, args.max_frames,
                                     SPEED_LEVELS, log, args.seed, speed_seeds)
            elif check == "vae":
                result = check_vae(pipe, spread(clips, args.clips), args.set, work, splits, args.max_frames, log)
            else:
                result = check_long(pipe, clips, work, args.steps, args.long_seconds, log, args.seed,
                                    args.long_videos, args.long_control)
            if check != "vae":  # the scales and the seed the videos were generated with
                result["guidance"] = {"ref": pipe.config.guidance_scale_ref, "audio": pipe.config.guidance_scale_audio}
                result["free_init_iters"] = args.free_init_iters
                result["strength"] = pipe.default_strength  # the folder's, or 1 under FreeInit
                result["clip_overlap"] = pipe.default_clip_overlap
                if "seeds" not in result:
                    result.setdefault("seed", args.seed)
            result["command"] = " ".join(["python -m emoportrait.evaluation.model_checks", *(argv or sys.argv[1:])])
            atomic_write_text(args.out / f"{check}.json", json.dumps(result, indent=1) + "\n")
            log(f"{check}: {json.dumps({k: v for k, v in result.items() if not k.startswith('per_')})}")
        merge(args.out)
    except EMOError as e:
        print(f"model_checks: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
