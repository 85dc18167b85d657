"""Lawful dynamics of the synthetic world: audio -> mouth, speed level + audio -> head, blinks.

Frame t of a clip is centred on time t / 25 s (the audio-feature convention of the models).
- Mouth: opening follows loudness (gated to exactly 0 in silence) and the vowel's openness (F1
  band centroid); width follows the F2 band centroid (spread /i/ vs rounded /u/, /o/).
- Head: yaw/pitch/roll are a smooth random motion plus nods and turns triggered by loudness
  onsets (audio emphasis), scaled so that the clip's mean rotation speed equals its speed
  level (degrees per frame, the quantity of paper section 3.2's speed buckets).
- Eyes: blinks as a renewal process (mean interval from the identity), gaze drifts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from emoportrait.data.media import FPS, SAMPLE_RATE

# Target mean head rotation speed per speed level, degrees per frame (geodesic angle between
# the head rotations of successive frames).
SPEED_LEVELS = (0.1, 0.4, 0.9, 1.6)
SPEED_NAMES = ("still", "slow", "moderate", "fast")
HOP = SAMPLE_RATE // FPS  # 640 samples per frame
ANGLE_LIMITS = np.array([32.0, 20.0, 15.0])  # soft limits of |yaw|, |pitch|, |roll| in degrees


@dataclass
class AudioFeatures:
    """Per-frame audio descriptors, frame t centred on t / 25 s."""

    db: np.ndarray  # (T,) RMS level in dBFS over 40 ms
    level: np.ndarray  # (T,) loudness 0..1: (RMS / the clip's loud RMS)^0.6, 0 when silent
    active: np.ndarray  # (T,) bool: sound above the silence gate
    openness: np.ndarray  # (T,) 0..1 from the F1-band centroid (open vowels /a/ -> 1)
    spread: np.ndarray  # (T,) 0..1 from the F2-band centroid (/i/ -> 1, /u/ /o/ -> 0)
    fricative: np.ndarray  # (T,) 0..1 share of energy above 3.5 kHz


def _frames(audio: np.ndarray, num_frames: int, win: int) -> np.ndarray:
    """(T, win) windows centred on t * HOP samples (zero-padded outside the audio)."""
    pad = np.zeros(num_frames * HOP + 2 * win, np.float32)
    n = min(len(audio), num_frames * HOP + win)
    pad[win : win + n] = audio[:n]
    idx = win // 2 + np.arange(num_frames)[:, None] * HOP + np.arange(win)[None, :]
    return pad[idx]


def audio_features(audio: np.ndarray, num_frames: int) -> AudioFeatures:
    """Loudness and spectral shape of `audio` ((S,) float32, 16 kHz) for `num_frames` video frames."""
    rms_win = _frames(audio, num_frames, HOP)  # (T, 640)
    db = 10 * np.log10(np.mean(rms_win.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = db[db > -55]
    ref = np.percentile(loud, 98) if loud.size else -55.0
    active = db > max(-55.0, ref - 32.0)
    # Loudness ~ intensity^0.3 = amplitude^0.6 (Stevens' power law), relative to the clip's loud frames.
    level = np.clip(10 ** ((db - ref) / 20 * 0.6), 0, 1) * active

    spec_win = _frames(audio, num_frames, 1024) * np.hanning(1024).astype(np.float32)
    power = np.abs(np.fft.rfft(spec_win, axis=1)) ** 2  # (T, 513)
    freqs = np.fft.rfftfreq(1024, 1 / SAMPLE_RATE)

    def centroid(lo, hi):
        band = (freqs >= lo) & (freqs < hi)
        p = power[:, band]
        return (p @ freqs[band]) / (p.sum(axis=1) + 1e-12)

    f1 = centroid(200, 1000)
    f2 = centroid(900, 2800)
    high = power[:, freqs >= 3500].sum(axis=1)
    fric = high / (power.sum(axis=1) + 1e-12)
    return AudioFeatures(
        db=db,
        level=level,
        active=active,
        openness=np.clip((f1 - 350) / 300, 0, 1),
        spread=np.clip((f2 - 1200) / 1000, 0, 1),
        fricative=np.clip(fric, 0, 1),
    )


def mouth_track(feat: AudioFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Mouth opening (0 closed .. 1 widest) and width (x neutral) per frame, from the audio alone."""
    target = feat.level**0.8 * (0.55 + 0.45 * feat.openness) * (1 - 0.4 * feat.fricative)
    target = np.where(feat.active, target, 0.0)
    # A little co-articulation: the mouth cannot jump between frames (symmetric, sigma 0.7 frame).
    opening = gaussian_filter1d(target, 0.7, mode="nearest")
    opening[opening < 0.02] = 0.0
    opening = np.clip(opening / 0.95, 0, 1)
    width_target = 1 + 0.5 * (feat.spread - 0.45) * np.minimum(1, 2 * feat.level) - 0.08 * opening
    width = gaussian_filter1d(np.where(feat.active, width_target, 1.0), 0.7, mode="nearest")
    return opening, np.clip(width, 0.75, 1.25)


def rotation_matrices(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(T, 3, 3) R = Rz(roll) Rx(pitch) Ry(yaw) for angle arrays in degrees (see geometry.py)."""
    y, p, r = (np.deg2rad(np.asarray(v, np.float64)) for v in (yaw, pitch, roll))
    t = len(y)
    ry = np.zeros((t, 3, 3))
    ry[:, 0, 0], ry[:, 0, 2], ry[:, 1, 1], ry[:, 2, 0], ry[:, 2, 2] = np.cos(y), np.sin(y), 1, -np.sin(y), np.cos(y)
    rx = np.zeros((t, 3, 3))
    rx[:, 0, 0], rx[:, 1, 1], rx[:, 1, 2], rx[:, 2, 1], rx[:, 2, 2] = 1, np.cos(p), -np.sin(p), np.sin(p), np.cos(p)
    rz = np.zeros((t, 3, 3))
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = np.cos(r), -np.sin(r), np.sin(r), np.cos(r), 1
    return rz @ rx @ ry


def rotation_speed(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(T,) geodesic angle in degrees between the head rotations of frames t-1 and t; w_0 = w_1."""
    mats = rotation_matrices(yaw, pitch, roll)
    if len(mats) < 2:
        return np.zeros(len(mats))
    rel = np.einsum("tij,tkj->tik", mats[1:], mats[:-1])  # R_t R_{t-1}^T
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)
    speed = np.rad2deg(np.arccos(cos))
    return np.concatenate([speed[:1], speed])


@dataclass
class HeadTrack:
    yaw: np.ndarray  # (T,) degrees
    pitch: np.ndarray
    roll: np.ndarray
    tx: np.ndarray  # (T,) head units
    ty: np.ndarray
    brow: np.ndarray  # (T,) brow raise, head units
    speed: np.ndarray  # (T,) degrees per frame


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, freq_scale: float, k: int = 4) -> np.ndarray:
    """Sum of `k` random sinusoids between 0.1 and 0.7 Hz (x freq_scale), unit speed scale."""
    out = np.zeros_like(t)
    for _ in range(k):
        f = rng.uniform(0.1, 0.7) * freq_scale
        out += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) / f
    return out


def head_track(feat: AudioFeatures, speed_level: int, rng: np.random.Generator) -> HeadTrack:
    """Head motion whose mean rotation speed equals `SPEED_LEVELS[speed_level]` (within 2 %)."""
    n = len(feat.db)
    t = np.arange(n) / FPS
    freq_scale = (0.6, 0.8, 1.0, 1.3)[speed_level]
    noise = np.stack([_smooth_noise(rng, t, freq_scale) * w for w in (1.0, 0.7, 0.4)])  # (3, T)
    # Audio emphasis: loudness onsets trigger a nod (pitch down) and a small turn.
    onset = np.clip(np.diff(gaussian_filter1d(feat.level, 1.5), prepend=0.0), 0, None)
    kernel = np.sin(np.linspace(0, np.pi, 13)) ** 2
    nod = gaussian_filter1d(np.convolve(onset, kernel)[:n], 1.5) if n else onset
    drift = gaussian_filter1d(rng.normal(size=n), 8) if n else np.zeros(0)
    turn_sign = np.tanh(3 * drift / (drift.std() + 1e-9))  # which way emphasis turns the head, changing smoothly
    emphasis = np.stack([0.5 * nod * turn_sign, -nod, 0.15 * nod * turn_sign])
    if nod.std() > 0:
        emphasis *= noise.std() / (np.abs(emphasis).max() + 1e-9) * 0.8
    dynamic = noise + emphasis
    dynamic -= dynamic.mean(axis=1, keepdims=True)
    base = np.array([rng.uniform(-8, 8), rng.uniform(-5, 5), rng.uniform(-4, 4)])[:, None]
    target = SPEED_LEVELS[speed_level]

    def angles(scale):
        return ANGLE_LIMITS[:, None] * np.tanh((base + scale * dynamic) / ANGLE_LIMITS[:, None])

    def mean_speed(scale):
        return float(rotation_speed(*angles(scale)).mean()) if n > 1 else target

    lo, hi = 0.0, 1.0
    while mean_speed(hi) < target and hi < 1e4:
        hi *= 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_speed(mid) < target else (lo, mid)
    yaw, pitch, roll = angles((lo + hi) / 2)
    emph = np.clip(nod / (nod.max() + 1e-9), 0, 1) if nod.max() > 0 else nod
    return HeadTrack(
        yaw=yaw, pitch=pitch, roll=roll,
        tx=0.004 * yaw + 0.02 * np.sin(2 * np.pi * 0.13 * t + rng.uniform(0, 6.3)),
        ty=-0.003 * pitch + 0.012 * np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 6.3)),
        brow=0.035 * emph,
        speed=rotation_speed(yaw, pitch, roll),
    )


def blink_track(num_frames: int, mean_interval: float, rng: np.random.Generator) -> np.ndarray:
    """(T,) eyelid closure 0 (open) .. 1 (closed); blinks last ~5 frames, intervals ~ gamma."""
    out = np.zeros(num_frames)
    shape = np.array([0.35, 0.85, 1.0, 0.7, 0.35, 0.1])
    t = rng.uniform(0.2, 1.0) * mean_interval * FPS
    while t < num_frames:
        i = int(t)
        seg = shape[: num_frames - i]
        out[i : i + len(seg)] = np.maximum(out[i : i + len(seg)], seg)
        t += max(8, rng.gamma(4.0, mean_interval * FPS / 4.0))
    return out


def gaze_track(num_frames: int, yaw: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(T,) iris offsets (fraction of the eye half-width): fixations that partly counter head yaw."""
    gx, gy = np.zeros(num_frames), np.zeros(num_frames)
    i = 0
    while i < num_frames:
        j = i + int(rng.uniform(0.8, 2.5) * FPS)
        gx[i:j], gy[i:j] = rng.normal(0, 0.25), rng.normal(0, 0.15)
        i = j
    gx = gaussian_filter1d(gx, 0.8) - 0.3 * yaw / ANGLE_LIMITS[0]
    return np.clip(gx, -0.7, 0.7), np.clip(gaussian_filter1d(gy, 0.8), -0.5, 0.5)
