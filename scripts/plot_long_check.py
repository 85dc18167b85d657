"""Plot a `model_checks --checks long --long-videos K [--long-control]` reading: is there jitter growth?

    .venv/bin/python scripts/plot_long_check.py runs/long12c_r28/long.json docs/images/long_check.png

Left: each video's jitter growth (last / first quarter - 1) with motion frames against the same video
generated without them (when the JSON has the control), with the mean and its standard error. Right:
the per-clip jitter (`clip_jitter`) over the video, mean over the videos with a band of one standard
error, with and without motion frames: a trend over the 20 s is growth, a gap between the curves is
drift carried from clip to clip.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

FPS = 25


def _sem(a: np.ndarray) -> np.ndarray:
    """Standard error of the mean over axis 0 (zero for one row)."""
    return a.std(axis=0, ddof=1) / np.sqrt(len(a)) if len(a) > 1 else np.zeros(a.shape[1:])


def _mean_sem(rows: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray([r[: min(map(len, rows))] for r in rows], dtype=float)
    return a.mean(axis=0), _sem(a)


def plot(long: dict, path: Path, clip_frames: int = 12) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    videos = long["videos"]
    overlap = int(long.get("clip_overlap") or 0)  # clip k >= 1 makes F - O new frames, from F + (k - 1)(F - O)
    control = all("no_motion" in v for v in videos)
    growth = np.asarray([v["jitter_growth"] for v in videos], dtype=float) * 100
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.6]})
    sem = float(_sem(growth))
    if control:
        alone = np.asarray([v["no_motion"]["jitter_growth"] for v in videos], dtype=float) * 100
        sem0 = float(_sem(alone))
        lim = max(np.abs(np.r_[growth, alone]).max() * 1.15, 5)
        ax0.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8)
        ax0.scatter(alone, growth, s=18, color="C0", label="one video")
        ax0.errorbar(alone.mean(), growth.mean(), xerr=sem0, yerr=sem, color="C3", capsize=3, marker="o",
                     label=f"mean +- s.e.: {growth.mean():+.1f} +- {sem:.1f} % (without: {alone.mean():+.1f} +- {sem0:.1f})")
        ax0.set_xlim(-lim, lim)
        ax0.set_xlabel("growth without motion frames, %")
    else:
        lim = max(np.abs(growth).max() * 1.15, 5)
        ax0.scatter(np.arange(len(growth)), growth, s=18, color="C0", label="one video")
        ax0.errorbar(len(growth), growth.mean(), yerr=sem, color="C3", capsize=3, marker="o",
                     label=f"mean +- s.e.: {growth.mean():+.1f} +- {sem:.1f} %")
        ax0.set_xlim(-1, len(growth) + 1)
        ax0.set_xlabel("video (the mean at the right)")
    ax0.axhline(0, color="k", lw=0.8)
    ax0.set_ylim(-lim, lim)
    ax0.set_ylabel("jitter growth with motion frames, %")
    ax0.set_title(f"{len(videos)} videos: first -> last quarter", fontsize=9)
    ax0.legend(fontsize=7, loc="upper left")

    curves = [("with motion frames", [v["clip_jitter"] for v in videos], "C0")]
    if control:
        curves.append(("without (every clip alone)", [v["no_motion"]["clip_jitter"] for v in videos], "C1"))
    for label, rows, color in curves:
        mean, band = _mean_sem(rows)
        k = np.arange(len(mean))
        first = np.where(k == 0, 0, clip_frames + (k - 1) * (clip_frames - overlap))
        t = (first + np.where(k == 0, clip_frames, clip_frames - overlap) / 2) / FPS  # each clip's new frames' centre
        ax1.plot(t, mean, color=color, lw=1.5, label=label)
        ax1.fill_between(t, mean - band, mean + band, color=color, alpha=0.2, lw=0)
    seconds = long.get("seconds", 20)
    for x in (seconds / 4, 3 * seconds / 4):
        ax1.axvline(x, color="grey", lw=0.8)
    clips = f"{clip_frames} frames" + (f", {overlap} overlapping" if overlap else "")
    ax1.set_xlabel(f"seconds (a point per generated clip of {clips}; lines: quarters)")
    ax1.set_ylabel("jitter_hf per clip, mean over videos +- s.e.")
    ax1.legend(fontsize=7)
    fig.suptitle(long.get("command", ""), fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("long_json", type=Path, help="a long check's long.json (or checks.json with a 'long' entry)")
    p.add_argument("out", type=Path, help="the PNG to write")
    p.add_argument("--clip-frames", type=int, default=12, help="frames per generated clip (the model's num_frames)")
    args = p.parse_args()
    data = json.loads(args.long_json.read_text())
    plot(data.get("long", data), args.out, args.clip_frames)
    print(args.out)


if __name__ == "__main__":
    main()
