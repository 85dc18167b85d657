"""Both head-pose devices against a synthetic world's true pose: MediaPipe (data.faces) and the pose regressor.

For held-out clips of a world (or their videos in VIDEOS, e.g. the VAE check's reconstructions): each device's
per-frame error in yaw / pitch / roll after removing each clip's mean (MediaPipe's absolute angles carry a
bias; its yaw and pitch are flipped to the renderer's sign first), and the mean head speed per requested level read by each device and by the truth, with the labels'
1.5-frame filter and with the speed check's longer ones (docs/evaluation.md, "Head-pose regressor").

    .venv/bin/python scripts/validate_pose_regressor.py --set runs/r30/world [--videos DIR] [--clips 24]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from emoportrait.data.faces import FaceAnalyzer, head_speed
from emoportrait.data.media import read_video
from emoportrait.evaluation.dataset import load_set
from emoportrait.evaluation.model_checks import spread
from emoportrait.evaluation.pose_regressor import load_head_pose_regressor, pose_rotations, predict_pose
from emoportrait.evaluation.speed_check import HEAD_MOTION_SIGMA, POSE_MOTION_SIGMA

# data.faces' yaw and pitch count the other way round from the renderer's (r = -0.9 to -1.0 per clip against the
# world's truth); the speed readings do not depend on it, the per-frame errors would.
MEDIAPIPE_SIGN = np.array([-1.0, -1.0, 1.0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", required=True, type=Path, help="a synthetic world (emoportrait synth)")
    p.add_argument("--videos", type=Path, default=None, help="read these videos (named as the clips) instead")
    p.add_argument("--clips", type=int, default=24, help="held-out clips spread over the split (without --videos)")
    p.add_argument("--max-frames", type=int, default=75)
    p.add_argument("--weights", default=None, help="regressor weights (default: the shipped ones)")
    args = p.parse_args()
    clips = [c for c in load_set(args.set, ("heldout_identity", "heldout_sentence")) if c.truth is not None]
    if args.videos is not None:
        clips = [c for c in clips if (args.videos / f"{c.name}.mp4").is_file()]
    else:
        clips = spread(clips, args.clips)
    model = load_head_pose_regressor(args.weights)
    sigmas = (1.5, POSE_MOTION_SIGMA, HEAD_MOTION_SIGMA)
    errors: dict[str, list] = {"MediaPipe": [], "regressor": []}
    levels: dict[float, dict[str, list]] = {}
    with FaceAnalyzer() as analyzer:
        for clip in clips:
            frames = read_video(args.videos / f"{clip.name}.mp4" if args.videos else clip.video, max_frames=args.max_frames)
            truth = clip.truth.ypr[:len(frames)]
            track = analyzer.analyze_frames(frames)
            found = track.found
            if found.sum() < 10:
                continue
            regressed = predict_pose(model, frames, track.boxes)
            read = {"truth": pose_rotations(truth), "MediaPipe": track.rotations, "regressor": pose_rotations(regressed)}
            for name, ypr in (("MediaPipe", track.ypr * MEDIAPIPE_SIGN), ("regressor", regressed)):
                ok = found & np.isfinite(ypr).all(axis=1)
                errors[name].append(np.abs((ypr[ok] - ypr[ok].mean(0)) - (truth[ok] - truth[ok].mean(0))).mean(0))
            row = levels.setdefault(clip.truth.speed, {})
            for name, rotations in read.items():
                for s in sigmas:
                    row.setdefault(f"{name} {s:g}", []).append(float(head_speed(rotations, s)[found].mean()))
    print(f"{len(errors['regressor'])} clips; per-frame |error| in yaw / pitch / roll after each clip's mean (deg):")
    for name, e in errors.items():
        print(f"  {name}: " + " / ".join(f"{v:.2f}" for v in np.mean(e, axis=0)))
    print("mean head speed (deg/frame) per requested level, by device and filter (frames):")
    for level in sorted(levels):
        row = levels[level]
        n = len(next(iter(row.values())))
        print(f"  {level:g} ({n} clips): " + ", ".join(f"{k} {np.mean(v):.2f}" for k, v in row.items()))


if __name__ == "__main__":
    main()
