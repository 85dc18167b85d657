"""`emoportrait preprocess` on small videos the tests make: bad inputs, resume, --shard, workers, alignment."""

from __future__ import annotations

import hashlib
import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from emoportrait.cli import main
from emoportrait.data import pipeline
from emoportrait.data.clips import SAMPLES_PER_FRAME
from emoportrait.data.media import write_video
from emoportrait.data.pipeline import run_preprocess
from emoportrait.data.preprocess import PreprocessConfig
from emoportrait.data.shards import iter_clips
from emoportrait.errors import EMOError

H, W = 240, 320
CLICKS = (7, 23, 41)  # frames of the alignment video that flash white and click


def draw_face(t: int, flash: bool = False) -> np.ndarray:
    """A 320x240 frame with a cartoon face (which MediaPipe detects) drifting and turning over time."""
    img = np.full((H, W, 3), (250, 250, 250) if flash else (60, 90, 120), np.uint8)
    cx, cy = 160 + int(25 * np.sin(t / 12)), 120
    turn = int(8 * np.sin(t / 9))
    cv2.ellipse(img, (cx, cy), (45, 62), 0, 0, 360, (190, 160, 140), -1)
    for s in (-1, 1):
        cv2.ellipse(img, (cx + 16 * s + turn, cy - 12), (8, 4), 0, 0, 360, (255, 255, 255), -1)
        cv2.circle(img, (cx + 16 * s + turn, cy - 12), 3, (40, 30, 20), -1)
        cv2.line(img, (cx + 16 * s + turn - 8, cy - 22), (cx + 16 * s + turn + 8, cy - 23), (60, 40, 30), 2)
    cv2.line(img, (cx + turn, cy - 4), (cx + turn, cy + 12), (150, 110, 100), 2)
    cv2.ellipse(img, (cx + turn, cy + 28), (14, 3 + (t % 5)), 0, 0, 360, (150, 60, 60), -1)
    return img


def tone(num_frames: int, sample_rate: int = 16000) -> np.ndarray:
    n = num_frames * sample_rate // 25
    return (0.2 * np.sin(2 * np.pi * 220 * np.arange(n) / sample_rate)).astype(np.float32)


def write_30fps_stereo(path: Path, seconds: float) -> None:
    """H.264 at 30 fps with 44.1 kHz stereo AAC (what phones record), written with PyAV."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        ast = c.add_stream("aac", rate=44100)
        ast.layout = "stereo"
        for i in range(int(seconds * 30)):
            frame = av.VideoFrame.from_ndarray(draw_face(int(i * 25 / 30)), format="rgb24")
            frame.pts = i
            for p in vs.encode(frame):
                c.mux(p)
        n = int(seconds * 44100)
        wave = (0.2 * np.sin(2 * np.pi * 330 * np.arange(n) / 44100)).astype(np.float32)
        for start in range(0, n, 1024):
            chunk = np.stack([wave[start : start + 1024]] * 2)  # (2, k) planar stereo
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = 44100, start, Fraction(1, 44100)
            for p in ast.encode(af):
                c.mux(p)
        for s in (vs, ast):
            for p in s.encode():
                c.mux(p)


def make_corpus(root: Path) -> Path:
    """Good videos + one of each bad kind. Returns the folder of videos."""
    raw = root / "raw"
    (raw / "sub").mkdir(parents=True)
    write_video(raw / "good_a.mp4", [draw_face(t) for t in range(70)], audio=tone(70))
    write_video(raw / "sub" / "good_b.mp4", [draw_face(t + 5) for t in range(50)], audio=tone(50))
    # Alignment: frames CLICKS flash white and their audio interval holds a click.
    audio = np.zeros(60 * SAMPLES_PER_FRAME, np.float32)
    for f in CLICKS:
        audio[f * SAMPLES_PER_FRAME + 100 : f * SAMPLES_PER_FRAME + 540] = 0.8
    write_video(raw / "align.mp4", [draw_face(t, flash=t in CLICKS) for t in range(60)], audio=audio)
    write_30fps_stereo(raw / "phone_30fps.mp4", 2.0)
    write_video(raw / "no_audio.mp4", [draw_face(t) for t in range(40)])
    write_video(raw / "no_face.mp4", [np.full((H, W, 3), 90, np.uint8)] * 40, audio=tone(40))
    write_video(raw / "short.mp4", [draw_face(t) for t in range(12)], audio=tone(12))  # 0.48 s
    (raw / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    return raw


CFG = dict(size=64, videos_per_shard=2, min_clip_seconds=1.0, clip_seconds=2.0, min_face_px=20.0)


def sha256s(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("shard-*.tar"))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    raw = make_corpus(root)
    summary = run_preprocess(raw, root / "ref", PreprocessConfig(**CFG), progress=False)
    return raw, root / "ref", summary


def test_bad_inputs_are_skipped_with_reasons(corpus):
    raw, out, summary = corpus
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"]
    by_video = {}
    for s in manifest["skipped"]:
        by_video.setdefault(s["video"], set()).add(s["reason"])
    assert by_video["no_audio.mp4"] == {"no_audio"}
    assert by_video["no_face.mp4"] == {"no_face"}
    assert by_video["short.mp4"] == {"too_short"}
    assert by_video["corrupt.mp4"] == {"unreadable"}
    kept = {c["video"] for c in manifest["clips"]}
    assert kept == {"good_a.mp4", "sub/good_b.mp4", "align.mp4", "phone_30fps.mp4"}
    # 70 frames with clip_seconds=2 (50 frames) -> two even clips of 35, no tiny tail.
    assert sorted(c["num_frames"] for c in manifest["clips"] if c["video"] == "good_a.mp4") == [35, 35]
    assert summary.skipped == {"no_audio": 1, "no_face": 1, "too_short": 1, "unreadable": 1}
    assert summary.clips == len(manifest["clips"]) and summary.videos == 8
    line = summary.line()
    assert "no_audio 1" in line and "unreadable 1" in line and f"kept {summary.clips} clips" in line


def test_30fps_stereo_44k_is_resampled(corpus):
    _, out, _ = corpus
    clips = [c for p in out.glob("shard-*.tar") for c in iter_clips(p) if c.meta["video"] == "phone_30fps.mp4"]
    assert len(clips) == 1
    clip = clips[0]
    assert clip.meta["source_fps"] == pytest.approx(30.0) and clip.meta["fps"] == 25
    assert clip.num_frames == 50  # 2 s at 25 fps
    ctx = clip.meta["audio_context"]
    audio = clip.arrays["audio"]
    assert audio.shape == ((50 + 2 * ctx) * SAMPLES_PER_FRAME,)  # 16 kHz mono
    spectrum = np.abs(np.fft.rfft(audio[ctx * 640 : (ctx + 25) * 640]))
    assert np.argmax(spectrum) / 1.0 == pytest.approx(330, abs=2)  # 1 s window: bin = Hz
    assert clip.frame(0).shape == (64, 64, 3)


def test_audio_frame_alignment_is_exact(corpus):
    _, out, _ = corpus
    clips = sorted((c for p in out.glob("shard-*.tar") for c in iter_clips(p) if c.meta["video"] == "align.mp4"),
                   key=lambda c: c.meta["start_frame"])
    assert clips
    for clip in clips:
        s, ctx = clip.meta["start_frame"], clip.meta["audio_context"]
        rows = clip.arrays["audio"].reshape(-1, SAMPLES_PER_FRAME)  # row r = video frame s - ctx + r
        for i in range(clip.num_frames):
            # The crop's corner is background: white exactly on the flash frames.
            flash = clip.frame(i)[:3, :3].mean() > 200
            click = np.abs(rows[ctx + i]).max() > 0.5
            assert flash == ((s + i) in CLICKS) == click, (s, i)
        # Rows outside the clip hold the neighbouring frames' audio (or zeros before the recording).
        for r in range(ctx):
            video_frame = s - ctx + r
            assert (np.abs(rows[r]).max() > 0.5) == (video_frame in CLICKS)


def test_boxes_in_crop_coordinates_and_speed(corpus):
    _, out, _ = corpus
    for p in out.glob("shard-*.tar"):
        for clip in iter_clips(p):
            boxes = clip.arrays["boxes"]
            assert boxes.shape == (clip.num_frames, 4)
            assert (boxes >= -1).all() and (boxes <= 65).all()
            assert (boxes[:, 2] - boxes[:, 0] > 10).all()  # the face is a good part of the crop
            assert clip.arrays["speed"].shape == (clip.num_frames,)
            assert np.isfinite(clip.arrays["speed"]).all() and (clip.arrays["speed"] >= 0).all()
            assert clip.arrays["rotation"].shape == (clip.num_frames, 3, 3)
            assert clip.arrays["found"].mean() >= 0.75


def test_rerun_after_interrupt_gives_the_same_shards(corpus, tmp_path, monkeypatch):
    raw, ref, _ = corpus
    calls = {"n": 0}
    real = pipeline.process_video

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "process_video", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_preprocess(raw, tmp_path / "out", PreprocessConfig(**CFG), progress=False)
    assert len(list((tmp_path / "out" / "parts").glob("*.json"))) >= 1  # some shards finished
    assert not list((tmp_path / "out").glob(".*.tar"))  # no partial shard left behind
    monkeypatch.setattr(pipeline, "process_video", real)
    summary = run_preprocess(raw, tmp_path / "out", PreprocessConfig(**CFG), progress=False)
    assert summary.processed_videos == 8 - 3  # finished videos were not redone
    assert sha256s(tmp_path / "out") == sha256s(ref)
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (tmp_path / "out", ref))
    assert a["clips"] == b["clips"] and a["complete"]
    assert not (tmp_path / "out" / ".work").exists()


def test_shard_splits_cover_exactly_one_run(corpus, tmp_path):
    raw, ref, _ = corpus
    out = tmp_path / "out"
    s0 = run_preprocess(raw, out, PreprocessConfig(**CFG), shard="0/2", progress=False)
    assert 0 < s0.shards_done < s0.shards_planned
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    s1 = run_preprocess(raw, out, PreprocessConfig(**CFG), shard="1/2", progress=False)
    assert s1.shards_done == s1.shards_planned
    assert s0.processed_videos + s1.processed_videos == 8
    assert sha256s(out) == sha256s(ref)
    keys = [c["key"] for c in json.loads((out / "manifest.json").read_text())["clips"]]
    assert sorted(keys) == sorted(c["key"] for c in json.loads((ref / "manifest.json").read_text())["clips"])
    assert len(set(keys)) == len(keys)


def test_parallel_workers_match_one_process(corpus, tmp_path):
    raw, ref, _ = corpus
    summary = run_preprocess(raw, tmp_path / "out", PreprocessConfig(**CFG), workers=2, progress=False)
    assert summary.processed_videos == 8
    assert sha256s(tmp_path / "out") == sha256s(ref)


def test_other_settings_in_the_same_folder_are_refused(corpus, tmp_path):
    raw, ref, _ = corpus
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    with pytest.raises(EMOError, match="other videos or settings"):
        run_preprocess(raw, out, PreprocessConfig(**(CFG | {"size": 96})), progress=False)
    # The same settings: nothing left to do.
    assert run_preprocess(raw, out, PreprocessConfig(**CFG), progress=False).processed_videos == 0
    # --overwrite starts over, and the caches made from the old shards go with them.
    for cache in ("audio_features/default", "latents/default"):
        (out / cache).mkdir(parents=True)
        (out / cache / "info.json").write_text("{}")
    run_preprocess(raw, out, PreprocessConfig(**(CFG | {"size": 96})), overwrite=True, progress=False)
    assert not (out / "audio_features").exists() and not (out / "latents").exists()
    assert json.loads((out / "manifest.json").read_text())["config"]["size"] == 96


def test_cli(corpus, tmp_path, capsys):
    raw, ref, _ = corpus
    assert main(["preprocess", "--videos", str(raw / "no_face.mp4"), "--out", str(tmp_path / "o"), "--size", "64",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "kept 0 clips" in out and "no_face 1" in out
    assert main(["preprocess", "--videos", str(raw), "--out", str(tmp_path / "o2"), "--shard", "2/2"]) == 2
    assert "--shard '2/2'" in capsys.readouterr().err
    assert main(["preprocess", "--videos", str(raw), "--out", str(tmp_path / "o3"), "--crop_scale", "0.5"]) == 2
    assert main(["preprocess", "--out", str(ref), "--manifest-only"]) == 0
    assert "shards 4/4" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["preprocess", "--help"])


def test_shards_are_plain_webdataset(corpus):
    import webdataset as wds

    _, out, _ = corpus
    manifest = json.loads((out / "manifest.json").read_text())
    urls = [str(out / s["name"]) for s in manifest["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [c["key"] for c in manifest["clips"]]
    for s in samples:
        meta = json.loads(s["json"])
        assert {"boxes.npy", "speed.npy", "audio.npy", "00000.jpg", f"{meta['num_frames'] - 1:05d}.jpg"} <= set(s)


def test_silent_videos_can_be_kept_for_stage_1(corpus, tmp_path):
    from emoportrait.data.datasets import ImageClipDataset, VideoClipDataset

    raw, _, _ = corpus
    summary = run_preprocess(raw / "no_audio.mp4", tmp_path / "out", PreprocessConfig(**CFG, allow_no_audio=True),
                             progress=False)
    assert summary.clips == 1 and not summary.skipped
    clip = next(iter_clips(tmp_path / "out" / "shard-000000.tar"))
    assert not clip.meta["has_audio"] and not clip.arrays["audio"].any()
    assert len(ImageClipDataset(tmp_path / "out")) == 1
    with pytest.raises(EMOError, match="and audio"):
        VideoClipDataset(tmp_path / "out", num_frames=8, num_motion_frames=2)
