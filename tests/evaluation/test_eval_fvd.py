"""FVD: loader and computation around the public `i3d_torchscript.pt` format, with a stand-in."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emoportrait.errors import EMOError
from emoportrait.evaluation.fvd import (
    FVD_WEIGHTS_NAME,
    fvd_from_features,
    i3d_features,
    load_i3d,
    video_clips,
)


class StandInI3D(torch.nn.Module):
    """Random 3D-conv net with the public TorchScript I3D call signature and output."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 32, kernel_size=(3, 7, 7), stride=(1, 4, 4))
        self.fc = torch.nn.Linear(32, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if rescale:
            x = x / 255.0 * 2 - 1
        if resize:
            b, c, t, h, w = x.shape
            x = F.interpolate(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), size=(224, 224), mode="bilinear")
            x = x.reshape(b, t, c, 224, 224).permute(0, 2, 1, 3, 4)
        logits = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))
        return logits if return_features else torch.softmax(logits, -1)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("weights")
    torch.jit.script(StandInI3D()).save(str(d / FVD_WEIGHTS_NAME))
    return d


def _videos(seed, n, t=32, brightness=1.0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 48, 64, 3)).astype(np.float32)
    drift = np.linspace(0, 1, t)[None, :, None, None, None] * 40
    return np.clip((base + drift) * brightness, 0, 255).astype(np.uint8)


def test_features_shape_and_self_distance(weights_dir):
    detector = load_i3d(weights_dir)
    videos = _videos(0, 3)
    clips = [c for v in videos for c in video_clips(v)]
    assert len(clips) == 6 and clips[0].shape == (16, 48, 64, 3)
    feats = i3d_features(detector, clips, batch_size=4)
    assert feats.shape == (6, 400) and feats.dtype == np.float64
    assert fvd_from_features(feats, feats) == pytest.approx(0.0, abs=1e-6)
    darker = i3d_features(detector, [c for v in _videos(0, 3, brightness=0.3) for c in video_clips(v)])
    assert fvd_from_features(darker, feats) > 1e-3


def test_short_videos_and_bad_files(tmp_path, weights_dir):
    assert video_clips(np.zeros((15, 8, 8, 3), np.uint8)) == []
    assert len(video_clips(np.zeros((64, 8, 8, 3), np.uint8), max_clips=2)) == 2
    with pytest.raises(EMOError, match="at least 16 frames"):
        i3d_features(load_i3d(weights_dir / FVD_WEIGHTS_NAME), [])
    with pytest.raises(EMOError, match="not found"):
        load_i3d(tmp_path)
    (tmp_path / FVD_WEIGHTS_NAME).write_bytes(b"junk")
    with pytest.raises(EMOError, match="not a TorchScript I3D"):
        load_i3d(tmp_path)

    class WrongHead(torch.nn.Module):
        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = False) -> torch.Tensor:
            return x.mean(dim=(2, 3, 4))

    torch.jit.script(WrongHead()).save(str(tmp_path / FVD_WEIGHTS_NAME))
    with pytest.raises(EMOError, match=r"expected \(1, 400\)"):
        load_i3d(tmp_path)
