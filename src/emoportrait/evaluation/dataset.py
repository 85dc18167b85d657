"""An evaluation set: ground-truth clips (mp4 with audio), optional synthetic-world sidecars,
and the generated video matched to each clip by file name.

Set folder layout (real data, e.g. the HDTF test split): `DIR/<clip>.mp4`, one per clip.
Synthetic-world sets add per-clip ground truth (see `read_sidecar`) and a `manifest.json`; when
the manifest names splits, the held-out split is evaluated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emoportrait.errors import EMOError

# The synthetic world's splits (data.synth.world.SPLITS); "heldout_identity" is the paper's
# identity-disjoint test set. Real-data manifests may say "test".
DEFAULT_SPLITS = ("heldout_identity", "test")


@dataclass
class GroundTruth:
    """Per-frame synthetic-world ground truth of one clip (T frames at 25 fps)."""

    mouth_open: np.ndarray  # (T,) mouth opening driven by the clip's audio
    boxes: np.ndarray | None = None  # (T, 4) face boxes x0, y0, x1, y1 (pixels)
    ypr: np.ndarray | None = None  # (T, 3) yaw, pitch, roll degrees
    speed: float | None = None  # requested head speed of the clip, degrees/frame
    identity: str | None = None


@dataclass
class EvalClip:
    """One clip of the set: its ground-truth video and, when the set has them, sidecar truths."""

    name: str  # file stem, shared with the generated video
    video: Path
    truth: GroundTruth | None = None
    notes: list[str] = field(default_factory=list)


def _first(d: dict, *keys):
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


def read_sidecar(path: Path) -> GroundTruth:
    """Parse a per-clip ground-truth sidecar (JSON, per-frame lists or a list of frame dicts)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EMOError(f"{path}: unreadable ground-truth sidecar ({e.__class__.__name__})") from None
    frames = data.get("frames") if isinstance(data, dict) else data
    clip = data if isinstance(data, dict) else {}
    if isinstance(frames, list) and frames and isinstance(frames[0], dict):
        cols = {k: [f.get(k) for f in frames] for k in frames[0]}
    elif isinstance(frames, dict):
        cols = frames
    else:
        cols = clip
    mouth = _first(cols, "mouth_open", "mouth_opening")
    if mouth is None:
        raise EMOError(f"{path}: sidecar has no per-frame mouth_open")
    boxes = _first(cols, "face_box", "box", "boxes")
    ypr = None
    if all(k in cols for k in ("yaw", "pitch", "roll")):
        ypr = np.stack([np.asarray(cols[k], np.float64) for k in ("yaw", "pitch", "roll")], 1)
    speed = _first(clip, "speed_target", "target_speed", "speed")
    if isinstance(speed, (list, dict)):
        speed = None
    return GroundTruth(
        mouth_open=np.asarray(mouth, np.float64),
        boxes=None if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 4),
        ypr=ypr,
        speed=None if speed is None else float(speed),
        identity=_first(clip, "identity", "identity_id"),
    )


def _sidecar_for(video: Path) -> Path | None:
    for cand in (video.with_suffix(".json"), video.with_name(video.stem + ".gt.json"),
                 video.with_name(video.stem + ".truth.json")):
        if cand.is_file():
            return cand
    return None


def _manifest_clips(set_dir: Path, splits: tuple[str, ...] | None) -> list[Path] | None:
    path = set_dir / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        raise EMOError(f"{path}: not valid JSON; fix or remove it") from None
    clips = manifest.get("clips") if isinstance(manifest, dict) else manifest
    if not isinstance(clips, list):
        return None
    entries = [c if isinstance(c, dict) else {"video": c} for c in clips]
    if splits is None:  # default: the identity-disjoint held-out split, else every held-out clip
        chosen = [c for c in entries if c.get("split") in DEFAULT_SPLITS]
        chosen = chosen or [c for c in entries if str(c.get("split", "")).startswith("heldout")] or entries
    else:
        chosen = [c for c in entries if c.get("split") in splits or "all" in splits]
        if not chosen:
            raise EMOError(f"{path}: no clip in split(s) {', '.join(splits)}; the manifest has "
                           f"{', '.join(sorted({str(c.get('split')) for c in entries}))}")
    out = []
    for c in chosen:
        rel = _first(c, "video", "path", "file", "mp4")
        if rel is None and "name" in c:
            rel = f"{c['name']}.mp4"
        if rel:
            out.append(set_dir / rel)
    return out


def load_set(set_dir: str | Path, splits: tuple[str, ...] | None = None) -> list[EvalClip]:
    """Clips of an evaluation set.

    Args:
        set_dir: a folder of mp4 clips, or a synthetic world (manifest.json + clips/).
        splits: manifest splits to evaluate ("all" for every clip); default: "heldout_identity"
            (identity-disjoint, as the paper's test set), else all held-out clips.
    """
    set_dir = Path(set_dir)
    if not set_dir.is_dir():
        raise EMOError(f"--set {set_dir}: folder not found")
    videos = _manifest_clips(set_dir, splits)
    if videos is None:
        videos = sorted(set_dir.glob("*.mp4"))
    if not videos:
        raise EMOError(f"--set {set_dir}: no clips (.mp4 files) found; point --set at a folder of ground-truth videos")
    clips = []
    for v in videos:
        clip = EvalClip(v.stem, v)
        side = _sidecar_for(v)
        if side is not None:
            try:
                clip.truth = read_sidecar(side)
            except EMOError as e:
                clip.notes.append(str(e))
        clips.append(clip)
    return clips
