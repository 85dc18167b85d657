"""Measure how well a rendered world's pixels and audio agree with its ground truth.

`check_world(DIR)` decodes clips like any consumer would and reports:
- mouth: correlation of the mouth-interior height measured in pixels with the sidecar's
  `mouth_open_px` (per clip) and `mouth_open` (pooled over clips, per face height), and of `mouth_open` with the audio's RMS envelope; opening in silence;
- head: mean rotation speed vs the speed level's target;
- faces (optional, needs `emoportrait.data.faces`): detection rate and IoU with the truth
  boxes, and the correlation of landmark-estimated head speed with the truth per clip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from emoportrait.data.media import FPS, SAMPLE_RATE, read_audio, read_video
from emoportrait.errors import EMOError


def mouth_gap_px(frame: np.ndarray, center: np.ndarray, width_px: float, box: np.ndarray) -> float:
    """Height in pixels of the open mouth, averaged over the central half of the mouth's width.

    Interior pixels are darker than the face's skin (luminance below min(60, 0.6 x the median
    of the face box)); teeth (bright, unsaturated) directly above the dark interior count too.
    Closed lips leave only their ~1 px seam.

    Args:
        frame: (H, W, 3) uint8 RGB. center: (2,) mouth centre (x, y) in pixels.
        width_px: mouth width in pixels. box: (4,) face box (x0, y0, x1, y1) in pixels.
    """
    h, w = frame.shape[:2]
    fx0, fy0, fx1, fy1 = np.clip(np.round(box).astype(int), 0, [w, h, w, h])
    face = frame[fy0:fy1, fx0:fx1].astype(np.float64).mean(axis=-1)
    if face.size == 0:
        return 0.0
    threshold = min(60.0, 0.6 * float(np.median(face)))
    quarter = max(1.0, 0.25 * width_px)
    half_h = 0.3 * (fy1 - fy0)
    x0, x1 = int(max(0, center[0] - quarter)), int(min(w, center[0] + quarter + 1))
    y0, y1 = int(max(0, center[1] - half_h)), int(min(h, center[1] + half_h))
    patch = frame[y0:y1, x0:x1].astype(np.float64)  # (rows, cols, 3)
    if patch.size == 0:
        return 0.0
    lum = patch.mean(axis=-1)
    dark = lum < threshold
    teeth = (lum > 140) & (patch.max(axis=-1) - patch.min(axis=-1) < 40)
    heights = []
    for c in range(dark.shape[1]):
        rows = np.flatnonzero(dark[:, c])
        n = len(rows)
        if n:
            top = rows[0] - 1
            while top >= 0 and teeth[top, c]:
                n, top = n + 1, top - 1
        heights.append(n)
    return float(np.mean(heights))


def rms_envelope(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """(T,) RMS of 40 ms windows centred on t / 25 s."""
    hop = SAMPLE_RATE // FPS
    padded = np.concatenate([np.zeros(hop // 2), audio, np.zeros(hop)])
    return np.array([np.sqrt(np.mean(padded[t * hop : t * hop + hop] ** 2)) for t in range(num_frames)])


def _corr(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


def check_world(world: str | os.PathLike, max_clips: int | None = None, faces: bool = True) -> dict:
    """Consistency numbers of a world folder (see the module docstring); also written to world/check.json."""
    world = Path(world)
    path = world / "manifest.json"
    if not path.is_file():
        raise EMOError(f"{world} has no manifest.json; make the world first with `emoportrait synth --out {world}`")
    clips = json.loads(path.read_text())["clips"][:max_clips]
    analyzer = None
    if faces:
        from emoportrait.data.faces import FaceAnalyzer, box_iou

        analyzer = FaceAnalyzer("mediapipe")
    r_pixels, r_audio, silent_open, speed_err = [], [], [], []
    pooled_gap, pooled_open = [], []
    found, ious, est_speed, true_speed = [], [], [], []
    try:
        for c in clips:
            frames = read_video(world / c["video"])
            audio = read_audio(world / c["video"])
            side = json.loads((world / c["sidecar"]).read_text())
            fr = {k: np.asarray(v) for k, v in side["frames"].items()}
            n = min(len(frames), len(fr["mouth_open"]))
            gap = [mouth_gap_px(frames[t], fr["keypoints"][t, 3], fr["mouth_width_px"][t], fr["box"][t]) for t in range(n)]
            r_pixels.append(_corr(gap, fr["mouth_open_px"][:n]))
            box_h = fr["box"][:n, 3] - fr["box"][:n, 1]
            pooled_gap += list(np.asarray(gap) / box_h)
            pooled_open += list(fr["mouth_open"][:n])
            r_audio.append(_corr(rms_envelope(audio, n), fr["mouth_open"][:n]))
            t = np.arange(n) / FPS
            near = np.zeros(n, bool)
            for s, e in side["segments"]:
                near |= (t > s - 0.12) & (t < e + 0.12)
            silent_open += list(fr["mouth_open"][:n][~near])
            speed_err.append(fr["speed"].mean() / side["speed_target"] - 1)
            if analyzer is not None:
                track = analyzer.analyze_frames(frames[:n])
                found += list(track.found)
                ious += [box_iou(b, g) for b, g, ok in zip(track.boxes, fr["box"], track.found) if ok]
                est_speed.append(float(np.nanmean(track.speed)))
                true_speed.append(float(fr["speed"].mean()))
    finally:
        if analyzer is not None:
            analyzer.close()
    report = {
        "clips": len(clips),
        # per clip: measured gap vs the sidecar's mouth_open_px; pooled: gap / face height vs mouth_open
        "mouth_pixels_vs_truth_r": {"min": float(np.nanmin(r_pixels)), "median": float(np.nanmedian(r_pixels)),
                                    "pooled_vs_mouth_open": _corr(pooled_gap, pooled_open)},
        "mouth_vs_audio_envelope_r": {"min": float(np.nanmin(r_audio)), "median": float(np.nanmedian(r_audio))},
        "mouth_open_in_silence": {"frames": len(silent_open), "max": float(np.max(silent_open, initial=0.0))},
        "speed_vs_level_relative_error": {"max_abs": float(np.max(np.abs(speed_err)))},
    }
    if analyzer is not None:
        ious_a = np.array(ious)
        report["face_detector"] = {
            "detected": float(np.mean(found)),
            "iou_median": float(np.median(ious_a)) if ious else 0.0,
            "iou_p5": float(np.percentile(ious_a, 5)) if ious else 0.0,
            "iou_at_least_0.6": float(np.mean(ious_a >= 0.6)) if ious else 0.0,
        }
        report["landmark_speed_vs_truth"] = {
            "clip_mean_r": _corr(est_speed, true_speed),
            "estimated_over_true": float(np.mean(est_speed) / np.mean(true_speed)),
        }
    from emoportrait.atomic import atomic_write_text

    atomic_write_text(world / "check.json", json.dumps(report, indent=1) + "\n")
    return report
