"""F-SIM (paper 4.2): face similarity of generated frames to the reference image, read against GT.

Descriptor: dlib's ResNet face descriptor (`dlib_face_recognition_resnet_model_v1.dat`, 128-d,
unit-free, from `face_recognition_models`; offline), computed on the 68-point shape of the face
box. Similarity = cosine similarity of descriptors, averaged over sampled frames of a video.

The paper warns that a method which copies the reference scores a deceptively perfect F-SIM, so
it reads F-SIM as a population-reference index: the better value is the one *closer to the
ground-truth videos' own F-SIM* (GT frames vs the same reference). `evaluate` reports both and
their gap.
"""

from __future__ import annotations

import numpy as np

from emoportrait.errors import EMOError

DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_MODEL = "shape_predictor_68_face_landmarks.dat"


def dlib_model_path(name: str) -> str:
    """Path of a model file shipped by `face_recognition_models` (found without importing it)."""
    from emoportrait.data.faces import dlib_model_path as find

    return find(name, needed_by="F-SIM")


class FaceEmbedder:
    """128-d dlib face descriptors of face boxes (boxes from any detector, e.g. `data.faces`)."""

    def __init__(self):
        try:
            import dlib
        except ImportError:
            raise EMOError("F-SIM needs dlib: pip install dlib-bin") from None
        self._dlib = dlib
        self._shape = dlib.shape_predictor(dlib_model_path(SHAPE_MODEL))
        self._net = dlib.face_recognition_model_v1(dlib_model_path(DESCRIPTOR_MODEL))
        self._hog = None

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """Largest dlib HOG face box (x0, y0, x1, y1) of an (H, W, 3) uint8 image, or None."""
        if self._hog is None:
            self._hog = self._dlib.get_frontal_face_detector()
        rects = self._hog(np.ascontiguousarray(rgb), 1 if max(rgb.shape[:2]) < 400 else 0)
        if not rects:
            return None
        r = max(rects, key=lambda r: r.width() * r.height())
        return np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64)

    def embed(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Descriptor of the face in `box` (x0, y0, x1, y1 pixels) of an (H, W, 3) uint8 RGB image -> (128,)."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        rect = self._dlib.rectangle(x0, y0, x1, y1)
        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        shape = self._shape(img, rect)
        return np.asarray(self._net.compute_face_descriptor(img, shape), np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def descriptors(embedder: FaceEmbedder, frames: np.ndarray, boxes: np.ndarray, every: int = 5) -> np.ndarray:
    """(K, 128) descriptors of every `every`-th frame that has a face box (NaN rows = no face)."""
    out = [embedder.embed(frames[t], boxes[t]) for t in range(0, len(frames), every) if np.isfinite(boxes[t]).all()]
    return np.stack(out) if out else np.zeros((0, 128))


def mean_similarity(descs: np.ndarray, reference: np.ndarray, center: np.ndarray | None = None) -> float | None:
    """Mean cosine similarity of (K, 128) descriptors to a (128,) reference, optionally centred."""
    if len(descs) == 0:
        return None
    c = 0 if center is None else center
    return float(np.mean([cosine(d - c, reference - c) for d in descs]))


def face_similarity(embedder: FaceEmbedder, frames: np.ndarray, boxes: np.ndarray,
                    reference: np.ndarray, reference_box: np.ndarray, every: int = 5) -> float | None:
    """Mean cosine similarity of every `every`-th frame's face to the reference face.

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        boxes: (T, 4) face boxes, NaN rows where no face was found (skipped).
        reference: (H, W, 3) uint8 RGB reference image; reference_box: (4,).
    Returns:
        the mean similarity, or None when no sampled frame has a face.
    """
    return mean_similarity(descriptors(embedder, frames, boxes, every), embedder.embed(reference, reference_box))
