"""Reference-image and audio preparation: any mode/format, EXIF, huge images, framing, bad files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from emo_gen_helpers import draw_face, speech_like, write_audio, write_empty_wav
from PIL import Image

from emoportrait.errors import EMOError
from emoportrait.pipelines import preprocessing as pp


class BoxDetector:
    """Stand-in face detector returning a fixed box (or None), counting calls."""

    def __init__(self, box):
        self.box, self.calls = box, 0

    def detect(self, rgb):
        self.calls += 1
        return None if self.box is None else np.asarray(self.box, dtype=np.float64)


def test_modes_become_rgb(tmp_path):
    face = draw_face(96)
    gray = Image.fromarray(face).convert("L")
    cases = {
        "gray.png": gray,
        "rgba.png": Image.fromarray(face).convert("RGBA"),
        "cmyk.jpg": Image.fromarray(face).convert("CMYK"),
        "palette.png": Image.fromarray(face).convert("P"),
        "bw.png": Image.fromarray(face).convert("1"),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        out = pp.load_image(tmp_path / name)
        assert out.shape == (96, 96, 3) and out.dtype == np.uint8, name
    # 16-bit grayscale keeps its full range (not clipped to white).
    g16 = (np.asarray(gray, np.uint16) * 257).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = pp.load_image(tmp_path / "g16.png")
    assert np.abs(out[:, :, 0].astype(int) - np.asarray(gray, int)).max() <= 1
    # Transparent pixels are composited on white.
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:20, :, :3] = (10, 200, 30)
    rgba[:20, :, 3] = 255
    out = pp.load_image(Image.fromarray(rgba, "RGBA"))
    assert (out[30, 5] == 255).all() and tuple(out[5, 5]) == (10, 200, 30)
    # Arrays: float in [0, 1] and uint16.
    assert pp.load_image(face.astype(np.float32) / 255.0).tolist() == face.tolist()
    assert pp.load_image(face.astype(np.uint16) * 257).tolist() == face.tolist()


def test_exif_rotation_is_applied(tmp_path):
    # Stored landscape with the top half red; orientation 6 = "rotate 90 CW to display".
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:20] = (255, 0, 0)
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = pp.load_image(tmp_path / "rot.jpg")
    assert out.shape == (80, 40, 3)  # upright: portrait
    # After a 90 degree clockwise turn the red (top) half is on the right.
    assert out[40, 30, 0] > 200 and out[40, 30, 2] < 60 and out[40, 5, 0] < 60


def test_huge_image_is_downscaled(tmp_path):
    big = Image.fromarray(draw_face(256)).resize((6000, 4000))
    big.save(tmp_path / "big.jpg", quality=80)
    out = pp.load_image(tmp_path / "big.jpg")
    assert max(out.shape[:2]) == pp.MAX_SIDE and out.shape[1] > out.shape[0]
    big.resize((3000, 2000)).save(tmp_path / "big.png")
    assert max(pp.load_image(tmp_path / "big.png").shape[:2]) == pp.MAX_SIDE


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "corrupt", "text", "audio", "tiny"])
def test_bad_images_raise_one_line(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    buf = io.BytesIO()
    Image.fromarray(draw_face(64)).save(buf, format="PNG")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "corrupt":
        path.write_bytes(buf.getvalue()[:40] + np.random.RandomState(0).bytes(2000))
    elif kind == "text":
        path.write_text("hello, not an image\n")
    elif kind == "audio":
        path = write_audio(tmp_path / "a.wav", speech_like(0.2), 16000)
    elif kind == "tiny":
        Image.new("RGB", (1, 1)).save(path)
    with pytest.raises(EMOError) as err:
        pp.prepare_reference(path, 64, detector=BoxDetector((0, 0, 10, 10)))
    assert "\n" not in str(err.value) and path.name in str(err.value)


def test_no_face_is_an_error():
    with pytest.raises(EMOError, match="no face"):
        pp.prepare_reference(np.full((64, 64, 3), 128, np.uint8), 64, detector=BoxDetector(None))


def test_framing_and_mask():
    # Face box 40x50 at the centre of a 400x300 image: crop side 2 x 50 = 100, centred on the box.
    det = BoxDetector((180, 125, 220, 175))
    ref = pp.prepare_reference(np.zeros((300, 400, 3), np.uint8), 64, detector=det, crop_scale=2.0, mask_scale=1.5)
    assert det.calls == 1
    assert ref.crop_box == pytest.approx((150, 100, 250, 200))
    assert ref.image.shape == (64, 64, 3)
    # Box in crop pixels: (30..70, 25..75) of 100 -> x 19.2..44.8, y 16..48 at 64 px.
    assert ref.face_box == pytest.approx((19.2, 16.0, 44.8, 48.0))
    ys, xs = np.nonzero(ref.face_mask)
    # Enlarged 1.5x about the centre (32, 32): width 25.6 -> 38.4, height 32 -> 48 (pixel-rounded).
    assert xs.min() == 12 and xs.max() == 51 and ys.min() == 8 and ys.max() == 55
    assert set(np.unique(ref.face_mask)) == {0.0, 1.0}
    # A face near the corner: the crop shrinks to fit and shifts inside; no padded pixels.
    crop = pp.square_crop_box((0, 0, 150, 150), 400, 200)
    assert crop == (0, 0, 200, 200)


def test_framing_matches_training_crops():
    from emoportrait.data.preprocess import PreprocessConfig

    assert pp.TRAIN_CROP_SCALE == PreprocessConfig().crop_scale
    assert pp.CROP_SCALE == pytest.approx(pp.TRAIN_CROP_SCALE * pp.MASK_SCALE)
    # Training crops 1.6 x the union around the union; the mask is the union: the same ratio here.
    ref = pp.prepare_reference(np.zeros((600, 600, 3), np.uint8), 64, detector=BoxDetector((250, 240, 350, 360)))
    ys, xs = np.nonzero(ref.face_mask)
    union_side = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    assert 64 / union_side == pytest.approx(pp.TRAIN_CROP_SCALE, rel=0.03)


def test_real_detector_frames_the_drawn_face():
    face = draw_face(256)
    canvas = np.full((400, 600, 3), (90, 120, 160), np.uint8)
    canvas[100:356, 300:556] = face
    ref = pp.prepare_reference(canvas, 64)  # MediaPipe
    x0, y0, x1, y1 = ref.face_box
    # The face ends up near the centre of the crop, filling about half of it.
    assert abs((x0 + x1) / 2 - 32) < 6 and abs((y0 + y1) / 2 - 32) < 8
    assert 0.3 < (x1 - x0) / 64 < 0.7


def test_audio_inputs(tmp_path):
    t = np.arange(16000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 500 * t)]) * 0.3  # 2 s at 8 kHz
    ogg = write_audio(tmp_path / "a.ogg", stereo, 8000, codec="vorbis")
    audio = pp.load_audio(ogg)
    assert audio.dtype == np.float32 and abs(audio.size / 16000 - 2.0) < 0.05
    assert pp.num_video_frames(audio.size) == 50
    # Arrays: (S,), (C, S) and (S, C), assumed 16 kHz.
    a = speech_like(0.5)
    assert pp.load_audio(a).shape == (8000,)
    assert pp.load_audio(np.stack([a, a])).shape == (8000,)
    assert pp.load_audio(np.stack([a, a], 1)).shape == (8000,)
    with pytest.raises(EMOError, match="empty"):
        pp.load_audio(np.zeros(0, np.float32))
    with pytest.raises(EMOError, match="empty"):
        pp.load_audio(write_empty_wav(tmp_path / "zero.wav"))
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(EMOError, match="empty"):
        pp.load_audio(tmp_path / "empty.wav")
    Image.fromarray(draw_face(64)).save(tmp_path / "img.png")
    with pytest.raises(EMOError):
        pp.load_audio(tmp_path / "img.png")
    with pytest.raises(EMOError, match="not found"):
        pp.load_audio(tmp_path / "missing.wav")


def test_frame_count_rounding():
    assert pp.num_video_frames(1) == 1  # very short audio: at least one frame
    assert pp.num_video_frames(16000) == 25
    assert pp.num_video_frames(16000 + 320) == 26  # 1.02 s -> round(25.5) = 26 (half up)
    assert pp.num_video_frames(16000 + 319) == 25
