"""Optional per-clip cache of the frozen VAE's latent distribution, so stages 1-3 stop re-encoding frames.

Stages 1-3 keep the VAE encoder frozen (paper 3.3), yet encode every sampled frame again at every
step: on the tiny model on 2 CPU cores that is 40-45 % of a stage-1 or stage-2 step
(benchmarks/bench_training_encode.py). The encoder's output for a frame never changes, so it is
computed once per frame and stored; training then samples the latent from the stored distribution
(`latent_dist.sample()`, the same draw of the global RNG as on-the-fly encoding) and skips both the
JPEG decode and the encoder. As kohya's `--cache_latents`, without flip augmentation (the stage
datasets have none).

Layout, beside the shards::

    ROOT/latents/NAME/info.json          fingerprints of the encoder and the shards' clips, frame size, complete
    ROOT/latents/NAME/shard-000000.tar   <key>.00000.moments.npy ...: (2C, h, w) float16 mean and
                                         log-variance of each frame (one member per frame, so a
                                         stage-1 sample reads its two frames only)

`moments` are `AutoencoderKL.encode(frames).latent_dist.parameters` (after `quant_conv`), unscaled:
`scaling_factor` is applied when training samples from them. A cache is used only by a model whose
VAE encoder is bit-identical to the one that made it (`encoder_fingerprint`) and whose frame size
is the cache's, beside the shards it was made from; stages 1-3 keep the encoder (as does the decoder-only
VAE run, which trains on frames), so one cache built after the VAE stage serves all three.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from emoportrait.atomic import atomic_write_text
from emoportrait.errors import EMOError

CACHE_DIR = "latents"
ENCODER_PREFIXES = ("encoder.", "quant_conv.")  # AutoencoderKL's parts that make the latent distribution
VAE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")


def encoder_fingerprint(named_tensors: Iterable[tuple[str, object]]) -> str:
    """sha256 over the encoder's tensors (names, shapes, float32 values) of an AutoencoderKL state.

    `named_tensors`: (name, tensor) pairs of the whole VAE (a state dict's items); only the encoder
    and `quant_conv` count, so a fine-tuned decoder keeps the fingerprint.
    """
    import torch

    h = hashlib.sha256()
    for name, t in sorted((n, t) for n, t in named_tensors if n.startswith(ENCODER_PREFIXES)):
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def model_encoder_fingerprint(model_dir: str | os.PathLike) -> str:
    """`encoder_fingerprint` of a model folder's `vae/` weights (read from safetensors without building the model)."""
    from safetensors import safe_open

    folder = Path(model_dir) / "vae"
    path = next((folder / n for n in VAE_WEIGHTS if (folder / n).is_file()), None)
    if path is None:  # another weights format diffusers reads (e.g. a .bin of an older export)
        return encoder_fingerprint(load_model_vae(model_dir).state_dict().items())
    with safe_open(str(path), framework="pt") as f:
        return encoder_fingerprint((k, f.get_tensor(k)) for k in f.keys() if k.startswith(ENCODER_PREFIXES))


def shards_fingerprint(root: str | os.PathLike, manifest: dict) -> str:
    """sha256 of what a shard folder was made from: its plan (preprocess settings and which videos go to which
    shard; `plan.json`, else the manifest's settings) and its clip list (key, shard, frame count). The shards
    of one plan are byte-identical however they are made (docs/data.md), and `--overwrite` deletes the caches."""
    plan = Path(root) / "plan.json"
    made_from = plan.read_text() if plan.is_file() else json.dumps(manifest.get("config"), sort_keys=True)
    clips = sorted((c["key"], c["shard"], int(c["num_frames"])) for c in manifest["clips"])
    return hashlib.sha256(json.dumps([made_from, clips]).encode()).hexdigest()


def read_info(cache: Path) -> dict:
    try:
        return json.loads((cache / "info.json").read_text())
    except json.JSONDecodeError:
        raise EMOError(f"{cache / 'info.json'} is damaged; delete {cache} and build the cache again") from None


def _mismatch(info: dict, fingerprint: str | None, size: int | None, shards: str) -> str | None:
    """Why a cache's `info` does not fit (encoder, frame size, shards; None = not checked), or None when it fits."""
    if fingerprint is not None and info.get("fingerprint") != fingerprint:
        return "was made by another VAE encoder than this model's"
    if size is not None and int(info.get("size", -1)) != int(size):
        return f"holds {info.get('size')} px frames; this model trains at {size} px"
    if info.get("shards") != shards:
        return "was made from other shards than the folder holds now"
    return None


def resolve_latent_cache(root: str | os.PathLike, name: str | None, fingerprint: str | None = None,
                         size: int | None = None) -> Path | None:
    """The latent cache to read, or None (encode the frames on the fly).

    Args:
        root: shard folder.
        name: a cache NAME under root/latents, "auto" (the complete cache made by this encoder at
            this size from these shards, if any; none is not an error) or None (never use a cache).
        fingerprint: `encoder_fingerprint` of the model being trained (None: not checked).
        size: the frame size the model trains at (None: not checked).

    An explicitly named cache that is incomplete or was made by another encoder or size raises:
    training on another VAE's latents would silently train the wrong model.
    """
    from emoportrait.data.datasets import load_manifest

    if name is None or str(name).lower() == "none":
        return None
    base = Path(root) / CACHE_DIR
    if name == "auto" and not base.is_dir():
        return None
    shards = shards_fingerprint(root, load_manifest(root))
    if name == "auto":
        for path in (p.parent for p in sorted(base.glob("*/info.json"))):
            info = read_info(path)
            if info.get("complete") is True and _mismatch(info, fingerprint, size, shards) is None:
                return path
        return None
    path = base / name
    if not (path / "info.json").is_file():
        raise EMOError(f"{path}: no latent cache; build it with `emoportrait preprocess --out {root} --latents MODEL`")
    info = read_info(path)
    if info.get("complete") is not True:
        raise EMOError(f"{path}: the latent cache is incomplete; rerun `emoportrait preprocess --out {root} --latents MODEL`")
    reason = _mismatch(info, fingerprint, size, shards)
    if reason is not None:
        raise EMOError(f"{path}: the latent cache {reason}; rebuild it with --latents MODEL --latents-name NAME, "
                       f"or train without it (data.latents: none)")
    return path


def moments_name(index: int) -> str:
    """Member extension of frame `index`'s moments inside a clip sample, e.g. "00012.moments.npy"."""
    return f"{index:05d}.moments.npy"


def decode_moments(data: bytes) -> np.ndarray:
    """Bytes of a `<key>.00000.moments.npy` member -> (2C, h, w) float32."""
    return np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)


def build_latent_cache(root: str | os.PathLike, vae, name: str = "default", device: str = "cpu", dtype=None,
                       batch_size: int = 32, progress: bool = True) -> Path:
    """Encode every frame of a shard folder with `vae` (an AutoencoderKL) and store its latent distribution.

    Args:
        root: shard folder made by `emoportrait preprocess`.
        vae: the model's VAE; frames are encoded at `vae.config.sample_size`, resized as the stage
            datasets resize them.
        name: cache name (a folder under root/latents).
        device, dtype: where and in which dtype the encoder runs (default float32); `vae` is moved there.
        batch_size: frames per encoder call.
        progress: show a tqdm bar over shards.

    Resumable: shards whose tar exists are skipped, each tar is written atomically, and `info.json`
    says `complete` only at the end. A cache NAME made by another encoder or size is refused.

    Returns:
        The cache folder.
    """
    import torch

    from emoportrait.data.datasets import ClipSource, load_manifest
    from emoportrait.data.shards import npy_bytes, write_clip_cache

    root = Path(root)
    manifest = load_manifest(root)
    size = int(vae.config.sample_size)
    fingerprint = encoder_fingerprint(vae.state_dict().items())
    dtype = dtype or torch.float32
    cache = root / CACHE_DIR / name
    info = {"name": name, "fingerprint": fingerprint, "size": size, "latent_channels": int(vae.config.latent_channels),
            "shards": shards_fingerprint(root, manifest), "dtype": "float16", "encode_dtype": str(dtype).removeprefix("torch."),
            "complete": False}
    if (cache / "info.json").is_file() and _mismatch(read_info(cache), fingerprint, size, info["shards"]) is not None:
        raise EMOError(f"{cache} holds latents of another VAE encoder, frame size or shard set; choose another "
                       f"--latents-name or delete {cache}")
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache / "info.json", json.dumps(info, indent=1))
    # Moved in place (the caller's VAE), channels-last: the conv layout oneDNN and cuDNN run fastest (1.1x-1.4x
    # on the tiny VAE, benchmarks/bench_training_encode.py). nn.Module.to: diffusers' warns about fp32-only modules.
    enc = torch.nn.Module.to(vae, device=device, dtype=dtype, memory_format=torch.channels_last).eval()

    def members(key: str, files: dict[str, bytes]) -> dict[str, bytes]:
        src = ClipSource(key, files.__getitem__)
        t, out = int(src.meta["num_frames"]), {}
        for lo in range(0, t, batch_size):
            x = torch.stack([src.frame(i, size) for i in range(lo, min(lo + batch_size, t))])
            with torch.no_grad():
                x = x.to(device, dtype, memory_format=torch.channels_last)
                moments = encode_moments(enc, x).float().cpu().numpy().astype(np.float16)
            out.update({moments_name(lo + j): npy_bytes(m) for j, m in enumerate(moments)})
        return out

    write_clip_cache(root, [s["name"] for s in manifest["shards"]], cache, members, "latents", progress)
    info["complete"] = True
    atomic_write_text(cache / "info.json", json.dumps(info, indent=1))
    return cache


def encode_moments(vae, frames):
    """(B, 3, H, W) frames in [-1, 1] -> (B, 2C, h, w) latent mean and log-variance (unscaled)."""
    return vae.encode(frames).latent_dist.parameters


def load_model_vae(model_dir: str | os.PathLike):
    """The `vae` component of a model folder (diffusers layout), in eval mode, its weights as the pipeline's."""
    from diffusers import AutoencoderKL

    from emoportrait.models.storage import own_storage

    folder = Path(model_dir) / "vae"
    if not (folder / "config.json").is_file():
        raise EMOError(f"{model_dir}: no vae/config.json; pass a model folder made by `emoportrait init`")
    return own_storage(AutoencoderKL.from_pretrained(folder)).eval()
