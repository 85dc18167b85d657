"""`emoportrait evaluate` end to end on a tiny synthetic world, and its bad-input behaviour."""

import json
import shutil

import numpy as np
import pytest
import torch

from emoportrait.cli import main
from emoportrait.data.media import clip_layout_tags, read_audio, read_clip_layout, read_video, write_video
from emoportrait.evaluation.fid import FID_WEIGHTS_NAME
from emoportrait.evaluation.report import METRIC_KEYS
from emoportrait.evaluation.synthetic import seam_ratio


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_ground_truth_as_generated(world, tmp_path, capsys):
    # Scoring the ground truth against itself: every metric sits at its "perfect" end.
    out = tmp_path / "rep"
    assert main(["evaluate", "--set", str(world), "--videos", str(world / "clips"),
                 "--out", str(out), "--max-frames", "40", "--clip-overlap", "4", "-q"]) == 0  # split: heldout_identity
    m = _metrics(out)
    held = json.loads((world / "manifest.json").read_text())["splits"]["heldout_identity"]
    # Seams read at 12, 20, 28, ... (synthetic.seam_ratio), for every video, as the options say.
    assert m["protocol"]["clip layout (seam): frames, overlap"] == f"12, 4 ({len(held)} videos, given)"
    assert all(k in m for k in METRIC_KEYS)
    for k in ("fid", "fvd", "sync_c", "sync_d"):
        assert m[k] is None and m["unavailable"][k] == "no --weights folder given"
    assert m["lipsync_r"] > 0.85
    assert m["identity_sim"] > 0.4
    assert m["f_sim"] == pytest.approx(m["details"]["f_sim"]["ground_truth"], abs=1e-9)
    assert m["e_fid"] == pytest.approx(0.0, abs=1e-6) and "OFFLINE landmark" in m["details"]["e_fid"]["label"]
    assert m["jitter"] == pytest.approx(1.0) and m["speed_adherence"] == pytest.approx(0.0, abs=1e-5)
    assert 0.5 < m["seam"] < 2.0
    assert sorted(m["per_video"]) == sorted(held)
    for f in ("report.html", "report.md", "plots/per_video.png", "plots/mouth_curves.png"):
        assert (out / f).is_file()
    assert len(list((out / "sheets").glob("*.jpg"))) == len(held)
    printed = capsys.readouterr().out
    assert "lipsync_r" in printed and "report:" in printed


def test_seams_where_each_video_records_its_clips(world, tmp_path):
    # Videos that `emoportrait generate` wrote carry their clip layout; `--videos` reads the seams there
    # unless the options name one. Two held-out clips, re-written: one as from a model with 10-frame clips
    # overlapping by 3, one without a tag (the defaults 12 / 0).
    held = json.loads((world / "manifest.json").read_text())["splits"]["heldout_identity"][:2]
    set_dir, gen = tmp_path / "set", tmp_path / "gen"
    set_dir.mkdir()
    gen.mkdir()
    frames = {}
    for name, tags in zip(held, (clip_layout_tags(10, 3), None), strict=True):
        for ext in (".mp4", ".json"):
            shutil.copy(world / "clips" / f"{name}{ext}", set_dir / f"{name}{ext}")
        clip = world / "clips" / f"{name}.mp4"
        write_video(gen / f"{name}.mp4", read_video(clip, max_frames=40), audio=read_audio(clip), metadata=tags)
        frames[name] = read_video(gen / f"{name}.mp4")
    assert main(["evaluate", "--set", str(set_dir), "--videos", str(gen), "--out", str(tmp_path / "auto"),
                 "--max-frames", "40", "-q"]) == 0
    m = _metrics(tmp_path / "auto")
    assert m["protocol"]["clip layout (seam): frames, overlap"] == "10, 3 (1 video, recorded in the video); 12, 0 (1 video, default)"
    tagged, plain = (m["per_video"][n]["seam"] for n in held)
    assert tagged == pytest.approx(seam_ratio(frames[held[0]], 10, 3))
    assert plain == pytest.approx(seam_ratio(frames[held[1]], 12, 0))
    assert tagged != pytest.approx(seam_ratio(frames[held[0]], 12, 0))  # the layout matters
    assert main(["evaluate", "--set", str(set_dir), "--videos", str(gen), "--out", str(tmp_path / "given"),
                 "--max-frames", "40", "--clip-frames", "12", "-q"]) == 0
    m = _metrics(tmp_path / "given")
    assert m["protocol"]["clip layout (seam): frames, overlap"] == "12, 0 (2 videos, given)"
    assert m["per_video"][held[0]]["seam"] == pytest.approx(seam_ratio(frames[held[0]], 12, 0))


def test_shuffled_identities_and_bad_videos(world, tmp_path, capsys):
    # A set of 4 clips (plain folder: mp4 + sidecar, no manifest); generated folder: two clips
    # replaced by another identity's clip, one without audio, one without a face; plus a
    # mismatched FID weights file.
    by_id = {}
    for p in sorted((world / "clips").glob("*.mp4")):
        by_id.setdefault(p.stem.split("_")[0], []).append(p.stem)
    (a0, a1), (b0, b1) = list(by_id.values())[:2]
    c0 = list(by_id.values())[2][0]
    names = [a0, b0, a1, c0]
    set_dir, gen = tmp_path / "set", tmp_path / "gen"
    set_dir.mkdir()
    gen.mkdir()
    for n in names:
        for ext in (".mp4", ".json"):
            shutil.copy(world / "clips" / f"{n}{ext}", set_dir / f"{n}{ext}")
    shutil.copy(world / "clips" / f"{b1}.mp4", gen / f"{a0}.mp4")  # wrong person, wrong audio
    shutil.copy(world / "clips" / f"{a1}.mp4", gen / f"{b0}.mp4")
    write_video(gen / f"{a1}.mp4", read_video(world / "clips" / f"{a1}.mp4", max_frames=30))  # no audio stream
    grey = np.full((30, 128, 128, 3), 128, np.uint8)
    write_video(gen / f"{c0}.mp4", grey, audio=read_audio(world / "clips" / f"{c0}.mp4")[:30 * 640])
    weights = tmp_path / "w"
    weights.mkdir()
    torch.save({"fc.weight": torch.zeros(3, 3)}, weights / FID_WEIGHTS_NAME)
    out = tmp_path / "rep"
    assert main(["evaluate", "--set", str(set_dir), "--videos", str(gen), "--weights", str(weights),
                 "--out", str(out), "--max-frames", "30", "-q"]) == 0
    m = _metrics(out)
    err = capsys.readouterr().err
    assert "does not match the expected network" in m["unavailable"]["fid"]
    assert "i3d_torchscript.pt not found" in m["unavailable"]["fvd"]
    assert "syncnet_v2.model not found" in m["unavailable"]["sync_c"]
    assert f"{a1}.mp4: has no audio stream" in err
    assert f"{c0}.mp4: no face found in any frame" in err
    assert all(line.startswith("emoportrait evaluate: warning: ") for line in err.strip().splitlines())
    pv = m["per_video"]
    assert max(pv[n]["identity_sim"] for n in (a0, b0)) < min(pv[n]["identity_sim_gt"] for n in (a0, b0)) - 0.2
    assert max(abs(pv[n]["lipsync_r"]) for n in (a0, b0)) < 0.5 and pv[a1]["lipsync_r"] > 0.8
    assert pv[c0].get("f_sim") is None and pv[c0].get("lipsync_r") is None
    assert m["lipsync_r"] is not None and "lipsync_r" not in m["unavailable"]


def test_empty_set_missing_inputs_and_model_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "rep"
    assert main(["evaluate", "--set", str(empty), "--videos", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("emoportrait evaluate: error: no metric could be computed")
    assert any("no clips (.mp4 files) found" in line for line in err)
    m = _metrics(out)
    assert all(m[k] is None and "no clips" in m["unavailable"][k] for k in METRIC_KEYS)
    assert main(["evaluate", "--set", str(empty), "--videos", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "--videos" in capsys.readouterr().err
    assert main(["evaluate", "--set", str(tmp_path / "nope"), "--model", str(tmp_path / "no-model"),
                 "--out", str(tmp_path / "r2")]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "--set" in line and not (tmp_path / "r2").exists()


@pytest.mark.parametrize("args, message", [
    (["--clip-overlap", "-1"], "--clip-overlap must be a whole number of frames >= 0 (0 = the paper's clips), got -1"),
    (["--clip-overlap", "12"], "--clip-overlap 12 leaves no room in a clip of 12 frames with 0 motion frames; use at most 11"),
    (["--clip-overlap", "4", "--clip-frames", "4"],
     "--clip-overlap 4 leaves no room in a clip of 4 frames with 0 motion frames; use at most 3"),
])
def test_bad_clip_overlap(world, tmp_path, capsys, args, message):
    assert main(["evaluate", "--set", str(world), "--videos", str(world / "clips"), "--out", str(tmp_path / "r"),
                 *args]) == 2
    assert capsys.readouterr().err.strip() == f"emoportrait evaluate: error: {message}"
    assert not (tmp_path / "r").exists()


def test_model_that_does_not_exist(world, tmp_path, capsys):
    assert main(["evaluate", "--set", str(world), "--model", str(tmp_path / "no-model"),
                 "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emoportrait evaluate: error: ") and "\n" not in err
    assert list(tmp_path.iterdir()) == []  # no report, no leftover generation folder


@pytest.mark.slow
def test_generate_with_a_tiny_model_then_score(world, tmp_path):
    assert main(["init", "--config", "tiny", "--out", str(tmp_path / "tiny")]) == 0
    out = tmp_path / "rep"
    assert main(["evaluate", "--set", str(world), "--model", str(tmp_path / "tiny"), "--steps", "1",
                 "--max-frames", "26", "--out", str(out), "-q"]) == 0
    m = _metrics(out)
    held = json.loads((world / "manifest.json").read_text())["splits"]["heldout_identity"]
    assert sorted(p.stem for p in (out / "generated").glob("*.mp4")) == sorted(held)
    # The tiny config's clip layout (12 frames, overlap 2), generated with and read at.
    assert m["protocol"]["clip layout (seam): frames, overlap"] == f"12, 2 ({len(held)} videos, given)"
    assert read_clip_layout(out / "generated" / f"{held[0]}.mp4") == (12, 2)
    assert m["jitter"] is not None
    assert all(k in m for k in METRIC_KEYS)
