"""Settings of `emoportrait preprocess` and its skip reasons (no heavy imports: the CLI builds
its options from these fields)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from emoportrait.errors import EMOError

_FPS = 25  # == emoportrait.data.media.FPS (not imported: it pulls in PyAV)

# Skip reasons (the manifest's vocabulary).
REASONS = {
    "unreadable": "the file does not open or has no decodable video stream",
    "no_audio": "no audio stream (pass allow_no_audio=true to keep such clips for stage 1 only)",
    "bad_audio": "the audio stream does not decode",
    "too_short": "the video, or a face segment of it, is shorter than min_clip_seconds",
    "no_face": "no face, or the face is missing in too many frames",
    "face_too_small": "the face box is smaller than min_face_px in the source frames",
    "error": "an unexpected error while processing (details in the manifest)",
}


@dataclass
class PreprocessConfig:
    """Settings of `emoportrait preprocess` (each is also a `key=value` override on the CLI)."""

    size: int = 512  # side of the square training frames, pixels (paper: 512)
    clip_seconds: float = 10.0  # longest clip; longer face segments are split evenly
    min_clip_seconds: float = 1.0  # shorter videos / face segments are skipped (too_short)
    backend: str = "mediapipe"  # face backend: mediapipe (paper) | dlib
    min_confidence: float = 0.5  # face detector score threshold
    analysis_max_side: int = 640  # frames are analysed downscaled to this long side
    crop_scale: float = 1.6  # crop side = crop_scale x larger side of the clip's face-box union
    max_gap_frames: int = 12  # face dropouts up to this many frames are bridged (interpolated)
    cut_iou: float = 0.3  # face-box IoU between successive frames below this = a cut
    max_missing_fraction: float = 0.25  # clip rejected (no_face) if more frames lack a detection
    min_face_px: float = 32.0  # median face-box side in the source frames, pixels
    pose: str = "auto"  # head pose: auto (mediapipe: 3D mesh fit; dlib: solvePnP) | pnp (solvePnP, 6 points)
    speed_sigma: float = 1.5  # Gaussian smoothing of the head pose before differencing, frames
    audio_context: int = 8  # frames of audio stored before and after each clip (>= window m)
    image_format: str = "jpg"  # jpg | png
    jpeg_quality: int = 95
    videos_per_shard: int = 8  # shard size in videos (shards hold whole videos)
    allow_no_audio: bool = False  # keep videos without audio (stage-1-only clips, as VFHQ in the paper)

    def validate(self) -> None:
        if self.size < 8 or self.size % 8:
            raise EMOError(f"size must be a positive multiple of 8, got {self.size}")
        if self.min_clip_seconds * _FPS < 2:
            raise EMOError("min_clip_seconds must be at least 2 frames (0.08 s)")
        if self.clip_seconds < 2 * self.min_clip_seconds:
            raise EMOError("clip_seconds must be at least twice min_clip_seconds (clips are split evenly)")
        if self.image_format not in ("jpg", "png"):
            raise EMOError(f"image_format must be jpg or png, got {self.image_format!r}")
        if self.crop_scale < 1.0:
            raise EMOError(f"crop_scale must be >= 1 (the crop contains every face box), got {self.crop_scale}")
        if self.videos_per_shard < 1:
            raise EMOError("videos_per_shard must be >= 1")
        if self.backend not in ("mediapipe", "dlib"):
            raise EMOError(f"backend must be mediapipe or dlib, got {self.backend!r}")
        if self.pose not in ("auto", "pnp"):
            raise EMOError(f"pose must be auto or pnp, got {self.pose!r}")

    @property
    def min_frames(self) -> int:
        return max(2, math.ceil(self.min_clip_seconds * _FPS))

    @property
    def max_frames(self) -> int:
        return int(self.clip_seconds * _FPS)


__all__ = ["REASONS", "PreprocessConfig"]
