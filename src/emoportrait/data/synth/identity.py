"""Procedural identities of the synthetic world: every visual trait a person keeps across clips.

An identity is drawn once from `(seed, identity_index)` and never changes inside the world, so
all clips of one identity show the same face (tested), while two identities differ in face
shape, skin, hair, eyes, brows, accessories, background and lighting.

Head coordinates (used by `render.py`): x to the viewer's right, y down, z toward the camera,
in units of the head's half-width (the head is an ellipsoid with semi-axes `head_axes`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Skin tones from light to dark (sRGB); an identity interpolates between two neighbours.
_SKIN = np.array(
    [[255, 224, 200], [241, 194, 167], [224, 172, 130], [198, 134, 96], [161, 102, 68], [112, 70, 45], [80, 52, 36]],
    dtype=np.float64,
)
_HAIR = np.array(
    [[25, 20, 18], [55, 38, 28], [95, 62, 38], [150, 110, 65], [210, 175, 110], [160, 70, 35], [150, 150, 150],
     [235, 230, 220], [60, 50, 90]],
    dtype=np.float64,
)
_IRIS = np.array([[70, 45, 25], [110, 75, 40], [60, 110, 150], [70, 120, 80], [120, 120, 110], [30, 25, 20]], dtype=np.float64)
_LIPS = np.array([[190, 95, 95], [170, 80, 85], [200, 110, 110], [150, 70, 70], [205, 90, 120]], dtype=np.float64)

HAIR_STYLES = ("short", "long", "buzz", "curly", "bun", "fringe", "bald")


@dataclass(frozen=True)
class Identity:
    """Visual traits of one synthetic person (all colours sRGB 0..255, lengths in head units)."""

    identity_id: str
    head_axes: tuple[float, float, float]  # ellipsoid semi-axes (a, b, c): half width, half height, half depth
    jaw_taper: float  # 0 = egg-shaped head, 0.35 = narrow pointed chin
    skin: tuple[int, int, int]
    hair_style: str  # one of HAIR_STYLES
    hair_color: tuple[int, int, int]
    hairline: float  # y of the hairline at the forehead centre (negative = above the eye line)
    hair_volume: float  # radial scale of the hair cap (1 = flat on the scalp)
    eye_y: float  # eye line
    eye_dx: float  # half the distance between the eye centres
    eye_size: tuple[float, float]  # almond half width, half height
    iris_color: tuple[int, int, int]
    brow_thickness: float
    brow_tilt: float  # inner-end height minus outer-end height (positive = angry-looking)
    brow_color: tuple[int, int, int]
    nose_y: float  # y of the nose base
    nose_width: float
    nose_depth: float  # how far the tip protrudes in front of the face surface
    mouth_y: float
    mouth_half_width: float
    lip_color: tuple[int, int, int]
    lip_thickness: tuple[float, float]  # upper, lower
    max_opening: float  # inner-lip gap at full opening (head units)
    jaw_drop: float  # fraction of the opening carried by the chin
    ear_size: float
    glasses: bool
    glasses_color: tuple[int, int, int]
    beard: bool
    background: tuple[tuple[int, int, int], tuple[int, int, int]]  # top and bottom of a vertical gradient
    background_blobs: int  # number of soft out-of-focus blobs in the background (bokeh)
    shirt_color: tuple[int, int, int]
    light_dir: tuple[float, float, float]  # unit vector toward the key light (camera space)
    light_ambient: float
    blink_interval: float  # mean seconds between blinks
    voice_variant: str  # espeak-ng voice variant, e.g. "m3" / "f2"
    voice_pitch: int  # espeak-ng base pitch 0..99
    texture_seed: int  # seeds the background's blobs

    def to_dict(self) -> dict:
        return asdict(self)


def _color(rng: np.random.Generator, palette: np.ndarray, jitter: float) -> tuple[int, int, int]:
    i = rng.integers(0, len(palette))
    j = min(len(palette) - 1, i + 1)
    c = palette[i] + (palette[j] - palette[i]) * rng.uniform(0, 0.5) + rng.normal(0, jitter, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def make_identity(seed: int, index: int) -> Identity:
    """Draw identity `index` of the world with `seed` (deterministic, independent of other identities)."""
    rng = np.random.default_rng([seed, 1, index])
    a = float(rng.uniform(0.9, 1.1))
    b = rng.uniform(1.2, 1.45)
    style = HAIR_STYLES[rng.integers(0, len(HAIR_STYLES))]
    skin = _color(rng, _SKIN, 6)
    hair = _color(rng, _HAIR, 10)
    feminine = bool(rng.random() < 0.5)
    beard_lum = float(np.mean(np.array(hair) * 0.65 + np.array(skin) * 0.35))
    # A beard must stay clearly lighter than the mouth interior, or the mouth would vanish in it.
    beard = (not feminine) and rng.random() < 0.35 and beard_lum > 75
    brow = tuple(int(v) for v in np.clip(np.array(hair) * 0.6 + np.array([20, 15, 10]) * 0.4, 0, 255))
    # Background: two related colours, far enough from the skin tone that the face stands out.
    hue = rng.uniform(0, 1)
    base = np.array([np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)]) * 55 + rng.uniform(90, 170)
    top = np.clip(base + rng.normal(0, 15, 3), 10, 245)
    bottom = np.clip(top * rng.uniform(0.55, 0.85), 5, 245)
    shirt = _color(rng, np.array([[30, 40, 80], [200, 200, 205], [120, 30, 40], [40, 90, 60], [60, 60, 60],
                                  [180, 140, 90]], dtype=np.float64), 15)
    ld = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.5, 0.1), 1.0])
    ld /= np.linalg.norm(ld)
    hairline = {"fringe": -0.25, "bald": -1.6, "buzz": -0.62}.get(style, rng.uniform(-0.68, -0.52))
    volume = {"curly": rng.uniform(1.18, 1.28), "buzz": 1.01, "bald": 1.0, "long": rng.uniform(1.05, 1.1)}.get(
        style, rng.uniform(1.04, 1.1)
    )
    if style == "buzz":
        hair = tuple(int(v) for v in np.array(hair) * 0.6 + np.array(skin) * 0.4)
    variant = (f"f{rng.integers(1, 6)}" if feminine else f"m{rng.integers(1, 8)}")
    return Identity(
        identity_id=f"id{index:04d}",
        head_axes=(a, float(b), float(rng.uniform(1.0, 1.12))),
        jaw_taper=float(rng.uniform(0.05, 0.38)),
        skin=skin,
        hair_style=style,
        hair_color=hair,
        hairline=float(hairline),
        hair_volume=float(volume),
        eye_y=float(rng.uniform(-0.12, 0.06)),
        eye_dx=float(rng.uniform(0.31, 0.44) * a),
        eye_size=(float(rng.uniform(0.13, 0.2)), float(rng.uniform(0.06, 0.1))),
        iris_color=_color(rng, _IRIS, 8),
        brow_thickness=float(rng.uniform(0.035, 0.07) * (0.8 if feminine else 1.1)),
        brow_tilt=float(rng.uniform(-0.06, 0.06)),
        brow_color=brow,
        nose_y=float(rng.uniform(0.38, 0.56)),
        nose_width=float(rng.uniform(0.1, 0.19)),
        nose_depth=float(rng.uniform(0.2, 0.36)),
        mouth_y=float(rng.uniform(0.74, 0.88)),
        mouth_half_width=float(rng.uniform(0.24, 0.36)),
        lip_color=_color(rng, _LIPS, 8) if feminine else tuple(
            int(v) for v in np.array(skin) * 0.55 + np.array(_LIPS[3]) * 0.45),
        lip_thickness=(float(rng.uniform(0.045, 0.07)), float(rng.uniform(0.06, 0.09))),
        max_opening=float(rng.uniform(0.34, 0.42)),
        jaw_drop=float(rng.uniform(0.5, 0.7)),
        ear_size=float(rng.uniform(0.2, 0.26)),
        glasses=bool(rng.random() < 0.25),
        glasses_color=tuple(int(v) for v in rng.choice([[20, 20, 20], [90, 60, 30], [150, 150, 160], [120, 20, 30]])),
        beard=bool(beard),
        background=(tuple(int(v) for v in top), tuple(int(v) for v in bottom)),
        background_blobs=int(rng.integers(0, 6)),
        shirt_color=shirt,
        light_dir=tuple(float(v) for v in ld),
        light_ambient=float(rng.uniform(0.45, 0.6)),
        blink_interval=float(rng.uniform(2.5, 5.0)),
        voice_variant=variant,
        voice_pitch=int(rng.integers(30, 60) if not feminine else rng.integers(45, 75)),
        texture_seed=int(rng.integers(0, 2**31)),
    )
