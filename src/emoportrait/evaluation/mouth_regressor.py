"""Mouth-opening regressor: the measuring device of the synthetic-world lip-sync metric.

A small CNN reads a face crop and predicts the inner-lip gap divided by the face-box height
(an image-measurable quantity; per-video correlation is scale-free, so the identity's own
maximum opening does not matter). It is trained on frames rendered by the synthetic world's
renderer (`emoportrait.data.synth.render`) with random head pose, mouth, blink, gaze and
resolution, cropped around the face box that `emoportrait.data.faces.FaceDetector` finds (the
detector evaluation uses), with JPEG/blur/colour augmentation for the look of generated video.
It is validated on identities never trained on (r >= 0.9 required).

Shipped weights: `emoportrait/assets/mouth_regressor.safetensors` (~0.8 MB, 205k parameters). Retrain with

    python -m emoportrait.evaluation.mouth_regressor --out src/emoportrait/assets/mouth_regressor.safetensors

(a few minutes on 2 CPU cores; prints the held-out r). The same command writes
`synth_identity_center.safetensors` beside it: the mean dlib face descriptor of the synthetic
world, which `synthetic.identity_similarity` subtracts (see there).
"""

from __future__ import annotations

import argparse
import os
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emoportrait.errors import EMOError

CROP = 64  # crop side in pixels
TRAIN_SEED = 7001  # identity namespace of the training renders (not a world seed used elsewhere)
HELDOUT_SEED = 7002


def default_weights_path() -> Path:
    return Path(str(resources.files("emoportrait") / "assets" / "mouth_regressor.safetensors"))


def face_crop(rgb: np.ndarray, box: np.ndarray, size: int = CROP) -> np.ndarray:
    """Square crop around a face box (side 1.2x the longer box side, border replicated) -> (size, size, 3)."""
    import cv2

    x0, y0, x1, y1 = box
    side = 1.2 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.1 * (y1 - y0)  # a little low: keep the chin
    s = size / side
    m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float32)
    return cv2.warpAffine(np.ascontiguousarray(rgb), m, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


class CropRegressor(nn.Module):
    """(B, 3, 64, 64) RGB face crops in [0, 1] -> (B, outputs): the small CNN of the synthetic world's
    measuring devices (this mouth regressor, evaluation/pose_regressor.py)."""

    def __init__(self, width: int = 24, outputs: int = 1):
        super().__init__()
        w = width
        layers, cin = [], 3
        for cout in (w, 2 * w, 2 * w, 4 * w):  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU(),
                       nn.Conv2d(cout, cout, 3, stride=2, padding=1), nn.SiLU()]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin * 16, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x - 0.5).flatten(1))  # (B, outputs)


class MouthRegressor(CropRegressor):
    """(B, 3, 64, 64) RGB crops in [0, 1] -> (B,) mouth opening (inner-lip gap / face height)."""

    def __init__(self, width: int = 24):
        super().__init__(width, outputs=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, 0]  # (B,)


def load_mouth_regressor(path: str | os.PathLike | None = None) -> MouthRegressor:
    """Load the shipped (or a retrained) regressor from safetensors."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise EMOError(f"mouth regressor weights {path} not found; retrain: python -m emoportrait.evaluation.mouth_regressor --out {path}")
    model = MouthRegressor()
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as e:  # noqa: BLE001
        raise EMOError(f"mouth regressor weights {path} do not match the network ({e.__class__.__name__}); retrain them") from None
    return model.eval()


def predict_mouth(model: MouthRegressor, frames: np.ndarray, boxes: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Mouth opening per frame.

    Args:
        frames: (T, H, W, 3) uint8 RGB; boxes: (T, 4) face boxes, NaN rows where no face.
    Returns:
        (T,) float64, NaN where there is no face box.
    """
    return predict_crops(model, frames, boxes, batch_size)[:, 0]


@torch.no_grad()
def predict_crops(model: CropRegressor, frames: np.ndarray, boxes: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """A crop regressor's outputs per frame: (T, outputs) float64, NaN rows where there is no face box."""
    out = np.full((len(frames), model.head.out_features), np.nan)
    idx = [t for t in range(len(frames)) if np.isfinite(boxes[t]).all()]
    for i in range(0, len(idx), batch_size):
        ts = idx[i:i + batch_size]
        crops = np.stack([face_crop(frames[t], boxes[t]) for t in ts])
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
        out[ts] = CropRegressor.forward(model, x).double().numpy()
    return out


# ---------------------------------------------------------------- training data


def random_render_state(rng: np.random.Generator):
    """A random FrameState for a training render: pose, mouth (a quarter closed), blink, brows and gaze."""
    from emoportrait.data.synth.render import FrameState

    closed = rng.random() < 0.25
    return FrameState(
        yaw=rng.uniform(-35, 35), pitch=rng.uniform(-15, 15), roll=rng.uniform(-12, 12),
        tx=rng.uniform(-0.15, 0.15), ty=rng.uniform(-0.1, 0.1),
        mouth_open=rng.uniform(0, 0.08) if closed else rng.uniform(0, 1.1),
        mouth_width=rng.uniform(0.8, 1.2), blink=rng.uniform(0, 1) if rng.random() < 0.2 else 0.0,
        brow_raise=rng.uniform(-0.03, 0.05), gaze_x=rng.uniform(-0.3, 0.3), gaze_y=rng.uniform(-0.2, 0.2),
    )


def _augment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    img = crop.astype(np.float32)
    img = img * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)  # contrast / brightness
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.2))
    if rng.random() < 0.6:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 95))])
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return img


def mouth_target(info: dict, state) -> float:
    """The regressor's target for one render: the inner-lip gap divided by the face box height."""
    gt = info["box"]
    return info["mouth_open_px"] / (gt[3] - gt[1])


def render_samples(seed: int, identities: range, per_identity: int, rng_seed: int, augment: bool,
                   target=mouth_target, sample_state=random_render_state):
    """Rendered face crops and targets: ((N, 64, 64, 3) uint8, (N,) or (N, K) float32 `target(info, state)`
    (default the gap / face height), (N,) identity); each render's FrameState is `sample_state(rng)`."""
    from emoportrait.data.faces import FaceDetector
    from emoportrait.data.synth.identity import make_identity
    from emoportrait.data.synth.render import Renderer

    rng = np.random.default_rng(rng_seed)
    crops, targets, ids = [], [], []
    with FaceDetector() as det:
        for i in identities:
            ident = make_identity(seed, i)
            renderers = {s: Renderer(ident, size=s) for s in (128, 256)}
            for _ in range(per_identity):
                size = 128 if rng.random() < 0.7 else 256
                state = sample_state(rng)
                frame, info = renderers[size].render(state)
                box = det.detect(frame)
                if box is None:
                    continue
                jitter = rng.normal(0, 0.02, 4) * (box[3] - box[1]) if augment else 0
                crop = face_crop(frame, box + jitter)
                crops.append(_augment(crop, rng) if augment else crop)
                targets.append(target(info, state))
                ids.append(i)
    return np.stack(crops), np.array(targets, np.float32), np.array(ids)


def per_identity_r(pred: np.ndarray, target: np.ndarray, ids: np.ndarray) -> float:
    """Mean over identities of the Pearson r between prediction and target."""
    rs = [np.corrcoef(pred[ids == i], target[ids == i])[0, 1] for i in np.unique(ids)]
    return float(np.mean(rs))


def fit(model: CropRegressor, x: torch.Tensor, y: torch.Tensor, epochs: int, flip_sign=None) -> CropRegressor:
    """Train a crop regressor on crops x (N, 3, 64, 64) and targets y (N,) or (N, K) (smooth L1 on the targets
    standardised per column; the scale is folded into the head, so the model predicts target units). Half
    the batches are mirrored left-right, the targets multiplied by `flip_sign` (K,) (default all +1: a
    mouth opening is symmetric; a yaw or roll changes sign)."""
    y = y.reshape(len(y), -1)
    sign = torch.ones(y.shape[1]) if flip_sign is None else torch.as_tensor(flip_sign, dtype=torch.float32)
    scale = y.std(dim=0)  # train on a standardised target, store the scale in the weights
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            b = perm[i:i + 64]
            xb, yb = x[b], y[b]
            if torch.rand(()) < 0.5:
                xb, yb = xb.flip(-1), yb * sign
            loss = nn.functional.smooth_l1_loss(CropRegressor.forward(model, xb), yb / scale, beta=0.5)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.head.weight.data *= scale[:, None]  # predictions in target units
    model.head.bias.data *= scale
    return model.eval()


def train(out: Path, n_train_ids: int = 48, per_id: int = 60, n_val_ids: int = 12, epochs: int = 25,
          seed: int = 0) -> dict:
    """Render, train, validate on held-out identities, save safetensors; returns the numbers."""
    torch.manual_seed(seed)
    t0 = time.time()
    xs, ys, _ = render_samples(TRAIN_SEED, range(n_train_ids), per_id, seed, augment=True)
    xv, yv, iv = render_samples(HELDOUT_SEED, range(n_val_ids), 40, seed + 1, augment=False)
    t_render = time.time() - t0
    x = torch.from_numpy(xs).permute(0, 3, 1, 2).float() / 255.0
    model = fit(MouthRegressor(), x, torch.from_numpy(ys), epochs)
    with torch.no_grad():
        pv = model(torch.from_numpy(xv).permute(0, 3, 1, 2).float() / 255.0).numpy()
    r_all = float(np.corrcoef(pv, yv)[0, 1])
    r_id = per_identity_r(pv, yv, iv)
    save_weights(model, out, {"heldout_r": r_all, "heldout_r_per_identity": r_id})
    return {"train_samples": len(x), "heldout_samples": len(xv), "heldout_r": r_all,
            "heldout_r_per_identity": r_id, "render_s": t_render, "total_s": time.time() - t0}


def save_weights(model: CropRegressor, out: Path, heldout: dict) -> None:
    """The regressor's weights as safetensors at `out` (written whole or not at), its held-out numbers as metadata."""
    from safetensors.torch import save_file

    from emoportrait.atomic import atomic_path

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={k: f"{v:.4f}" for k, v in heldout.items()})


def retrain_cli(argv, description: str, default_out: Path, per_identity: int, train_fn) -> dict:
    """The retraining command of a crop regressor: parse argv, train with `train_fn`, print and return its numbers."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--train-identities", type=int, default=48)
    parser.add_argument("--per-identity", type=int, default=per_identity)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    stats = train_fn(args.out, args.train_identities, args.per_identity, epochs=args.epochs)
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()))
    return {"out": args.out, **stats}


def main(argv: list[str] | None = None) -> int:
    out = retrain_cli(argv, "Retrain the synthetic-world mouth-opening regressor.", default_weights_path(), 60, train)["out"]
    from emoportrait.evaluation.synthetic import write_identity_center

    write_identity_center(out.parent / "synth_identity_center.safetensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
