"""Helpers for the training tests: a tiny model folder and an in-memory stage dataset.

`ContractDataset` yields exactly what the data contract specifies for the stage datasets (keys,
shapes, dtypes, value ranges), from a small procedural world: a coloured disc ("face") whose radius
follows the loudness of a tone ("mouth follows audio") and which drifts at a per-clip speed. Its
random choices (reference frame, window start) use the global RNGs, as a real dataset may.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.utils.data import Dataset

from emoportrait.models.speed import speed_to_buckets

# Small enough for 2 CPU cores: 32 px frames (4x4 latents), F=4, N=2, m=1.
MODEL_OVERRIDES = ["resolution=32", "num_frames=4", "num_motion_frames=2", "window=1"]
SPF = 640


class ContractDataset(Dataset):
    """Stage samples per the data contract. stage "1"/"vae": single frames; "2"/"3": N+F windows."""

    def __init__(self, stage: str, num_clips: int = 6, size: int = 32, n: int = 2, f: int = 4, m: int = 1,
                 clip_frames: int = 16, seed: int = 0):
        self.stage, self.size, self.n, self.f, self.m, self.clip_frames = stage, size, n, f, m, clip_frames
        g = np.random.default_rng(seed)
        self.clips = [self._make_clip(g) for _ in range(num_clips)]
        self.centers = torch.tensor((0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0))
        self.radii = torch.tensor((0.25, 0.25, 0.25, 0.25, 0.375, 0.5, 0.75, 1.0, 1.0))

    def _make_clip(self, g: np.random.Generator) -> dict:
        t_frames, s = self.clip_frames, self.size
        bg = g.uniform(-0.8, 0.8, 3)
        fg = g.uniform(-0.8, 0.8, 3)
        speed = float(g.uniform(0.0, 3.0))
        loud = 0.5 + 0.5 * np.sin(np.arange(t_frames) * g.uniform(0.3, 1.2) + g.uniform(0, 6))  # per frame
        yy, xx = np.mgrid[0:s, 0:s] / s
        frames = np.empty((t_frames, 3, s, s), np.float32)
        cx0 = 0.5
        for t in range(t_frames):
            cx = cx0 + 0.15 * math.sin(t * speed / 10)
            r = 0.15 + 0.12 * loud[t]
            disc = ((xx - cx) ** 2 + (yy - 0.5) ** 2 < r**2).astype(np.float32)
            frames[t] = bg[:, None, None] * (1 - disc) + fg[:, None, None] * disc
        tt = np.arange(t_frames * SPF) / 16000
        audio = (0.3 * np.repeat(loud, SPF) * np.sin(2 * np.pi * 220 * tt)).astype(np.float32)
        mask = np.zeros((1, s, s), np.float32)
        mask[:, s // 8 : s - s // 8, s // 8 : s - s // 8] = 1.0
        return {"frames": torch.from_numpy(frames), "audio": torch.from_numpy(audio), "mask": torch.from_numpy(mask),
                "speed": torch.full((t_frames,), speed, dtype=torch.float32)}

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        c = self.clips[i]
        t_frames = self.clip_frames
        if self.stage in ("1", "vae"):
            target = random.randrange(t_frames)
            ref = (target + 1 + random.randrange(t_frames - 1)) % t_frames  # a different frame
            return {"pixel_values": c["frames"][target], "reference": c["frames"][ref], "face_mask": c["mask"]}
        n, f, m = self.n, self.f, self.m
        start = int(torch.randint(0, t_frames - (n + f) + 1, ()).item())
        ref = int(np.random.randint(0, t_frames))
        audio = torch.nn.functional.pad(c["audio"], (m * SPF, m * SPF))[start * SPF : (start + n + f + 2 * m) * SPF]
        speed = c["speed"][start : start + n + f]
        return {"pixel_values": c["frames"][start : start + n + f], "reference": c["frames"][ref],
                "face_mask": c["mask"], "audio": audio.clone(), "speed": speed,
                "speed_buckets": speed_to_buckets(speed, self.centers, self.radii)}


def build_tiny_model(path, overrides=MODEL_OVERRIDES, seed: int = 0):
    """The lead's `init --config tiny` code path (build_components + write_model), made smaller."""
    from emoportrait.models import build_components, load_model_config
    from emoportrait.models.assemble import write_model

    cfg = load_model_config("tiny", overrides)
    return write_model(build_components(cfg, seed=seed), cfg, [], path)


def fast_config(stage: str, **kw):
    """A TrainConfig for a few CPU steps (no warm-up, lr high enough to move tiny weights)."""
    from emoportrait.training.config import TrainConfig

    cfg = TrainConfig(stage=stage, max_steps=kw.pop("max_steps", 3), batch_size=kw.pop("batch_size", 2), seed=0)
    cfg.optim.lr = kw.pop("lr", 1e-3)
    cfg.checkpoint.every = kw.pop("checkpoint_every", 0)
    cfg.log.every = 1000
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg.validate()


def write_shards(root, num_clips: int = 4, size: int = 32, clip_frames: int = 16, context: int = 3, seed: int = 0,
                 clips_per_shard: int = 2):
    """Shards + manifest.json in the layout `emoportrait preprocess` writes, from ContractDataset's world."""
    import json
    from pathlib import Path

    import cv2

    from emoportrait.data.shards import TarSampleWriter, encode_clip

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    world = ContractDataset("2", num_clips=num_clips, size=size, clip_frames=clip_frames, seed=seed)
    clips, shards = [], []
    for j in range(0, num_clips, clips_per_shard):
        name = f"shard-{j // clips_per_shard:06d}.tar"
        with TarSampleWriter(root / name) as w:
            for c in range(j, min(j + clips_per_shard, num_clips)):
                clip, key, t = world.clips[c], f"clip{c:03d}", clip_frames
                rgb = ((clip["frames"].permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
                images = [cv2.imencode(".png", f[:, :, ::-1])[1].tobytes() for f in rgb]
                audio = np.pad(clip["audio"].numpy(), (context * SPF, context * SPF))
                boxes = np.tile(np.array([size / 8, size / 8, size - size / 8, size - size / 8], np.float32), (t, 1))
                meta = {"key": key, "num_frames": t, "image_format": "png", "audio_context": context, "has_audio": True,
                        "start_frame": 0, "size": size}
                arrays = {"boxes": boxes, "found": np.ones(t, np.uint8),
                          "rotation": np.tile(np.eye(3, dtype=np.float32), (t, 1, 1)), "ypr": np.zeros((t, 3), np.float32),
                          "speed": clip["speed"].numpy(), "audio": audio}
                w.write(key, encode_clip(key, meta, arrays, images))
                clips.append({"key": key, "shard": name, "num_frames": t, "has_audio": True, "seconds": t / 25})
        shards.append({"name": name, "num_clips": len(clips) - sum(s["num_clips"] for s in shards)})
    manifest = {"config": {"size": size, "audio_context": context}, "shards": shards, "clips": clips, "complete": True}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root
