"""Training benchmark: the frozen VAE's share of a stage-1 and a stage-2 step, and what `vae_dtype` saves.

Stages 1-3 encode every batch's frames with the frozen VAE before the backbone sees them. On a
randomly initialised model of the chosen size, with the tiny configs' batches (stage 1: 8 samples x
(1 frame + 1 reference); stage 2: 2 x (4 motion + 12 frames + 1 reference); frames at the model's
resolution), one run measures, per stage, median seconds of:

- encode, "before": the VAE itself, fp32, on NCHW frames (how training encoded before `encoding_vae`);
- encode, fp32: `encoding_vae(vae, fp32)`, the channels-last copy (`vae_dtype: auto` without mixed precision);
- encode, bf16: `encoding_vae(vae, bf16)` (`vae_dtype: bf16`);
- encode, cached: the latents drawn from a latent cache's stored distribution (`data.latents`,
  data/latent_cache.py): no encoder at all (the loader then also skips decoding the frames' JPEGs);
- the rest of the step: the backbone's forward and backward and the optimizer step on fp32 latents.

and reports the ratios "before" / fp32, "before" / bf16 and "before" / cached, for the encode and for
the whole step.
bf16 is fast only on CPUs with bf16 instructions (avx512_bf16 or AMX) and on GPUs.

Usage:
    .venv/bin/python benchmarks/bench_training_encode.py [--size tiny|full] [--device cpu|cuda] [--threads N] [--repeats 7]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from bench_generate import timed, training_bench_args  # median of repeats; the common options

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main(argv: list[str] | None = None) -> int:
    args = training_bench_args(__doc__.splitlines()[0], argv)

    from diffusers import DDPMScheduler

    from emoportrait.models import build_components, load_model_config
    from emoportrait.training.module import EMOTrainingModule, encode_batch
    from emoportrait.training.parts import encoding_vae

    cfg = load_model_config(args.size)
    parts = build_components(cfg, seed=0)
    dev, res = args.device, cfg.resolution
    vae = parts["vae"].to(dev).requires_grad_(False).eval()
    audio_encoder = parts["audio_encoder"].to(dev).eval()
    encoders = {"fp32": encoding_vae(vae, torch.float32), "bf16": encoding_vae(vae, torch.bfloat16)}
    n, f, m = cfg.num_motion_frames, cfg.num_frames, cfg.window
    g = torch.Generator().manual_seed(0)

    def frames(*shape):
        return (torch.rand(*shape, 3, res, res, generator=g) * 2 - 1).to(dev)

    batches = {
        "1": {"pixel_values": frames(8), "reference": frames(8), "face_mask": torch.ones(8, 1, res, res, device=dev)},
        "2": {"pixel_values": frames(2, n + f), "reference": frames(2), "face_mask": torch.ones(2, 1, res, res, device=dev),
              "audio": (0.1 * torch.randn(2, (n + f + 2 * m) * 640, generator=g)).to(dev),
              "speed": torch.ones(2, n + f, device=dev)},
    }
    module = EMOTrainingModule(parts["unet"], parts["reference_unet"], parts["face_locator"], parts["audio_proj"],
                               parts["speed_encoder"], DDPMScheduler(num_train_timesteps=1000), "1").to(dev).train()
    optimizer = torch.optim.AdamW([q for q in module.parameters() if q.requires_grad], lr=1e-5)
    report: dict = {"size": args.size, "device": dev, "threads": torch.get_num_threads(), "stages": {}}
    for stage, batch in batches.items():
        module.stage = stage
        encoded = encode_batch(batch, vae, audio_encoder, stage)

        def rest(encoded=encoded):
            module(encoded).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def before(batch=batch):  # the VAE itself on NCHW frames, as encode_batch ran before encoding_vae
            pv = batch["pixel_values"]
            vae.encode(torch.cat([pv.flatten(0, 1) if pv.dim() == 5 else pv, batch["reference"]])).latent_dist.sample()

        pv = batch["pixel_values"]
        with torch.no_grad():
            cached = {k: v for k, v in batch.items() if k not in ("pixel_values", "reference")}
            cached["latent_moments"] = vae.encode(pv.flatten(0, 1) if pv.dim() == 5 else pv).latent_dist.parameters
            if pv.dim() == 5:
                cached["latent_moments"] = cached["latent_moments"].unflatten(0, pv.shape[:2])
            cached["reference_moments"] = vae.encode(batch["reference"]).latent_dist.parameters
            enc = {"before": timed(before, dev, args.repeats)}
            enc.update({k: timed(lambda e=e, b=batch, s=stage: encode_batch(b, e, audio_encoder, s), dev, args.repeats)
                        for k, e in encoders.items()})
            enc["cached"] = timed(lambda b=cached, s=stage: encode_batch(b, vae, audio_encoder, s), dev, args.repeats)
        rest_s = timed(rest, dev, args.repeats)
        frames_per_step = (pv.shape[0] * pv.shape[1] if pv.dim() == 5 else pv.shape[0]) + len(batch["reference"])
        report["stages"][stage] = {
            "frames_encoded_per_step": frames_per_step,
            "encode_s": {k: round(v, 4) for k, v in enc.items()},
            "rest_of_step_s": round(rest_s, 4),
            "encode_share_before": round(enc["before"] / (enc["before"] + rest_s), 3),
            "encode_speedup": {k: round(enc["before"] / enc[k], 2) for k in ("fp32", "bf16", "cached")},
            "step_speedup": {k: round((enc["before"] + rest_s) / (enc[k] + rest_s), 2) for k in ("fp32", "bf16", "cached")},
        }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
