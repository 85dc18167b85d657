"""FVD (paper 4.2, [29]): Frechet distance of I3D (Kinetics-400) features of generated vs real clips.

Weights format: `i3d_torchscript.pt`, the TorchScript export of the TF-Hub I3D that StyleGAN-V
published and that the public PyTorch FVD implementations load (StyleGAN-V, DIGAN,
common_metrics_on_video_quality, fvd-comparison). The file carries its own architecture, so no
network definition is needed here; it is called exactly as StyleGAN-V calls it:

    feats = detector(videos, rescale=True, resize=True, return_features=True)   # (B, 400)

with `videos` (B, 3, T, H, W) float RGB in [0, 255]: the detector maps to [-1, 1] and resizes
to 224x224 itself; the features are the 400-d pre-softmax logits.

Clip protocol (ours, documented in docs/evaluation.md): non-overlapping `clip_length`-frame
(16) clips at 25 fps from each video, at most `max_clips_per_video` per video; shorter videos
contribute no clip.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch

from emoportrait.errors import EMOError
from emoportrait.evaluation.fid import find_weights
from emoportrait.evaluation.frechet import frechet_distance_features

FVD_WEIGHTS_NAME = "i3d_torchscript.pt"
FVD_FEATURE_DIM = 400
FVD_CLIP_LENGTH = 16


def load_i3d(weights: str | os.PathLike, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load `i3d_torchscript.pt` (file or folder) and check it gives (B, 400) features."""
    path = find_weights(weights, FVD_WEIGHTS_NAME, "FVD")
    try:
        detector = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:  # noqa: BLE001 - any load failure means a bad file
        raise EMOError(f"FVD: {path} is not a TorchScript I3D ({e.__class__.__name__}); use the public i3d_torchscript.pt") from None
    probe = torch.zeros(1, 3, FVD_CLIP_LENGTH, 64, 64)
    try:
        with torch.no_grad():
            out = detector(probe, rescale=True, resize=True, return_features=True)
    except Exception as e:  # noqa: BLE001
        raise EMOError(f"FVD: {path} does not accept the I3D call signature ({e.__class__.__name__}); use the public i3d_torchscript.pt") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, FVD_FEATURE_DIM):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EMOError(f"FVD: {path} returns {shape}, expected (1, {FVD_FEATURE_DIM}) Kinetics-400 features")
    return detector.to(device)


def video_clips(frames: np.ndarray, clip_length: int = FVD_CLIP_LENGTH, max_clips: int | None = None) -> list[np.ndarray]:
    """Non-overlapping clips of a (T, H, W, 3) video, each (clip_length, H, W, 3)."""
    n = len(frames) // clip_length
    if max_clips is not None:
        n = min(n, max_clips)
    return [frames[i * clip_length:(i + 1) * clip_length] for i in range(n)]


@torch.no_grad()
def i3d_features(detector, clips: Iterable[np.ndarray], batch_size: int = 4) -> np.ndarray:
    """I3D features of clips.

    Args:
        clips: iterable of (T, H, W, 3) uint8 RGB clips (one size per batch).
    Returns:
        (N, 400) float64 features.
    """
    out, batch = [], []

    def flush():
        x = torch.from_numpy(np.stack(batch)).permute(0, 4, 1, 2, 3).float()  # (B, 3, T, H, W) in [0, 255]
        out.append(detector(x, rescale=True, resize=True, return_features=True).double().cpu().numpy())
        batch.clear()

    for clip in clips:
        batch.append(np.asarray(clip, np.uint8))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not out:
        raise EMOError(f"FVD: no video is at least {FVD_CLIP_LENGTH} frames long")
    return np.concatenate(out)


def fvd_from_features(generated: np.ndarray, real: np.ndarray) -> float:
    """FVD between (N, 400) generated and (M, 400) real clip features."""
    return frechet_distance_features(generated, real)
