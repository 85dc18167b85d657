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

from emoportrait.data.headpose import (
    LANDMARK_POINTS,
    head_pose,
    head_speed,
    rotation_angle,
    rotation_to_ypr,
)
from emoportrait.errors import EMOError

BACKENDS = ("mediapipe", "dlib")

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


def dlib_model_path(name: str, needed_by: str = "dlib landmarks") -> str:
    """Path of a model file shipped by `face_recognition_models`.

    Located through importlib instead of that package's own pkg_resources import (DESIGN.md 4).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise EMOError(f"{needed_by} needs face_recognition_models: pip install face_recognition_models dlib-bin")
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
            self._impl = dlib.shape_predictor(dlib_model_path("shape_predictor_68_face_landmarks.dat"))
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


# The face API: detection and landmarks here, pose maths re-exported from data.headpose.
__all__ = [
    "BACKENDS", "LANDMARK_POINTS", "FaceAnalyzer", "FaceDetector", "FaceLandmarker", "FaceTrack", "box_iou",
    "head_pose", "head_speed", "mouth_opening", "rotation_angle", "rotation_to_ypr",
]
