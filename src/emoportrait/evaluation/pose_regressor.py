"""Head-pose regressor: the synthetic world's second measuring device, for the speed check.

MediaPipe's head pose (data.faces) reads the world's ground-truth clips well, but on the blurred
faces a tiny model generates it wobbles by many degrees from frame to frame, and the speed check
then reads that wobble as head motion at every requested speed (docs/experiments.md, "Is the speed
order real?"). This regressor reads yaw, pitch and roll (degrees, the renderer's convention:
R = Rz(roll) Rx(pitch) Ry(yaw), data/synth/geometry.py) from the same 64 px face crop as the mouth
regressor (evaluation/mouth_regressor.py, the same small CNN with three outputs). It is trained on
frames rendered by the world's renderer with random pose (wider than the world's clips turn), mouth,
blink and gaze at 128 and 256 px,
with the mouth regressor's JPEG/blur/colour augmentation for the look of generated video, and
validated on identities never trained on.

Shipped weights: `emoportrait/assets/head_pose_regressor.safetensors` (~0.8 MB). Retrain with

    python -m emoportrait.evaluation.pose_regressor --out src/emoportrait/assets/head_pose_regressor.safetensors

(a few minutes on 2 CPU cores; prints the held-out error per angle).
"""

from __future__ import annotations

import os
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from emoportrait.errors import EMOError
from emoportrait.evaluation.mouth_regressor import (
    HELDOUT_SEED,
    TRAIN_SEED,
    CropRegressor,
    fit,
    predict_crops,
    random_render_state,
    render_samples,
    retrain_cli,
    save_weights,
)

FLIP_SIGN = (-1.0, 1.0, -1.0)  # a face mirrored left-right: yaw and roll change sign, pitch does not


def default_weights_path() -> Path:
    return Path(str(resources.files("emoportrait") / "assets" / "head_pose_regressor.safetensors"))


class HeadPoseRegressor(CropRegressor):
    """(B, 3, 64, 64) RGB face crops in [0, 1] -> (B, 3) yaw, pitch, roll in degrees."""

    def __init__(self, width: int = 24):
        super().__init__(width, outputs=3)


def pose_state(rng: np.random.Generator):
    """A random render state (the mouth regressor's) with the pose drawn over a range wider than the world's
    clips reach (yaw +-32, pitch +-20, roll +-14 degrees), so that no reading of a world clip saturates."""
    from dataclasses import replace

    return replace(random_render_state(rng), yaw=rng.uniform(-40, 40), pitch=rng.uniform(-25, 25), roll=rng.uniform(-18, 18))


def pose_target(info: dict, state) -> tuple[float, float, float]:
    """The regressor's target for one render: the head's yaw, pitch and roll in degrees."""
    return state.yaw, state.pitch, state.roll


def load_head_pose_regressor(path: str | os.PathLike | None = None) -> HeadPoseRegressor:
    """Load the shipped (or a retrained) regressor from safetensors."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise EMOError(f"head-pose regressor weights {path} not found; retrain: "
                       f"python -m emoportrait.evaluation.pose_regressor --out {path}")
    model = HeadPoseRegressor()
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as e:  # noqa: BLE001
        raise EMOError(f"head-pose regressor weights {path} do not match the network ({e.__class__.__name__}); "
                       "retrain them") from None
    return model.eval()


def predict_pose(model: HeadPoseRegressor, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(T, 3) yaw, pitch, roll degrees per frame of (T, H, W, 3) uint8 RGB frames; NaN rows where the
    face box (T, 4) is NaN."""
    return predict_crops(model, frames, boxes)


def pose_rotations(ypr: np.ndarray) -> np.ndarray:
    """(T, 3) yaw, pitch, roll degrees -> (T, 3, 3) rotations (the renderer's convention); NaN rows stay NaN,
    which `data.faces.head_speed` fills from the neighbouring frames."""
    from emoportrait.data.synth.geometry import rotation_matrix

    out = np.full((len(ypr), 3, 3), np.nan)
    for t, (y, p, r) in enumerate(np.asarray(ypr, np.float64)):
        if np.isfinite([y, p, r]).all():
            out[t] = rotation_matrix(y, p, r)
    return out


def train(out: Path, n_train_ids: int = 48, per_id: int = 100, n_val_ids: int = 12, epochs: int = 25,
          seed: int = 0) -> dict:
    """Render, train, validate on held-out identities, save safetensors; returns the numbers."""
    torch.manual_seed(seed)
    t0 = time.time()
    xs, ys, _ = render_samples(TRAIN_SEED, range(n_train_ids), per_id, seed, augment=True, target=pose_target,
                                sample_state=pose_state)
    xv, yv, _ = render_samples(HELDOUT_SEED, range(n_val_ids), 40, seed + 1, augment=False, target=pose_target,
                                sample_state=pose_state)
    t_render = time.time() - t0
    x = torch.from_numpy(xs).permute(0, 3, 1, 2).float() / 255.0
    model = fit(HeadPoseRegressor(), x, torch.from_numpy(ys), epochs, flip_sign=FLIP_SIGN)
    with torch.no_grad():
        pv = model(torch.from_numpy(xv).permute(0, 3, 1, 2).float() / 255.0).numpy()
    stats = {"train_samples": len(x), "heldout_samples": len(xv)}
    for k, name in enumerate(("yaw", "pitch", "roll")):
        stats[f"heldout_r_{name}"] = float(np.corrcoef(pv[:, k], yv[:, k])[0, 1])
        stats[f"heldout_mae_{name}"] = float(np.abs(pv[:, k] - yv[:, k]).mean())
    save_weights(model, out, {k: v for k, v in stats.items() if k.startswith(("heldout_r_", "heldout_mae_"))})
    return {**stats, "render_s": t_render, "total_s": time.time() - t0}


def main(argv: list[str] | None = None) -> int:
    retrain_cli(argv, "Retrain the synthetic-world head-pose regressor.", default_weights_path(), 100, train)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
