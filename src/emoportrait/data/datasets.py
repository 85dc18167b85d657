"""Training datasets of the three stages (paper 3.3, DESIGN.md section 3) over preprocessed shards.

Each item is a dict of tensors, exactly the data contract:

- stage 1 (`ImageClipDataset`): `pixel_values` (3, H, W) in [-1, 1], the target frame;
  `reference` (3, H, W) a different random frame of the same clip; `face_mask` (1, H, W) in
  {0, 1}, the union of the clip's face boxes.
- stages 2/3 (`VideoClipDataset`): `pixel_values` (N+F, 3, H, W) contiguous frames (the first N
  are motion frames); `reference` (3, H, W) a random frame of the clip outside the window when
  the clip is long enough; `face_mask` (1, H, W); `audio` ((N+F+2m) * 640,) float32 16 kHz of
  frames [s-m, s+N+F+m), zeros outside the recording; `speed` (N+F,) head speed w_f
  degrees/frame; `speed_buckets` (N+F, D) = tanh((w_f - c_d) / r_d * 3); and
  `audio_features` (N+F+2m, L, D) when an audio-feature cache exists (`data/audio_cache.py`).
- with a latent cache (`latents=`, `data/latent_cache.py`; training picks the one made by the
  model's VAE encoder) the frames are not decoded: `pixel_values` and `reference` are replaced by
  `latent_moments` ((2C, h, w) in stage 1, (N+F, 2C, h, w) in stages 2/3) and `reference_moments`
  (2C, h, w), the frozen encoder's mean and log-variance of the same frames.

Two ways to read the same samples:

- map-style (`ImageClipDataset`, `VideoClipDataset`): item i = sample i % samples_per_clip of
  clip i // samples_per_clip; only the needed tar members are read (by byte offset). Its
  randomness (frames, window) is a pure function of (seed, epoch, i), so a shuffled sampler +
  `set_epoch` give exactly resumable training; accelerate shards it over ranks as usual.
- streaming (`data/streaming.py`, `StreamingClipDataset(dataset)`): an IterableDataset reading
  whole shards sequentially, split over ranks and DataLoader workers (object stores, HPC file
  systems that dislike seeks).
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emoportrait.data.clips import audio_window
from emoportrait.data.shards import ARRAY_FIELDS, frame_name, npy_load
from emoportrait.errors import EMOError

# ---------------------------------------------------------------------------------------------
# The shard folder: manifest, clip list, random access to tar members
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipEntry:
    """A clip as listed in the manifest."""

    key: str
    shard: str  # tar file name inside the folder
    num_frames: int
    has_audio: bool


def load_manifest(root: str | os.PathLike) -> dict:
    """Read `root/manifest.json` (written by `emoportrait preprocess`)."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise EMOError(f"{root}: no manifest.json; run `emoportrait preprocess --out {root}` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise EMOError(f"{path} is damaged; rebuild it with `emoportrait preprocess --manifest-only --out {root}`") from None


def list_clips(root: str | os.PathLike, min_frames: int = 1, require_audio: bool = False) -> list[ClipEntry]:
    """Clips of a shard folder with at least `min_frames` frames (and audio if required)."""
    clips = [
        ClipEntry(c["key"], c["shard"], int(c["num_frames"]), bool(c["has_audio"]))
        for c in load_manifest(root)["clips"]
    ]
    return [c for c in clips if c.num_frames >= min_frames and (c.has_audio or not require_audio)]


class TarIndex:
    """Byte ranges of tar members, built once per shard and process by reading the headers."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._index: dict[str, dict[str, tuple[int, int]]] = {}
        self._files: dict[str, object] = {}

    def _shard(self, shard: str) -> dict[str, tuple[int, int]]:
        if shard not in self._index:
            path = self.root / shard
            try:
                with tarfile.open(path, "r:") as tar:
                    self._index[shard] = {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}
            except (tarfile.TarError, OSError) as e:
                raise EMOError(f"{path}: missing or damaged shard ({e.__class__.__name__}); rerun preprocessing") from None
        return self._index[shard]

    def read(self, shard: str, name: str) -> bytes:
        """Bytes of member `name` of `shard`."""
        try:
            offset, size = self._shard(shard)[name]
        except KeyError:
            raise EMOError(f"{self.root / shard}: has no member {name}; rerun preprocessing") from None
        f = self._files.get(shard)
        if f is None:
            f = self._files[shard] = open(self.root / shard, "rb")  # noqa: SIM115 (kept open per worker)
        f.seek(offset)
        return f.read(size)

    def has(self, shard: str, name: str) -> bool:
        return (self.root / shard).is_file() and name in self._shard(shard)

    def __getstate__(self) -> dict:  # DataLoader workers get their own file handles
        return {"root": self.root, "_index": self._index, "_files": {}}


class ClipSource:
    """Lazy access to one clip's parts: `meta`, `array(name)`, `frame(i)`, `features()`.

    Either backed by random access into a tar (`TarIndex`) or by a dict of member bytes
    (streaming); building a sample reads only what it uses.
    """

    def __init__(self, key: str, read, read_features=None, read_moments=None):
        self.key, self._read, self._read_features, self._read_moments = key, read, read_features, read_moments
        self.meta = json.loads(read("json"))
        self._arrays: dict[str, np.ndarray] = {}

    @property
    def has_moments(self) -> bool:
        return self._read_moments is not None

    def moments(self, index: int) -> torch.Tensor:
        """Cached latent mean and log-variance of frame `index` -> (2C, h, w) float32."""
        from emoportrait.data.latent_cache import decode_moments

        return torch.from_numpy(decode_moments(self._read_moments(index)))

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = npy_load(self._read(f"{name}.npy"))
        return self._arrays[name]

    def frame(self, index: int, size: int) -> torch.Tensor:
        """Frame `index` as (3, size, size) float32 in [-1, 1]."""
        import cv2

        data = self._read(frame_name(index, self.meta["image_format"]))
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise EMOError(f"clip {self.key}: frame {index} does not decode; rerun preprocessing")
        if bgr.shape[0] != size:
            bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA if bgr.shape[0] > size else cv2.INTER_CUBIC)
        rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1]))  # (H, W, 3) uint8
        return rgb.permute(2, 0, 1).float() / 127.5 - 1.0  # (3, H, W)

    def audio(self, start: int, stop: int) -> np.ndarray:
        """Audio of clip frames [start, stop), zeros beyond the stored context -> ((stop-start)*640,)."""
        # the stored audio starts `audio_context` frames before frame 0
        return audio_window(self.array("audio"), start + int(self.meta["audio_context"]), stop - start, 0)

    def features(self, start: int, stop: int) -> np.ndarray | None:
        """Cached audio features of clip frames [start, stop) -> (stop-start, L, D), or None."""
        if self._read_features is None:
            return None
        feats, ctx = self._read_features()  # (T + 2 ctx, L, D)
        out = np.zeros((stop - start, *feats.shape[1:]), np.float32)
        a, b = start + ctx, stop + ctx
        lo, hi = max(a, 0), min(b, len(feats))
        if hi > lo:
            out[lo - a : hi - a] = feats[lo:hi]
        return out


def face_mask(boxes: np.ndarray, stored_size: int, size: int) -> torch.Tensor:
    """(1, size, size) {0, 1} mask of the union of (T, 4) crop-pixel boxes (paper 3.2, face locator)."""
    b = boxes[np.isfinite(boxes).all(axis=1)] * (size / stored_size)
    mask = torch.zeros(1, size, size)
    if len(b):
        _fill_box(mask, b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
    return mask


def _fill_box(mask: torch.Tensor, x0: float, y0: float, x1: float, y1: float) -> None:
    """Set the (..., H, W) `mask` to 1 inside a pixel box rounded outwards and clipped to the frame."""
    h, w = mask.shape[-2:]
    top, bottom = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), h)
    left, right = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), w)
    mask[..., top:bottom, left:right] = 1.0


MOUTH_BOX = (0.2, 0.55, 0.8, 1.0)  # the mouth region as fractions (x0, y0, x1, y1) of a face box


def mouth_mask(boxes: np.ndarray, stored_size: int, size: int) -> torch.Tensor:
    """(T, 1, size, size) {0, 1} masks of the mouth region of each frame's face box (zeros where none).

    The region is the lower part of the box (`MOUTH_BOX`): no landmarks are stored with the clips, and
    the detector's boxes run from the brows to the chin, which puts the lips in that window.
    """
    mask = torch.zeros(len(boxes), 1, size, size)
    fx0, fy0, fx1, fy1 = MOUTH_BOX
    for i, box in enumerate(boxes):
        if not np.isfinite(box).all():
            continue
        x0, y0, x1, y1 = box * (size / stored_size)
        w, h = x1 - x0, y1 - y0
        _fill_box(mask[i], x0 + fx0 * w, y0 + fy0 * h, x0 + fx1 * w, y0 + fy1 * h)
    return mask


# ---------------------------------------------------------------------------------------------
# Stage datasets (map-style)
# ---------------------------------------------------------------------------------------------


class ClipDataset(Dataset):
    """Shared machinery of the stage datasets: clip list, epochs, seeding, audio-feature cache.

    Args:
        root: shard folder made by `emoportrait preprocess`.
        size: output frame size (default: the stored size; otherwise frames are resized).
        samples_per_clip: items per clip per epoch (different random frames/windows).
        seed: base of every random choice; item i of epoch e always draws the same frames.
        audio_features: name of an audio-feature cache under root/audio_features, "auto" (the
            only cache present, if any) or None (never return `audio_features`).
        mask_scope: "clip" (union of all the clip's face boxes; the contract) or "window"
            (union over the sampled frames only).
        latents: name of a latent cache under root/latents, "auto" (the complete one made by the
            encoder `latents_fingerprint` at this size, if any) or None (decode the frames).
        latents_fingerprint: `latent_cache.encoder_fingerprint` of the model that will read the
            latents (None: any cache of this size).
    """

    min_frames = 2
    require_audio = False

    def __init__(self, root: str | os.PathLike, size: int | None = None, samples_per_clip: int = 1, seed: int = 0,
                 audio_features: str | None = "auto", mask_scope: str = "clip", latents: str | None = None,
                 latents_fingerprint: str | None = None):
        self.root = Path(root)
        self.clips = list_clips(self.root, self.min_frames, self.require_audio)
        if not self.clips:
            raise EMOError(f"{root}: no clip has >= {self.min_frames} frames"
                           + (" and audio" if self.require_audio else "") + "; preprocess more or longer videos")
        if mask_scope not in ("clip", "window"):
            raise EMOError(f"mask_scope must be clip or window, got {mask_scope!r}")
        self.stored_size = int(load_manifest(self.root)["config"]["size"])
        self.size = int(size or self.stored_size)
        self.samples_per_clip, self.seed, self.epoch, self.mask_scope = int(samples_per_clip), int(seed), 0, mask_scope
        from emoportrait.data.audio_cache import read_info, resolve_cache

        self.features_dir = resolve_cache(self.root, audio_features)
        self._index = TarIndex(self.root)
        self._features_index = TarIndex(self.features_dir) if self.features_dir else None
        self.features_context = read_info(self.features_dir)["context"] if self.features_dir else 0
        from emoportrait.data.latent_cache import resolve_latent_cache

        self.latents_dir = resolve_latent_cache(self.root, latents, latents_fingerprint, self.size)
        self._latents_index = TarIndex(self.latents_dir) if self.latents_dir else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.clips) * self.samples_per_clip

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The generator of item `index` in `epoch`: a pure function of (seed, epoch, index)."""
        return np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])

    def source(self, clip: ClipEntry) -> ClipSource:
        def read(ext: str) -> bytes:
            return self._index.read(clip.shard, f"{clip.key}.{ext}")

        read_features = None
        if self._features_index is not None:
            from emoportrait.data.audio_cache import decode_features

            def read_features():
                data = self._features_index.read(clip.shard, f"{clip.key}.features.npy")
                return decode_features(data), self.features_context

        read_moments = None
        if self._latents_index is not None:
            from emoportrait.data.latent_cache import moments_name

            def read_moments(index: int) -> bytes:
                return self._latents_index.read(clip.shard, f"{clip.key}.{moments_name(index)}")

        return ClipSource(clip.key, read, read_features, read_moments)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.build(self.source(self.clips[index // self.samples_per_clip]), self.rng(index))

    def build(self, src: ClipSource, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _frames(self, src: ClipSource, target: list[int], reference: int, stack: bool) -> dict[str, torch.Tensor]:
        """The target frames and the reference: decoded pixels, or their cached latent moments."""
        if src.has_moments:
            get, keys = src.moments, ("latent_moments", "reference_moments")
        else:
            get, keys = (lambda i: src.frame(i, self.size)), ("pixel_values", "reference")
        frames = torch.stack([get(i) for i in target]) if stack else get(target[0])
        return {keys[0]: frames, keys[1]: get(reference)}

    def _mask(self, src: ClipSource, start: int = 0, stop: int | None = None) -> torch.Tensor:
        boxes = src.array("boxes")
        if self.mask_scope == "window":
            boxes = boxes[start:stop]
        return face_mask(boxes, self.stored_size, self.size)


class ImageClipDataset(ClipDataset):
    """Stage 1 (paper 3.3): a target frame, a different frame of the same clip as reference, the face mask."""

    def build(self, src: ClipSource, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        t = int(src.meta["num_frames"])
        target = int(rng.integers(t))
        reference = int(rng.integers(t - 1))
        reference += reference >= target  # uniform over the other frames
        return {
            **self._frames(src, [target], reference, stack=False),  # (3, H, W) each, or moments (2C, h, w)
            "face_mask": self._mask(src, target, target + 1),  # (1, H, W)
        }


class VideoClipDataset(ClipDataset):
    """Stages 2/3 (paper 3.3): N motion + F target frames, aligned audio window, head speed.

    Args (besides `ClipDataset`'s):
        num_frames: F, frames generated per clip (paper 12).
        num_motion_frames: N, preceding frames given as motion frames (paper 4).
        window: m, audio/speed context frames each side (paper 2).
        speed_centers, speed_radii: bucket centres c_d / radii r_d (default: the model config's).
        with_mouth_mask: also return `mouth_mask` (F, 1, H, W) of the F target frames (`mouth_mask`),
            for the training's mouth-region loss weight.
    """

    require_audio = True

    def __init__(self, root: str | os.PathLike, num_frames: int = 12, num_motion_frames: int = 4, window: int = 2,
                 speed_centers: tuple[float, ...] | None = None, speed_radii: tuple[float, ...] | None = None,
                 with_mouth_mask: bool = False, **kwargs):
        self.num_frames, self.num_motion_frames, self.window = int(num_frames), int(num_motion_frames), int(window)
        self.with_mouth_mask = bool(with_mouth_mask)
        self.min_frames = self.num_frames + self.num_motion_frames
        if speed_centers is None or speed_radii is None:
            from emoportrait.models.config import ModelConfig

            speed_centers, speed_radii = ModelConfig.speed_centers, ModelConfig.speed_radii
        if len(speed_centers) != len(speed_radii):
            raise EMOError("speed_centers and speed_radii must have the same length")
        self.speed_centers = torch.tensor(speed_centers, dtype=torch.float32)
        self.speed_radii = torch.tensor(speed_radii, dtype=torch.float32)
        super().__init__(root, **kwargs)

    def build(self, src: ClipSource, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        from emoportrait.models.speed import speed_to_buckets

        t, n, m = int(src.meta["num_frames"]), self.num_motion_frames + self.num_frames, self.window
        s = int(rng.integers(t - n + 1))  # window [s, s + n)
        outside = t - n
        if outside > 0:  # reference outside the window when the clip allows it
            r = int(rng.integers(outside))
            reference = r if r < s else r + n
        else:
            reference = int(rng.integers(t))
        speed = torch.from_numpy(src.array("speed")[s : s + n].astype(np.float32))  # (N+F,)
        item = {
            **self._frames(src, list(range(s, s + n)), reference, stack=True),  # (N+F, 3, H, W) + (3, H, W), or moments
            "face_mask": self._mask(src, s, s + n),  # (1, H, W)
            "audio": torch.from_numpy(src.audio(s - m, s + n + m)),  # ((N+F+2m) * 640,)
            "speed": speed,
            "speed_buckets": speed_to_buckets(speed, self.speed_centers, self.speed_radii),  # (N+F, D)
        }
        if self.with_mouth_mask:
            item["mouth_mask"] = mouth_mask(src.array("boxes")[s + self.num_motion_frames : s + n], self.stored_size, self.size)
        feats = src.features(s - m, s + n + m)
        if feats is not None:
            item["audio_features"] = torch.from_numpy(feats)  # (N+F+2m, L, D)
        return item


_VIDEO_ONLY = ("num_frames", "num_motion_frames", "window", "speed_centers", "speed_radii", "with_mouth_mask")


def stage_dataset(stage: str | int, root: str | os.PathLike, streaming: bool = False, shuffle_buffer: int = 8,
                  **options) -> Dataset:
    """The dataset of training stage "1", "2" or "3".

    Args:
        stage: "1" -> `ImageClipDataset`, "2"/"3" -> `VideoClipDataset`.
        root: shard folder.
        streaming: wrap it in `StreamingClipDataset` (rank/worker-split IterableDataset).
        shuffle_buffer: clips held for shuffling when streaming.
        options: keyword arguments of the dataset class; the video-only ones (num_frames, ...)
            are ignored for stage 1, so one options dict serves every stage.
    """
    stage = str(stage)
    try:
        if stage == "1":
            dataset: ClipDataset = ImageClipDataset(root, **{k: v for k, v in options.items() if k not in _VIDEO_ONLY})
        elif stage in ("2", "3"):
            dataset = VideoClipDataset(root, **options)
        else:
            raise EMOError(f"unknown training stage {stage!r}; use 1, 2 or 3")
    except TypeError as e:
        raise EMOError(f"stage {stage} dataset: {e}") from None
    if streaming:
        from emoportrait.data.streaming import StreamingClipDataset

        return StreamingClipDataset(dataset, shuffle_buffer=shuffle_buffer)
    return dataset


__all__ = ["ARRAY_FIELDS", "ClipEntry", "ClipSource", "ImageClipDataset", "VideoClipDataset", "face_mask", "mouth_mask",
           "list_clips", "load_manifest", "stage_dataset"]
