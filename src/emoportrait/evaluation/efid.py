"""E-FID (paper 4.2): Frechet distance of facial expression parameters, generated vs ground truth.

The paper extracts expression parameters with a 3D face reconstruction model ([3], Deep3DFaceRecon:
64 BFM expression coefficients). Two extractors, and `evaluate` labels which one was used:

- ``"landmark"`` (offline default, **not the paper's number**): MediaPipe's 468-point 3D face mesh;
  each frame's mesh is aligned to the reference image's mesh by a similarity transform (rotation,
  translation, scale: rigid head pose removed) and the descriptor is the displacement of 92
  expression points (lips, eyes, brows) from the reference, in units of the reference face's size.
  Identity shape cancels because generated and GT videos share the reference image.
- ``"model"`` (the paper's protocol when weights are given): `expression_net.pt` in the weights
  folder, a TorchScript module mapping (B, 3, 224, 224) RGB [0, 1] face crops to (B, D) expression
  parameters (e.g. Deep3DFaceRecon's ReconNet exported with the output sliced to coefficients
  80:144; see docs/evaluation.md).
"""

from __future__ import annotations

import os

import numpy as np

from emoportrait.errors import EMOError

EXPRESSION_NET_NAME = "expression_net.pt"

# MediaPipe face-mesh indices: outer + inner lips (40), both eyes (32), both brows (20).
LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
        78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415]
EYES = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
        263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
BROWS = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276]
EXPRESSION_POINTS = np.array(LIPS + EYES + BROWS)
LANDMARK_DESCRIPTOR_DIM = 3 * len(EXPRESSION_POINTS)  # 276


def similarity_align(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Align (K, 3) points onto (K, 3) target by the least-squares similarity transform (Umeyama)."""
    mp, mt = points.mean(0), target.mean(0)
    p, t = points - mp, target - mt
    u, s, vt = np.linalg.svd(p.T @ t)  # cross-covariance (3, 3)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])  # no reflections
    rot = u @ fix @ vt
    scale = (s * np.diag(fix)).sum() / (p ** 2).sum()
    return scale * p @ rot + mt


def landmark_expression(mesh: np.ndarray, reference_mesh: np.ndarray) -> np.ndarray:
    """Pose-free expression descriptor of one face relative to the reference face.

    Args:
        mesh, reference_mesh: (468, 3) face-mesh points (x, y in pixels, z on the x scale).
    Returns:
        (276,) float64 displacement of the expression points, in reference face-size units.
    """
    aligned = similarity_align(np.asarray(mesh, np.float64), np.asarray(reference_mesh, np.float64))
    size = np.sqrt(((reference_mesh - reference_mesh.mean(0)) ** 2).sum(1).mean())
    return ((aligned - reference_mesh)[EXPRESSION_POINTS] / size).ravel()


class FaceMesh3D:
    """MediaPipe 468-point face mesh with depth, for the landmark E-FID extractor (offline)."""

    def __init__(self):
        os.environ.setdefault("GLOG_minloglevel", "2")
        try:
            import mediapipe as mp

            self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1)
        except (ImportError, AttributeError):
            raise EMOError("E-FID landmark extractor needs mediapipe==0.10.21 (pip install --no-deps)") from None

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """(468, 3) points of the face in an (H, W, 3) uint8 RGB image, or None."""
        result = self._mesh.process(np.ascontiguousarray(rgb))
        if not result.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        lm = result.multi_face_landmarks[0].landmark
        return np.array([[p.x * w, p.y * h, p.z * w] for p in lm[:468]], np.float64)

    def close(self) -> None:
        self._mesh.close()


def load_expression_net(weights: str | os.PathLike):
    """The paper-protocol extractor: `expression_net.pt` (TorchScript) from a file or folder."""
    import torch

    from emoportrait.evaluation.fid import find_weights

    path = find_weights(weights, EXPRESSION_NET_NAME, "E-FID")
    try:
        net = torch.jit.load(str(path), map_location="cpu").eval()
        with torch.no_grad():
            out = net(torch.zeros(1, 3, 224, 224))
    except Exception as e:  # noqa: BLE001
        raise EMOError(f"E-FID: {path} is not a TorchScript (B,3,224,224)->(B,D) expression network ({e.__class__.__name__})") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        raise EMOError(f"E-FID: {path} must return (B, D) expression parameters")
    return net


def model_expression(net, crops: np.ndarray) -> np.ndarray:
    """(N, 224, 224, 3) uint8 RGB face crops -> (N, D) float64 expression parameters."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0
        return net(x).double().numpy()
