"""`emoportrait generate` end to end: the mp4 matches the audio; bad input fails in one line and
leaves no file; fallbacks work; SIGTERM mid-generation leaves no partial mp4."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from emo_gen_helpers import draw_face, speech_like, write_audio, write_empty_wav
from PIL import Image

from emoportrait.cli import main
from emoportrait.data.media import probe_video, read_audio, read_clip_layout, read_video

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cli(capsys):
    """Run `emoportrait generate ...` in-process; returns (exit code, stdout, stderr)."""
    handler, level = signal.getsignal(signal.SIGTERM), logging.getLogger().level

    def invoke(*args):
        try:
            code = main(["generate", "--no-progress", *map(str, args)])
        finally:
            signal.signal(signal.SIGTERM, handler)
            logging.getLogger().setLevel(level)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    return write_audio(tmp_path_factory.mktemp("audio") / "speech.wav", speech_like(1.3, rate=22050), 22050)


def test_generate_matches_the_audio(cli, tiny_model_dir, face_png, speech_wav, tmp_path):
    out = tmp_path / "talk.mp4"
    code, stdout, err = cli("--image", face_png, "--audio", speech_wav, "--out", out, "--model", tiny_model_dir,
                            "--steps", 2, "--seed", 1)
    assert code == 0, err
    assert "33 frames" in stdout and "s/frame" in stdout  # summary line
    info = probe_video(out)
    assert (info.width, info.height, info.fps, info.has_audio) == (64, 64, 25.0, True)
    assert len(read_video(out)) == 33  # round(1.3 s x 25)
    assert abs(read_audio(out).size / 16000 - 1.3) < 0.08  # AAC adds < 1024 samples of padding
    assert [p.name for p in tmp_path.iterdir()] == ["talk.mp4"]  # no temp files left
    import av

    with av.open(str(out)) as container:  # an ordinary mp4: H.264 video, AAC audio
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"


def generate_each(cli, model, face_png, audio, out_dir, steps, option, values, steps_run):
    """One video per value of `option`; the summary line counts `steps_run(value)` backbone steps per clip."""
    videos = {}
    for value in values:
        out = out_dir / f"{option.strip('-')}-{value}.mp4"
        code, stdout, err = cli("--image", face_png, "--audio", audio, "--out", out, "--model", model,
                                "--steps", steps, option, value)
        assert code == 0, err
        assert f"x {steps_run(value)} steps" in stdout
        videos[value] = np.stack(read_video(out)).astype(np.float32)
    return videos


def test_free_init_option(cli, tiny_model_dir, face_png, tmp_path):
    audio = write_audio(tmp_path / "short.wav", speech_like(0.3), 16000)
    # FreeInit's passes count in the summary
    videos = generate_each(cli, tiny_model_dir, face_png, audio, tmp_path, 2, "--free-init-iters", (1, 2),
                           lambda iters: 2 * iters)
    assert videos[1].shape == videos[2].shape and np.abs(videos[1] - videos[2]).mean() > 0.1
    code, _, err = cli("--image", face_png, "--audio", audio, "--out", tmp_path / "bad.mp4", "--model", tiny_model_dir,
                       "--free-init-iters", 0)
    assert code == 2 and err.strip() == "emoportrait generate: error: --free-init-iters must be at least 1, got 0"
    assert not (tmp_path / "bad.mp4").exists()


def test_strength_option(cli, tiny_model_dir, face_png, tmp_path):
    audio = write_audio(tmp_path / "short.wav", speech_like(0.3), 16000)
    # only the last steps run
    videos = generate_each(cli, tiny_model_dir, face_png, audio, tmp_path, 4, "--strength", (1.0, 0.5),
                           lambda strength: int(4 * strength))
    assert videos[1.0].shape == videos[0.5].shape and np.abs(videos[1.0] - videos[0.5]).mean() > 0.1
    for bad, message in (("0", "--strength must be a number in (0, 1] (1 = start from pure noise), got 0.0"),
                         ("nan", "--strength must be a number in (0, 1] (1 = start from pure noise), got nan"),
                         ("0.2", "strength 0.2 with 4 denoising steps runs no step; raise the strength or the steps (at least 5)")):
        code, _, err = cli("--image", face_png, "--audio", audio, "--out", tmp_path / "bad.mp4", "--model",
                           tiny_model_dir, "--steps", 4, "--strength", bad)
        assert code == 2 and err.strip() == f"emoportrait generate: error: {message}"
    code, _, err = cli("--image", face_png, "--audio", audio, "--out", tmp_path / "bad.mp4", "--model", tiny_model_dir,
                       "--strength", 0.5, "--free-init-iters", 2)
    assert code == 2 and err.strip() == ("emoportrait generate: error: --strength below 1 and --free-init-iters do "
                                         "not combine; use one of them")
    assert not (tmp_path / "bad.mp4").exists()
    # A model whose folder names a strength starts from it; FreeInit asked for starts from pure noise instead.
    from emoportrait.pipelines.pipeline_emo import EMOPipeline

    pipe = EMOPipeline.from_pretrained(tiny_model_dir)
    pipe.register_to_config(strength=0.5)
    pipe.save_pretrained(tmp_path / "half")
    for extra, steps in (((), 2), (("--free-init-iters", 2), 8)):
        code, stdout, err = cli("--image", face_png, "--audio", audio, "--out", tmp_path / "h.mp4", "--model",
                                tmp_path / "half", "--steps", 4, *extra)
        assert code == 0 and f"x {steps} steps" in stdout, err


def test_clip_overlap_option(cli, tiny_model_dir, face_png, tmp_path):
    audio = write_audio(tmp_path / "short.wav", speech_like(0.4), 16000)  # 10 frames; F = 4, N = 2
    videos = {}
    for overlap, clips in ((0, 3), (2, 4)):  # ceil(10 / 4); 1 + ceil((10 - 4) / 2)
        out = tmp_path / f"o{overlap}.mp4"
        code, stdout, err = cli("--image", face_png, "--audio", audio, "--out", out, "--model", tiny_model_dir,
                                "--steps", 2, "--clip-overlap", overlap)
        assert code == 0, err
        assert f"10 frames (0.40 s of video, {clips} clips x 2 steps)" in stdout
        videos[overlap] = np.stack(read_video(out)).astype(np.float32)
        assert read_clip_layout(out) == (4, overlap)  # for `evaluate --videos`'s seams
    assert videos[0].shape == videos[2].shape
    assert np.abs(videos[0][4:] - videos[2][4:]).mean() > 0.1 and np.abs(videos[0][:4] - videos[2][:4]).mean() < 2
    for bad, message in (("-1", "--clip-overlap must be a whole number of frames >= 0 (0 = the paper's clips), got -1"),
                         ("3", "--clip-overlap 3 leaves no room in a clip of 4 frames with 2 motion frames; use at most 2")):
        code, _, err = cli("--image", face_png, "--audio", audio, "--out", tmp_path / "bad.mp4", "--model",
                           tiny_model_dir, "--clip-overlap", bad)
        assert code == 2 and err.strip() == f"emoportrait generate: error: {message}"
    assert not (tmp_path / "bad.mp4").exists()


def test_eta_option(cli, tiny_model_dir, face_png, tmp_path):
    audio = write_audio(tmp_path / "short.wav", speech_like(0.3), 16000)
    # eta reaches DDIM's step: eta 0 is deterministic and the default; eta 1 adds noise at every step
    videos = generate_each(cli, tiny_model_dir, face_png, audio, tmp_path, 3, "--eta", (0.0, 1.0), lambda eta: 3)
    code, _, err = cli("--image", face_png, "--audio", audio, "--out", tmp_path / "plain.mp4", "--model",
                       tiny_model_dir, "--steps", 3)
    assert code == 0, err
    plain = np.stack(read_video(tmp_path / "plain.mp4")).astype(np.float32)
    # (the calls denoise to the same latents, but their mp4s have differed by up to 0.5 grey levels on
    # average after a call with another eta in the same process: noise after the backbone, left alone)
    assert np.abs(plain - videos[0.0]).mean() < 1.0 and np.abs(videos[0.0] - videos[1.0]).mean() > 5.0
    for bad in ("-0.5", "nan"):
        code, _, err = cli("--image", face_png, "--audio", audio, "--out", tmp_path / "bad.mp4", "--model",
                           tiny_model_dir, "--eta", bad)
        assert code == 2 and err.strip() == (f"emoportrait generate: error: --eta must be a number >= 0 "
                                             f"(0 = deterministic DDIM), got {float(bad)}")
    # A scheduler without eta takes only the default.
    from diffusers import EulerDiscreteScheduler

    from emoportrait.pipelines.pipeline_emo import EMOPipeline

    pipe = EMOPipeline.from_pretrained(tiny_model_dir)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path / "euler")  # (the loading bars above reach the next call's stderr)
    code, _, err = cli("--image", face_png, "--audio", audio, "--out", tmp_path / "bad.mp4", "--model",
                       tmp_path / "euler", "--steps", 2, "--eta", 1)
    assert code == 2 and err.strip().splitlines()[-1] == ("emoportrait generate: error: --eta 1.0: this model's scheduler "
                                         "(EulerDiscreteScheduler) has no eta; leave --eta out or use a DDIM scheduler")
    assert not (tmp_path / "bad.mp4").exists()


def test_fallback_inputs(cli, tiny_model_dir, tmp_path):
    # 8 kHz stereo ogg, a grayscale 16-bit portrait stored sideways with an EXIF rotation.
    t = np.arange(4000) / 8000
    ogg = write_audio(tmp_path / "voice.ogg", np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)]) * 0.3,
                      8000, codec="vorbis")
    gray16 = (np.asarray(Image.fromarray(draw_face(256)).convert("L"), np.uint16) * 257).astype(np.uint16)
    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(gray16, k=1)))  # displays upright after EXIF 6
    exif = sideways.getexif()
    exif[0x0112] = 6
    sideways.save(tmp_path / "portrait.png", exif=exif)
    out = tmp_path / "o.mp4"
    code, stdout, err = cli("--image", tmp_path / "portrait.png", "--audio", ogg, "--out", out,
                            "--model", tiny_model_dir, "--steps", 1)
    assert code == 0, err
    assert len(read_video(out)) == 13  # 0.5 s
    # Silent audio (a still-ish face) and very short audio (one frame) are valid.
    silent = write_audio(tmp_path / "silence.wav", np.zeros(1600, np.float32), 16000)
    short = write_audio(tmp_path / "short.wav", speech_like(0.015), 16000)
    for audio, frames in ((silent, 3), (short, 1)):
        code, _, err = cli("--image", tmp_path / "portrait.png", "--audio", audio, "--out", out,
                           "--model", tiny_model_dir, "--steps", 1)
        assert code == 0, err
        assert len(read_video(out)) == frames


def _bad_image(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"img_{kind}.png"
    buf = io.BytesIO()
    Image.fromarray(draw_face(128)).save(buf, format="PNG")
    data = buf.getvalue()
    if kind == "missing":
        return path
    payload = {"empty": b"", "truncated": data[: len(data) // 2], "corrupt": data[:30] + os.urandom(3000)}
    if kind in payload:
        path.write_bytes(payload[kind])
    elif kind == "not_image":
        return write_audio(tmp_path / "sound.wav", speech_like(0.2), 16000)
    elif kind == "no_face":
        Image.fromarray(np.full((128, 128, 3), 120, np.uint8)).save(path)
    elif kind == "1x1":
        Image.new("RGB", (1, 1), (200, 150, 120)).save(path)
    return path


def _bad_audio(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"aud_{kind}.wav"
    if kind == "missing":
        return path
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "zero_length":
        write_empty_wav(path)
    elif kind == "corrupt":
        path.write_bytes(b"RIFF" + os.urandom(5000))
    elif kind == "truncated":
        m4a = write_audio(tmp_path / "full.m4a", speech_like(1.0), 16000, codec="aac")
        data = m4a.read_bytes()
        path = tmp_path / "aud_truncated.m4a"
        path.write_bytes(data[: len(data) // 3])
    elif kind == "not_audio":
        path = tmp_path / "picture.wav"
        Image.fromarray(draw_face(64)).save(path, format="PNG")
    return path


IMAGE_CASES = ["missing", "empty", "truncated", "corrupt", "not_image", "no_face", "1x1"]
AUDIO_CASES = ["missing", "empty", "zero_length", "corrupt", "truncated", "not_audio"]


@pytest.mark.parametrize("case", [f"image:{k}" for k in IMAGE_CASES] + [f"audio:{k}" for k in AUDIO_CASES]
                         + ["out:missing_folder", "out:not_writable", "out:not_mp4", "model:missing", "model:no_default",
                            "model:corrupt"])
def test_bad_input_one_line_error_no_output(case, cli, tiny_model_dir, face_png, speech_wav, tmp_path, monkeypatch):
    what, kind = case.split(":")
    image, audio, model = face_png, speech_wav, tiny_model_dir
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "video.mp4"
    if what == "image":
        image = _bad_image(kind, tmp_path)
    elif what == "audio":
        audio = _bad_audio(kind, tmp_path)
    elif kind == "missing_folder":
        out = tmp_path / "nowhere" / "video.mp4"
    elif kind == "not_writable":
        out_dir.chmod(0o555)
        if os.access(out_dir, os.W_OK):  # root ignores permissions: use a folder the kernel refuses
            out_dir = Path("/sys")
            out = out_dir / "video.mp4"
    elif kind == "not_mp4":
        out = out_dir / "video.gif"
    elif case == "model:missing":
        model = tmp_path / "no_such_model"
    elif case == "model:corrupt":
        model = tmp_path / "corrupt_model"
        model.mkdir()
        for item in tiny_model_dir.rglob("*"):
            target = model / item.relative_to(tiny_model_dir)
            if item.is_dir():
                target.mkdir(exist_ok=True)
            else:
                target.write_bytes(item.read_bytes())
        weights = model / "unet" / "diffusion_pytorch_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    before = set(out_dir.iterdir()) if out_dir.exists() else set()
    args = ["--image", image, "--audio", audio, "--out", out, "--steps", 1]
    if case == "model:no_default":
        monkeypatch.setattr("emoportrait.pipelines.loading.DEFAULT_MODEL_DIR", tmp_path / "absent")
    else:
        args += ["--model", model]
    code, stdout, err = cli(*args)
    if out_dir != Path("/sys"):
        out_dir.chmod(0o755)
    assert code == 2, (case, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emoportrait generate: error: "), (case, err)
    assert "Traceback" not in err
    assert not out.exists() and (not out_dir.exists() or set(out_dir.iterdir()) == before), case


def test_sigterm_leaves_no_partial_mp4(tiny_model_dir, face_png, tmp_path):
    # 1500 frames: the rest of the video must take far longer than this process may wait to be scheduled on a
    # loaded machine (with 300 frames a loaded run once exited 0, the video finished, before the signal came).
    audio = write_audio(tmp_path / "long.wav", speech_like(60.0), 16000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "video.mp4"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "emoportrait", "generate", "--image", str(face_png), "--audio", str(audio),
         "--out", str(out), "--model", str(tiny_model_dir), "--steps", "4", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90
        # Wait until the video is being written (its temporary file exists beside the output).
        while not any(out_dir.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1].decode()
        time.sleep(0.5)  # a few frames in
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert "interrupted" in err.decode()
    assert list(out_dir.iterdir()) == []  # neither the mp4 nor its temporary file
