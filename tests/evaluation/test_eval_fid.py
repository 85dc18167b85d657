"""FID Inception: loads a stand-in in the real checkpoint layout, documented shapes, FID(x, x) ~ 0."""

import numpy as np
import pytest
import torch

from emoportrait.errors import EMOError
from emoportrait.evaluation.fid import (
    FID_WEIGHTS_NAME,
    FIDInceptionV3,
    fid_from_features,
    inception_features,
    load_fid_inception,
)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """A random-weight file under the real name, in the real layout (old-style: no BN counters)."""
    torch.manual_seed(0)
    net = FIDInceptionV3()
    # Calibrate BatchNorm statistics on a few images so random features stay image-dependent.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        net.train()(torch.rand(4, 3, 80, 80) * torch.linspace(0.1, 1, 4)[:, None, None, None])
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    d = tmp_path_factory.mktemp("weights")
    torch.save(state, d / FID_WEIGHTS_NAME)
    return d


def test_checkpoint_layout_matches_pytorch_fid_file(weights_dir):
    state = torch.load(weights_dir / FID_WEIGHTS_NAME, weights_only=True)
    # The public file's head and a few characteristic shapes (TF graph: 1008 classes).
    assert state["fc.weight"].shape == (1008, 2048)
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert len([k for k in state if k.endswith(".conv.weight")]) == 94


def test_features_shape_and_fid_of_set_with_itself(weights_dir):
    model = load_fid_inception(weights_dir)  # folder form
    assert not model.training
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) for _ in range(4)]
    feats = inception_features(model, frames, batch_size=3)
    assert feats.shape == (4, 2048) and feats.dtype == np.float64
    assert (feats >= 0).all()  # average of ReLU outputs
    # File form of the path; batch composition does not change a frame's features.
    again = inception_features(load_fid_inception(weights_dir / FID_WEIGHTS_NAME), frames[2:0:-1], batch_size=2)
    np.testing.assert_allclose(again[::-1], feats[1:3], rtol=1e-4, atol=1e-5)
    assert fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-6)
    dark = [(f // 4).astype(np.uint8) for f in frames]
    assert fid_from_features(inception_features(model, dark), feats) > 1e-3


def test_missing_and_mismatched_weights(tmp_path, weights_dir):
    with pytest.raises(EMOError, match="not found; put pt_inception"):
        load_fid_inception(tmp_path)
    state = torch.load(weights_dir / FID_WEIGHTS_NAME, weights_only=True)
    state["fc.weight"] = state["fc.weight"][:1000]
    del state["Mixed_5b.branch1x1.conv.weight"]
    torch.save(state, tmp_path / FID_WEIGHTS_NAME)
    with pytest.raises(EMOError, match="does not match") as e:
        load_fid_inception(tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / FID_WEIGHTS_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(EMOError, match="not a readable"):
        load_fid_inception(tmp_path)
