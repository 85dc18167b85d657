"""Render the example inputs under examples/: portraits and voice clips the default model never saw.

They come from a synthetic world with a seed of its own (the training world uses seed 0), so the
identities and sentences are new to the model. Run: `.venv/bin/python scripts/make_examples.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from emoportrait.data.media import read_audio, read_video

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "examples"
SEED = 20241127  # not the training world's seed


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = 16000) -> None:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        subprocess.run([sys.executable, "-m", "emoportrait", "synth", "--out", str(world), "--identities", "3",
                        "--clips-per-identity", "1", "--seconds", "4", "--size", "256", "--seed", str(SEED),
                        "--no-progress", "--sung_fraction=0.0"],
                       check=True)
        manifest = json.loads((world / "manifest.json").read_text())
        OUT.mkdir(exist_ok=True)
        (OUT / "portraits").mkdir(exist_ok=True)
        (OUT / "audio").mkdir(exist_ok=True)
        for i, clip in enumerate(manifest["clips"]):
            video = world / clip["video"]
            first = read_video(video, max_frames=1)[0]
            Image.fromarray(first).save(OUT / "portraits" / f"portrait_{i}.png", optimize=True)
            write_wav(OUT / "audio" / f"voice_{i}_{clip['language']}.wav", read_audio(video))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
