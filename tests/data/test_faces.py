"""Face detection, head pose and head speed: geometry with known answers, both backends, quiet logs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from emoportrait.data import faces, headpose
from emoportrait.data.faces import (
    FaceAnalyzer,
    FaceDetector,
    FaceLandmarker,
    box_iou,
    head_pose,
    head_speed,
    mouth_opening,
    rotation_angle,
    rotation_to_ypr,
)
from emoportrait.errors import EMOError


def drawn_face(size: int = 256, dx: int = 0) -> np.ndarray:
    """A cartoon face that BlazeFace, the face mesh and dlib's HOG detector all find."""
    img = faces._warmup_image()
    if size != 256:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return np.roll(img, dx, axis=1)


def project(points: np.ndarray, rotation: np.ndarray, hw=(480, 640), distance: float = 3000.0) -> np.ndarray:
    """Pinhole projection (focal = width, centred) of model points rotated and pushed back."""
    h, w = hw
    cam = (rotation @ points.T).T + np.array([0.0, 0.0, distance])
    return np.stack([w * cam[:, 0] / cam[:, 2] + w / 2, w * cam[:, 1] / cam[:, 2] + h / 2], axis=1)


def test_detectors_find_the_face_and_nothing_else():
    img = drawn_face()
    for backend in ("mediapipe", "dlib"):
        with FaceDetector(backend) as det:
            box = det.detect(img)
            assert box is not None and box.shape == (4,)
            assert box_iou(box, np.array([72, 51, 184, 205])) > 0.5  # the drawn head ellipse
            assert det.detect(np.full((200, 300, 3), 120, np.uint8)) is None
            shifted = det.detect(drawn_face(dx=30))
            assert shifted[0] - box[0] == pytest.approx(30, abs=4)
    with pytest.raises(EMOError, match="unknown face backend"):
        FaceDetector("opencv")
    with pytest.raises(ValueError):
        FaceDetector().detect(np.zeros((10, 10), np.uint8))


def test_landmarks_both_schemes():
    img = drawn_face()
    with FaceLandmarker("mediapipe") as lm:
        pts = lm.detect(img)
        assert pts.shape == (468, 2) and lm.detect(img, depth=True).shape == (468, 3)
        assert lm.scheme == "mediapipe468"
        nose = pts[faces.LANDMARK_POINTS["mediapipe468"]["nose_tip"]]
        assert abs(nose[0] - 128) < 8 and 120 < nose[1] < 170
        assert 0 <= mouth_opening(pts, lm.scheme) < 0.5
    dl = FaceLandmarker("dlib")
    pts = dl.detect(img)
    assert pts.shape == (68, 2) and dl.scheme == "dlib68"
    with pytest.raises(EMOError, match="mediapipe"):
        dl.detect(img, depth=True)


def test_solvepnp_recovers_known_rotations():
    names = list(headpose._GENERIC_FACE_3D)
    model = np.array([headpose._GENERIC_FACE_3D[n] for n in names])
    for scheme, k in (("mediapipe468", 468), ("dlib68", 68)):
        for ypr in ((0, 0, 0), (20, -10, 5), (-35, 15, -8)):
            true = Rotation.from_euler("YXZ", ypr, degrees=True).as_matrix()
            landmarks = np.zeros((k, 2))
            landmarks[[faces.LANDMARK_POINTS[scheme][n] for n in names]] = project(model, true)
            est = head_pose(landmarks, (480, 640), scheme)
            assert rotation_angle(est, true) < 0.5
            assert np.allclose(rotation_to_ypr(est), ypr, atol=0.5)


def test_mesh_fit_recovers_rotation_differences():
    idx, model = headpose._generic_mesh()
    rng = np.random.default_rng(0)
    r1 = Rotation.from_euler("YXZ", (10, 5, -3), degrees=True).as_matrix()
    r2 = Rotation.from_euler("YXZ", (13, 4, -2), degrees=True).as_matrix()
    angle = rotation_angle(r1, r2)
    out = []
    for r in (r1, r2):
        lm = np.zeros((468, 3))
        lm[idx] = (r @ model.T).T * 80 + np.array([300, 200, 0]) + rng.normal(0, 0.05, (len(idx), 3))
        out.append(head_pose(lm, (480, 640), "mediapipe468"))
        assert rotation_angle(out[-1], r) < 0.3
    assert rotation_angle(*out) == pytest.approx(angle, abs=0.3)


def test_head_speed_filter():
    t = 100
    w = 0.5 + 1.5 * (np.arange(t) > 50)  # degrees/frame, a step from 0.5 to 2
    angles = np.concatenate([[0.0], np.cumsum(w[1:])])
    axis = np.array([0.3, 1.0, 0.1]) / np.linalg.norm([0.3, 1.0, 0.1])
    rots = Rotation.from_rotvec(np.radians(angles)[:, None] * axis).as_matrix()
    clean = head_speed(rots, sigma=0)
    assert np.allclose(clean[1:], w[1:], atol=1e-4) and clean[0] == clean[1]
    # Jitter: smoothing removes most of its (always positive) bias.
    rng = np.random.default_rng(1)
    noisy = np.array([Rotation.from_rotvec(rng.normal(0, np.radians(0.4), 3)).as_matrix() @ r for r in rots])
    raw, smooth = head_speed(noisy, sigma=0), head_speed(noisy, sigma=1.5)
    assert np.abs(smooth[10:45] - 0.5).mean() < np.abs(raw[10:45] - 0.5).mean() / 2
    assert np.corrcoef(smooth, w)[0, 1] > 0.9
    # Missing poses are interpolated; fewer than two poses give zeros.
    holes = rots.copy()
    holes[20:25] = np.nan
    assert np.allclose(head_speed(holes, sigma=0)[26:50], 0.5, atol=1e-3)
    assert (head_speed(np.full((5, 3, 3), np.nan)) == 0).all()
    # q and -q (a full turn of sign) do not create a spike.
    assert head_speed(np.stack([np.eye(3)] * 10)).max() < 1e-6


def test_analyzer_downscales_and_labels_a_sequence():
    frames = [cv2.resize(drawn_face(dx=2 * i), (1024, 1024)) for i in range(6)]
    with FaceAnalyzer(max_side=256) as fa:
        track = fa.analyze_frames(frames, keep_landmarks=True)
    assert track.found.all() and track.boxes.shape == (6, 4)
    # Boxes in the 1024 px frame: 5 x 2 px at 256 = 40 px; width ~ 4 x the 256 px box.
    assert track.boxes[5, 0] - track.boxes[0, 0] == pytest.approx(40, abs=12)
    assert 300 < np.median(track.boxes[:, 2] - track.boxes[:, 0]) < 600
    assert track.landmarks[0].shape == (468, 2) and track.landmarks[0][:, 0].max() > 256
    assert track.ypr.shape == (6, 3) and track.speed.shape == (6,)
    assert track.speed.max() < 3  # a translating (not turning) face


def test_mediapipe_logs_are_silenced(capfd):
    with FaceAnalyzer() as fa:
        fa.analyze(drawn_face())
        fa.analyze(np.zeros((240, 320, 3), np.uint8))
    captured = capfd.readouterr()
    assert "inference_feedback_manager" not in captured.err and "XNNPACK" not in captured.err
