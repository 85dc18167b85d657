"""Does a model use its conditions? Its training loss with the right condition vs a wrong one.

On fixed training samples (shards from `emoportrait preprocess`) the stage's plain prediction MSE
(eps, paper eq. 1, or v, as the model's scheduler says) is measured three ways per condition: with
the sample's own reference image / audio, with another sample's ("shuffled": sample i gets sample
i+1's) and with none (zeros); in stage 3 also with another sample's head speed (the speed layers).
The noise and the timesteps are the same draws in every variant, so the differences are the
conditions' alone. A model that ignores its reference or its audio has gaps
near zero; generation quality cannot be better than what these gaps allow. Cheap (no sampling loop), so it can follow every stage of a recipe.

    python -m emoportrait.evaluation.condition_probe --model M --data SHARDS --stage 2 [--samples 32] [--out probe.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from emoportrait.atomic import atomic_write_text
from emoportrait.errors import EMOError


def _variants(enc, stage: str) -> dict:
    """Name -> EncodedBatch with one condition replaced (shuffled = rolled by one sample, zero = zeros)."""
    out = {"right": enc}
    fields = ["reference"] + (["audio_features"] if stage in ("2", "3") else [])
    for f in fields:
        value = getattr(enc, f)
        name = "audio" if f == "audio_features" else f
        out[f"{name}_shuffled"] = dataclasses.replace(enc, **{f: value.roll(1, 0)})
        out[f"{name}_zero"] = dataclasses.replace(enc, **{f: torch.zeros_like(value)})
    if stage == "3":  # the speed layers: another sample's head speed (no "zero": 0 deg/frame is a real speed)
        out["speed_shuffled"] = dataclasses.replace(enc, speed=enc.speed.roll(1, 0))
    return out


@torch.no_grad()
def probe_conditions(model: str | Path, data: str | Path, stage: str, num_samples: int = 32, repeats: int = 3,
                     batch_size: int = 8, seed: int = 0) -> dict:
    """Mean plain (eps or v) prediction MSE of `model` on `num_samples` fixed samples of `data`, per condition variant.

    Returns: {"stage", "samples", "repeats", "loss": {variant: mse}, "gap": {condition: shuffled - right}}.
    """
    from diffusers import DDPMScheduler
    from torch.utils.data import default_collate

    from emoportrait.pipelines.loading import load_pipeline
    from emoportrait.training.config import TrainConfig
    from emoportrait.training.datasets import build_stage_dataset
    from emoportrait.training.module import EMOTrainingModule, encode_batch

    if stage not in ("1", "2", "3"):
        raise EMOError(f"stage must be 1, 2 or 3, got {stage!r}")
    cfg = TrainConfig(stage=stage, seed=seed)
    cfg.data.train = str(data)
    dataset = build_stage_dataset(cfg, model)
    pipe = load_pipeline(model)
    module = EMOTrainingModule(pipe.unet, pipe.reference_unet, pipe.face_locator, pipe.audio_proj, pipe.speed_encoder,
                               DDPMScheduler.from_config(pipe.scheduler.config), stage,
                               shared_noise_ratio=pipe.config.shared_noise_ratio).eval()
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(dataset), generator=generator)[: min(num_samples, len(dataset))].tolist()
    if len(picks) < 2:
        raise EMOError(f"{data}: need at least 2 samples to shuffle conditions, found {len(picks)}")
    chunks = [picks[i : i + batch_size] for i in range(0, len(picks), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) < 2:  # a lone sample cannot be shuffled: it joins the batch before
        last = chunks.pop()
        chunks[-1] += last
    sums: dict[str, float] = {}
    for start, chunk in enumerate(chunks):
        torch.manual_seed(seed + start)
        enc = encode_batch(default_collate([dataset[i] for i in chunk]), pipe.vae, pipe.audio_encoder, stage)
        for name, variant in _variants(enc, stage).items():
            for r in range(repeats):
                torch.manual_seed(seed + 1000 * (r + 1) + start)  # same noise and steps for every variant
                sums[name] = sums.get(name, 0.0) + module(variant).item() * len(chunk) / (len(picks) * repeats)
    loss = {k: round(v, 6) for k, v in sums.items()}
    gap = {c: round(loss[f"{c}_shuffled"] - loss["right"], 6) for c in ("reference", "audio", "speed")
           if f"{c}_shuffled" in loss}
    return {"stage": stage, "samples": len(picks), "repeats": repeats, "loss": loss, "gap": gap}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emoportrait.evaluation.condition_probe", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--data", required=True, help="shards folder (emoportrait preprocess)")
    p.add_argument("--stage", required=True, choices=("1", "2", "3"), help="the stage whose loss (and conditions) to probe")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="noise draws per sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    try:
        result = probe_conditions(args.model, args.data, args.stage, args.samples, args.repeats, seed=args.seed)
    except EMOError as e:
        print(f"condition_probe: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=1)
    if args.out is not None:
        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
