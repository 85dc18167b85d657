"""Anti-aliased rendering of one synthetic face per frame.

Every feature is a polygon in head space, rotated about the neck and projected with a pinhole
camera (`geometry.py`), then filled with OpenCV at sub-pixel precision (`shift`) and
`LINE_AA` edges on a supersampled canvas that is area-downsampled to the output size. A
per-pixel Lambertian shading of the head ellipsoid is multiplied in last, so the face reads
as a lit 3D object (which face detectors and landmark models need), not a flat cartoon.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from emoportrait.data.synth.geometry import Camera, FaceSurface, HeadPose, fibonacci_sphere
from emoportrait.data.synth.identity import Identity

SHIFT = 4  # sub-pixel bits for cv2 drawing
_MOUTH_INSIDE = (34, 9, 13)
_TEETH = (236, 232, 220)
_SCLERA = (238, 236, 232)
_SHADE_RES = 64  # the (smooth) shading field is computed at this resolution, then resized


@dataclass
class FrameState:
    """Per-frame pose and expression driving the renderer (units as in the sidecar)."""

    yaw: float = 0.0  # degrees
    pitch: float = 0.0
    roll: float = 0.0
    tx: float = 0.0  # head translation, head units
    ty: float = 0.0
    mouth_open: float = 0.0  # 0 closed .. 1 the identity's widest opening
    mouth_width: float = 1.0  # mouth half-width relative to the identity's neutral mouth
    blink: float = 0.0  # 0 open .. 1 closed
    brow_raise: float = 0.0  # head units
    gaze_x: float = 0.0  # iris offset, fraction of the eye half-width
    gaze_y: float = 0.0


def _c(color) -> tuple[int, int, int]:
    return tuple(int(v) for v in color)


def _shade(color, k: float) -> tuple[int, int, int]:
    return _c(np.clip(np.asarray(color, np.float64) * k, 0, 255))


class Renderer:
    """Draws frames of one identity at `size` x `size` pixels.

    Example:
        r = Renderer(make_identity(0, 3), size=128)
        frame, info = r.render(FrameState(yaw=10, mouth_open=0.5))  # (128, 128, 3) uint8, dict
    """

    def __init__(self, ident: Identity, size: int = 128, supersample: int | None = None):
        self.ident = ident
        self.size = int(size)
        self.ss = supersample or (3 if size <= 128 else 2 if size <= 256 else 1)
        self.camera = Camera(self.size)
        self.surface = FaceSurface(ident)
        self.background = self._background()
        a, b, c = ident.head_axes
        self.sphere = fibonacci_sphere(700) * np.array([a, b, c])
        self.sphere[:, 0] = np.sign(self.sphere[:, 0]) * self.surface.half_width(self.sphere[:, 1]) * np.abs(
            self.sphere[:, 0] / a
        )
        self._shade_grid = None

    # ------------------------------------------------------------------ static parts
    def _background(self) -> np.ndarray:
        """(S, S, 3) uint8 supersampled backdrop: vertical gradient, soft blobs, vignette."""
        s = self.size * self.ss
        top, bottom = (np.array(c, np.float32) for c in self.ident.background)
        t = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
        img = np.broadcast_to(top * (1 - t) + bottom * t, (s, s, 3)).copy()
        rng = np.random.default_rng(self.ident.texture_seed)
        blobs = np.zeros((s, s, 3), np.float32)
        for _ in range(self.ident.background_blobs):
            center = (int(rng.uniform(0, s)), int(rng.uniform(0, s * 0.7)))
            radius = int(rng.uniform(0.05, 0.15) * s)
            color = rng.uniform(-50, 60, 3)
            cv2.circle(blobs, center, radius, tuple(float(v) for v in color), -1, cv2.LINE_AA)
        if self.ident.background_blobs:
            blobs = cv2.GaussianBlur(blobs, (0, 0), sigmaX=s * 0.03)
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s - 0.5
        vignette = 1 - 0.35 * (xx**2 + yy**2)
        img = (img + blobs) * vignette[..., None]
        return np.clip(img, 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------ drawing helpers
    def _poly(self, img, pts2d: np.ndarray, color) -> None:
        pts = np.round(pts2d * (1 << SHIFT)).astype(np.int32)
        cv2.fillPoly(img, [pts], _c(color), lineType=cv2.LINE_AA, shift=SHIFT)

    def _line(self, img, pts2d: np.ndarray, color, width: float, closed: bool = False) -> None:
        pts = np.round(pts2d * (1 << SHIFT)).astype(np.int32)
        th = max(1, int(round(width)))
        cv2.polylines(img, [pts], closed, _c(color), th, lineType=cv2.LINE_AA, shift=SHIFT)

    def _hull(self, img, pts2d: np.ndarray, color) -> None:
        hull = cv2.convexHull(pts2d.astype(np.float32))[:, 0, :]
        self._poly(img, hull.astype(np.float64), color)

    # ------------------------------------------------------------------ frame
    def render(self, st: FrameState) -> tuple[np.ndarray, dict]:
        """Draw one frame.

        Returns:
            frame: (size, size, 3) uint8 RGB.
            info: pixel-space ground truth: `box` (x0, y0, x1, y1), `mouth_open_px`,
                `mouth_width_px`, `keypoints` (7, 2) = eye centres (viewer's left, right),
                nose tip, mouth centre, mouth corners (left, right), chin.
        """
        idn, sf = self.ident, self.surface
        a, b, c = idn.head_axes
        pose = HeadPose(idn, self.camera, st.yaw, st.pitch, st.roll, st.tx, st.ty, self.ss)
        img = self.background.copy()
        h_open = float(np.clip(st.mouth_open, 0, 1.2)) * idn.max_opening
        drop = idn.jaw_drop * h_open
        unit = pose.scale  # pixels per head unit on the canvas
        skin = np.array(idn.skin, np.float64)
        hair = idn.hair_color
        long_hair = idn.hair_style in ("long", "curly")

        # Neck and shoulders (they translate with the pivot but do not rotate with the head).
        off = pose.offset - pose.pivot  # head centre in camera space at zero rotation
        neck = np.array([[-0.5, 0.3], [0.5, 0.3], [0.62, 3.0], [-0.62, 3.0]]) * [a, b] + off[:2]
        to_px = lambda p: pose.center + pose.scale * p  # noqa: E731
        if long_hair:  # hair hanging behind the shoulders
            t = np.linspace(0, np.pi, 16)
            xs = np.concatenate([1.22 * np.cos(t), [-1.3, -1.1, 1.1, 1.3]]) * a * idn.hair_volume
            ys = np.concatenate([-0.2 - 0.8 * np.sin(t), [1.35, 1.5, 1.5, 1.35]]) * b
            back = np.stack([xs, ys, np.full_like(xs, -0.5)], axis=1)
            self._poly(img, pose.project(back), _shade(hair, 0.8))
        self._poly(img, to_px(neck), _shade(skin, 0.82))
        shoulders = cv2.ellipse2Poly((0, 0), (int(2.6 * 100), int(1.3 * 100)), 0, 180, 360, 6)
        sh = shoulders / 100.0 + [off[0], off[1] + 2.35 * b]
        self._poly(img, to_px(np.concatenate([sh, [[2.6 + off[0], 5.0], [-2.6 + off[0], 5.0]]])), idn.shirt_color)
        vneck = np.array([[-0.45, 1.15 * b], [0.45, 1.15 * b], [0.0, 1.75 * b]]) + off[:2]
        self._poly(img, to_px(vneck), _shade(skin, 0.78))

        # Ears: one behind the head, or drawn over it when it faces the camera.
        ears = []
        for side in (-1, 1):
            center = np.array([side * 0.97 * a, idn.eye_y + 0.2, -0.12 * c])
            u = np.array([side * 0.85, 0, 0.5]) * 0.11
            v = np.array([0, 1.0, 0]) * idn.ear_size
            t = np.linspace(0, 2 * np.pi, 20, endpoint=False)[:, None]
            outer = center + np.cos(t) * u * (1 + 0.3 * np.sin(t)) + np.sin(t) * v
            inner = center + 0.55 * (np.cos(t) * u + np.sin(t) * v) + np.array([0, 0.02, 0])
            # Near side: the ear swings toward the camera and shows beside the cheek.
            ears.append((pose.facing(np.array([side, 0.0, 0.0])) > 0.1 and not long_hair, outer, inner))
        for near, outer, _ in ears:
            if not near:
                self._poly(img, pose.project(outer), _shade(skin, 0.85))

        # Head skin (convex hull of the jaw-tapered ellipsoid, chin lowered with the mouth).
        self._hull(img, pose.project(sf.jaw(self.sphere, drop)), skin)

        # Hair cap: the ellipsoid above the hairline (front) / the nape (back), scaled for volume.
        if idn.hair_style != "bald":
            q = self.sphere * idn.hair_volume
            nape = 0.75 * b if long_hair else 0.1 * b
            front = np.clip(q[:, 2] / c * 2 + 0.5, 0, 1)
            limit = front * (idn.hairline + 0.1 * (q[:, 0] / a) ** 2) + (1 - front) * nape
            cap = q[q[:, 1] < limit]
            if idn.hair_style == "bun":
                bun = fibonacci_sphere(60) * 0.3 + np.array([0, -b * 0.95, -0.45])
                self._hull(img, pose.project(bun), _shade(hair, 0.9))
            if len(cap) >= 3:
                self._hull(img, pose.project(cap), hair)

        # Face patch: skin below the hairline, bounded by the z = 0.2c outline.
        x_t = float(sf.half_width(idn.hairline) * np.sqrt(max(0.0, 0.96 - (idn.hairline / b) ** 2)))
        xs = np.linspace(x_t, -x_t, 15)
        hl = sf.lift(xs, idn.hairline + 0.1 * (xs / a) ** 2 + 0.02 * np.cos(xs * 9))
        y_top = max(idn.hairline + 0.1 * (x_t / a) ** 2, -0.9 * b)
        loop = sf.outline(0.2, y_top)
        face = sf.jaw(np.concatenate([hl, loop]), drop)
        self._poly(img, pose.project(face) if idn.hair_style != "bald" else pose.project(sf.jaw(loop, drop)), skin)
        for near, outer, inner in ears:
            if near:
                self._poly(img, pose.project(outer), _shade(skin, 0.92))
                self._poly(img, pose.project(inner), _shade(skin, 0.7))

        if idn.beard:
            self._beard(img, pose, drop, h_open)
        self._eyes(img, pose, st, unit)
        self._brows(img, pose, st, unit)
        self._nose(img, pose, unit)
        mouth = self._mouth(img, pose, st, h_open, unit)
        if idn.glasses:
            self._glasses(img, pose, unit)

        frame = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA) if self.ss > 1 else img
        frame = self._apply_shading(frame, pose)

        # Pixel-space ground truth (output resolution).
        k = 1.0 / self.ss
        box_pts = np.concatenate([
            sf.jaw(sf.outline(0.2, idn.eye_y - 0.1), drop),
            sf.lift(np.array([-0.5, 0.0, 0.5]) * a, np.full(3, idn.eye_y - 0.45)),
        ])
        bp = pose.project(box_pts) * k
        box = [float(bp[:, 0].min()), float(bp[:, 1].min()), float(bp[:, 0].max()), float(bp[:, 1].max())]
        eyes = pose.project(sf.lift(np.array([-idn.eye_dx, idn.eye_dx]), np.full(2, idn.eye_y))) * k
        nose = pose.project(sf.lift(0.0, idn.nose_y - 0.05, idn.nose_depth)) * k
        chin = pose.project(sf.jaw(sf.lift(0.0, b * 0.995), drop)) * k
        keypoints = np.concatenate([eyes, nose, mouth["center"][None] * k, mouth["corners"] * k, chin])
        info = {
            "box": box,
            "mouth_open_px": float(mouth["open_px"] * k),
            "mouth_width_px": float(mouth["width_px"] * k),
            "keypoints": keypoints,
        }
        return frame, info

    # ------------------------------------------------------------------ features
    def _eyes(self, img, pose: HeadPose, st: FrameState, unit: float) -> None:
        idn, sf = self.ident, self.surface
        ew, eh = idn.eye_size
        s = np.linspace(-1, 1, 17)
        openness = 1.0 - float(np.clip(st.blink, 0, 1))
        for side in (-1, 1):
            ex, ey = side * idn.eye_dx, idn.eye_y
            tilt = 0.015 * side * s  # outer corner slightly higher
            upper = ey - eh * (1 - s**2) ** 0.7 * openness - tilt + 0.3 * eh * (1 - openness)
            lower = ey + 0.75 * eh * (1 - s**2) ** 0.8 * openness - tilt + 0.3 * eh * (1 - openness)
            xs = ex + s * ew
            if openness > 0.08:
                almond = sf.lift(np.concatenate([xs, xs[::-1]]), np.concatenate([upper, lower[::-1]]), 0.01)
                self._poly(img, pose.project(almond), _SCLERA)
                # Iris and pupil: circles clipped between the lids (clamp each boundary point's y).
                t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
                icx = ex + st.gaze_x * ew * 0.5
                icy = ey + st.gaze_y * eh * 0.5
                for radius, color in ((0.95 * eh * 1.05, idn.iris_color), (0.42 * eh, (12, 10, 10))):
                    px = icx + radius * np.cos(t)
                    py = icy + radius * np.sin(t)
                    su = np.clip((px - ex) / ew, -1, 1)
                    up = ey - eh * (1 - su**2) ** 0.7 * openness - 0.015 * side * su + 0.3 * eh * (1 - openness)
                    lo = ey + 0.75 * eh * (1 - su**2) ** 0.8 * openness - 0.015 * side * su + 0.3 * eh * (1 - openness)
                    py = np.clip(py, up, lo)
                    self._poly(img, pose.project(sf.lift(px, py, 0.015)), color)
                spec = sf.lift(np.array([icx + 0.3 * eh]), np.array([icy - 0.35 * eh]), 0.02)
                cv2.circle(img, tuple(int(v) for v in np.round(pose.project(spec)[0] * (1 << SHIFT))),
                           int(max(1, 0.12 * eh * unit) * (1 << SHIFT)), (250, 250, 250), -1, cv2.LINE_AA, SHIFT)
            # Upper lid line with lashes (a closed eye is just this line).
            lid = sf.lift(xs, upper - 0.006, 0.015)
            self._line(img, pose.project(lid), (30, 22, 20), max(1.0, 0.028 * unit))
            crease = sf.lift(xs[3:-3], upper[3:-3] - 0.055 - 0.02 * openness, 0.005)
            self._line(img, pose.project(crease), _shade(idn.skin, 0.72), max(1.0, 0.012 * unit))

    def _brows(self, img, pose: HeadPose, st: FrameState, unit: float) -> None:
        idn, sf = self.ident, self.surface
        ew, eh = idn.eye_size
        s = np.linspace(-1, 1, 12)
        for side in (-1, 1):
            x = side * (idn.eye_dx + s * side * ew * 1.15)  # s=-1: inner end, s=1: outer end
            base = idn.eye_y - eh - 0.12 - st.brow_raise - 0.045 * (1 - s**2) + idn.brow_tilt * (1 - s) / 2
            thick = idn.brow_thickness * (1.1 - 0.45 * (s + 1) / 2)
            pts = sf.lift(np.concatenate([x, x[::-1]]), np.concatenate([base - thick / 2, (base + thick / 2)[::-1]]),
                          0.01)
            self._poly(img, pose.project(pts), idn.brow_color)

    def _nose(self, img, pose: HeadPose, unit: float) -> None:
        idn, sf = self.ident, self.surface
        ny, nw, nd = idn.nose_y, idn.nose_width, idn.nose_depth
        side = -1 if idn.light_dir[0] > 0 else 1  # the side of the nose away from the light is darker
        # Side wall of the nose: a thin wedge from the bridge to the wing, in shadow.
        t = np.linspace(0, 1, 8)
        ridge = sf.lift(side * (0.035 + 0.01 * t), idn.eye_y + 0.1 + t * (ny - 0.1 - idn.eye_y - 0.1), nd * t**1.3)
        wall = sf.lift(side * (0.06 + (nw - 0.02) * t**2), idn.eye_y + 0.14 + t * (ny - 0.06 - idn.eye_y - 0.14),
                       0.3 * nd * t)
        self._poly(img, pose.project(np.concatenate([ridge, wall[::-1]])), _shade(idn.skin, 0.9))
        # Tip and wings: a darker underside, then the nostrils.
        s = np.linspace(-1, 1, 15)
        under_x = s * nw
        under_y = ny - 0.04 + 0.04 * (1 - s**2)
        depth = nd * (1 - np.abs(s)) ** 1.2 + 0.02
        tip = sf.lift(under_x, under_y - 0.05 * (1 - s**2) ** 2, depth + 0.01)
        under = sf.lift(under_x[::-1] * 0.9, under_y[::-1] + 0.012, depth[::-1] * 0.5)
        self._poly(img, pose.project(np.concatenate([tip, under])), _shade(idn.skin, 0.8))
        for sgn in (-1, 1):
            t2 = np.linspace(0, 2 * np.pi, 12, endpoint=False)
            nos = sf.lift(sgn * nw * 0.42 + 0.032 * np.cos(t2), ny - 0.005 + 0.015 * np.sin(t2), nd * 0.35)
            self._poly(img, pose.project(nos), _shade(idn.skin, 0.4))
        hl = sf.lift(np.array([0.0, 0.0]), np.array([ny - 0.16, ny - 0.08]), nd * 0.9)
        self._line(img, pose.project(hl), _shade(idn.skin, 1.1), max(1.0, 0.02 * unit))

    def _mouth(self, img, pose: HeadPose, st: FrameState, h_open: float, unit: float) -> dict:
        idn, sf = self.ident, self.surface
        w = idn.mouth_half_width * float(np.clip(st.mouth_width, 0.6, 1.4))
        ym = idn.mouth_y
        tu, tl = idn.lip_thickness
        s = np.linspace(-1, 1, 21)
        bump = (1 - s**2) ** 0.6
        inner_up = ym - 0.2 * h_open * bump
        inner_lo = ym + 0.8 * h_open * bump
        outer_up = inner_up - tu * (1 - 0.75 * s**2) + 0.018 * np.exp(-((s / 0.14) ** 2))
        outer_lo = inner_lo + tl * (1 - 0.65 * s**2)
        xs = s * w
        dz = 0.03 * (1 - s**2)
        lips = sf.lift(np.concatenate([xs, xs[::-1]]), np.concatenate([outer_up, outer_lo[::-1]]),
                       np.concatenate([dz, dz[::-1]]))
        self._poly(img, pose.project(lips), idn.lip_color)
        if h_open > 1e-3:
            inside = sf.lift(np.concatenate([xs, xs[::-1]]), np.concatenate([inner_up, inner_lo[::-1]]), 0.02)
            self._poly(img, pose.project(inside), _MOUTH_INSIDE)
            k = np.abs(s) < 0.7
            th = min(0.035, 0.22 * h_open)
            teeth = sf.lift(np.concatenate([xs[k], xs[k][::-1]]),
                            np.concatenate([inner_up[k], (inner_up[k] + th * bump[k])[::-1]]), 0.02)
            self._poly(img, pose.project(teeth), _TEETH)
        seam = sf.lift(xs, inner_up, 0.025)
        self._line(img, pose.project(seam), _shade(idn.lip_color, 0.45), max(1.0, 0.018 * unit))
        self._line(img, pose.project(sf.lift(xs[8:13], outer_lo[8:13] + 0.03, 0.0)), _shade(idn.skin, 0.85),
                   max(1.0, 0.015 * unit))
        center_up, center_lo = pose.project(sf.lift(np.array([0.0, 0.0]), np.array([inner_up[10], inner_lo[10]]), 0.02))
        corners = pose.project(sf.lift(np.array([-w, w]), np.array([ym, ym]), 0.02))
        return {
            "center": (center_up + center_lo) / 2,
            "open_px": float(np.linalg.norm(center_lo - center_up)),
            "width_px": float(np.linalg.norm(corners[1] - corners[0])),
            "corners": corners,
        }

    def _beard(self, img, pose: HeadPose, drop: float, h_open: float) -> None:
        """Full beard from the sideburns around the chin, with a moustache; lighter than the hair
        (blended with the skin) so that the dark mouth interior still stands out."""
        idn, sf = self.ident, self.surface
        ym, top = idn.mouth_y, idn.eye_y + 0.18
        loop = sf.outline(0.25, top)  # down the image-right side, around the chin, up the left side
        half = np.array([0.97, 0.8, 0.55, 0.3, 0.12, 0.0])
        hy = np.array([top, idn.nose_y - 0.02, ym - 0.08, ym - 0.13, ym - 0.15, ym - 0.12])
        xs, ys = np.concatenate([-half, half[-2::-1]]), np.concatenate([hy, hy[-2::-1]])  # left to right
        edge_x = xs * sf.half_width(ys) * np.sqrt(np.clip(0.9375 - (ys / sf.b) ** 2, 0, 1))
        color = np.array(idn.hair_color, np.float64) * 0.65 + np.array(idn.skin, np.float64) * 0.35
        shape = np.concatenate([loop, sf.lift(edge_x, ys, 0.01)])
        self._poly(img, pose.project(sf.jaw(shape, drop)), color)

    def _glasses(self, img, pose: HeadPose, unit: float) -> None:
        idn, sf = self.ident, self.surface
        ew, eh = idn.eye_size
        t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        width = max(1.0, 0.03 * unit)
        for side in (-1, 1):
            cx, cy = side * idn.eye_dx, idn.eye_y + 0.01
            rim = sf.lift(cx + 1.3 * ew * np.cos(t), cy + 1.9 * eh * np.sin(t) * (1 + 0.1 * np.sin(t)), 0.12)
            self._line(img, pose.project(rim), idn.glasses_color, width, closed=True)
            arm = np.array([[side * (idn.eye_dx + 1.3 * ew), cy, 0.0], [side * 0.98, cy + 0.05, -0.2]])
            arm[0] = sf.lift(arm[0, 0], arm[0, 1], 0.1)[0]
            if pose.facing(np.array([side, 0.0, 0.3])) > 0.05:
                self._line(img, pose.project(arm), idn.glasses_color, width)
        bridge = sf.lift(np.linspace(-idn.eye_dx + 1.3 * ew, idn.eye_dx - 1.3 * ew, 5),
                         idn.eye_y - 0.03 - 0.03 * np.sin(np.linspace(0, np.pi, 5)), 0.14)
        self._line(img, pose.project(bridge), idn.glasses_color, width)

    # ------------------------------------------------------------------ shading
    def _apply_shading(self, frame: np.ndarray, pose: HeadPose) -> np.ndarray:
        """Multiply a Lambertian shading of the head ellipsoid into the frame (1 outside it)."""
        n = min(self.size, _SHADE_RES)
        if self._shade_grid is None or self._shade_grid[0] != n:
            g = ((np.arange(n) + 0.5) * (self.size / n)).astype(np.float32)
            self._shade_grid = (n, *np.meshgrid(g, g))
        _, gx, gy = self._shade_grid
        idn = self.ident
        axes = np.array(idn.head_axes) * max(1.03, idn.hair_volume)
        # Camera rays (orthographic approximation) -> head space: q(t) = q0 + t d.
        scale = pose.scale / self.ss
        center = pose.center / self.ss
        P0 = np.stack([(gx - center[0]) / scale, (gy - center[1]) / scale, np.zeros_like(gx)], -1)  # (n, n, 3)
        R = pose.R.astype(np.float32)
        q0 = (P0 - pose.offset.astype(np.float32)) @ R + pose.pivot.astype(np.float32)  # R^T (p - offset) + pivot
        d = R[2]  # R^T e_z
        axes = axes.astype(np.float32)
        A = np.sum((d / axes) ** 2)
        B = 2 * np.sum(q0 * d / axes**2, -1)
        C = np.sum((q0 / axes) ** 2, -1) - 1
        disc = B * B - 4 * A * C
        inside = disc > 0
        t = (-B + np.sqrt(np.clip(disc, 0, None))) / (2 * A)
        q = q0 + t[..., None] * d
        normal = (q / axes**2) @ R.T
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-9
        light = np.array(idn.light_dir, np.float32)
        amb = idn.light_ambient
        lam = amb + (1 - amb) * np.clip(normal @ light, 0, None)
        lam /= amb + (1 - amb) * max(light[2], 1e-3)
        # Fade to 1 toward the silhouette so hair volume and background meet without a seam.
        edge = np.clip(disc / (4 * A) * 2.5, 0, 1)
        shade = np.where(inside, 1 + (lam - 1) * edge, 1.0).astype(np.float32)
        if n != self.size:
            shade = cv2.resize(shade, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        out = frame.astype(np.float32) * shade[..., None]
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
