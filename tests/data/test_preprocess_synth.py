"""Preprocessing checked against the synthetic world's per-frame ground truth (`emoportrait synth`).

One identity speaks/sings four 3 s clips at the four speed levels; the real preprocessing path
runs on the mp4 files, and its stored boxes, head speed and audio are compared with the truth.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from emoportrait.cli import main
from emoportrait.data.clips import SAMPLES_PER_FRAME
from emoportrait.data.faces import box_iou
from emoportrait.data.media import read_audio
from emoportrait.data.pipeline import run_preprocess
from emoportrait.data.preprocess import PreprocessConfig
from emoportrait.data.shards import iter_clips


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--out", str(root / "world"), "--identities", "1", "--clips-per-identity", "4",
                 "--seconds", "3", "--size", "128", "--no-progress"]) == 0
    summary = run_preprocess(root / "world" / "clips", root / "shards", PreprocessConfig(size=64), progress=False)
    clips = [c for p in sorted((root / "shards").glob("shard-*.tar")) for c in iter_clips(p)]
    truth = {c.meta["video"]: json.loads((root / "world" / "clips" / c.meta["video"].replace(".mp4", ".json")).read_text())
             for c in clips}
    return root, summary, clips, truth


def test_every_synthetic_clip_is_kept(world):
    _, summary, clips, _ = world
    assert summary.clips == 4 and not summary.skipped
    assert all(c.num_frames == 75 and c.meta["face_fraction"] == 1.0 for c in clips)


def test_face_boxes_match_ground_truth(world):
    _, _, clips, truth = world
    ious = []
    for clip in clips:
        x0, y0, side = clip.meta["crop"]
        boxes = clip.arrays["boxes"] * side / clip.meta["size"] + np.array([x0, y0, x0, y0])  # source pixels
        gt = truth[clip.meta["video"]]["frames"]["box"]
        s = clip.meta["start_frame"]
        ious += [box_iou(b, np.array(gt[s + i])) for i, b in enumerate(boxes)]
    assert np.median(ious) >= 0.7, np.median(ious)


def test_head_speed_correlates_with_ground_truth(world):
    _, _, clips, truth = world
    measured, true, means = [], [], {}
    for clip in clips:
        gt = np.array(truth[clip.meta["video"]]["frames"]["speed"])
        s = clip.meta["start_frame"]
        measured += list(clip.arrays["speed"])
        true += list(gt[s : s + clip.num_frames])
        means[truth[clip.meta["video"]]["speed_level"]] = clip.arrays["speed"].mean()
    r = np.corrcoef(measured, true)[0, 1]
    assert r >= 0.7, r
    assert [means[k] for k in sorted(means)] == sorted(means.values())  # still < slow < moderate < fast


def test_audio_is_the_source_audio_frame_by_frame(world):
    root, _, clips, truth = world
    for clip in clips:
        source = read_audio(root / "world" / "clips" / clip.meta["video"])
        s, t, ctx = clip.meta["start_frame"], clip.num_frames, clip.meta["audio_context"]
        stored = clip.arrays["audio"]
        # Frame f's 640 samples are exactly the source's samples [f * 640, (f + 1) * 640).
        np.testing.assert_array_equal(stored[ctx * SAMPLES_PER_FRAME : (ctx + t) * SAMPLES_PER_FRAME],
                                      source[s * SAMPLES_PER_FRAME : (s + t) * SAMPLES_PER_FRAME])
        # Against the world's own timing: loudness of 640 samples centred on each frame's time
        # (f / 25 s, the world's convention) matches its voice-activity truth best at lag 0.
        centres = (ctx + np.arange(t)) * SAMPLES_PER_FRAME
        windows = stored[centres[:, None] + np.arange(-320, 320)[None, :]]  # (T, 640)
        rms = 10 * np.log10((windows.astype(np.float64) ** 2).mean(axis=1) + 1e-12)
        active = np.array(truth[clip.meta["video"]]["frames"]["active"], np.float64)[s : s + t]
        if active.std() == 0:
            continue
        lags = {lag: np.corrcoef(rms[max(0, lag) : t + min(0, lag)], active[max(0, -lag) : t - max(0, lag)])[0, 1]
                for lag in range(-3, 4)}
        assert max(lags, key=lags.get) == 0, lags
