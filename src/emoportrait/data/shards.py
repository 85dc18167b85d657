"""Webdataset tar shards of preprocessed clips: the sample layout, writing and reading.

One webdataset sample = one clip. Its tar members share the clip key (no dots in it) and are,
in this order::

    <key>.json          clip metadata (source video, frame span, crop, fps, audio context, ...)
    <key>.boxes.npy     (T, 4) float32 face boxes (x0, y0, x1, y1) in crop pixels
    <key>.found.npy     (T,) uint8 1 where the detector found the face (else interpolated)
    <key>.rotation.npy  (T, 3, 3) float32 head rotation from solvePnP, NaN where no pose
    <key>.ypr.npy       (T, 3) float32 yaw/pitch/roll degrees (NaN where no pose)
    <key>.speed.npy     (T,) float32 head speed w_f, degrees/frame (data.faces.head_speed)
    <key>.audio.npy     ((T + 2 * C) * 640,) float32 16 kHz mono: frames [-C, T + C) of the clip
    <key>.00000.jpg ... one encoded image per frame (jpg or png), 25 fps

C = `audio_context` frames (in the json); outside the recording the audio is zeros. Any
webdataset reader understands these shards (`webdataset.WebDataset(url)` yields dicts with
keys "json", "boxes.npy", "00000.jpg", ...). Tar headers are fixed (mtime 0, uid 0), so the
same clips always give byte-identical shards.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emoportrait.atomic import atomic_path
from emoportrait.errors import EMOError

ARRAY_FIELDS = ("boxes", "found", "rotation", "ypr", "speed", "audio")


def frame_name(index: int, image_format: str) -> str:
    """Extension of frame `index` inside a sample, e.g. "00012.jpg"."""
    return f"{index:05d}.{image_format}"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def npy_load(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class TarSampleWriter:
    """Write samples (key -> {extension: bytes}) into a tar, atomically and reproducibly.

    The tar appears at `path` only when the `with` block ends without error.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.num_samples = 0

    def __enter__(self) -> TarSampleWriter:
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._tar = tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT)
        return self

    def write(self, key: str, files: dict[str, bytes]) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/'")
        for ext, data in files.items():
            self._tar.addfile(_tarinfo(f"{key}.{ext}", len(data)), io.BytesIO(data))
        self.num_samples += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._tar.close()
        except BaseException:
            self._ctx.__exit__(*__import__("sys").exc_info())
            raise
        self._ctx.__exit__(exc_type, exc, tb)


def iter_tar_samples(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream a tar's samples in order: (key, {extension: bytes}); members grouped by key."""
    key, files = None, {}
    try:
        with tarfile.open(path, "r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                k, _, ext = name.partition(".")
                if k != key and key is not None:
                    yield key, files
                    files = {}
                key = k
                files[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as e:
        raise EMOError(f"{path}: damaged shard ({e}); delete it and rerun emoportrait preprocess") from None
    if key is not None:
        yield key, files


def write_clip_cache(root: str | os.PathLike, shards: list[str], cache: str | os.PathLike, members, desc: str,
                     progress: bool = True) -> None:
    """Beside the shards of `root`, one tar per shard in `cache` holding what `members(key, files)` makes of each clip.

    `members` returns {extension: bytes} for the clip's sample in the cache, or None to leave the clip out.
    Resumable: a shard whose cache tar exists is skipped; each tar is written atomically (`TarSampleWriter`).
    """
    from tqdm import tqdm

    root, cache = Path(root), Path(cache)
    for shard in tqdm(shards, desc=desc, unit="shard", disable=not progress or None):
        if (cache / shard).is_file():
            continue
        with TarSampleWriter(cache / shard) as writer:
            for key, files in iter_tar_samples(root / shard):
                out = members(key, files)
                if out is not None:
                    writer.write(key, out)


@dataclass
class Clip:
    """One decoded-on-demand clip sample: metadata, per-frame arrays, encoded frames."""

    key: str
    meta: dict
    arrays: dict[str, np.ndarray]
    images: list[bytes] = field(repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.images)

    def frame(self, index: int) -> np.ndarray:
        """Decode frame `index` -> (H, W, 3) uint8 RGB."""
        import cv2

        bgr = cv2.imdecode(np.frombuffer(self.images[index], np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise EMOError(f"clip {self.key}: frame {index} does not decode; re-run preprocessing")
        return bgr[:, :, ::-1]

    def audio_frames(self, start: int, stop: int) -> np.ndarray:
        """Audio samples of clip frames [start, stop) (may reach outside [0, T): zeros beyond the
        stored context) -> ((stop - start) * 640,) float32."""
        from emoportrait.data.clips import audio_window

        # the stored audio starts `audio_context` frames before frame 0
        return audio_window(self.arrays["audio"], start + int(self.meta["audio_context"]), stop - start, 0)


def encode_clip(key: str, meta: dict, arrays: dict[str, np.ndarray], images: list[bytes]) -> dict[str, bytes]:
    """Clip parts -> {extension: bytes} in the sample layout of this module."""
    fmt = meta["image_format"]
    files = {"json": json.dumps(meta, sort_keys=True).encode()}
    for name in ARRAY_FIELDS:
        files[f"{name}.npy"] = npy_bytes(arrays[name])
    for i, data in enumerate(images):
        files[frame_name(i, fmt)] = data
    return files


def decode_clip(key: str, files: dict[str, bytes], with_arrays: bool = True) -> Clip:
    """{extension: bytes} of one sample -> `Clip` (frames stay encoded until `Clip.frame`)."""
    try:
        meta = json.loads(files["json"])
        fmt = meta["image_format"]
        images = [files[frame_name(i, fmt)] for i in range(int(meta["num_frames"]))]
        arrays = {n: npy_load(files[f"{n}.npy"]) for n in ARRAY_FIELDS} if with_arrays else {}
    except (KeyError, ValueError) as e:
        raise EMOError(f"clip {key}: incomplete sample ({e}); re-run preprocessing") from None
    return Clip(key, meta, arrays, images)


def iter_clips(path: str | os.PathLike) -> Iterator[Clip]:
    """Stream the clips of one shard in stored order."""
    for key, files in iter_tar_samples(path):
        yield decode_clip(key, files)
