"""The synthetic talking-head world, checked on the files a user gets (`emoportrait synth`).

One small world (3 identities x 2 clips x 3 s, 128 px) is rendered once; its mp4 files are
decoded like any video and compared with the sidecars' ground truth.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from emoportrait.cli import main
from emoportrait.data.media import FPS, SAMPLE_RATE, probe_video, read_audio, read_video
from emoportrait.data.synth.check import mouth_gap_px
from emoportrait.data.synth.config import SynthConfig
from emoportrait.data.synth.dynamics import SPEED_LEVELS
from emoportrait.data.synth.world import read_sidecar, synthesize_world
from emoportrait.errors import EMOError

CFG = SynthConfig(identities=3, clips_per_identity=2, seconds=3.0, size=128, seed=7, sung_fraction=0.2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "world"
    manifest = synthesize_world(CFG, out, workers=1, progress=False)
    clips = []
    for c in manifest["clips"]:
        clips.append({
            **c,
            "frames": read_video(out / c["video"]),
            "audio": read_audio(out / c["video"]),
            "truth": read_sidecar(out / c["sidecar"]),
        })
    return out, manifest, clips


def _envelope(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """RMS of 40 ms windows centred on t / 25 s."""
    hop = SAMPLE_RATE // FPS
    padded = np.concatenate([np.zeros(hop // 2), audio, np.zeros(hop)])
    return np.array([np.sqrt(np.mean(padded[t * hop : t * hop + hop] ** 2)) for t in range(num_frames)])


def test_files_are_ordinary_videos_with_complete_ground_truth(world):
    out, manifest, clips = world
    assert len(clips) == 6
    for c in clips:
        info = probe_video(out / c["video"])
        assert (info.width, info.height, round(info.fps), info.has_audio) == (128, 128, 25, True)
        assert len(c["frames"]) == c["num_frames"] == 75
        assert abs(len(c["audio"]) / SAMPLE_RATE - 3.0) < 0.1
        fr = c["truth"]["frames"]
        for key in ("box", "yaw", "pitch", "roll", "speed", "mouth_open", "mouth_width", "blink", "keypoints"):
            assert len(fr[key]) == 75, key
        assert c["truth"]["identity_id"] == c["identity_id"] and c["truth"]["speed_level"] == c["speed_level"]
        assert set(c["truth"]["units"]) >= {"box", "yaw", "speed", "mouth_open"}
        box = fr["box"]
        assert (box[:, 2] - box[:, 0]).mean() > 0.35 * 128  # talking-head framing: the face fills the frame
    assert sorted(sum(manifest["splits"].values(), [])) == sorted(c["clip_id"] for c in clips)


def _gaps(c) -> np.ndarray:
    fr = c["truth"]["frames"]
    return np.array([mouth_gap_px(f, kp[3], w, b)
                     for f, kp, w, b in zip(c["frames"], fr["keypoints"], fr["mouth_width_px"], fr["box"])])


def test_mouth_in_pixels_matches_ground_truth(world):
    _, _, clips = world
    pooled_gap, pooled_open = [], []
    for c in clips:
        fr = c["truth"]["frames"]
        gap = _gaps(c)  # interior height measured in the decoded frames
        assert np.corrcoef(gap, fr["mouth_open_px"])[0, 1] >= 0.9, c["clip_id"]
        assert np.corrcoef(gap, fr["mouth_open"])[0, 1] >= 0.8, c["clip_id"]
        pooled_gap += list(gap / (fr["box"][:, 3] - fr["box"][:, 1]))
        pooled_open += list(fr["mouth_open"])
    assert np.corrcoef(pooled_gap, pooled_open)[0, 1] >= 0.9


def test_mouth_follows_audio_and_closes_in_silence(world):
    _, _, clips = world
    silent_frames = 0
    for c in clips:
        fr = c["truth"]["frames"]
        env = _envelope(c["audio"], c["num_frames"])
        r = np.corrcoef(env, fr["mouth_open"])[0, 1]
        assert r >= 0.6, (c["clip_id"], r)
        # Frames at least 3 frames (120 ms) away from any sound segment are silence.
        t = np.arange(c["num_frames"]) / FPS
        near = np.zeros(c["num_frames"], bool)
        for s, e in c["truth"]["segments"]:
            near |= (t > s - 0.12) & (t < e + 0.12)
        silent = ~near
        silent_frames += silent.sum()
        assert np.all(fr["mouth_open"][silent] < 0.02), c["clip_id"]
        # Closed lips leave only the seam between them (about one pixel row); an open mouth shows several.
        gap = _gaps(c)
        assert gap[np.argmax(fr["mouth_open"])] > 4
        assert not silent.any() or gap[silent].max() < 1.6, c["clip_id"]
    assert silent_frames >= 10


def test_head_speed_matches_speed_level(world):
    _, _, clips = world
    means = {}
    for c in clips:
        fr = c["truth"]["frames"]
        # Recompute the speed from the sidecar's angles with an independent rotation library.
        rot = Rotation.from_euler("ZXY", np.stack([fr["roll"], fr["pitch"], fr["yaw"]], 1), degrees=True)
        speed = np.degrees((rot[1:] * rot[:-1].inv()).magnitude())
        np.testing.assert_allclose(speed, fr["speed"][1:], atol=3e-3)
        target = SPEED_LEVELS[c["speed_level"]]
        assert c["speed_target"] == target
        assert abs(fr["speed"].mean() - target) <= 0.03 * target + 0.005, (c["clip_id"], fr["speed"].mean(), target)
        means.setdefault(c["speed_level"], []).append(fr["speed"].mean())
    assert sorted(means) == [0, 1, 2, 3]  # the fixture covers every level, and faster levels are faster
    assert np.all(np.diff([np.mean(means[k]) for k in sorted(means)]) > 0)


def test_face_detector_and_pose_estimator_agree_with_ground_truth(world):
    from emoportrait.data.faces import FaceAnalyzer, box_iou

    _, _, clips = world
    found, ious = [], []
    est_speed, true_speed = [], []
    with FaceAnalyzer("mediapipe") as fa:
        for c in clips:
            fr = c["truth"]["frames"]
            track = fa.analyze_frames(c["frames"])
            found += list(track.found)
            ious += [box_iou(b, g) for b, g, ok in zip(track.boxes, fr["box"], track.found) if ok]
            yaw = track.ypr[:, 0]
            ok = np.isfinite(yaw)
            if c["speed_level"] >= 2:  # a clearly moving head: the estimated yaw tracks the true yaw
                assert abs(np.corrcoef(yaw[ok], fr["yaw"][ok])[0, 1]) >= 0.8, c["clip_id"]
            est_speed.append(np.nanmean(track.speed))
            true_speed.append(fr["speed"].mean())
    assert np.mean(found) >= 0.95
    ious = np.array(ious)
    assert np.mean(ious >= 0.6) >= 0.95 and np.median(ious) >= 0.75, np.percentile(ious, [5, 50])
    assert np.corrcoef(est_speed, true_speed)[0, 1] >= 0.9


def test_identities_differ_and_stay_the_same(world):
    import cv2

    _, manifest, clips = world

    def descriptor(c):
        """Mean 24x24 crop around the face box over the most frontal frames of a clip."""
        fr = c["truth"]["frames"]
        order = np.argsort(np.abs(fr["yaw"]) + np.abs(fr["pitch"]) + np.abs(fr["roll"]) + 20 * fr["mouth_open"])[:5]
        crops = []
        for i in order:
            x0, y0, x1, y1 = fr["box"][i]
            cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.75 * max(x1 - x0, y1 - y0)
            m = np.float32([[24 / (2 * half), 0, 12 - cx * 24 / (2 * half)], [0, 24 / (2 * half), 12 - cy * 24 / (2 * half)]])
            crops.append(cv2.warpAffine(c["frames"][i], m, (24, 24), flags=cv2.INTER_AREA).astype(np.float64))
        return np.mean(crops, 0).ravel() / 255

    desc = {c["clip_id"]: (c["identity_id"], descriptor(c)) for c in clips}
    within, between = [], []
    keys = sorted(desc)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            d = np.sqrt(np.mean((desc[a][1] - desc[b][1]) ** 2))
            (within if desc[a][0] == desc[b][0] else between).append(d)
    assert max(within) < 0.6 * min(between), (within, between)
    # The identity's traits are recorded once and are the same for every clip.
    assert len(manifest["identities"]) == 3
    assert len({json.dumps(v, sort_keys=True) for v in manifest["identities"].values()}) == 3


def test_same_seed_gives_identical_files_with_any_worker_count(world, tmp_path):
    out, _, _ = world
    again = tmp_path / "again"
    synthesize_world(CFG, again, workers=2, progress=False)
    names = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in names:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    # Resume: a missing clip is rendered again, identically; other settings are refused.
    (again / "clips" / "id0001_c000.mp4").unlink()
    synthesize_world(CFG, again, workers=1, progress=False)
    assert (again / "clips" / "id0001_c000.mp4").read_bytes() == (out / "clips" / "id0001_c000.mp4").read_bytes()
    with pytest.raises(EMOError, match="other settings"):
        synthesize_world(SynthConfig(identities=1, clips_per_identity=1, seconds=1.0), again, progress=False)
    other = synthesize_world(SynthConfig(identities=1, clips_per_identity=1, seconds=1.0, seed=8), tmp_path / "o",
                             progress=False)
    mine = synthesize_world(SynthConfig(identities=1, clips_per_identity=1, seconds=1.0, seed=7), tmp_path / "m",
                            progress=False)
    assert other["clips"][0]["clip_id"] == mine["clips"][0]["clip_id"]
    assert (tmp_path / "o/clips/id0000_c000.mp4").read_bytes() != (tmp_path / "m/clips/id0000_c000.mp4").read_bytes()


def test_cli_contact_sheet_and_errors(world, capsys):
    from PIL import Image

    out, _, _ = world
    assert main(["synth", "--out", str(out), "--no-render", "--sheet"]) == 0
    with Image.open(out / "contact_sheet.png") as img:
        assert img.width >= 800 and img.height >= 400
    assert main(["synth", "--out", str(out / "x"), "--size", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--size 100" in err[0]
    assert main(["synth", "--out", str(out.parent / "none"), "--no-render", "--sheet"]) == 2
