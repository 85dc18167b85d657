"""One video -> training clips (paper section 4.1): decode, label faces, plan clips, crop, encode.

`process_video` is the unit of work of `emoportrait preprocess` (see `data/pipeline.py` for the
run over a corpus: planning, shards, workers, resume). For one video it

1. probes the file and decodes its audio (16 kHz mono, aligned to the video's first frame);
2. decodes the frames at a constant 25 fps (variable or other frame rates are resampled by
   timestamp) and runs face detection + landmarks + solvePnP head pose on every frame;
3. plans clips (`data/clips.py`: dropouts, cuts, length limits) and rejects bad ones with a
   reason; computes the head speed w_f per face segment;
4. decodes the frames again and writes each clip's square crop (resized to `size`) as encoded
   images with its boxes, pose, speed and audio into a per-video tar (`data/shards.py` layout).

Memory stays bounded by one clip: frames are streamed twice instead of being held.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoportrait.data import clips as C
from emoportrait.data.media import FPS, SAMPLE_RATE, iter_video_frames, probe_video, read_audio
from emoportrait.data.preprocess_config import REASONS, PreprocessConfig
from emoportrait.data.shards import TarSampleWriter, encode_clip
from emoportrait.errors import EMOError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".ts")

@dataclass(frozen=True)
class VideoEntry:
    """An input video: absolute `path`, stable relative name `rel`, and `video_id` (key prefix)."""

    path: str
    rel: str

    @property
    def digest(self) -> str:
        return hashlib.sha1(self.rel.encode()).hexdigest()

    @property
    def video_id(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(self.rel).stem)[:40].strip("-") or "video"
        return f"{stem}-{self.digest[:12]}"  # 48 bits: unique even for many files named video.mp4


def list_videos(source: str | os.PathLike) -> list[VideoEntry]:
    """Input videos from a folder (recursive, by extension), a text list (one path a line,
    relative to the list's folder) or a single file. `rel` names are relative to the folder
    or as written in the list, so ids stay the same on machines that mount the data elsewhere."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
        entries = [VideoEntry(str(p.resolve()), p.relative_to(source).as_posix()) for p in paths]
    elif source.is_file() and source.suffix.lower() in (".txt", ".lst", ".list"):
        entries = []
        for line in source.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line) if Path(line).is_absolute() else source.parent / line
                entries.append(VideoEntry(str(p.resolve()), line))
    elif source.is_file():
        entries = [VideoEntry(str(source.resolve()), source.name)]
    else:
        raise EMOError(f"--videos {source}: no such folder, list or file")
    rels = [e.rel for e in entries]
    if len(set(rels)) != len(rels):
        raise EMOError(f"--videos {source}: the same video is listed twice")
    if len({e.video_id for e in entries}) != len(entries):
        raise EMOError(f"--videos {source}: two video names hash alike; rename one of them")
    if not entries:
        raise EMOError(f"--videos {source}: no videos found (extensions {', '.join(VIDEO_EXTENSIONS)})")
    return entries


# ---------------------------------------------------------------------------------------------
# One video
# ---------------------------------------------------------------------------------------------


def _skip(entry: VideoEntry, reason: str, detail: str = "", start: int | None = None, end: int | None = None) -> dict:
    # Messages name the video by its relative name: parts made on machines that mount the
    # corpus elsewhere stay identical.
    item = {"video": entry.rel, "reason": reason, "detail": detail.replace(entry.path, entry.rel)}
    if start is not None:
        item.update(start_frame=int(start), end_frame=int(end), seconds=(end - start) / FPS)
    return item


def _stream_offset_seconds(path: str) -> float:
    """Audio start minus video start, from the container's stream start times (0 if unknown)."""
    import av

    try:
        with av.open(path) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            if v.start_time is None or a.start_time is None:
                return 0.0
            return float(a.start_time * a.time_base) - float(v.start_time * v.time_base)
    except (av.error.FFmpegError, IndexError):
        return 0.0


def load_aligned_audio(path: str) -> np.ndarray:
    """16 kHz mono audio with sample 0 at the video's first frame (zeros where audio starts late)."""
    audio = read_audio(path, SAMPLE_RATE)
    shift = int(round(_stream_offset_seconds(path) * SAMPLE_RATE))
    if shift > 0:
        audio = np.concatenate([np.zeros(shift, np.float32), audio])
    elif shift < 0:
        audio = audio[-shift:]
    return audio


def _encode_image(rgb: np.ndarray, cfg: PreprocessConfig) -> bytes:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if cfg.image_format == "jpg" else []
    ok, buf = cv2.imencode(f".{cfg.image_format}", np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise RuntimeError("image encoding failed")
    return buf.tobytes()


def process_video(entry: VideoEntry, cfg: PreprocessConfig, analyzer, out_tar: Path) -> dict:
    """Preprocess one video into clips written to `out_tar` (only if any clip is kept).

    Args:
        entry: the input video.
        cfg: preprocessing settings.
        analyzer: a `data.faces.FaceAnalyzer` (reused across videos).
        out_tar: where this video's clip samples go (written atomically).

    Returns:
        A JSON-able result: {"video", "video_id", "seconds" (decoded duration), "clips" (manifest
        entries of kept clips), "skipped" (entries with a reason from `REASONS`)}.
    """
    from emoportrait.data.faces import head_speed, rotation_to_ypr

    result = {"video": entry.rel, "video_id": entry.video_id, "seconds": 0.0, "clips": [], "skipped": []}
    # 1. Probe and audio.
    try:
        info = probe_video(entry.path)
    except EMOError as e:
        result["skipped"].append(_skip(entry, "unreadable", str(e)))
        return result
    has_audio = info.has_audio
    if not has_audio and not cfg.allow_no_audio:
        result["skipped"].append(_skip(entry, "no_audio", "the file has no audio stream"))
        return result
    audio = np.zeros(0, np.float32)
    if has_audio:
        try:
            audio = load_aligned_audio(entry.path)
        except EMOError as e:
            result["skipped"].append(_skip(entry, "bad_audio", str(e)))
            return result

    # 2. Face labels of every frame (first decoding pass).
    analyzer.reset()
    boxes, rotations, frame_hw = [], [], None
    try:
        for frame in iter_video_frames(entry.path, FPS):
            frame_hw = frame.shape[:2]
            box, rot, _ = analyzer.analyze(frame)
            boxes.append(np.full(4, np.nan) if box is None else box)
            rotations.append(np.full((3, 3), np.nan) if rot is None else rot)
    except EMOError as e:
        if not boxes:
            result["skipped"].append(_skip(entry, "unreadable", str(e)))
            return result
    num_frames = len(boxes)
    result["seconds"] = num_frames / FPS
    if num_frames < cfg.min_frames:
        detail = f"{num_frames / FPS:.2f} s < min_clip_seconds {cfg.min_clip_seconds}"
        result["skipped"].append(_skip(entry, "too_short", detail))
        return result
    boxes_a = np.array(boxes).reshape(-1, 4)  # (T, 4) source pixels, NaN = no face
    rot_a = np.array(rotations).reshape(-1, 3, 3)  # (T, 3, 3)
    detected = np.isfinite(boxes_a).all(axis=1)  # (T,)
    if not detected.any():
        result["skipped"].append(_skip(entry, "no_face", "no face detected in any frame"))
        return result

    # 3. Plan clips; head speed per face segment (never smoothed across a cut).
    filled, _ = C.bridge_gaps(boxes_a, cfg.max_gap_frames)
    speed = np.zeros(num_frames, np.float32)
    planned: list[C.Segment] = []
    covered = np.zeros(num_frames, bool)
    for seg in C.find_segments(boxes_a, cfg.max_gap_frames, cfg.cut_iou):
        covered[seg.start : seg.end] = True
        speed[seg.start : seg.end] = head_speed(rot_a[seg.start : seg.end], cfg.speed_sigma)
        for clip in C.split_segment(seg, cfg.min_frames, cfg.max_frames):
            if clip.reason is None:
                fraction = detected[clip.start : clip.end].mean()
                sides = np.maximum(filled[clip.start : clip.end, 2] - filled[clip.start : clip.end, 0],
                                   filled[clip.start : clip.end, 3] - filled[clip.start : clip.end, 1])
                if fraction < 1.0 - cfg.max_missing_fraction:
                    clip = C.Segment(clip.start, clip.end, "no_face")
                elif np.median(sides) < cfg.min_face_px:
                    clip = C.Segment(clip.start, clip.end, "face_too_small")
            if clip.reason is None:
                planned.append(clip)
            else:
                result["skipped"].append(_skip(entry, clip.reason, "", clip.start, clip.end))
    for a, b in C.true_runs(~covered):  # stretches without a face
        if b - a >= cfg.min_frames:
            result["skipped"].append(_skip(entry, "no_face", "no face in these frames", a, b))
    if not planned:
        return result

    # 4. Crop, encode and write the clips (second decoding pass).
    crops = [C.square_crop(C.union_box(filled[c.start : c.end]), frame_hw, cfg.crop_scale) for c in planned]
    ypr = np.full((num_frames, 3), np.nan, np.float32)
    for t in np.flatnonzero(np.isfinite(rot_a).all(axis=(1, 2))):
        ypr[t] = rotation_to_ypr(rot_a[t])
    with TarSampleWriter(out_tar) as writer:
        ci, images = 0, []
        for t, frame in enumerate(iter_video_frames(entry.path, FPS)):
            if ci >= len(planned):
                break
            clip = planned[ci]
            if t < clip.start:
                continue
            images.append(_encode_image(C.crop_and_resize(frame, crops[ci], cfg.size), cfg))
            if t == clip.end - 1:
                result["clips"].append(_write_clip(writer, entry, ci, clip, crops[ci], images, filled, detected,
                                                   rot_a, ypr, speed, audio, has_audio, info, cfg))
                ci, images = ci + 1, []
        if ci < len(planned):  # the second decode ended early (a damaged tail): keep what was written
            result["skipped"].append(_skip(entry, "unreadable", "decoding stopped early", planned[ci].start, planned[-1].end))
    return result


def _write_clip(writer, entry, index, clip, crop, images, filled, detected, rot_a, ypr, speed, audio, has_audio,
                info, cfg) -> dict:
    s, e = clip.start, clip.end
    boxes = C.boxes_to_crop(filled[s:e], crop, cfg.size).astype(np.float32)  # (T, 4) crop pixels
    union = C.union_box(boxes)
    key = f"{entry.video_id}_{index:03d}"
    clip_speed = speed[s:e]
    sides = np.maximum(filled[s:e, 2] - filled[s:e, 0], filled[s:e, 3] - filled[s:e, 1])
    meta = {
        "key": key, "video": entry.rel, "video_id": entry.video_id, "clip_index": index,
        "start_frame": s, "num_frames": e - s, "fps": FPS, "sample_rate": SAMPLE_RATE,
        "size": cfg.size, "image_format": cfg.image_format, "crop": [int(v) for v in crop],
        "source_size": [int(info.height), int(info.width)], "source_fps": round(float(info.fps), 3),
        "union_box": [round(float(v), 3) for v in union], "audio_context": cfg.audio_context,
        "has_audio": bool(has_audio), "face_fraction": round(float(detected[s:e].mean()), 4),
        "face_px": round(float(np.median(sides)), 1), "speed_mean": round(float(clip_speed.mean()), 4),
        "speed_p90": round(float(np.percentile(clip_speed, 90)), 4),
    }
    arrays = {
        "boxes": boxes,
        "found": detected[s:e].astype(np.uint8),
        "rotation": rot_a[s:e].astype(np.float32),
        "ypr": ypr[s:e],
        "speed": clip_speed.astype(np.float32),
        "audio": C.audio_window(audio, s, e - s, cfg.audio_context),
    }
    writer.write(key, encode_clip(key, meta, arrays, images))
    return {k: meta[k] for k in ("key", "video", "start_frame", "num_frames", "has_audio", "face_fraction",
                                 "face_px", "speed_mean", "speed_p90")} | {"seconds": (e - s) / FPS}


__all__ = ["REASONS", "VIDEO_EXTENSIONS", "PreprocessConfig", "VideoEntry", "list_videos", "load_aligned_audio",
           "process_video"]
