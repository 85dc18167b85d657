"""Generation benchmark (DESIGN.md section 8): memory vs audio length, backbone cost, ReferenceNet caching.

One run measures three ratios on a randomly initialised model of the chosen size:

1. Peak memory (process RSS, or CUDA peak on a GPU) while streaming a video for a short audio and
   for a 4x longer one into an mp4, each in a fresh subprocess (`emoportrait generate`'s code path:
   `EMOPipeline.iter_frames` -> `VideoWriter`). Bounded memory means a ratio near 1.
2. One backbone forward of `EMOUNet` on a clip (1 x 4 x F x h x w latents, reference, motion, audio,
   speed and face conditions) vs a plain diffusers `UNet2DConditionModel` of the same widths on the
   same F latents with SD1.5's text conditioning (77 x 768 tokens).
3. One clip of denoising at `--steps` steps with ReferenceNet features computed once per clip (ours,
   paper 3.2) vs recomputed at every step, with the three guidance branches batched.

Usage:
    .venv/bin/python benchmarks/bench_generate.py [--size tiny|full] [--seconds 4] [--steps 40]
        [--device cpu|cuda] [--threads N] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Syllable-rate amplitude-modulated harmonics plus a little noise, (S,) float32."""
    rng = np.random.RandomState(seed)
    t = np.arange(int(seconds * rate)) / rate
    env = 0.5 * (1 + np.sin(2 * np.pi * 3.5 * t)) ** 2
    tone = sum(np.sin(2 * np.pi * 170 * k * t) / k for k in range(1, 6))
    return (0.2 * env * tone + 0.01 * rng.randn(t.size)).astype(np.float32)


def build_model(size: str, folder: Path) -> None:
    """A randomly initialised model folder of `size` (the `emoportrait init --config SIZE` parts)."""
    from emoportrait.models import build_components, load_model_config
    from emoportrait.pipelines.pipeline_emo import EMOPipeline

    EMOPipeline(**build_components(load_model_config(size), seed=0)).save_pretrained(folder)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    """Median wall time of `fn()` in seconds, after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_bench_args(description: str, argv: list[str] | None) -> argparse.Namespace:
    """The training benchmarks' options (--size, --device, --threads, --repeats), torch's threads set."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", default="tiny", choices=("tiny", "full"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


# --------------------------------------------------------------------------- 1. memory


def memory_child(model: str, seconds: float, steps: int, device: str, threads: int | None) -> None:
    """(subprocess) Stream one video to an mp4; print peak memory as JSON."""
    if threads:
        torch.set_num_threads(threads)
    from emoportrait.data.media import VideoWriter
    from emoportrait.pipelines.loading import load_pipeline

    pipe = load_pipeline(model, device=device, dtype="float32")
    pipe.set_progress_bar_config(disable=True)
    size = pipe.sample_size
    image = np.random.RandomState(0).randint(0, 255, (size, size, 3), np.uint8)
    mask = np.zeros((size, size), np.float32)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    kwargs = dict(num_inference_steps=steps, face_mask=mask, decode_chunk_size=4)
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up (one clip) so one-off allocations are in the baseline, not in the measurement.
        with VideoWriter(Path(tmp) / "warm.mp4") as w:
            for frame in pipe.iter_frames(image, speech_like(0.1), **kwargs):
                w.write(frame)
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        audio = speech_like(seconds)
        start = time.perf_counter()
        with VideoWriter(Path(tmp) / "out.mp4", audio=audio) as w:
            for frame in pipe.iter_frames(image, audio, **kwargs):
                w.write(frame)
        elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {"frames": w.num_frames, "baseline_rss": baseline, "peak_rss": peak, "seconds": elapsed}
    if device.startswith("cuda"):
        result["cuda_peak"] = torch.cuda.max_memory_allocated()
    print("RESULT " + json.dumps(result))


def measure_memory(model: str, seconds: float, steps: int, device: str, threads: int | None) -> dict:
    out = {}
    for label, secs in (("short", seconds), ("long", 4 * seconds)):
        cmd = [sys.executable, __file__, "--memory-child", model, "--seconds", str(secs), "--steps", str(steps),
               "--device", device] + (["--threads", str(threads)] if threads else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            raise SystemExit(f"memory run failed:\n{proc.stderr[-2000:]}")
        out[label] = json.loads(line[len("RESULT "):])
    return out


# --------------------------------------------------------------------------- 2./3. compute


def clip_conditions(pipe, nb: int, device: str):
    """Random clip inputs for the backbone: latents and every condition, batch `nb`."""
    f, n = pipe.num_frames, pipe.num_motion_frames
    h = pipe.sample_size // pipe.vae_scale_factor
    g = torch.Generator().manual_seed(0)
    ref_latents = torch.randn(1 + n, 4, h, h, generator=g).to(device)
    with torch.no_grad():
        feats = pipe.reference_unet(ref_latents)
        audio = pipe.encode_audio(speech_like(f / 25 + 0.1), f, device, torch.float32)  # (1, F, K, Ca)
        speed = pipe.encode_speed(0.5, device, torch.float32)
        face = pipe.face_locator(torch.ones(1, 1, pipe.sample_size, pipe.sample_size, device=device))
    return dict(
        sample=torch.randn(nb, 4, f, h, h, generator=g).to(device),
        reference_features={k: v[:1].expand(nb, -1, -1) for k, v in feats.items()},
        motion_features={k: v[1:].repeat(nb, 1, 1) for k, v in feats.items()},
        audio_embeds=audio.expand(nb, -1, -1, -1), speed_embeds=speed.expand(nb, -1, -1),
        face_features=face.expand(nb, -1, -1, -1),
        reference_latents=ref_latents[:1].expand(nb, -1, -1, -1),  # read only with reference_latent_input
    ), ref_latents


def plain_unet(pipe, device: str):
    """diffusers' UNet2DConditionModel with the backbone's widths and SD1.5's text cross-attention."""
    from diffusers import UNet2DConditionModel

    c = pipe.unet.config
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=c.sample_size, block_out_channels=tuple(c.block_out_channels),
        down_block_types=tuple(c.down_block_types), up_block_types=tuple(c.up_block_types),
        layers_per_block=c.layers_per_block, norm_num_groups=c.norm_num_groups,
        attention_head_dim=c.num_attention_heads, cross_attention_dim=768,
    ).to(device).eval()


def measure_compute(pipe, device: str, steps: int, repeats: int) -> dict:
    f = pipe.num_frames
    t = torch.tensor(500, device=device)
    cond1, _ = clip_conditions(pipe, 1, device)
    baseline = plain_unet(pipe, device)
    latents_2d = cond1["sample"][0].permute(1, 0, 2, 3).contiguous()  # (F, 4, h, w): the same latents
    text = torch.randn(f, 77, 768, device=device)
    with torch.no_grad():
        t_emo = timed(lambda: pipe.unet(timestep=t, **cond1), device, repeats)
        t_plain = timed(lambda: baseline(latents_2d, t, encoder_hidden_states=text), device, repeats)

        cond3, ref_latents = clip_conditions(pipe, 3, device)  # three guidance branches, one forward
        t_step = timed(lambda: pipe.unet(timestep=t, **cond3), device, repeats)
        t_ref = timed(lambda: pipe.reference_unet(ref_latents), device, repeats)

        def clip_cached(n_steps):
            pipe.reference_unet(ref_latents)
            for _ in range(n_steps):
                pipe.unet(timestep=t, **cond3)

        def clip_uncached(n_steps):
            for _ in range(n_steps):
                pipe.reference_unet(ref_latents)
                pipe.unet(timestep=t, **cond3)

        direct = min(steps, 5)  # measured directly at a few steps; extrapolated to `steps` below
        clip_cached(1)
        clip_uncached(1)
        cached, uncached = [], []
        for _ in range(max(2, repeats // 2)):  # interleaved, so a busy machine affects both alike
            for fn, out in ((clip_cached, cached), (clip_uncached, uncached)):
                sync(device)
                start = time.perf_counter()
                fn(direct)
                sync(device)
                out.append(time.perf_counter() - start)
        t_cached, t_uncached = statistics.median(cached), statistics.median(uncached)
    return dict(t_emo=t_emo, t_plain=t_plain, t_step=t_step, t_ref=t_ref, direct_steps=direct,
                t_cached=t_cached, t_uncached=t_uncached,
                clip_cached=t_ref + steps * t_step, clip_uncached=steps * (t_ref + t_step))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny", help="model size config: tiny (default) or full")
    p.add_argument("--seconds", type=float, default=4.0, help="short audio length; the long one is 4x (default 4)")
    p.add_argument("--steps", type=int, default=40, help="denoising steps per clip for the caching ratio (default 40)")
    p.add_argument("--memory-steps", type=int, default=2, help="steps per clip in the memory runs (default 2)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.seconds, args.steps, args.device, args.threads)
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    from emoportrait.pipelines.loading import load_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / f"{args.size}-model"
        build_model(args.size, model)
        pipe = load_pipeline(str(model), device=args.device, dtype="float32")
        c = measure_compute(pipe, args.device, args.steps, args.repeats)
        m = measure_memory(str(model), args.seconds, args.memory_steps, args.device, args.threads)

    mib = 2**20
    s, lg = m["short"], m["long"]
    key = "cuda_peak" if "cuda_peak" in s else "peak_rss"
    rows = [
        ("peak memory, short audio", f"{s[key] / mib:.0f} MiB ({s['frames']} frames)", ""),
        ("peak memory, 4x longer audio", f"{lg[key] / mib:.0f} MiB ({lg['frames']} frames)",
         f"{lg[key] / s[key]:.2f}x"),
        ("  growth over warm baseline", f"{(s[key] - s['baseline_rss']) / mib:.0f} -> "
                                        f"{(lg[key] - lg['baseline_rss']) / mib:.0f} MiB" if key == "peak_rss" else "", ""),
        ("EMOUNet forward (1 clip, all conditions)", f"{c['t_emo'] * 1e3:.1f} ms", ""),
        ("UNet2DConditionModel, same widths/latents", f"{c['t_plain'] * 1e3:.1f} ms",
         f"{c['t_emo'] / c['t_plain']:.2f}x"),
        ("denoising step, 3 CFG branches batched", f"{c['t_step'] * 1e3:.1f} ms", ""),
        ("ReferenceNet (reference + N motion frames)", f"{c['t_ref'] * 1e3:.1f} ms", ""),
        (f"clip, {c['direct_steps']} steps, measured: cached / per-step",
         f"{c['t_cached']:.2f} s / {c['t_uncached']:.2f} s", f"{c['t_uncached'] / c['t_cached']:.2f}x"),
        (f"clip, {args.steps} steps: cached / per-step ReferenceNet",
         f"{c['clip_cached']:.2f} s / {c['clip_uncached']:.2f} s", f"{c['clip_uncached'] / c['clip_cached']:.2f}x"),
        ("generation speed (short audio)", f"{s['seconds'] / s['frames']:.3f} s/frame at {args.memory_steps} steps", ""),
    ]
    print(f"\nemoportrait generation benchmark: size={args.size}, device={args.device}, "
          f"threads={torch.get_num_threads()}, torch {torch.__version__}")
    width = max(len(r[0]) for r in rows)
    for name, value, ratio in rows:
        print(f"  {name:<{width}}  {value:<34} {ratio}")


if __name__ == "__main__":
    main()
