"""Helpers for the generation tests: a drawn face MediaPipe detects, audio files of any format."""

from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

TINY_OVERRIDES = ["resolution=64", "num_frames=4", "num_motion_frames=2"]  # 64 px, F=4, N=2


def draw_face(size: int = 256, background=(90, 120, 160)) -> np.ndarray:
    """A cartoon portrait (skin-coloured face, hair, eyes, brows, nose, mouth) MediaPipe detects.

    Returns:
        (size, size, 3) uint8 RGB.
    """
    import cv2

    img = np.full((size, size, 3), background, np.uint8)
    s = size / 256

    def p(x, y):
        return int(x * s), int(y * s)

    aa = cv2.LINE_AA
    cv2.ellipse(img, p(128, 95), p(72, 60), 0, 180, 360, (40, 30, 20), -1, aa)  # hair
    cv2.ellipse(img, p(128, 130), p(62, 80), 0, 0, 360, (225, 180, 150), -1, aa)  # face
    for dx in (-25, 25):
        cv2.ellipse(img, p(128 + dx, 115), p(11, 6), 0, 0, 360, (255, 255, 255), -1, aa)
        cv2.circle(img, p(128 + dx, 115), int(4 * s), (40, 30, 20), -1, aa)
        cv2.line(img, p(128 + dx - 12, 100), p(128 + dx + 12, 98), (60, 40, 30), max(1, int(3 * s)), aa)
    cv2.line(img, p(128, 120), p(123, 150), (180, 120, 100), max(1, int(2 * s)), aa)
    cv2.ellipse(img, p(128, 172), p(20, 7), 0, 0, 360, (150, 60, 60), -1, aa)
    return img


def write_audio(path, samples: np.ndarray, rate: int, codec: str = "pcm_s16le") -> Path:
    """Encode (S,) mono or (C, S) float samples with PyAV (container from the file suffix)."""
    samples = np.asarray(samples, np.float32)
    if samples.ndim == 1:
        samples = samples[None]
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "-2"}  # FFmpeg's native vorbis is "experimental"
        fmt = stream.codec_context.format.name if stream.codec_context.format else "fltp"
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        for i in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i : i + 1024]), format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, i, Fraction(1, rate)
            for out in resampler.resample(frame):
                for packet in stream.encode(out):
                    container.mux(packet)
        for out in resampler.resample(None):
            for packet in stream.encode(out):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return Path(path)


def write_empty_wav(path) -> Path:
    """A valid WAV header with zero samples."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"")
    return Path(path)


def speech_like(seconds: float, rate: int = 16000, seed: int = 0, f0: float = 180.0) -> np.ndarray:
    """Amplitude-modulated harmonic tone (syllable-like bursts), (S,) float32."""
    rng = np.random.RandomState(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    envelope = 0.5 * (1 + np.sin(2 * np.pi * (3.0 + rng.rand()) * t)) ** 2
    tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.rand() * 6) / k for k in range(1, 6))
    return (0.2 * envelope * tone + 0.01 * rng.randn(t.size)).astype(np.float32)
