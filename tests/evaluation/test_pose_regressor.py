"""The head-pose regressor (evaluation/pose_regressor.py) reads pose and head speed on the synthetic world."""

import numpy as np
import pytest
import torch

from emoportrait.data.faces import FaceAnalyzer, head_speed
from emoportrait.data.media import read_video
from emoportrait.data.synth.geometry import rotation_matrix
from emoportrait.errors import EMOError
from emoportrait.evaluation.dataset import load_set
from emoportrait.evaluation.mouth_regressor import HELDOUT_SEED, render_samples
from emoportrait.evaluation.pose_regressor import (
    load_head_pose_regressor,
    pose_rotations,
    pose_state,
    pose_target,
    predict_pose,
)
from emoportrait.evaluation.speed_check import POSE_MOTION_SIGMA


@pytest.fixture(scope="module")
def heldout():
    """Renders of identities never trained on (128 and 256 px, no augmentation) and their (yaw, pitch, roll)."""
    x, y, _ = render_samples(HELDOUT_SEED, range(100, 104), 30, rng_seed=5, augment=False, target=pose_target,
                             sample_state=pose_state)
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0, y


def test_regressor_reads_the_pose_of_heldout_identities(heldout):
    x, y = heldout
    with torch.no_grad():
        pred = load_head_pose_regressor()(x).numpy()
    assert pred.shape == (len(y), 3)
    for k, (r_min, mae_max) in enumerate(((0.97, 4.0), (0.93, 4.0), (0.95, 3.0))):  # yaw, pitch, roll
        assert np.corrcoef(pred[:, k], y[:, k])[0, 1] >= r_min
        assert np.abs(pred[:, k] - y[:, k]).mean() <= mae_max


def test_a_mirrored_face_reads_mirrored_angles(heldout):
    """Mirrored left-right, yaw and roll change sign and pitch does not (the training flip's targets)."""
    x, y = heldout
    model = load_head_pose_regressor()
    with torch.no_grad():
        a, b = model(x).numpy(), model(x.flip(-1)).numpy()
    assert np.abs(a[:, 0] + b[:, 0]).mean() < 4.0 and np.abs(a[:, 2] + b[:, 2]).mean() < 3.0
    assert np.abs(a[:, 1] - b[:, 1]).mean() < 3.0
    assert np.abs(a[:, 0] - b[:, 0]).mean() > 10.0  # and yaw does change: the faces turn up to 40 degrees


def test_head_speed_of_world_clips_follows_the_ground_truth(world):
    """On the world's own clips (MediaPipe's face boxes, the regressor's angles) the smoothed head speed reads the
    ground truth's within 0.25 deg/frame per clip, and orders the clips as the truth does."""
    model = load_head_pose_regressor()
    read, truth = [], []
    with FaceAnalyzer() as fa:
        for clip in load_set(world, ("all",)):
            frames = read_video(clip.video)
            track = fa.analyze_frames(frames)
            found = track.found
            assert found.mean() > 0.9
            ypr = predict_pose(model, frames, track.boxes)
            assert np.isnan(ypr[~found]).all() and np.isfinite(ypr[found]).all()
            read.append(head_speed(pose_rotations(ypr), POSE_MOTION_SIGMA)[found].mean())
            truth.append(head_speed(pose_rotations(clip.truth.ypr[:len(frames)]), POSE_MOTION_SIGMA)[found].mean())
    read, truth = np.array(read), np.array(truth)
    assert np.abs(read - truth).max() <= 0.25, (read, truth)
    assert truth.max() - truth.min() > 0.5  # the world has still and moving heads, so the ordering means something
    assert np.corrcoef(read, truth)[0, 1] >= 0.9


def test_pose_rotations_are_the_renderers_and_keep_missing_frames_missing():
    ypr = np.array([[10.0, -5.0, 3.0], [np.nan, np.nan, np.nan], [-20.0, 8.0, -4.0]])
    rot = pose_rotations(ypr)
    assert np.allclose(rot[0], rotation_matrix(10, -5, 3)) and np.allclose(rot[2], rotation_matrix(-20, 8, -4))
    assert np.isnan(rot[1]).all()


def test_missing_weights_are_one_line(tmp_path):
    with pytest.raises(EMOError, match="retrain: python -m emoportrait.evaluation.pose_regressor"):
        load_head_pose_regressor(tmp_path / "none.safetensors")


def test_retraining_writes_loadable_weights_with_their_heldout_numbers(tmp_path, capsys):
    from safetensors import safe_open

    from emoportrait.evaluation.pose_regressor import main

    out = tmp_path / "sub" / "pose.safetensors"
    assert main(["--out", str(out), "--epochs", "1", "--train-identities", "1", "--per-identity", "4"]) == 0
    assert "heldout_mae_yaw=" in capsys.readouterr().out
    load_head_pose_regressor(out)
    with safe_open(str(out), "pt") as f:
        assert set(f.metadata()) == {f"heldout_{m}_{a}" for m in ("r", "mae") for a in ("yaw", "pitch", "roll")}
    assert [p.name for p in out.parent.iterdir()] == ["pose.safetensors"]  # no temporary file left beside it
