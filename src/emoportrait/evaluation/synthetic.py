"""Synthetic-world metrics, measured against the world's per-frame ground truth (DESIGN.md 5).

- lip-sync r: Pearson correlation between the mouth opening measured in generated frames (by
  the mouth regressor, `mouth_regressor.py`) and the ground-truth mouth opening of the driving
  audio's clip (sidecar), per video, averaged over videos. Both signals are first high-passed
  (minus their 13-frame = 0.5 s moving average), so r measures the timing of syllables, not
  only "mouth open while there is sound": on the synthetic world the raw r of a video with a
  *different* clip's audio is ~0.4 (all clips share a silent lead-in and speech envelope),
  the high-passed r ~0.0, while a video with its own audio keeps ~0.95 on both (measured on
  the test world of tests/evaluation). The raw r is kept as `lipsync_r_raw`.
- identity similarity: cosine similarity of dlib face descriptors of generated frames and the
  reference, *centred* on the synthetic world's mean descriptor (dlib's descriptor is trained on
  real faces and places all rendered faces close together: raw cosine is ~0.97 for the same
  rendered identity and ~0.94 for different ones; centred, ~0.55 vs ~0.0).
- head-speed adherence: |mean measured head speed of the generated video - that of the
  ground-truth clip| in degrees/frame. The ground-truth clip moves at the requested speed and
  both are measured with the same face tool (`data.faces`, solvePnP), so the tool's bias
  (landmark noise reads as extra rotation, ~0.1-0.8 deg/frame at 128 px) cancels; the raw
  requested speed is kept in the per-video details.
- temporal jitter: RMS of the second temporal difference of the (grey, 64 px) frames, i.e. the
  frame-to-frame high-frequency energy, generated / ground truth (1 = as smooth as real motion).
- clip-boundary seams: mean absolute frame difference across clip boundaries (every
  `clip_frames` frames; with clips overlapping by O frames, the first new frame of each later
  clip: F + k (F - O)) / the mean across the other successive frames (1 = invisible seams).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

MIN_FRAMES = 10


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson r over frames where both are finite; None when undefined (few or constant frames)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < MIN_FRAMES or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
        return None
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


HIGHPASS_FRAMES = 13  # 0.52 s at 25 fps: keeps syllable-rate (2-8 Hz) mouth motion


def highpass(x: np.ndarray, frames: int = HIGHPASS_FRAMES) -> np.ndarray:
    """x minus its centred moving average over `frames` (NaN frames interpolated, then kept NaN)."""
    from scipy.ndimage import uniform_filter1d

    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    if ok.sum() < 2:
        return np.full_like(x, np.nan)
    t = np.arange(len(x))
    filled = np.interp(t, t[ok], x[ok])
    out = filled - uniform_filter1d(filled, frames, mode="nearest")
    out[~ok] = np.nan
    return out


def lipsync_r(measured_mouth: np.ndarray, gt_mouth: np.ndarray, raw: bool = False) -> float | None:
    """Correlation of measured mouth opening (T,) with the ground truth of the driving audio (T,).

    High-passed (see module docstring) unless `raw`.
    """
    n = min(len(measured_mouth), len(gt_mouth))
    a, b = np.asarray(measured_mouth, np.float64)[:n], np.asarray(gt_mouth, np.float64)[:n]
    return pearson(a, b) if raw else pearson(highpass(a), highpass(b))


# ---------------------------------------------------------------- identity


def identity_center_path() -> Path:
    return Path(str(resources.files("emoportrait") / "assets" / "synth_identity_center.safetensors"))


def load_identity_center(path: str | os.PathLike | None = None) -> np.ndarray | None:
    """(128,) mean dlib descriptor of the synthetic world, or None when the file is absent."""
    from safetensors.numpy import load_file

    path = Path(path) if path else identity_center_path()
    return load_file(str(path))["center"].astype(np.float64) if path.is_file() else None


def write_identity_center(path: str | os.PathLike, n_identities: int = 64) -> np.ndarray:
    """Mean descriptor over renders of training-namespace identities; saved as safetensors."""
    from safetensors.numpy import save_file

    from emoportrait.atomic import atomic_path
    from emoportrait.data.faces import FaceDetector
    from emoportrait.data.synth.identity import make_identity
    from emoportrait.data.synth.render import FrameState, Renderer
    from emoportrait.evaluation.fsim import FaceEmbedder
    from emoportrait.evaluation.mouth_regressor import TRAIN_SEED

    rng = np.random.default_rng(0)
    emb, descs = FaceEmbedder(), []
    with FaceDetector() as det:
        for i in range(n_identities):
            r = Renderer(make_identity(TRAIN_SEED, i), size=128)
            for _ in range(2):
                frame, _ = r.render(FrameState(yaw=rng.uniform(-20, 20), pitch=rng.uniform(-8, 8),
                                               mouth_open=rng.uniform(0, 0.8)))
                box = det.detect(frame)
                if box is not None:
                    descs.append(emb.embed(frame, box))
    center = np.mean(descs, 0).astype(np.float32)
    with atomic_path(path) as tmp:
        save_file({"center": center}, str(tmp), metadata={"faces": str(len(descs))})
    return center.astype(np.float64)


def identity_similarity(embedder, frames: np.ndarray, boxes: np.ndarray, reference: np.ndarray,
                        reference_box: np.ndarray, center: np.ndarray, every: int = 5) -> float | None:
    """Mean centred cosine similarity of sampled frames' faces to the reference face (None: no face)."""
    from emoportrait.evaluation.fsim import descriptors, mean_similarity

    return mean_similarity(descriptors(embedder, frames, boxes, every), embedder.embed(reference, reference_box), center)


# ---------------------------------------------------------------- motion


def speed_error(measured_speed: np.ndarray, target_speed: float) -> float | None:
    """|mean measured head speed - target| in degrees/frame (None without a measurement)."""
    s = np.asarray(measured_speed, np.float64)
    s = s[np.isfinite(s)]
    return float(abs(s.mean() - target_speed)) if len(s) >= 2 else None


def _grey_small(frames: np.ndarray, side: int = 64) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), (side, side),
                                interpolation=cv2.INTER_AREA) for f in frames]).astype(np.float64) / 255.0


def _second_differences_squared(frames: np.ndarray) -> np.ndarray:
    """(x[t+1] - 2 x[t] + x[t-1])^2 of the grey 64x64 frames, centred at t = 1..T-2: (T-2, 64, 64)."""
    g = _grey_small(frames)
    return (g[2:] - 2 * g[1:-1] + g[:-2]) ** 2


def temporal_hf_energy(frames: np.ndarray) -> float | None:
    """RMS of x[t+1] - 2 x[t] + x[t-1] over (T, H, W, 3) frames (grey, 64x64); None below 3 frames."""
    if len(frames) < 3:
        return None
    return float(np.sqrt(np.mean(_second_differences_squared(frames))))


def clip_of_frame(t: np.ndarray, clip_frames: int, overlap: int = 0) -> np.ndarray:
    """The generated clip each video frame t came from: clip 0 makes F frames, each later one F - O new ones."""
    t = np.asarray(t)
    return np.where(t < clip_frames, 0, 1 + (t - clip_frames) // max(clip_frames - overlap, 1))


def clip_hf_energy(frames: np.ndarray, clip_frames: int, overlap: int = 0) -> list[float]:
    """`temporal_hf_energy` of each generated clip of a long video (second differences centred in it)."""
    if len(frames) < 3 or clip_frames < 2:
        return []
    d2 = _second_differences_squared(frames).reshape(len(frames) - 2, -1).mean(axis=1)  # centred at t = 1..T-2
    clip = clip_of_frame(np.arange(1, len(frames) - 1), clip_frames, overlap)
    return [float(np.sqrt(d2[clip == k].mean())) for k in range(int(clip.max()) + 1)]


def seam_ratio(frames: np.ndarray, clip_frames: int, overlap: int = 0) -> float | None:
    """Mean |x[t] - x[t-1]| at clip boundaries (the first frame of each later clip) / the mean elsewhere.

    Without overlap the boundaries are t = k * clip_frames; with clips overlapping by O frames, t = F + k (F - O).
    """
    if clip_frames < 2 or len(frames) <= clip_frames + 1:
        return None
    g = _grey_small(frames)
    d = np.abs(g[1:] - g[:-1]).mean(axis=(1, 2))  # d[t-1] = change into frame t
    t = np.arange(1, len(g))
    clip = clip_of_frame(t, clip_frames, overlap)
    boundary = clip != clip_of_frame(t - 1, clip_frames, overlap)
    inside = d[~boundary].mean()
    return float(d[boundary].mean() / inside) if inside > 1e-12 else None
