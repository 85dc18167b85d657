"""Head pose from facial landmarks and head rotation speed (paper sections 3.2 and 4.1).

Pure numpy/OpenCV maths on landmarks that `data.faces` finds; `data.faces` re-exports every
public name here, so callers import from there.
"""

from __future__ import annotations

import numpy as np

# Landmark indices of the points used for head pose and mouth measures, per landmark scheme.
# "left"/"right" are in the image (a frontal face's image-left eye is the person's right eye).
LANDMARK_POINTS: dict[str, dict[str, int]] = {
    "mediapipe468": {
        "nose_tip": 1, "chin": 152, "eye_outer_left": 33, "eye_outer_right": 263,
        "mouth_left": 61, "mouth_right": 291, "lip_upper_inner": 13, "lip_lower_inner": 14,
    },
    "dlib68": {
        "nose_tip": 30, "chin": 8, "eye_outer_left": 36, "eye_outer_right": 45,
        "mouth_left": 48, "mouth_right": 54, "lip_upper_inner": 62, "lip_lower_inner": 66,
    },
}

# A generic 3D face (arbitrary units, ~0.2 mm), in camera-like axes: x to the image right,
# y down, z away from the camera, nose tip at the origin; a frontal face then has rotation ~I.
# The six classic points used with cv2.solvePnP for head pose.
_GENERIC_FACE_3D: dict[str, tuple[float, float, float]] = {
    "nose_tip": (0.0, 0.0, 0.0),
    "chin": (0.0, 330.0, 65.0),
    "eye_outer_left": (-225.0, -170.0, 135.0),
    "eye_outer_right": (225.0, -170.0, 135.0),
    "mouth_left": (-150.0, 150.0, 125.0),
    "mouth_right": (150.0, 150.0, 125.0),
}

# A generic frontal 3D face in MediaPipe face-mesh topology, rigid points only (forehead,
# temples, eye corners, nose, cheekbones; no lips, jaw, lids or brows, which move while
# talking), same axes, unit RMS radius. Rows: (image-left index, image-right index, |x|, y, z);
# midline points list their index twice with x = 0. Made once from the mesh's 3D output on the
# drawn frontal face of `data.faces._warmup_image`, mirrored to be exactly left-right symmetric.
_GENERIC_MESH_ROWS: tuple[tuple[int, int, float, float, float], ...] = (
    (109, 338, 0.319, -1.035, -0.122), (67, 297, 0.591, -0.981, -0.019), (103, 332, 0.847, -0.865, 0.154),
    (54, 284, 1.020, -0.696, 0.355), (21, 251, 1.134, -0.486, 0.540), (162, 389, 1.199, -0.267, 0.734),
    (127, 356, 1.225, 0.004, 0.875), (234, 454, 1.215, 0.256, 0.924), (98, 327, 0.282, 0.541, -0.350),
    (129, 358, 0.346, 0.432, -0.276), (49, 279, 0.316, 0.368, -0.434), (33, 263, 0.762, -0.150, 0.047),
    (133, 362, 0.289, -0.133, -0.039), (130, 359, 0.799, -0.140, 0.065), (243, 463, 0.252, -0.130, -0.057),
    (116, 345, 1.100, 0.160, 0.224), (117, 346, 0.909, 0.135, 0.019), (123, 352, 1.095, 0.385, 0.175),
    (50, 280, 0.848, 0.390, -0.115), (101, 330, 0.592, 0.255, -0.185), (36, 266, 0.521, 0.388, -0.247),
    (205, 425, 0.699, 0.523, -0.217), (93, 323, 1.204, 0.507, 0.899), (10, 10, 0.000, -1.047, -0.146),
    (168, 168, 0.000, -0.254, -0.314), (6, 6, 0.000, -0.139, -0.403), (197, 197, 0.000, -0.031, -0.497),
    (195, 195, 0.000, 0.069, -0.602), (5, 5, 0.000, 0.177, -0.709), (4, 4, 0.000, 0.314, -0.762),
    (1, 1, 0.000, 0.426, -0.734), (19, 19, 0.000, 0.488, -0.687), (94, 94, 0.000, 0.518, -0.557),
    (2, 2, 0.000, 0.557, -0.488),
)


def _generic_mesh() -> tuple[list[int], np.ndarray]:
    """(indices, (P, 3) points) of `_GENERIC_MESH_ROWS`."""
    idx, pts = [], []
    for left, right, x, y, z in _GENERIC_MESH_ROWS:
        idx.append(left)
        pts.append((-x, y, z))
        if right != left:
            idx.append(right)
            pts.append((x, y, z))
    return idx, np.array(pts, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Head pose and speed
# ---------------------------------------------------------------------------------------------


def head_pose(landmarks: np.ndarray, image_size: tuple[int, int], scheme: str) -> np.ndarray | None:
    """Head rotation from landmarks (paper 4.1: "6-DoF head pose ... using facial landmarks").

    Two estimators, picked by the landmarks given:

    - (K, 2) landmarks (dlib, or mediapipe without depth): `cv2.solvePnP` of six points (nose
      tip, chin, eye and mouth corners) against a generic 3D face, pinhole camera with focal
      length = image width and the principal point at the centre.
    - (468, 3) mediapipe landmarks with depth: the rotation that best aligns (Kabsch, least
      squares) the mesh's rigid upper-face points to a generic frontal 3D mesh. On the
      synthetic world this follows the true head speed much more closely than six 2D points
      (docs/data.md), because it uses 57 points and the mesh's own depth.

    Absolute angles carry the generic model's bias (pitch most): use rotation *differences*
    between frames (`rotation_angle`, `head_speed`).

    Args:
        landmarks: (K, 2) or (K, 3) pixel landmarks of `scheme`.
        image_size: (H, W) of the image the landmarks are in.
        scheme: landmark scheme name, a key of `LANDMARK_POINTS` (`FaceLandmarker.scheme`).

    Returns:
        (3, 3) rotation matrix (generic model -> camera axes; ~identity for a frontal face),
        or None when the fit fails.
    """
    if landmarks.shape[1] == 3 and scheme == "mediapipe468":
        return _mesh_rotation(landmarks)
    return _pnp_rotation(np.ascontiguousarray(landmarks[:, :2]), image_size, scheme)


def _mesh_rotation(landmarks: np.ndarray) -> np.ndarray | None:
    idx, model = _generic_mesh()
    target = landmarks[idx] - landmarks[idx].mean(axis=0)  # (P, 3)
    source = model - model.mean(axis=0)  # (P, 3)
    u, _, vt = np.linalg.svd(source.T @ target)  # Kabsch: R source ~ target (up to scale)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rotation if np.all(np.isfinite(rotation)) else None


def _pnp_rotation(landmarks: np.ndarray, image_size: tuple[int, int], scheme: str) -> np.ndarray | None:
    import cv2

    names = list(_GENERIC_FACE_3D)
    idx = [LANDMARK_POINTS[scheme][n] for n in names]
    image_points = np.ascontiguousarray(landmarks[idx], dtype=np.float64)  # (6, 2)
    model_points = np.array([_GENERIC_FACE_3D[n] for n in names], dtype=np.float64)  # (6, 3)
    h, w = image_size
    camera = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(model_points, image_points, camera, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok or not np.all(np.isfinite(rvec)):
        return None
    rvec, tvec = cv2.solvePnPRefineLM(model_points, image_points, camera, None, rvec, tvec)
    rotation, _ = cv2.Rodrigues(rvec)
    return rotation


def rotation_angle(r1: np.ndarray, r2: np.ndarray) -> float:
    """Geodesic angle in degrees between two (3, 3) rotations (the angle of r2 @ r1.T)."""
    cos = (np.trace(r2 @ r1.T) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def rotation_to_ypr(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (yaw, pitch, roll) degrees (about y, x, z of the camera-like axes)."""
    from scipy.spatial.transform import Rotation

    # Intrinsic Y-X-Z: yaw turns the head left/right, pitch nods, roll tilts.
    return Rotation.from_matrix(rotation).as_euler("YXZ", degrees=True)


def head_speed(rotations: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Head rotation speed w_f in degrees per frame (paper 3.2 / 4.1), smoothed.

    Filter (ours, documented in docs/data.md): the per-frame rotations are turned into
    sign-aligned unit quaternions; frames without a pose (NaN) are filled by linear
    interpolation (edge frames copy the nearest pose); each quaternion component is smoothed
    with a Gaussian of `sigma` frames and renormalised; w_f is the geodesic angle between the
    smoothed rotations of frames f-1 and f, and w_0 = w_1. Smoothing the rotations *before*
    differencing removes most of the per-frame landmark jitter, which would otherwise add a
    positive bias to every angle (an angle is never negative).

    Args:
        rotations: (T, 3, 3) rotations; all-NaN matrices mark frames without a pose.
        sigma: Gaussian standard deviation in frames (0 disables smoothing).

    Returns:
        (T,) float32 speed in degrees/frame (zeros when fewer than 2 frames have a pose).
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.spatial.transform import Rotation

    rotations = np.asarray(rotations, dtype=np.float64)
    t = len(rotations)
    valid = np.isfinite(rotations).all(axis=(1, 2))
    if t < 2 or valid.sum() < 2:
        return np.zeros(t, np.float32)
    quats = np.full((t, 4), np.nan)
    quats[valid] = Rotation.from_matrix(rotations[valid]).as_quat()
    # q and -q are the same rotation: keep successive quaternions on the same hemisphere.
    prev = None
    for i in np.flatnonzero(valid):
        if prev is not None and np.dot(quats[i], prev) < 0:
            quats[i] = -quats[i]
        prev = quats[i]
    frames = np.arange(t)
    for c in range(4):
        quats[:, c] = np.interp(frames, frames[valid], quats[valid, c])
    if sigma > 0:
        quats = gaussian_filter1d(quats, sigma, axis=0, mode="nearest")
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    dots = np.abs(np.sum(quats[1:] * quats[:-1], axis=1))
    angles = np.degrees(2.0 * np.arccos(np.clip(dots, -1.0, 1.0)))  # (T-1,)
    return np.concatenate([angles[:1], angles]).astype(np.float32)
