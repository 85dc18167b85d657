"""The default model's behaviour checks (evaluation/model_checks.py) on a tiny random model."""

import json

import numpy as np
import pytest

from emoportrait.cli import main as cli_main
from emoportrait.evaluation import speed_check
from emoportrait.evaluation.dataset import load_set
from emoportrait.evaluation.model_checks import (
    _sem,
    main,
    quarters,
    shuffled_sources,
    spread,
)
from emoportrait.evaluation.runner import finite_mean
from emoportrait.evaluation.speed_check import HEAD_MOTION_SIGMA, _rising, check_speed


def test_shuffled_audio_is_a_derangement(world):
    clips = load_set(world, ("all",))
    src = shuffled_sources(clips)
    assert sorted(src) == sorted(c.name for c in clips)
    assert all(src[c.name] != c.video for c in clips)  # no clip keeps its own audio
    assert sorted(map(str, src.values())) == sorted(str(c.video) for c in clips)  # every audio used once


def test_sem_is_the_standard_error_of_the_values_that_are_there():
    assert _sem([1.0, 3.0, None]) == pytest.approx(1.0)  # std (ddof 1) sqrt(2) / sqrt(2)
    assert _sem([0.2, 0.4, 0.9]) == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1) / np.sqrt(3))
    assert _sem([0.5]) is None and _sem([None, None]) is None and _sem([]) is None
    assert _sem([1.0, float("nan"), 3.0]) == pytest.approx(1.0)  # a clip whose r is undefined is not measured


def test_means_skip_what_was_not_measured():
    """Every check's mean (and the evaluation runner's) drops None and NaN: one faceless clip must not
    turn a level's reading into NaN (or into None)."""
    assert finite_mean([1.0, None, float("nan"), 3.0]) == 2.0
    assert finite_mean([None, float("nan")]) is None and finite_mean([]) is None


def test_head_motion_reads_the_turn_through_a_wobbling_tracker():
    """Heads turning at 0.1 / 0.9 / 1.6 deg/frame under 5 degrees of per-frame pose noise (generated faces):
    the labels' 1.5-frame filter reads each turn 0.6-1.5 deg/frame too high, the speed check's second
    reading (`head_motion`) within 0.15 of it."""
    from scipy.spatial.transform import Rotation

    from emoportrait.data.faces import head_speed

    axis = np.array([0.3, 1.0, 0.1]) / np.linalg.norm([0.3, 1.0, 0.1])
    wobble = np.random.default_rng(0).normal(0, np.radians(5.0), (75, 3))
    for w in (0.1, 0.9, 1.6):
        turn = Rotation.from_rotvec(np.radians(w * np.arange(75))[:, None] * axis)
        rotations = (Rotation.from_rotvec(wobble) * turn).as_matrix()
        assert head_speed(rotations, 1.5).mean() > w + 0.5
        assert head_speed(rotations, HEAD_MOTION_SIGMA).mean() == pytest.approx(w, abs=0.15)


def test_rising_needs_every_level_and_a_strict_increase():
    levels = (0.1, 0.9, 1.6)
    assert _rising({"0.1": 1.0, "0.9": 1.2, "1.6": 1.3}, levels)
    assert not _rising({"0.1": 1.0, "0.9": 1.2, "1.6": 1.2}, levels)
    assert not _rising({"0.1": 1.55, "0.9": 1.79, "1.6": 1.62}, levels)  # r28 at seed 1
    assert not _rising({"0.1": 1.0, "0.9": None, "1.6": 1.3}, levels)


def test_quarters():
    first, last = quarters(101)
    assert (first.start, first.stop, last.start, last.stop) == (0, 25, 76, 101)


def test_checks_end_to_end(world, tmp_path, capsys):
    assert cli_main(["init", "--config", "tiny", "--out", str(tmp_path / "m")]) == 0
    out = tmp_path / "checks"
    assert main(["--model", str(tmp_path / "m"), "--set", str(world), "--out", str(out), "--split", "all",
                 "--clips", "2", "--speed-clips", "1", "--max-frames", "13", "--long-seconds", "1.2",
                 "--steps", "1", "--guidance-audio", "4", "--device", "cpu"]) == 0
    merged = json.loads((out / "checks.json").read_text())
    # the model's reference scale (the tiny config's, written by init) and the overridden audio scale
    assert merged["lipsync"]["guidance"] == merged["long"]["guidance"] == {"ref": 2.0, "audio": 4.0}
    assert set(merged) == {"lipsync", "speed", "long", "vae"}
    assert merged["lipsync"]["clips"] == 2 and set(merged["lipsync"]) >= {"own", "shuffled"}
    for name in ("own", "shuffled"):  # the standard error over the clips' r (None where fewer than 2 are measured)
        scores = merged["lipsync"][name]
        assert scores["lipsync_r_sem"] == _sem(scores["per_video_lipsync_r"].values())
        # identity per clip, whose mean over the clips with a face is the set's
        assert scores["per_video_identity_sim"].keys() == scores["per_video_lipsync_r"].keys()
        assert scores["identity_sim"] == finite_mean(scores["per_video_identity_sim"].values())
        assert scores["identity_sim_gt"] == finite_mean(scores["per_video_identity_sim_gt"].values())
    assert len(list((out / "videos" / "lipsync_shuffled").glob("*.mp4"))) == 2
    assert list(merged["speed"]["measured"]) == ["0.1", "0.9", "1.6"]
    # flicker per level, beside the same clip's ground truth (its first 13 frames)
    from emoportrait.data.media import read_video
    from emoportrait.evaluation.synthetic import temporal_hf_energy

    speed_clip = spread(load_set(world, ("all",)), 1)[0]
    assert merged["speed"]["flicker_ground_truth"] == pytest.approx(
        temporal_hf_energy(read_video(speed_clip.video, max_frames=13)))
    assert list(merged["speed"]["flicker"]) == ["0.1", "0.9", "1.6"]
    assert all(np.isfinite(v) and v > 0 for v in merged["speed"]["flicker"].values())
    assert list(merged["speed"]["head_motion"]) == ["0.1", "0.9", "1.6"]  # None where no face was found
    assert merged["speed"]["head_motion_monotonic"] is _rising(merged["speed"]["head_motion"], (0.1, 0.9, 1.6))
    assert list(merged["speed"]["pose_motion"]) == ["0.1", "0.9", "1.6"]  # the pose regressor's reading
    assert merged["speed"]["pose_motion_monotonic"] is _rising(merged["speed"]["pose_motion"], (0.1, 0.9, 1.6))
    assert merged["long"]["frames"] == 30 and np.isfinite(merged["long"]["first_quarter"]["jitter_hf"])
    assert (out / "long_sheet.png").is_file()
    assert "model_checks" in merged["long"]["command"]
    # the VAE ceiling: the same 2 clips' ground truth through the random VAE, 13 frames each, scored
    vae = merged["vae"]
    recon = sorted((out / "videos" / "vae_reconstruction").glob("*.mp4"))
    assert vae["clips"] == 2 and len(recon) == 2 and 0 < vae["mse"] < 4
    assert read_video(recon[0]).shape[0] == 13


def test_the_long_check_alone_runs_in_a_new_output_folder(world, tmp_path):
    """The recipe runs `long,vae` beside `lipsync,speed`; `long` must not depend on another check making `videos/`."""
    assert cli_main(["init", "--config", "tiny", "--out", str(tmp_path / "m")]) == 0
    out = tmp_path / "new" / "checks"
    assert main(["--model", str(tmp_path / "m"), "--set", str(world), "--out", str(out), "--split", "all",
                 "--checks", "long", "--long-seconds", "0.6", "--steps", "1", "--device", "cpu"]) == 0
    assert json.loads((out / "checks.json").read_text())["long"]["frames"] == 15
    assert (out / "videos" / "long.mp4").is_file()


def test_seed_sets_the_generation_noise(world, tmp_path):
    """`--seed` changes the generated frames (and is recorded); the same seed gives the same frames."""
    from emoportrait.data.media import read_video

    assert cli_main(["init", "--config", "tiny", "--out", str(tmp_path / "m")]) == 0

    def run(seed: int, name: str, free_init: int = 1) -> np.ndarray:
        out = tmp_path / name
        assert main(["--model", str(tmp_path / "m"), "--set", str(world), "--out", str(out), "--split", "all",
                     "--checks", "long", "--long-seconds", "0.6", "--steps", "1", "--device", "cpu",
                     "--seed", str(seed), "--free-init-iters", str(free_init)]) == 0
        result = json.loads((out / "long.json").read_text())
        assert result["seed"] == seed and result["free_init_iters"] == free_init and result["strength"] == 1.0
        return read_video(out / "videos" / "long.mp4").astype(float)

    a, b, c = run(1, "a"), run(1, "b"), run(0, "c")
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 1.0
    assert np.abs(run(1, "d", free_init=2) - a).mean() > 1.0  # FreeInit's second pass changes the frames
    assert main(["--model", str(tmp_path / "m"), "--set", str(world), "--out", str(tmp_path / "e"),
                 "--free-init-iters", "0"]) == 2
    # `--strength` starts every clip from the noised reference (pipelines/strength.py) and is recorded
    videos = {}
    for strength in ("1", "0.5"):
        out = tmp_path / f"s{strength}"
        assert main(["--model", str(tmp_path / "m"), "--set", str(world), "--out", str(out), "--split", "all",
                     "--checks", "long", "--long-seconds", "0.6", "--steps", "2", "--device", "cpu", "--seed", "1",
                     "--strength", strength]) == 0
        assert json.loads((out / "long.json").read_text())["strength"] == float(strength)
        videos[strength] = read_video(out / "videos" / "long.mp4").astype(float)
    assert np.abs(videos["1"] - videos["0.5"]).mean() > 1.0
    assert main(["--model", str(tmp_path / "m"), "--set", str(world), "--out", str(tmp_path / "f"),
                 "--strength", "0"]) == 2
    assert main(["--model", str(tmp_path / "m"), "--set", str(world), "--out", str(tmp_path / "g"),
                 "--strength", "0.5", "--free-init-iters", "2"]) == 2


def test_speed_at_several_seeds_is_in_order_only_where_every_sweep_is(monkeypatch, tmp_path):
    """r28 read 1.66, 1.71, 1.92 at seed 0 and 1.55, 1.79, 1.62 at seed 1: not in order beyond the noise."""
    sweeps = {0: {"0.1": 1.66, "0.9": 1.71, "1.6": 1.92}, 1: {"0.1": 1.55, "0.9": 1.79, "1.6": 1.62}}
    folders = []

    def fake_sweep(pipe, clips, work, suffix, steps, max_frames, levels, log, seed):
        folders.append(f"speed_0.9{suffix}")
        m = sweeps[seed]
        return {"measured": m, "monotonic": _rising(m, levels), "flicker": {k: 0.05 for k in m},
                "head_motion": {k: v / 3 for k, v in m.items()}, "head_motion_monotonic": _rising(m, levels),
                "pose_motion": {k: v / 2 for k, v in m.items()}, "pose_motion_monotonic": _rising(m, levels)}

    monkeypatch.setattr(speed_check, "_speed_sweep", fake_sweep)
    levels = (0.1, 0.9, 1.6)
    one = check_speed(None, [], tmp_path, 1, 5, levels, print, seed=0)
    assert one["monotonic"] and one["head_motion_monotonic"] and "per_seed" not in one and folders == ["speed_0.9"]
    both = check_speed(None, [], tmp_path, 1, 5, levels, print, seeds=[0, 1, 0])  # each seed once
    assert both["seeds"] == [0, 1] and folders[1:] == ["speed_0.9_seed0", "speed_0.9_seed1"]
    assert both["per_seed"]["0"]["monotonic"] and not both["per_seed"]["1"]["monotonic"]
    assert not both["monotonic"] and not both["head_motion_monotonic"] and not both["pose_motion_monotonic"]
    assert both["measured"] == pytest.approx({"0.1": 1.605, "0.9": 1.75, "1.6": 1.77})  # the means of the sweeps
    sweeps[1] = {"0.1": 1.0, "0.9": 1.5, "1.6": 2.0}
    assert check_speed(None, [], tmp_path, 1, 5, levels, print, seeds=[0, 1])["monotonic"]


def test_speed_rises_pair_each_clip_with_itself_over_seeds(monkeypatch, tmp_path):
    """Level means can flip with one clip's noise; each clip's own rise, pooled over clips and seeds, does not."""
    levels = (0.1, 0.9, 1.6)
    base = {0: {"a": 1.0, "b": 3.0}, 1: {"a": 2.0, "b": 0.5}}  # clip b dominates the level means

    def fake_sweep(pipe, clips, work, suffix, steps, max_frames, levels_, log, seed):
        per_clip = {c: {f"{lv:g}": {"measured": v + 0.1 * i, "head_motion": v - 0.2 * i, "pose_motion": float("nan") if i else None}
                        for i, lv in enumerate(levels_)} for c, v in base[seed].items()}
        means = {f"{lv:g}": float(np.mean([per_clip[c][f"{lv:g}"]["measured"] for c in per_clip])) for lv in levels_}
        return {"measured": means, "monotonic": _rising(means, levels_), "flicker": means, "head_motion": means,
                "head_motion_monotonic": False, "pose_motion": means, "pose_motion_monotonic": False, "per_clip": per_clip}

    monkeypatch.setattr(speed_check, "_speed_sweep", fake_sweep)
    both = check_speed(None, [], tmp_path, 1, 5, levels, print, seeds=[0, 1])
    up = both["rises"]["measured"]["0.1->0.9"]
    assert up["n"] == 4 and up["mean"] == pytest.approx(0.1) and up["se"] == pytest.approx(0.0, abs=1e-12)
    assert both["rises"]["head_motion"]["0.9->1.6"]["mean"] == pytest.approx(-0.2)
    assert both["rises"]["pose_motion"]["0.1->0.9"] == {"mean": None, "se": None, "n": 0}  # no finite reading
    assert set(both["per_seed"]["1"]["per_clip"]) == {"a", "b"} and "per_clip" not in both
    one = check_speed(None, [], tmp_path, 1, 5, levels, print, seed=1)
    assert one["per_clip"]["b"]["1.6"]["measured"] == pytest.approx(0.7) and one["rises"]["measured"]["0.9->1.6"]["n"] == 2
    assert one["seed"] == 1 and check_speed(None, [], tmp_path, 1, 5, levels, print, seed=0, seeds=[1])["seed"] == 1


def test_speed_seeds_generate_one_sweep_per_seed(world, tmp_path):
    assert cli_main(["init", "--config", "tiny", "--out", str(tmp_path / "m")]) == 0
    out = tmp_path / "checks"
    assert main(["--model", str(tmp_path / "m"), "--set", str(world), "--out", str(out), "--split", "all",
                 "--checks", "speed", "--speed-clips", "1", "--max-frames", "5", "--steps", "1", "--device", "cpu",
                 "--speed-seeds", "0,1"]) == 0
    speed = json.loads((out / "speed.json").read_text())
    assert speed["seeds"] == [0, 1] and "seed" not in speed and set(speed["per_seed"]) == {"0", "1"}
    assert speed["monotonic"] is all(r["monotonic"] for r in speed["per_seed"].values())
    from emoportrait.data.media import read_video

    a, b = (read_video(next((out / "videos" / f"speed_1.6_seed{s}").glob("*.mp4"))).astype(float) for s in (0, 1))
    assert np.abs(a - b).mean() > 1.0  # two seeds, two generations
    assert main(["--model", str(tmp_path / "m"), "--set", str(world), "--out", str(out), "--checks", "speed",
                 "--speed-seeds", "0,x"]) == 2


def test_unknown_check_is_one_line(world, tmp_path, capsys):
    assert main(["--model", str(tmp_path), "--set", str(world), "--out", str(tmp_path / "o"), "--checks", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("model_checks: error: unknown check") and "\n" not in err


@pytest.mark.parametrize("bad", ["missing-world"])
def test_missing_set_is_one_line(tmp_path, capsys, bad):
    assert main(["--model", str(tmp_path), "--set", str(tmp_path / bad), "--out", str(tmp_path / "o")]) == 2
    assert "\n" not in capsys.readouterr().err.strip()


def test_spread_picks_evenly():
    assert spread(list(range(10)), 3) == [0, 4, 9] and spread([1, 2], 5) == [1, 2] and spread([1, 2], None) == [1, 2]


def test_several_long_videos_are_averaged_and_kept_one_by_one(world, tmp_path):
    """`--long-videos 2`: two references spread over the set; the first video is the one-video check's."""
    assert cli_main(["init", "--config", "tiny", "--out", str(tmp_path / "m")]) == 0

    def run(videos: int, name: str) -> dict:
        out = tmp_path / name
        assert main(["--model", str(tmp_path / "m"), "--set", str(world), "--out", str(out), "--split", "all",
                     "--checks", "long", "--long-seconds", "1.2", "--steps", "1", "--device", "cpu",
                     "--long-videos", str(videos)]) == 0
        return json.loads((out / "long.json").read_text())

    one, two = run(1, "one"), run(2, "two")
    clips = load_set(world, ("all",))
    assert [v["reference"] for v in two["videos"]] == [clips[0].name, clips[-1].name]
    assert [v["seed"] for v in two["videos"]] == [0, 1]  # video k at seed + k: the videos' noise is not shared
    assert (tmp_path / "two" / "videos" / "long_1.mp4").is_file()
    assert two["videos"][0]["first_quarter"] == one["first_quarter"] == one["videos"][0]["first_quarter"]
    for quarter in ("first_quarter", "last_quarter"):
        jitters = [v[quarter]["jitter_hf"] for v in two["videos"]]
        assert jitters[0] != jitters[1] and two[quarter]["jitter_hf"] == pytest.approx(np.mean(jitters))
    growth = [v["last_quarter"]["jitter_hf"] / v["first_quarter"]["jitter_hf"] - 1 for v in two["videos"]]
    assert two["jitter_growth"] == pytest.approx(np.mean(growth))
    assert two["jitter_growth_sem"] == pytest.approx(abs(growth[0] - growth[1]) / 2)  # std (ddof 1) / sqrt(2)
    assert one["jitter_growth_sem"] is None and one["seam_max"] == one["seam"]
    assert two["seam_max"] == max(v["seam"] for v in two["videos"])
    assert len(two["videos"][1]["clip_jitter"]) == 3  # 30 frames in clips of the tiny model's 12


def test_the_long_control_is_the_same_video_without_motion_frames(world, tmp_path):
    from emoportrait.data.media import read_video

    assert cli_main(["init", "--config", "tiny", "--out", str(tmp_path / "m")]) == 0
    out = tmp_path / "checks"
    assert main(["--model", str(tmp_path / "m"), "--set", str(world), "--out", str(out), "--split", "all",
                 "--checks", "long", "--long-seconds", "1.2", "--steps", "1", "--device", "cpu", "--long-control"]) == 0
    long = json.loads((out / "long.json").read_text())
    one = long["videos"][0]
    assert one["jitter_drift"] == pytest.approx(one["jitter_growth"] - one["no_motion"]["jitter_growth"])
    assert long["jitter_drift"] == pytest.approx(one["jitter_drift"])
    assert long["jitter_drift_sem"] is None  # one video: no spread to read
    carried, alone = (read_video(out / "videos" / f).astype(float) for f in ("long.mp4", "long_no_motion.mp4"))
    assert np.abs(carried[:12] - alone[:12]).mean() < 1.0  # the first clip has no motion frames either way
    assert np.abs(carried[12:] - alone[12:]).mean() > np.abs(carried[:12] - alone[:12]).mean()
