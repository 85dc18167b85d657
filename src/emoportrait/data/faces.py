"""Face boxes, landmarks, head pose and head rotation speed (paper section 4.1).

The paper labels its training videos with MediaPipe face detection (face boxes -> the face
locator's mask) and with 6-DoF head pose from facial landmarks, whose rotation between
successive frames is the head speed w_f fed to the speed layers (section 3.2). This module is
that labelling, for one image or a whole video, with two interchangeable backends:

- ``"mediapipe"`` (default, as in the paper): BlazeFace short/full-range detection and the
  468-point face mesh, both bundled with ``mediapipe==0.10.21`` (offline).
- ``"dlib"``: HOG face detector and the 68-point shape predictor of ``face_recognition_models``.

Typical use (frames are (H, W, 3) uint8 RGB)::

    from emoportrait.data.faces import FaceAnalyzer
    with FaceAnalyzer("mediapipe") as fa:
        track = fa.analyze_frames(frames)  # FaceTrack: boxes (T, 4), rotations (T, 3, 3), speed (T,)

or piecewise: ``FaceDetector().detect(rgb) -> (4,) box | None``, ``FaceLandmarker().detect(rgb)
-> (K, 2) | None``, ``head_pose(landmarks, (H, W), scheme) -> (3, 3) | None``,
``head_speed(rotations) -> (T,) degrees/frame``.

mediapipe and dlib are imported lazily, inside the classes, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoportrait.errors import EMOError

BACKENDS = ("mediapipe", "dlib")

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
# drawn frontal face of `_warmup_image`, mirrored to be exactly left-right symmetric.
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
# Backend loading (lazy) and mediapipe's native log noise
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence C++ log lines (TFLite/absl) written straight to file descriptor 2.

    mediapipe prints "Created TensorFlow Lite XNNPACK delegate" and absl warnings (through C
    stdio buffers, at unpredictable calls); GLOG_minloglevel does not reach them. Used around
    every mediapipe call (a few microseconds); output of other threads of this process to
    fd 2 during such a call is lost too.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        _flush_c_stdio()  # absl buffers these lines in C stdio: flush them into /dev/null
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_LIBC: list = []


def _flush_c_stdio() -> None:
    try:
        if not _LIBC:
            import ctypes

            _LIBC.append(ctypes.CDLL(None))
        _LIBC[0].fflush(None)
    except (OSError, AttributeError):
        pass


def _warmup_image() -> np.ndarray:
    """A drawn cartoon face (which BlazeFace and the face mesh detect), 256 x 256 RGB.

    mediapipe starts each sub-graph's threads (which log) on its first use, and the landmark
    sub-graph runs only on a face: one quiet call on this image at construction gets all of
    that out of the way.
    """
    import cv2

    img = np.full((256, 256, 3), (90, 120, 150), np.uint8)
    cv2.ellipse(img, (128, 128), (56, 77), 0, 0, 360, (190, 160, 140), -1)
    for s in (-1, 1):
        cv2.ellipse(img, (128 + 20 * s, 113), (10, 5), 0, 0, 360, (255, 255, 255), -1)
        cv2.circle(img, (128 + 20 * s, 113), 4, (40, 30, 20), -1)
        cv2.line(img, (118 + 20 * s, 101), (138 + 20 * s, 100), (60, 40, 30), 3)
    cv2.line(img, (128, 123), (128, 146), (150, 110, 100), 2)
    cv2.ellipse(img, (128, 164), (18, 5), 0, 0, 360, (150, 60, 60), -1)
    return img


def _import_mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _quiet_native_stderr():
            import mediapipe as mp

            _ = mp.solutions.face_detection, mp.solutions.face_mesh
    except (ImportError, AttributeError):
        raise EMOError(
            "mediapipe face backend unavailable: install mediapipe==0.10.21 (pip install --no-deps) "
            "or use backend='dlib'"
        ) from None
    return mp


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise EMOError("dlib face backend unavailable: pip install dlib-bin face_recognition_models") from None
    return dlib


def _dlib_model(name: str) -> str:
    # Located through importlib instead of face_recognition_models' pkg_resources import.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise EMOError("dlib landmarks need face_recognition_models: pip install face_recognition_models")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise EMOError(f"dlib model file {path} is missing; reinstall face_recognition_models")
    return str(path)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise EMOError(f"unknown face backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _check_image(rgb: np.ndarray) -> np.ndarray:
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {getattr(rgb, 'shape', None)}")
    return np.ascontiguousarray(rgb)


# ---------------------------------------------------------------------------------------------
# Detection and landmarks
# ---------------------------------------------------------------------------------------------


class FaceDetector:
    """Largest face box of an RGB image (paper 4.1: MediaPipe face detection).

    Args:
        backend: "mediapipe" (BlazeFace; default) or "dlib" (HOG).
        min_confidence: detections below this score are ignored (mediapipe only).
        model: mediapipe model, "short" (faces within ~2 m, talking heads), "full" (small
            faces), or "auto" (short, then full when short finds nothing).
    """

    def __init__(self, backend: str = "mediapipe", min_confidence: float = 0.5, model: str = "auto"):
        _check_backend(backend)
        if model not in ("short", "full", "auto"):
            raise EMOError(f"unknown mediapipe face model {model!r}; choose short, full or auto")
        self.backend, self.min_confidence, self.model = backend, float(min_confidence), model
        self._impl: list = []
        if backend == "mediapipe":
            mp = _import_mediapipe()
            selections = {"short": [0], "full": [1], "auto": [0, 1]}[model]
            with _quiet_native_stderr():
                self._impl = [
                    mp.solutions.face_detection.FaceDetection(model_selection=s, min_detection_confidence=self.min_confidence)
                    for s in selections
                ]
                for impl in self._impl:
                    impl.process(_warmup_image())
        else:
            self._impl = [_import_dlib().get_frontal_face_detector()]

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """Box of the largest face, or None.

        Args:
            rgb: (H, W, 3) uint8 RGB image.

        Returns:
            (4,) float64 box (x0, y0, x1, y1) in pixels, clipped to the image, or None.
        """
        rgb = _check_image(rgb)
        h, w = rgb.shape[:2]
        boxes: list[np.ndarray] = []
        for impl in self._impl:
            if self.backend == "mediapipe":
                with _quiet_native_stderr():
                    result = impl.process(rgb)
                for det in result.detections or []:
                    rb = det.location_data.relative_bounding_box
                    boxes.append(np.array([rb.xmin * w, rb.ymin * h, (rb.xmin + rb.width) * w, (rb.ymin + rb.height) * h]))
            else:
                # Upsample small images once: HOG finds faces down to ~80 px.
                for r in impl(rgb, 1 if max(h, w) < 400 else 0):
                    boxes.append(np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64))
            if boxes:
                break
        boxes = [np.clip(b, 0, [w, h, w, h]) for b in boxes]
        boxes = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
        if not boxes:
            return None
        return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1])).astype(np.float64)

    def close(self) -> None:
        with _quiet_native_stderr():
            for impl in self._impl:
                if hasattr(impl, "close"):
                    impl.close()
        self._impl = []

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FaceLandmarker:
    """Facial landmarks of the most prominent face: MediaPipe face mesh (468) or dlib (68).

    Args:
        backend: "mediapipe" or "dlib".
        video: mediapipe only: track the face from frame to frame (about 40 % faster, as
            accurate on the synthetic world) instead of finding it anew in every image. Then
            feed the frames of one video in order and call `reset()` before the next video, so
            that results depend only on that video (reproducible shards).
    """

    def __init__(self, backend: str = "mediapipe", video: bool = False):
        _check_backend(backend)
        self.backend, self.video = backend, bool(video)
        self.scheme = "mediapipe468" if backend == "mediapipe" else "dlib68"
        self._impl = None
        if backend == "mediapipe":
            self.reset()
        else:
            dlib = _import_dlib()
            self._dlib = dlib
            self._impl = dlib.shape_predictor(_dlib_model("shape_predictor_68_face_landmarks.dat"))
            self._detector = None

    def detect(self, rgb: np.ndarray, box: np.ndarray | None = None, depth: bool = False) -> np.ndarray | None:
        """Landmarks in pixels, or None when no face is found.

        Args:
            rgb: (H, W, 3) uint8 RGB image.
            box: (4,) face box (x0, y0, x1, y1); used by dlib (found with its detector when
                None), ignored by mediapipe (its mesh finds the face itself).
            depth: also return the mesh's relative depth z (mediapipe only; in pixels like x,
                smaller = closer to the camera).

        Returns:
            (K, 2) float64 (x, y) pixel coordinates, or (K, 3) (x, y, z) with `depth`;
            K = 468 (mediapipe) or 68 (dlib).
        """
        rgb = _check_image(rgb)
        h, w = rgb.shape[:2]
        if self.backend == "mediapipe":
            with _quiet_native_stderr():
                result = self._impl.process(rgb)
            if not result.multi_face_landmarks:
                return None
            lm = result.multi_face_landmarks[0].landmark
            if depth:
                return np.array([(p.x * w, p.y * h, p.z * w) for p in lm], dtype=np.float64)
            return np.array([(p.x * w, p.y * h) for p in lm], dtype=np.float64)
        if depth:
            raise EMOError("landmark depth needs the mediapipe backend (dlib's 68 points are 2D)")
        if box is None:
            if self._detector is None:
                self._detector = FaceDetector("dlib")
            box = self._detector.detect(rgb)
            if box is None:
                return None
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._impl(rgb, rect)
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], dtype=np.float64)

    def reset(self) -> None:
        """Forget the tracked face (mediapipe video mode): the next frame starts a new video."""
        if self.backend != "mediapipe":
            return
        mp = _import_mediapipe()
        with _quiet_native_stderr():
            if self._impl is not None:
                self._impl.close()
            self._impl = mp.solutions.face_mesh.FaceMesh(static_image_mode=not self.video, max_num_faces=1)
            self._impl.process(_warmup_image())  # starts every sub-graph (they log once)
            if self.video:
                self._impl.process(np.zeros((64, 64, 3), np.uint8))  # no face: tracking state cleared

    def close(self) -> None:
        if self.backend == "mediapipe" and self._impl is not None:
            with _quiet_native_stderr():
                self._impl.close()
        self._impl = None

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


# ---------------------------------------------------------------------------------------------
# Small measures others use (evaluation, synthetic-world checks)
# ---------------------------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (4,) boxes (x0, y0, x1, y1)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mouth_opening(landmarks: np.ndarray, scheme: str) -> float:
    """Inner-lip gap divided by the mouth width (0 = closed); scale- and resolution-free."""
    p = LANDMARK_POINTS[scheme]
    gap = np.linalg.norm(landmarks[p["lip_lower_inner"]] - landmarks[p["lip_upper_inner"]])
    width = np.linalg.norm(landmarks[p["mouth_right"]] - landmarks[p["mouth_left"]])
    return float(gap / width) if width > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Whole videos
# ---------------------------------------------------------------------------------------------


@dataclass
class FaceTrack:
    """Per-frame face labels of a video; frames without a face hold NaN."""

    boxes: np.ndarray  # (T, 4) float64 (x0, y0, x1, y1) pixels, NaN where no face was found
    rotations: np.ndarray  # (T, 3, 3) float64 head rotation, NaN where no pose
    landmarks: list[np.ndarray | None]  # T entries of (K, 2) pixels or None (kept only if asked)
    speed: np.ndarray  # (T,) float32 head speed w_f in degrees/frame (see `head_speed`)

    @property
    def found(self) -> np.ndarray:
        """(T,) bool: a face box was detected in the frame."""
        return np.isfinite(self.boxes).all(axis=1)

    @property
    def ypr(self) -> np.ndarray:
        """(T, 3) yaw/pitch/roll degrees (NaN where no pose); absolute values carry model bias."""
        out = np.full((len(self.rotations), 3), np.nan)
        for i, r in enumerate(self.rotations):
            if np.isfinite(r).all():
                out[i] = rotation_to_ypr(r)
        return out


class FaceAnalyzer:
    """Face box + landmarks + head pose for each frame, and head speed for a sequence.

    Args:
        backend: "mediapipe" or "dlib" (both for detection and landmarks).
        min_confidence: detector score threshold.
        max_side: frames larger than this (long side, pixels) are analysed downscaled; the
            returned boxes and landmarks are in the original frame's pixels.
        speed_sigma: Gaussian smoothing of `head_speed`, in frames.
        pose: "auto" (mediapipe: 3D mesh fit; dlib: solvePnP) or "pnp" (solvePnP of six 2D
            landmarks for both backends); see `head_pose`.
        video: track landmarks across frames (see `FaceLandmarker`); `analyze` then expects the
            frames of one video in order, with `reset()` between videos (`analyze_frames` resets
            by itself).
    """

    def __init__(self, backend: str = "mediapipe", min_confidence: float = 0.5, max_side: int = 640,
                 speed_sigma: float = 1.5, pose: str = "auto", video: bool = False):
        if pose not in ("auto", "pnp"):
            raise EMOError(f"unknown head-pose method {pose!r}; choose auto or pnp")
        self.detector = FaceDetector(backend, min_confidence=min_confidence)
        self.landmarker = FaceLandmarker(backend, video=video)
        self.max_side, self.speed_sigma = int(max_side), float(speed_sigma)
        self.depth = backend == "mediapipe" and pose == "auto"

    def analyze(self, rgb: np.ndarray, keep_landmarks: bool = False):
        """One frame -> (box (4,) | None, rotation (3, 3) | None, landmarks (K, 2) | None)."""
        import cv2

        rgb = _check_image(rgb)
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = rgb if scale == 1.0 else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        box = self.detector.detect(small)
        if box is None:
            return None, None, None
        lm = self.landmarker.detect(small, box, depth=self.depth)
        rotation = None if lm is None else head_pose(lm, small.shape[:2], self.landmarker.scheme)
        box = box / scale
        lm = None if lm is None or not keep_landmarks else lm[:, :2] / scale
        return box, rotation, lm

    def analyze_frames(self, frames: Iterable[np.ndarray], keep_landmarks: bool = False) -> FaceTrack:
        """Label every frame of a sequence (e.g. `media.iter_video_frames(path)`), streaming."""
        self.reset()
        boxes, rotations, landmarks = [], [], []
        for frame in frames:
            box, rot, lm = self.analyze(frame, keep_landmarks)
            boxes.append(np.full(4, np.nan) if box is None else box)
            rotations.append(np.full((3, 3), np.nan) if rot is None else rot)
            landmarks.append(lm)
        boxes_a = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        rot_a = np.array(rotations, dtype=np.float64).reshape(-1, 3, 3)
        return FaceTrack(boxes_a, rot_a, landmarks, head_speed(rot_a, self.speed_sigma))

    def reset(self) -> None:
        """Start a new video (clears landmark tracking in video mode)."""
        if self.landmarker.video:
            self.landmarker.reset()

    def close(self) -> None:
        self.detector.close()
        self.landmarker.close()

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
