"""Optional per-clip audio-feature cache, so full-size training does not rerun wav2vec2 every epoch.

Layout, beside the shards::

    ROOT/audio_features/NAME/info.json          encoder, context frames C, feature shape (L, D)
    ROOT/audio_features/NAME/shard-000000.tar   <key>.features.npy: (T + 2C, L, D) float16

Row r of a clip's features is the encoder's output for clip frame r - C: the encoder runs once
over the clip's stored audio (which already has C frames of context on each side, see
`data/shards.py`) with `num_frames = T + 2C`, and its row t is centred on t / 25 s of that
waveform. The stage 2/3 dataset then slices frames [s - m, s + N + F + m) for a window at s.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from emoportrait.atomic import atomic_write_text
from emoportrait.errors import EMOError

CACHE_DIR = "audio_features"


def resolve_cache(root: str | os.PathLike, name: str | None) -> Path | None:
    """The cache folder to use: `name`, or with "auto" the only complete cache present, or None."""
    if name is None:
        return None
    base = Path(root) / CACHE_DIR
    if name == "auto":
        found = sorted(p.parent for p in base.glob("*/info.json")) if base.is_dir() else []
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise EMOError(f"{root} has several audio-feature caches ({names}); pick one with audio_features=NAME")
        return found[0] if found else None
    path = base / name
    if not (path / "info.json").is_file():
        raise EMOError(f"{path}: no audio-feature cache; build it with `emoportrait preprocess --out {root} --audio-features MODEL`")
    return path


def decode_features(data: bytes) -> np.ndarray:
    """Bytes of a `<key>.features.npy` member -> (T + 2C, L, D) float32."""
    return np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)


def read_info(cache: Path) -> dict:
    return json.loads((cache / "info.json").read_text())


def build_audio_cache(root: str | os.PathLike, encoder: Callable, name: str = "default", device: str = "cpu",
                      progress: bool = True) -> Path:
    """Run `encoder` over the audio of every clip of a shard folder and store the features.

    Args:
        root: shard folder made by `emoportrait preprocess`.
        encoder: any callable `(waveform (1, S) float32 16 kHz tensor, num_frames) -> (1, T, L, D)`
            whose row t is centred on t / 25 s (e.g. the model's `audio_encoder`).
        name: cache name (a folder under root/audio_features).
        device: where the waveform is put before calling `encoder`.
        progress: show a tqdm bar over shards.

    Resumable: shards whose feature tar exists are skipped; each tar is written atomically.

    Returns:
        The cache folder.
    """
    import torch

    from emoportrait.data.datasets import load_manifest
    from emoportrait.data.shards import npy_bytes, npy_load, write_clip_cache

    root = Path(root)
    manifest = load_manifest(root)
    context = int(manifest["config"]["audio_context"])
    cache = root / CACHE_DIR / name
    cache.mkdir(parents=True, exist_ok=True)
    shape = None

    def members(key: str, files: dict[str, bytes]) -> dict[str, bytes] | None:
        nonlocal shape
        meta = json.loads(files["json"])
        if not meta["has_audio"]:
            return None
        audio = torch.from_numpy(npy_load(files["audio.npy"]))[None].to(device)  # (1, S)
        num = int(meta["num_frames"]) + 2 * context
        with torch.no_grad():
            feats = encoder(audio, num)  # (1, T + 2C, L, D)
        if feats.ndim != 4 or feats.shape[:2] != (1, num):
            raise EMOError(f"audio encoder returned {tuple(feats.shape)}; expected (1, {num}, L, D)")
        shape = list(feats.shape[2:])
        return {"features.npy": npy_bytes(feats[0].float().cpu().numpy().astype(np.float16))}

    write_clip_cache(root, [s["name"] for s in manifest["shards"]], cache, members, "audio features", progress)
    if shape is None:  # every shard was already cached: keep the recorded shape
        shape = read_info(cache)["shape"] if (cache / "info.json").is_file() else None
    info = {"name": name, "context": context, "shape": shape, "dtype": "float16",
            "encoder": type(encoder).__name__, "sample_rate": 16000, "fps": 25}
    atomic_write_text(cache / "info.json", json.dumps(info, indent=1))
    return cache


def load_model_audio_encoder(model_dir: str | os.PathLike):
    """The `audio_encoder` component of a model folder (diffusers layout), in eval mode."""
    import emoportrait.models as models

    folder = Path(model_dir) / "audio_encoder"
    config = folder / "config.json"
    if not config.is_file():
        raise EMOError(f"{model_dir}: no audio_encoder/config.json; pass a model folder made by `emoportrait init`")
    cls_name = json.loads(config.read_text()).get("_class_name")
    cls = getattr(models, cls_name or "", None)
    if cls is None:
        raise EMOError(f"{config}: unknown audio encoder class {cls_name!r}")
    return cls.from_pretrained(folder).eval()
