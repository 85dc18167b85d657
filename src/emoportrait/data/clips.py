"""Clip planning for preprocessing: face tracks -> clip spans, square face crops, audio windows.

Pure numpy functions (no I/O), so the rules that decide what becomes a training clip are
small, documented and unit-tested:

1. Short face dropouts (at most `max_gap` frames) are bridged by linear interpolation of the
   boxes; longer dropouts end a segment.
2. A jump of the face box between successive frames (IoU below `cut_iou`: a scene cut, or the
   detector switching person) also ends a segment.
3. Segments shorter than `min_frames` are dropped ("too_short"); longer ones are split into
   `ceil(L / max_frames)` clips of near-equal length (no tiny tail clip).
4. Each clip is cropped to a square of side `crop_scale` x the larger side of the union of
   its face boxes, centred on that union (paper 4.1: "resized and cropped"), shifted to stay
   inside the frame; only when the frame is too small is it padded by edge replication.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emoportrait.data.faces import box_iou

SAMPLES_PER_FRAME = 640  # 16000 Hz / 25 fps


@dataclass(frozen=True)
class Segment:
    """A span [start, end) of video frames; `reason` is set when it is rejected."""

    start: int
    end: int
    reason: str | None = None

    @property
    def num_frames(self) -> int:
        return self.end - self.start


def bridge_gaps(boxes: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Fill face dropouts of at most `max_gap` frames between two detections by interpolation.

    Args:
        boxes: (T, 4) boxes, NaN rows where no face was found.
        max_gap: longest dropout (frames) that is bridged.

    Returns:
        (T, 4) boxes with bridged rows filled, and (T,) bool "has a box" after bridging.
    """
    boxes = np.array(boxes, dtype=np.float64)
    found = np.isfinite(boxes).all(axis=1)
    idx = np.flatnonzero(found)
    for a, b in zip(idx[:-1], idx[1:]):
        gap = b - a - 1
        if 0 < gap <= max_gap:
            w = (np.arange(1, gap + 1) / (gap + 1))[:, None]  # (gap, 1)
            boxes[a + 1 : b] = (1 - w) * boxes[a] + w * boxes[b]
    return boxes, np.isfinite(boxes).all(axis=1)


def find_segments(boxes: np.ndarray, max_gap: int, cut_iou: float) -> list[Segment]:
    """Maximal spans of frames with a (bridged) face and no box jump between neighbours.

    Args:
        boxes: (T, 4) boxes, NaN where no face was found (before bridging).
        max_gap: see `bridge_gaps`.
        cut_iou: successive boxes with IoU below this start a new segment.
    """
    filled, has_box = bridge_gaps(boxes, max_gap)
    segments, start = [], None
    for t in range(len(filled)):
        if not has_box[t]:
            if start is not None:
                segments.append(Segment(start, t))
                start = None
            continue
        if start is not None and box_iou(filled[t - 1], filled[t]) < cut_iou:
            segments.append(Segment(start, t))
            start = None
        if start is None:
            start = t
    if start is not None:
        segments.append(Segment(start, len(filled)))
    return segments


def split_segment(segment: Segment, min_frames: int, max_frames: int) -> list[Segment]:
    """Split a segment into near-equal clips of at most `max_frames`, or reject it as too short."""
    n = segment.num_frames
    if n < min_frames:
        return [Segment(segment.start, segment.end, "too_short")]
    parts = math.ceil(n / max_frames)
    edges = [segment.start + round(i * n / parts) for i in range(parts + 1)]
    return [Segment(a, b) for a, b in zip(edges[:-1], edges[1:])]


def true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal [start, end) runs where the (T,) bool `mask` is True."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def union_box(boxes: np.ndarray) -> np.ndarray:
    """(T, 4) boxes (NaN rows ignored) -> (4,) box enclosing all of them."""
    b = boxes[np.isfinite(boxes).all(axis=1)]
    return np.array([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])


def square_crop(union: np.ndarray, frame_hw: tuple[int, int], crop_scale: float) -> tuple[int, int, int]:
    """Integer square crop (x0, y0, side) around a face-box union.

    The side is `crop_scale` x max(union width, union height), reduced to the frame's shorter
    side when larger (but never below the union itself), centred on the union and shifted to
    lie inside the frame when it fits. A crop that still leaves the frame is padded by the
    caller (`crop_and_resize`, edge replication).
    """
    h, w = frame_hw
    uw, uh = union[2] - union[0], union[3] - union[1]
    side = max(uw, uh) * crop_scale
    side = max(min(side, min(h, w)), max(uw, uh))
    side = max(2, int(round(side)))
    cx, cy = (union[0] + union[2]) / 2, (union[1] + union[3]) / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    if side <= w:
        x0 = min(max(x0, 0), w - side)
    if side <= h:
        y0 = min(max(y0, 0), h - side)
    return x0, y0, side


def crop_and_resize(frame: np.ndarray, crop: tuple[int, int, int], size: int) -> np.ndarray:
    """Cut the square `crop` (x0, y0, side) out of an (H, W, 3) frame and resize it to `size`.

    Parts of the crop outside the frame are filled by edge replication. Area interpolation
    when shrinking (no aliasing), cubic when enlarging.
    """
    import cv2

    x0, y0, side = crop
    h, w = frame.shape[:2]
    pad = (max(0, -y0), max(0, y0 + side - h), max(0, -x0), max(0, x0 + side - w))  # top, bottom, left, right
    if any(pad):
        frame = cv2.copyMakeBorder(frame, *pad, borderType=cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad[2], y0 + pad[0]
    patch = frame[y0 : y0 + side, x0 : x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interp)


def boxes_to_crop(boxes: np.ndarray, crop: tuple[int, int, int], size: int) -> np.ndarray:
    """(T, 4) frame-pixel boxes -> crop-pixel boxes of the resized `size` x `size` crop."""
    x0, y0, side = crop
    s = size / side
    return (boxes - np.array([x0, y0, x0, y0], dtype=np.float64)) * s


def audio_window(audio: np.ndarray, start_frame: int, num_frames: int, context: int) -> np.ndarray:
    """Samples of frames [start - context, start + num_frames + context), zeros outside `audio`.

    Frame f of the video starts at time f / 25 s = sample f * 640 of `audio` (16 kHz), so row
    f of the result's (frames, 640) view is exactly the audio of frame start - context + f.

    Returns:
        ((num_frames + 2 * context) * 640,) float32.
    """
    a = (start_frame - context) * SAMPLES_PER_FRAME
    b = (start_frame + num_frames + context) * SAMPLES_PER_FRAME
    out = np.zeros(b - a, np.float32)
    lo, hi = max(a, 0), min(b, len(audio))
    if hi > lo:
        out[lo - a : hi - a] = audio[lo:hi]
    return out
