"""Head geometry of the synthetic world: rotations, the camera, and points on the face surface.

Conventions (camera space = head space at zero pose): x to the viewer's right, y down, z toward
the camera, lengths in head units (the head's half-width is 1). Angles in degrees:
yaw > 0 turns the face toward the viewer's right, pitch > 0 tilts it up, roll > 0 tilts it
clockwise as the viewer sees it. R = Rz(roll) @ Rx(pitch) @ Ry(yaw).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emoportrait.data.synth.identity import Identity

CAMERA_DISTANCE = 9.0  # head units from the head centre to the pinhole (mild perspective)
HEAD_SCALE = 0.245  # pixels per head unit, as a fraction of the frame size (face ~half the frame wide)
HEAD_CENTER_Y = 0.46  # neutral head centre, as a fraction of the frame height


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) head rotation R = Rz(roll) @ Rx(pitch) @ Ry(yaw) for angles in degrees."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def fibonacci_sphere(n: int) -> np.ndarray:
    """(n, 3) nearly uniform unit vectors (deterministic)."""
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.cos(phi), np.sin(theta) * np.sin(phi)], axis=1)


@dataclass
class Camera:
    """Pinhole camera looking down -z at a head whose neck pivot can translate."""

    size: int  # frame size in pixels (square frames)
    scale: float = 0.0  # pixels per head unit at the head's depth
    center: np.ndarray | None = None

    def __post_init__(self):
        self.scale = HEAD_SCALE * self.size
        self.center = np.array([self.size / 2, self.size / 2])


class HeadPose:
    """Maps head-space points to pixels for one frame (rotation about the neck pivot, then projection)."""

    def __init__(self, ident: Identity, camera: Camera, yaw: float, pitch: float, roll: float,
                 tx: float = 0.0, ty: float = 0.0, supersample: int = 1):
        a, b, c = ident.head_axes
        self.R = rotation_matrix(yaw, pitch, roll)
        self.pivot = np.array([0.0, 0.9 * b, -0.3 * c])  # neck pivot in head space
        head_y = (HEAD_CENTER_Y - 0.5) * camera.size / camera.scale
        self.offset = np.array([tx, head_y + ty, 0.0]) + self.pivot  # pivot position in camera space
        self.scale = camera.scale * supersample
        self.center = camera.center * supersample

    def to_camera(self, q: np.ndarray) -> np.ndarray:
        """(N, 3) head-space points -> (N, 3) camera-space points."""
        return (q - self.pivot) @ self.R.T + self.offset

    def project(self, q: np.ndarray) -> np.ndarray:
        """(N, 3) head-space points -> (N, 2) pixel coordinates (x, y)."""
        w = self.to_camera(q)
        k = CAMERA_DISTANCE / (CAMERA_DISTANCE - w[:, 2])
        return self.center + self.scale * w[:, :2] * k[:, None]

    def facing(self, normal: np.ndarray) -> float:
        """z component of a head-space normal after rotation (> 0: faces the camera)."""
        return float((self.R @ normal)[2])


class FaceSurface:
    """Points on the front of one identity's head: a jaw-tapered ellipsoid (head space)."""

    def __init__(self, ident: Identity):
        self.a, self.b, self.c = ident.head_axes
        self.taper = ident.jaw_taper
        self.mouth_y = ident.mouth_y

    def half_width(self, y: np.ndarray) -> np.ndarray:
        """Half-width of the head's outline at height y (the jaw narrows toward the chin)."""
        y = np.asarray(y, dtype=np.float64)
        return self.a * (1 - self.taper * (np.clip(y, 0, None) / self.b) ** 2)

    def lift(self, x, y, dz=0.0) -> np.ndarray:
        """Face-plane coordinates (x, y) -> (N, 3) points on the front surface, `dz` in front of it."""
        x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
        r2 = (x / self.half_width(y)) ** 2 + (y / self.b) ** 2
        z = self.c * np.sqrt(np.clip(1 - r2, 0.0, 1.0)) + dz
        return np.stack([x.ravel(), y.ravel(), np.broadcast_to(z, x.shape).ravel()], axis=1)

    def jaw(self, q: np.ndarray, drop: float) -> np.ndarray:
        """Move points below the mouth down by up to `drop` (the chin follows the opening mouth)."""
        if drop <= 0:
            return q
        t = np.clip((q[:, 1] - self.mouth_y) / (self.b - self.mouth_y), 0, 1)
        q = q.copy()
        q[:, 1] += drop * t * t * (3 - 2 * t)
        return q

    def outline(self, level: float, y_top: float, n: int = 40) -> np.ndarray:
        """(2n, 3) closed loop on the surface where z = level * c, from y_top down around the chin.

        Points run down the viewer's right side and back up the left side.
        """
        s = np.sqrt(1 - level**2)
        ys = y_top + (self.b * s - y_top) * np.sin(np.linspace(0, np.pi / 2, n))
        xs = self.half_width(ys) * np.sqrt(np.clip(s**2 - (ys / self.b) ** 2, 0, None))
        right = np.stack([xs, ys, np.full(n, level * self.c)], axis=1)
        left = right[::-1] * np.array([-1, 1, 1])
        return np.concatenate([right, left])
