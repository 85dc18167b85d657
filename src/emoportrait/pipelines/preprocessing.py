"""Generation inputs: the reference portrait (read, framed around the face, masked) and the audio.

Framing of the reference image (documented in docs/generate.md):

1. The image is read in any mode Pillow reads (grayscale, palette, RGBA/LA, CMYK, 16-bit, float)
   and turned upright with its EXIF orientation. Transparent pixels are composited on white;
   16-bit and float images are scaled to 8 bits by their full range.
2. Images whose long side exceeds `MAX_SIDE` px are downscaled first (JPEGs already while decoding),
   so a 50-megapixel photo costs no more than a 2-megapixel one.
3. The face is detected (MediaPipe face detection, as in paper section 4.1, through
   `emoportrait.data.faces.FaceDetector`); with several faces the largest box is used.
4. Framing matches training. Preprocessing crops each training clip to a square of
   `TRAIN_CROP_SCALE` (1.6) x the larger side of the union of the clip's face boxes, centred on the
   union (`emoportrait.data.preprocess`), and the face-region mask M (paper 3.2, Face Locator) is
   that union. One photo has one box, so the union is estimated as the box enlarged
   `MASK_SCALE` (1.2) times about its centre (on synthetic-world clips the union is 1.01-1.22x a
   single box, median 1.12, for 2 s clips; real 10 s clips move more). Hence the crop is a square of
   `CROP_SCALE` = 1.6 x 1.2 = 1.92 x the box's long side centred on the box (the face fills about
   half the frame: head, hair and neck visible). Where that square leaves the image it is shrunk
   to the image's short side and shifted inside, so the crop never contains invented pixels.
5. The crop is resized to the model's square size (Lanczos).
6. The mask M is the enlarged box in crop coordinates, clipped to the frame.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emoportrait.data.media import FPS, SAMPLE_RATE, read_audio
from emoportrait.errors import EMOError

MAX_SIDE = 2048  # px; longer images are downscaled before face detection
MIN_SIDE = 32  # px; smaller images cannot hold a recognisable face
TRAIN_CROP_SCALE = 1.6  # = emoportrait.data.preprocess.PreprocessConfig.crop_scale (tested)
MASK_SCALE = 1.2  # estimated face-box union of a clip / one face box (per axis)
CROP_SCALE = TRAIN_CROP_SCALE * MASK_SCALE  # crop side / face box long side (1.92)

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) pixels, x1/y1 exclusive


@dataclass
class PreparedReference:
    """A reference portrait ready for the pipeline.

    Attributes:
        image: (S, S, 3) uint8 RGB square crop at the model's size S.
        face_mask: (S, S) float32 face-region mask M in {0, 1}.
        face_box: the detected face box in crop pixel coordinates (x0, y0, x1, y1).
        crop_box: the square crop in the (possibly downscaled) source image's pixels.
    """

    image: np.ndarray
    face_mask: np.ndarray
    face_box: Box
    crop_box: Box


# --------------------------------------------------------------------------- image reading


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB (alpha composited on white, high bit depths rescaled)."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            hi = 1.0 if a.size and np.nanmax(a) <= 1.0 else 255.0 if a.size and np.nanmax(a) <= 255 else 65535.0
        else:
            hi = 65535.0 if img.mode.startswith("I;16") or (a.size and a.max() > 255) else 255.0
        a = np.clip(np.nan_to_num(a) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(a, mode="L")
    if (img.mode == "P" and "transparency" in img.info) or img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def _open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise EMOError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise EMOError(f"{path}: image file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
            # JPEG decoders can scale by 1/2..1/8 while decoding: huge photos never reach full size.
            img.draft("RGB", (MAX_SIDE, MAX_SIDE))
            img.load()
    except Image.DecompressionBombError:
        raise EMOError(f"{path}: image has too many pixels to read safely; downscale it below 170 megapixels") from None
    except UnidentifiedImageError:
        raise EMOError(f"{path}: not an image file Pillow can read (use PNG, JPEG, WebP, BMP or TIFF)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise EMOError(f"{path}: image file is truncated or corrupt ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return img


def load_image(image: str | os.PathLike | Image.Image | np.ndarray) -> np.ndarray:
    """Read a portrait as an upright 8-bit RGB array, downscaled to at most `MAX_SIDE` px.

    Args:
        image: a file path, a PIL image (any mode), or an array: (H, W) or (H, W, 1|3|4), uint8,
            uint16 or float in [0, 1].

    Returns:
        (H, W, 3) uint8 RGB.
    """
    what = "reference image"
    if isinstance(image, (str, os.PathLike)):
        img = _open_image(Path(image))
        what = f"{image}: image"
    elif isinstance(image, Image.Image):
        img = image
    elif isinstance(image, np.ndarray):
        img = _array_to_pil(image)
    else:
        raise EMOError(f"reference image must be a path, a PIL image or an array, got {type(image).__name__}")
    img = ImageOps.exif_transpose(img) or img  # EXIF orientation -> upright pixels
    img = _to_rgb(img)
    if min(img.size) < MIN_SIDE:
        w, h = img.size
        raise EMOError(f"{what} is {w}x{h} px; use a portrait at least {MIN_SIDE}x{MIN_SIDE} px")
    if max(img.size) > MAX_SIDE:
        img = img.copy()
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8).copy()


def _array_to_pil(a: np.ndarray) -> Image.Image:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise EMOError(f"reference image array must be (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.dtype == np.uint16:
        a = (a.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        a = (np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return Image.fromarray(a)


# --------------------------------------------------------------------------- framing

_DETECTOR = None


def default_face_detector():
    """The project's face detector (MediaPipe, paper section 4.1), created once per process."""
    global _DETECTOR
    if _DETECTOR is None:
        from emoportrait.data.faces import FaceDetector

        _DETECTOR = FaceDetector(backend="mediapipe")
    return _DETECTOR


def square_crop_box(face_box: Box, width: int, height: int, crop_scale: float = CROP_SCALE) -> Box:
    """The square crop around a face box that stays inside a (width x height) image.

    Side = `crop_scale` x the box's long side, capped at the image's short side; centred on the box
    and shifted inside the image when it would leave it.
    """
    x0, y0, x1, y1 = face_box
    side = min(crop_scale * max(x1 - x0, y1 - y0), width, height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(cx - side / 2, 0.0), width - side)
    top = min(max(cy - side / 2, 0.0), height - side)
    return (left, top, left + side, top + side)


def face_region_mask(face_box: Box, size: int, mask_scale: float = MASK_SCALE) -> np.ndarray:
    """Face-region mask M: the box enlarged by `mask_scale` about its centre, clipped to the frame.

    Returns:
        (size, size) float32 in {0, 1}.
    """
    x0, y0, x1, y1 = face_box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - x0) * mask_scale / 2, (y1 - y0) * mask_scale / 2
    c0, c1 = int(np.clip(np.floor(cx - hw), 0, size)), int(np.clip(np.ceil(cx + hw), 0, size))
    r0, r1 = int(np.clip(np.floor(cy - hh), 0, size)), int(np.clip(np.ceil(cy + hh), 0, size))
    mask = np.zeros((size, size), np.float32)
    mask[r0:r1, c0:c1] = 1.0
    return mask


def prepare_reference(
    image: str | os.PathLike | Image.Image | np.ndarray,
    size: int,
    detector=None,
    face_box: Box | None = None,
    crop_scale: float = CROP_SCALE,
    mask_scale: float = MASK_SCALE,
) -> PreparedReference:
    """Read a portrait, find the face, crop a square around it at `size` px and build the mask M.

    Args:
        image: path, PIL image or array (see `load_image`).
        size: the model's frame size S in pixels.
        detector: object with `detect(rgb (H, W, 3) uint8) -> (x0, y0, x1, y1) | None`; defaults to
            `default_face_detector()`.
        face_box: a known face box in the (downscaled, upright) image's pixels; skips detection.
        crop_scale, mask_scale: framing, see the module docstring.
    """
    rgb = load_image(image)
    h, w = rgb.shape[:2]
    if face_box is None:
        detector = detector if detector is not None else default_face_detector()
        face_box = detector.detect(rgb)
        if face_box is None:
            raise EMOError("no face found in the reference image; use a photo with one clearly visible, roughly frontal face")
    fx0, fy0, fx1, fy1 = (float(v) for v in face_box)
    fx0, fx1 = max(0.0, min(fx0, fx1)), min(float(w), max(fx0, fx1))
    fy0, fy1 = max(0.0, min(fy0, fy1)), min(float(h), max(fy0, fy1))
    if fx1 - fx0 < 2 or fy1 - fy0 < 2:
        raise EMOError("the face in the reference image is too small; use a photo where the face is larger")
    crop = square_crop_box((fx0, fy0, fx1, fy1), w, h, crop_scale)
    pil = Image.fromarray(rgb).resize((size, size), Image.Resampling.LANCZOS, box=crop)
    scale = size / (crop[2] - crop[0])
    box_in_crop = ((fx0 - crop[0]) * scale, (fy0 - crop[1]) * scale, (fx1 - crop[0]) * scale, (fy1 - crop[1]) * scale)
    return PreparedReference(
        image=np.asarray(pil, dtype=np.uint8).copy(),
        face_mask=face_region_mask(box_in_crop, size, mask_scale),
        face_box=box_in_crop,
        crop_box=crop,
    )


# --------------------------------------------------------------------------- audio


def load_audio(audio, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The driving audio as (S,) float32 mono at `sample_rate` (16 kHz, wav2vec2's rate).

    Args:
        audio: a file path (any container/codec/rate/channels PyAV reads; resampled), or an array /
            tensor already at `sample_rate`: (S,), or (C, S) / (S, C) multichannel (averaged).
    """
    if isinstance(audio, (str, os.PathLike)):
        return read_audio(audio, sample_rate=sample_rate)
    if hasattr(audio, "detach"):  # torch tensor
        audio = audio.detach().float().cpu().numpy()
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 2:
        a = a.mean(axis=0 if a.shape[0] < a.shape[1] else 1)
    if a.ndim != 1:
        raise EMOError(f"audio array must be (S,) or (C, S) samples, got shape {a.shape}")
    if a.size == 0:
        raise EMOError("audio is empty (zero samples); give a voice recording of at least one video frame (40 ms)")
    return np.clip(np.nan_to_num(a), -1.0, 1.0)


def num_video_frames(num_samples: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> int:
    """Frames of the output video: duration x fps rounded half up, at least 1 (very short audio)."""
    return max(1, int(np.floor(num_samples * fps / sample_rate + 0.5)))
