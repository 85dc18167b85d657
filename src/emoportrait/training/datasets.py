"""The stage dataset of a run: `emoportrait.data.datasets.stage_dataset` set up from the model folder.

Frame size, F, N, the audio/speed window m and the speed buckets are read from the model being
trained (its sub-folder configs), so data and model cannot disagree; so is the latent cache
(`data.latents`): only one made by the model's own VAE encoder is read; `data.options` in the config
adds or overrides dataset keyword arguments (e.g. `samples_per_clip`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from emoportrait.errors import EMOError


def _component_config(model_dir: Path, part: str) -> dict[str, Any]:
    path = model_dir / part / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise EMOError(f"{path} is missing or unreadable; --init must be a complete model folder") from None


def dataset_options(model_dir: str | Path, seed: int) -> dict[str, Any]:
    """Dataset keyword arguments that make the samples match the model in `model_dir`."""
    model_dir = Path(model_dir)
    unet = _component_config(model_dir, "unet")
    vae = _component_config(model_dir, "vae")
    audio = _component_config(model_dir, "audio_proj")
    speed = _component_config(model_dir, "speed_encoder")
    return {
        "size": int(vae["sample_size"]),
        "seed": seed,
        "num_frames": int(unet["num_frames"]),
        "num_motion_frames": int(unet["num_motion_frames"]),
        "window": int(audio["window"]),
        "speed_centers": tuple(speed["centers"]),
        "speed_radii": tuple(speed["radii"]),
    }


def build_stage_dataset(cfg, model_dir: str | Path) -> Dataset:
    """The training dataset of `cfg.stage` over `cfg.data.train` (the VAE stage reads stage-1 samples)."""
    from emoportrait.data.datasets import stage_dataset
    from emoportrait.data.latent_cache import CACHE_DIR, model_encoder_fingerprint

    if cfg.data.train is None:
        raise EMOError("no training data: pass --data SHARDS_DIR (or data.train in the config)")
    root = Path(cfg.data.train)
    if not root.is_dir():
        raise EMOError(f"--data {root}: shards folder not found; create it with `emoportrait preprocess`")
    options = {**dataset_options(model_dir, cfg.seed), **cfg.data.options}
    if cfg.mouth_loss_weight > 0:  # the video stages' mouth-region loss weight needs the masks
        options["with_mouth_mask"] = True
    # The VAE stage trains on the frames; `auto` without any cache folder has nothing to match.
    wants = str(cfg.data.latents).lower() != "none" and (cfg.data.latents != "auto" or (root / CACHE_DIR).is_dir())
    if cfg.stage != "vae" and wants:
        options.setdefault("latents", cfg.data.latents)
        options.setdefault("latents_fingerprint", model_encoder_fingerprint(model_dir))
    stage = "1" if cfg.stage == "vae" else cfg.stage
    dataset = stage_dataset(stage, root, streaming=cfg.data.streaming, **options)
    if len(dataset) == 0:
        raise EMOError(f"--data {root}: the dataset is empty; check the preprocess report in {root}/manifest.json")
    return dataset
