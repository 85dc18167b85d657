"""F-SIM descriptor plumbing and the pose-free landmark expression descriptor of E-FID."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from emoportrait.errors import EMOError
from emoportrait.evaluation.efid import (
    EXPRESSION_NET_NAME,
    LIPS,
    landmark_expression,
    load_expression_net,
    model_expression,
)
from emoportrait.evaluation.fsim import FaceEmbedder, cosine, face_similarity


def _mesh(seed=0):
    return np.random.default_rng(seed).standard_normal((468, 3)) * [60, 80, 40] + [200, 220, 0]


def test_rigid_pose_and_scale_are_removed():
    ref = _mesh()
    rot = Rotation.from_euler("yxz", [25, -10, 8], degrees=True).as_matrix()
    moved = 1.7 * (ref - ref.mean(0)) @ rot.T + [30, -12, 5]
    np.testing.assert_allclose(landmark_expression(moved, ref), 0, atol=1e-9)


def test_mouth_opening_shows_in_lip_points_only():
    ref = _mesh()
    talking = ref.copy()
    lower = [13, 14, 17, 84, 87, 178, 181, 314, 317, 402, 405][1::2]
    talking[lower, 1] += 15  # lower lip moves down
    d = landmark_expression(talking, ref).reshape(-1, 3)
    lip = np.linalg.norm(d[: len(LIPS)], axis=1)
    rest = np.linalg.norm(d[len(LIPS):], axis=1)
    assert lip.max() > 10 * rest.max()


def test_expression_net_hook(tmp_path):
    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))[:, :2] * torch.tensor([1.0, 2.0])

    torch.jit.script(Net()).save(str(tmp_path / EXPRESSION_NET_NAME))
    net = load_expression_net(tmp_path)
    crops = np.full((2, 224, 224, 3), 255, np.uint8)
    np.testing.assert_allclose(model_expression(net, crops), [[1, 2], [1, 2]], atol=1e-6)
    with pytest.raises(EMOError, match="not found"):
        load_expression_net(tmp_path / "nothing")


def test_dlib_descriptor_same_image_vs_other_image():
    emb = FaceEmbedder()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:160, 0:160]
    a = np.stack([(xx + yy) % 256, (xx * 2) % 256, (yy * 3) % 256], -1).astype(np.uint8)
    b = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    box = np.array([30, 30, 130, 130.0])
    da, db = emb.embed(a, box), emb.embed(b, box)
    assert da.shape == (128,)
    assert cosine(da, emb.embed(a.copy(), box)) == pytest.approx(1.0, abs=1e-6)
    assert cosine(da, db) < 0.999
    frames = np.stack([a, a, b])
    boxes = np.array([box, [np.nan] * 4, box])
    s = face_similarity(emb, frames, boxes, a, box, every=1)
    assert s == pytest.approx((1 + cosine(db, da)) / 2, abs=1e-6)
    assert face_similarity(emb, frames[1:2], boxes[1:2], a, box) is None
    assert emb.detect(b) is None  # noise has no face
