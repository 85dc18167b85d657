"""Contact sheet of a synthetic world: identities at a glance, one clip's frames and its curves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from emoportrait.atomic import atomic_path
from emoportrait.data.media import FPS, read_audio, read_video
from emoportrait.data.synth.dynamics import audio_features
from emoportrait.errors import EMOError


def make_sheet(world: str | os.PathLike, out: str | os.PathLike | None = None, max_identities: int = 24,
               clip_id: str | None = None, strip_frames: int = 10) -> Path:
    """Write a PNG with one frame per identity, a strip of frames of one clip and its mouth curve.

    Args:
        world: a folder made by `emoportrait synth` (with manifest.json).
        out: PNG path (default `world/contact_sheet.png`).
        max_identities: at most this many identity thumbnails.
        clip_id: clip for the strip (default: the first speech clip of the train split).
        strip_frames: frames shown in the strip, evenly spaced over the clip.

    Returns:
        The PNG's path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    world = Path(world)
    manifest_path = world / "manifest.json"
    if not manifest_path.is_file():
        raise EMOError(f"{world} has no manifest.json; make the world first with `emoportrait synth --out {world}`")
    manifest = json.loads(manifest_path.read_text())
    clips = manifest["clips"]
    out = Path(out) if out is not None else world / "contact_sheet.png"

    # One thumbnail per identity: the middle frame of its first clip.
    firsts: dict[str, dict] = {}
    for c in clips:
        firsts.setdefault(c["identity_id"], c)
    ids = list(firsts)[:max_identities]
    thumbs = []
    for iid in ids:
        c = firsts[iid]
        frames = read_video(world / c["video"], max_frames=c["num_frames"] // 2 + 1)
        thumbs.append(frames[-1])

    if clip_id is None:
        pick = next((c for c in clips if c["split"] == "train" and c["kind"] == "speech"), clips[0])
    else:
        pick = next((c for c in clips if c["clip_id"] == clip_id), None)
        if pick is None:
            raise EMOError(f"clip {clip_id!r} is not in {manifest_path}")
    video = read_video(world / pick["video"])
    side = json.loads((world / pick["sidecar"]).read_text())
    fr = side["frames"]
    n = len(fr["mouth_open"])
    audio = read_audio(world / pick["video"])
    level = audio_features(audio, n).level
    shown = np.linspace(0, len(video) - 1, strip_frames).round().astype(int)

    cols = 8
    rows = int(np.ceil(len(ids) / cols))
    width = 12.0
    thumb = width / 8
    strip_h = width / strip_frames
    fig = plt.figure(figsize=(width, rows * (thumb + 0.3) + strip_h + 4.2), dpi=100)
    grid = fig.add_gridspec(rows + 3, 8, height_ratios=[thumb + 0.3] * rows + [strip_h + 0.3, 2.0, 1.6], hspace=0.35)
    for k, (iid, img) in enumerate(zip(ids, thumbs)):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        ax.imshow(img)
        ax.set_title(f"{iid} ({manifest['identities'][iid]['split'].replace('heldout_', 'ho-')})", fontsize=7)
        ax.axis("off")
    ax = fig.add_subplot(grid[rows, :])
    ax.imshow(np.concatenate([video[i] for i in shown], axis=1))
    ax.set_title(f"{pick['clip_id']}  {pick['language']}  {pick['voice']}  speed={pick['speed_name']}  "
                 f"frames {', '.join(str(i) for i in shown)}", fontsize=8)
    ax.axis("off")
    t = np.arange(n) / FPS
    ax = fig.add_subplot(grid[rows + 1, :])
    ax.plot(t, fr["mouth_open"], label="mouth opening (sidecar)", color="C3")
    ax.plot(t, level, label="audio loudness (0..1)", color="C0", alpha=0.6)
    ax.plot(t, fr["blink"], label="blink", color="C2", alpha=0.5, lw=0.8)
    for i in shown:
        ax.axvline(i / FPS, color="k", lw=0.5, alpha=0.3)
    ax.set_xlim(0, n / FPS)
    ax.set_ylim(-0.05, 1.1)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, frameon=False)
    ax.tick_params(labelsize=7)
    ax = fig.add_subplot(grid[rows + 2, :])
    for key in ("yaw", "pitch", "roll"):
        ax.plot(t, fr[key], label=f"{key} (deg)")
    ax.plot(t, np.asarray(fr["speed"]) * 10, label="speed x10 (deg/frame)", color="k", lw=0.8)
    ax.set_xlim(0, n / FPS)
    ax.set_xlabel("seconds", fontsize=7)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=4, frameon=False)
    ax.tick_params(labelsize=7)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return out
