"""SyncNet lip-sync scores LSE-C / LSE-D (paper 4.2, [2]), the field-standard computation.

Network: SyncNet v2 of Chung & Zisserman as published in `syncnet_python` (`SyncNetModel.S`),
weights file `syncnet_v2.model` (a state dict whose keys are `netcnnaud.*`, `netfcaud.*`,
`netcnnlip.*`, `netfclip.*`). The PyPI package `syncnet-python` defines the same network but its
package import pulls torchvision, scenedetect and pandas (none of which this project has), so the
definition is written here with the identical module names and indices.

Computation (as `SyncNetInstance.evaluate`, used by Wav2Lip and later papers for LSE):
- video: 224x224 face crops, BGR, 0..255, in windows of 5 frames at 25 fps;
- audio: 13 MFCCs at 100 Hz (`python_speech_features.mfcc` on 16 kHz int16-scaled samples),
  windows of 20 MFCC frames (= 5 video frames) starting at 4*t;
- for each audio offset in [-15, +15] frames: mean over t of the distance between the lip and
  the shifted audio embedding; LSE-D = the minimum mean distance, LSE-C = median - minimum.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from scipy.signal import medfilt
from torch import nn

from emoportrait.errors import EMOError
from emoportrait.evaluation.fid import find_weights, load_state_dict_checked

SYNCNET_WEIGHTS_NAME = "syncnet_v2.model"
SYNCNET_VSHIFT = 15  # offsets searched, in frames
SYNCNET_CROP_SCALE = 0.4  # syncnet_python's --crop_scale


class SyncNet(nn.Module):
    """SyncNet v2: audio (B,1,13,20) MFCC and lip (B,3,5,224,224) streams -> (B,1024) embeddings."""

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(1, 1),
            nn.Conv2d(64, 192, 3, 1, 1), nn.BatchNorm2d(192), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, (1, 2)),
            nn.Conv2d(192, 384, 3, padding=1), nn.BatchNorm2d(384), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 512, (5, 4)), nn.BatchNorm2d(512), nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), nn.BatchNorm3d(96), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(256, 512, (1, 6, 6), padding=0), nn.BatchNorm3d(512), nn.ReLU(inplace=True),
        )

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCC windows -> (B, 1024)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))  # conv out (B, 512, 1, 1)

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) BGR 0..255 face crops -> (B, 1024)."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))  # conv out (B, 512, 1, 1, 1)


def load_syncnet(weights: str | os.PathLike, device: str | torch.device = "cpu") -> SyncNet:
    """Load `syncnet_v2.model` (file or folder) into `SyncNet`."""
    path = find_weights(weights, SYNCNET_WEIGHTS_NAME, "SyncNet")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise EMOError(f"SyncNet: {path} is not a readable PyTorch state dict ({e.__class__.__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise EMOError(f"SyncNet: {path} holds a {type(state).__name__}, expected a state dict")
    state = {k.removeprefix("__S__."): v for k, v in state.items()}
    net = SyncNet()
    load_state_dict_checked(net, state, path, "SyncNet")
    return net.eval().to(device)


def syncnet_mfcc(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """(S,) float audio in [-1, 1] -> (13, M) MFCCs at 100 Hz, as syncnet_python computes them."""
    import python_speech_features

    samples = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)  # wavfile.read scale
    return np.asarray(python_speech_features.mfcc(samples, sample_rate), np.float32).T


def crop_faces(frames: np.ndarray, boxes: np.ndarray, crop_scale: float = SYNCNET_CROP_SCALE) -> np.ndarray:
    """syncnet_python's face-track crop: smoothed box, padded with grey 110, resized to 224.

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        boxes: (T, 4) face boxes x0, y0, x1, y1 in pixels.
    Returns:
        (T, 224, 224, 3) uint8 RGB crops.
    """
    import cv2

    boxes = np.asarray(boxes, np.float64)
    k = min(13, len(boxes) - (1 - len(boxes) % 2))  # odd kernel no longer than the track
    smooth = lambda v: medfilt(v, kernel_size=max(k, 1))  # noqa: E731
    s = smooth(np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2)
    cy, cx = smooth((boxes[:, 1] + boxes[:, 3]) / 2), smooth((boxes[:, 0] + boxes[:, 2]) / 2)
    out = np.empty((len(frames), 224, 224, 3), np.uint8)
    for t, frame in enumerate(frames):
        bs = s[t]
        pad = int(bs * (1 + 2 * crop_scale))
        padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=110)
        my, mx = cy[t] + pad, cx[t] + pad
        face = padded[int(my - bs):int(my + bs * (1 + 2 * crop_scale)),
                      int(mx - bs * (1 + crop_scale)):int(mx + bs * (1 + crop_scale))]
        out[t] = cv2.resize(face, (224, 224))
    return out


@dataclass
class SyncScores:
    """LSE-C (confidence, higher is better), LSE-D (distance, lower is better), best offset (frames)."""

    confidence: float
    distance: float
    offset: int


def offset_scores(lip: torch.Tensor, aud: torch.Tensor, vshift: int = SYNCNET_VSHIFT) -> SyncScores:
    """Offset search on embeddings (T, C): mean distance per offset, min and median - min.

    Offset convention (syncnet_python's): offset = vshift - argmin, so offset k > 0 means the
    lips match the audio k frames *earlier* (aud[t - k]), i.e. the audio lags the video.
    """
    win = 2 * vshift + 1
    aud_p = torch.nn.functional.pad(aud, (0, 0, vshift, vshift))  # (T + 2v, C), zero-padded as the reference
    idx = torch.arange(len(lip))[:, None] + torch.arange(win)[None, :]  # (T, win)
    dists = torch.linalg.vector_norm(lip[:, None, :] - aud_p[idx] + 1e-6, dim=-1)  # (T, win); eps as pairwise_distance
    mdist = dists.mean(0)  # (win,)
    minval, minidx = torch.min(mdist, 0)
    return SyncScores(float(torch.median(mdist) - minval), float(minval), int(vshift - minidx))


@torch.no_grad()
def sync_scores(net: SyncNet, crops: np.ndarray, audio: np.ndarray, batch_size: int = 20,
                vshift: int = SYNCNET_VSHIFT) -> SyncScores:
    """LSE-C / LSE-D of one video.

    Args:
        crops: (T, 224, 224, 3) uint8 RGB face crops at 25 fps (see `crop_faces`).
        audio: (S,) float32 mono 16 kHz.
    """
    mfcc = torch.from_numpy(syncnet_mfcc(audio))[None, None]  # (1, 1, 13, M)
    video = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).permute(3, 0, 1, 2).float()[None]  # (1,3,T,224,224) BGR
    n = min(len(crops), int(len(audio) // 640)) - 5
    if n < 1:
        raise EMOError(f"SyncNet: video too short ({len(crops)} frames, {len(audio) / 16000:.2f} s audio); need at least 6 frames")
    device = next(net.parameters()).device
    lip, aud = [], []
    for i in range(0, n, batch_size):
        ts = range(i, min(n, i + batch_size))
        lip.append(net.forward_lip(torch.cat([video[:, :, t:t + 5] for t in ts]).to(device)).cpu())
        aud.append(net.forward_aud(torch.cat([mfcc[:, :, :, 4 * t:4 * t + 20] for t in ts]).to(device)).cpu())
    return offset_scores(torch.cat(lip), torch.cat(aud), vshift)
