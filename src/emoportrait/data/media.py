"""Audio and video I/O with PyAV: decode any common container, write H.264 + AAC mp4 atomically.

Everything in the project reads and writes media through these few functions, so that odd
inputs (any sample rate or channel count, variable frame rate, missing streams, corrupt files)
are handled once, with one-line errors.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from emoportrait.atomic import atomic_path
from emoportrait.errors import EMOError

SAMPLE_RATE = 16_000  # Hz, the audio rate of every model input (wav2vec2's)
FPS = 25  # frames per second of every video the project reads or writes (paper 4.1)


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise EMOError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise EMOError(f"{path}: file is empty")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise EMOError(f"{path}: not a readable audio/video file ({e.__class__.__name__})") from None


def read_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of any file PyAV reads, as mono float32 at `sample_rate`.

    Returns:
        (S,) float32 samples in [-1, 1]. Raises `EMOError` when there is no audio stream or
        nothing decodes.
    """
    with _open(path) as container:
        if not container.streams.audio:
            raise EMOError(f"{path}: has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:
            if not chunks:
                raise EMOError(f"{path}: audio stream could not be decoded ({e.__class__.__name__})") from None
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise EMOError(f"{path}: audio stream is empty (zero samples)")
    return np.clip(audio, -1.0, 1.0)


@dataclass
class VideoInfo:
    """What a container says about its first video stream."""

    width: int
    height: int
    fps: float
    duration: float  # seconds
    has_audio: bool


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read the header of a video file (no decoding)."""
    with _open(path) as container:
        if not container.streams.video:
            raise EMOError(f"{path}: has no video stream")
        vs = container.streams.video[0]
        rate = float(vs.average_rate or vs.guessed_rate or FPS)
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = float("nan")
        return VideoInfo(vs.codec_context.width, vs.codec_context.height, rate, duration, bool(container.streams.audio))


def iter_video_frames(path: str | os.PathLike, fps: float = FPS) -> Iterator[np.ndarray]:
    """Decode the first video stream and resample it to a constant `fps` by timestamps.

    Output frame k shows the last decoded frame whose timestamp is <= k / fps, so variable
    frame rate and 30/50/60 fps sources become an exact 25 fps grid.

    Yields:
        (H, W, 3) uint8 RGB frames.
    """
    with _open(path) as container:
        if not container.streams.video:
            raise EMOError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base or Fraction(1, 1000)
        next_index = 0
        last: np.ndarray | None = None
        start: float | None = None
        try:
            for frame in container.decode(stream):
                t = float(frame.pts * tb) if frame.pts is not None else next_index / fps
                if start is None:
                    start = t
                t -= start
                image = frame.to_ndarray(format="rgb24")
                # Emit every grid time that falls before this frame using the previous frame.
                while last is not None and next_index / fps < t - 1e-6:
                    yield last
                    next_index += 1
                last = image
            if last is not None:
                duration = None
                if stream.duration is not None:
                    duration = float(stream.duration * tb)
                end = duration if duration else (next_index + 1) / fps
                # The last frame lasts until the stream's end (at least one grid slot).
                while next_index == 0 or next_index / fps < end - 1e-6:
                    yield last
                    next_index += 1
        except av.error.FFmpegError as e:
            if last is None:
                raise EMOError(f"{path}: video stream could not be decoded ({e.__class__.__name__})") from None


def read_video(path: str | os.PathLike, fps: float = FPS, max_frames: int | None = None) -> np.ndarray:
    """All frames of a video at a constant `fps`, as (T, H, W, 3) uint8."""
    frames = []
    for frame in iter_video_frames(path, fps):
        frames.append(frame)
        if max_frames is not None and len(frames) >= max_frames:
            break
    if not frames:
        raise EMOError(f"{path}: no video frames could be decoded")
    return np.stack(frames)


class VideoWriter:
    """Stream RGB frames into an H.264 mp4 at `fps`, with optional AAC audio, written atomically.

    The file appears at `path` only when the writer closes without error; an exception or
    Ctrl-C inside the `with` block leaves no partial file. Frame sizes must be even (yuv420p).

    `metadata` are container tags (mp4 keeps the standard ones, e.g. "comment": `clip_layout_tags`).

    Example:
        with VideoWriter("out.mp4", fps=25, audio=samples, sample_rate=16000) as w:
            for frame in frames:  # (H, W, 3) uint8
                w.write(frame)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: int = FPS,
        audio: np.ndarray | None = None,
        sample_rate: int = SAMPLE_RATE,
        crf: int = 18,
        metadata: dict[str, str] | None = None,
    ):
        self.path = Path(path)
        self.fps = int(fps)
        self.audio = None if audio is None else np.asarray(audio, dtype=np.float32).reshape(-1)
        self.sample_rate = int(sample_rate)
        self.crf = crf
        self.metadata = dict(metadata or {})
        self.num_frames = 0
        self._audio_pos = 0
        self._ctx = None

    def __enter__(self) -> VideoWriter:
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._container = av.open(str(tmp), mode="w", format="mp4")
        self._container.metadata.update(self.metadata)
        self._vstream = None
        self._astream = None
        if self.audio is not None and self.audio.size:
            self._astream = self._container.add_stream("aac", rate=self.sample_rate)
            self._astream.layout = "mono"
            self._resampler = av.AudioResampler(format="fltp", layout="mono", rate=self.sample_rate)
        return self

    def _open_video(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise EMOError(f"{self.path}: frame size {width}x{height} must be even for H.264 (yuv420p)")
        self._vstream = self._container.add_stream("libx264", rate=self.fps)
        self._vstream.width, self._vstream.height = width, height
        self._vstream.pix_fmt = "yuv420p"
        self._vstream.options = {"crf": str(self.crf), "preset": "veryfast"}

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        frame = np.ascontiguousarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        if self._vstream is None:
            self._open_video(frame.shape[0], frame.shape[1])
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        vf.pts = self.num_frames
        for packet in self._vstream.encode(vf):
            self._container.mux(packet)
        self.num_frames += 1
        self._write_audio_until(self.num_frames / self.fps)

    def _write_audio_until(self, seconds: float | None) -> None:
        if self._astream is None:
            return
        end = self.audio.size if seconds is None else min(self.audio.size, int(round(seconds * self.sample_rate)))
        while self._audio_pos < end:
            n = min(1024, end - self._audio_pos)
            chunk = self.audio[self._audio_pos : self._audio_pos + n]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            af.sample_rate = self.sample_rate
            af.pts = self._audio_pos
            af.time_base = Fraction(1, self.sample_rate)
            for resampled in self._resampler.resample(af):
                for packet in self._astream.encode(resampled):
                    self._container.mux(packet)
            self._audio_pos += n

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self.num_frames == 0:
                    raise EMOError(f"{self.path}: no frames were written")
                for packet in self._vstream.encode():
                    self._container.mux(packet)
                if self._astream is not None:
                    # Audio is cut to the video's length so both streams end together.
                    self._write_audio_until(self.num_frames / self.fps)
                    for packet in self._astream.encode(None):
                        self._container.mux(packet)
            self._container.close()
        except BaseException:
            with contextlib.suppress(Exception):
                self._container.close()
            self._ctx.__exit__(*__import__("sys").exc_info())
            raise
        self._ctx.__exit__(exc_type, exc, tb)


_LAYOUT = re.compile(r"^emoportrait clip_frames=(\d+) clip_overlap=(\d+)$")


def clip_layout_tags(clip_frames: int, clip_overlap: int = 0) -> dict[str, str]:
    """The container tag that records how a generated video's clips were laid out, for `VideoWriter`.

    Where each later clip's new frames begin (frame F + k (F - O)) is where the seam metric looks;
    `emoportrait evaluate --videos` reads it back (`read_clip_layout`) instead of assuming the defaults.
    """
    return {"comment": f"emoportrait clip_frames={int(clip_frames)} clip_overlap={int(clip_overlap)}"}


def read_clip_layout(path: str | os.PathLike) -> tuple[int, int] | None:
    """(clip frames F, clip overlap O) that `emoportrait generate` recorded in the video, or None."""
    with _open(path) as container:
        m = _LAYOUT.match(str(container.metadata.get("comment", "")).strip())
    return (int(m[1]), int(m[2])) if m else None


def write_video(path: str | os.PathLike, frames, fps: int = FPS, audio: np.ndarray | None = None,
                sample_rate: int = SAMPLE_RATE, metadata: dict[str, str] | None = None) -> None:
    """Write an iterable of (H, W, 3) uint8 frames (and optional mono audio) as an mp4, atomically."""
    with VideoWriter(path, fps=fps, audio=audio, sample_rate=sample_rate, metadata=metadata) as writer:
        for frame in frames:
            writer.write(frame)
