"""The default model's speed check: generated head speed per requested speed (evaluation/model_checks.py `speed`).

The same clips are generated at each of `SPEED_LEVELS` and the head speed of the generated frames is read three
ways: MediaPipe's labels (`measured`, as `speed_adherence`), the same tracks smoothed longer (`head_motion`), and the
world's head-pose regressor (`pose_motion`). `rises` pairs each clip with itself from one level to the next: an
effect of the request that the level means, which mix clips of different wobble, cannot show (docs/evaluation.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emoportrait.evaluation.runner import finite_mean

HEAD_MOTION_SIGMA = 6.0  # frames: the speed check's second reading, the head's turning without the tracker's wobble
POSE_MOTION_SIGMA = 3.0  # frames: the third reading's filter, on the pose regressor's angles (evaluation/pose_regressor.py)
SPEED_LEVELS = (0.1, 0.9, 1.6)  # degrees/frame: the synthetic world's still, moderate and fast levels


def check_speed(pipe, clips, work: Path, steps: int, max_frames: int | None, levels, log, seed: int = 0,
                seeds=None) -> dict:
    """Mean measured head speed of generated videos per requested speed level, and their flicker.

    Flicker is `synthetic.temporal_hf_energy` (the long check's jitter) per video, next to the same
    clips' ground truth: frame-to-frame noise the face tracker reads as head motion. `head_motion` is
    the same tracks' speed with the head pose smoothed over `HEAD_MOTION_SIGMA` frames instead of the
    labels' 1.5: on generated faces the tracker's pose wobbles by many degrees from frame to frame, and
    the longer filter keeps the head's own turning while dropping most of that wobble. `pose_motion`
    reads the pose from the same face boxes with the world's head-pose regressor
    (evaluation/pose_regressor.py, trained on the renderer with the look of generated video) instead
    of MediaPipe's landmarks, smoothed over `POSE_MOTION_SIGMA` frames.

    With several `seeds` (default: `seed` alone) the sweep is generated once per seed: `per_seed`
    keeps each sweep, the top-level readings are their means, and `monotonic` (and the other two
    readings' `*_monotonic`) holds only where every seed's sweep rises: one sweep of 3 clips can be in order by the
    generation noise alone (docs/experiments.md, "Is the speed order real?").

    `per_clip` keeps each clip's three readings per level (per seed: `per_seed`), and `rises` pairs them:
    for each reading and each pair of neighbouring levels, the mean over clips and seeds of one clip's
    reading at the higher level minus its reading at the lower, with its standard error and count. A
    rise of a few standard errors is an effect of the request that the level means alone cannot show.
    """
    from emoportrait.data.media import read_video
    from emoportrait.evaluation.synthetic import temporal_hf_energy

    seeds = list(dict.fromkeys(seeds)) if seeds else [seed]  # each seed once, in order
    per_seed = {}
    for s in seeds:
        suffix = "" if len(seeds) == 1 else f"_seed{s}"  # one seed: the folders of a one-seed check
        per_seed[str(s)] = _speed_sweep(pipe, clips, work, suffix, steps, max_frames, levels, log, s)
    keys = [f"{lv:g}" for lv in levels]

    def mean_over_seeds(name: str) -> dict:
        return {k: finite_mean(r[name][k] for r in per_seed.values()) for k in keys}

    truth = finite_mean(temporal_hf_energy(read_video(c.video, max_frames=max_frames)) for c in clips)
    out = {"requested": list(levels), "measured": mean_over_seeds("measured"),
           "monotonic": all(r["monotonic"] for r in per_seed.values()), "clips": len(clips),
           "flicker": mean_over_seeds("flicker"), "flicker_ground_truth": truth,
           "head_motion": mean_over_seeds("head_motion"),
           "head_motion_monotonic": all(r["head_motion_monotonic"] for r in per_seed.values()),
           "pose_motion": mean_over_seeds("pose_motion"),
           "pose_motion_monotonic": all(r["pose_motion_monotonic"] for r in per_seed.values()),
           "rises": _paired_rises([r.get("per_clip", {}) for r in per_seed.values()], keys)}
    if len(seeds) == 1:  # the seed the sweep was generated with (`--speed-seeds 3` alone: 3, not `--seed`)
        out["seed"], out["per_clip"] = seeds[0], per_seed[str(seeds[0])].get("per_clip", {})
    if len(seeds) > 1:
        out["seeds"], out["per_seed"] = seeds, per_seed
    return out


def _speed_sweep(pipe, clips, work: Path, suffix: str, steps: int, max_frames: int | None, levels, log,
                 seed: int) -> dict:
    """One sweep of `check_speed` at one generation seed, its videos in work/speed_<level><suffix>."""
    from emoportrait.data.faces import FaceAnalyzer, head_speed
    from emoportrait.data.media import read_video
    from emoportrait.evaluation.generation import generate_for_set
    from emoportrait.evaluation.pose_regressor import load_head_pose_regressor, pose_rotations, predict_pose
    from emoportrait.evaluation.synthetic import temporal_hf_energy

    regressor = load_head_pose_regressor()
    flicker = {}
    per_clip: dict[str, dict[str, dict[str, float | None]]] = {}  # clip -> level -> reading -> value
    with FaceAnalyzer() as analyzer:
        for level in levels:
            key = f"{level:g}"
            videos = work / f"speed_{key}{suffix}"
            videos.mkdir(parents=True, exist_ok=True)
            log(f"speed: generating {len(clips)} clips at {key} deg/frame (seed {seed})")
            generate_for_set("", clips, videos, steps, seed=seed, max_frames=max_frames, log=log, speed=level, pipe=pipe)
            jitters = []
            for clip in clips:
                path = videos / f"{clip.name}.mp4"
                if path.is_file():
                    frames = read_video(path)
                    jitters.append(temporal_hf_energy(frames))
                    track = analyzer.analyze_frames(frames)
                    if track.found.sum() >= 2:
                        rotations = pose_rotations(predict_pose(regressor, frames, track.boxes))
                        per_clip.setdefault(clip.name, {})[key] = {  # None, not NaN: strict JSON
                            "measured": _finite(float(np.mean(track.speed[track.found]))),
                            "head_motion": _finite(float(np.mean(head_speed(track.rotations, HEAD_MOTION_SIGMA)[track.found]))),
                            "pose_motion": _finite(float(np.mean(head_speed(rotations, POSE_MOTION_SIGMA)[track.found])))}
            flicker[key] = finite_mean(jitters)

    def level_means(name: str) -> dict:  # each level's mean over the clips with a face
        return {f"{lv:g}": finite_mean(v[f"{lv:g}"][name] for v in per_clip.values() if f"{lv:g}" in v) for lv in levels}

    measured, motion, posed = level_means("measured"), level_means("head_motion"), level_means("pose_motion")
    return {"measured": measured, "monotonic": _rising(measured, levels), "flicker": flicker,
            "head_motion": motion, "head_motion_monotonic": _rising(motion, levels),
            "pose_motion": posed, "pose_motion_monotonic": _rising(posed, levels), "per_clip": per_clip}


def _paired_rises(per_clip_by_seed: list[dict], keys: list[str]) -> dict:
    """Per reading and neighbouring levels "a->b": mean, s.e. and n of (clip at b) - (clip at a) over clips and seeds."""
    rises: dict[str, dict[str, dict]] = {}
    for name in ("measured", "head_motion", "pose_motion"):
        rises[name] = {}
        for a, b in zip(keys, keys[1:]):
            d = [v[b][name] - v[a][name] for per_clip in per_clip_by_seed for v in per_clip.values()
                 if a in v and b in v and _finite(v[a][name]) is not None and _finite(v[b][name]) is not None]
            se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
            rises[name][f"{a}->{b}"] = {"mean": float(np.mean(d)) if d else None, "se": se, "n": len(d)}
    return rises


def _finite(x: float | None) -> float | None:
    """x where it is a finite number, else None."""
    return x if x is not None and np.isfinite(x) else None


def _rising(values: dict, levels) -> bool:
    """Whether the readings per level (keys f"{level:g}") are all there and strictly increasing."""
    v = [values[f"{lv:g}"] for lv in levels]
    return all(x is not None for x in v) and all(b > a for a, b in zip(v, v[1:]))
