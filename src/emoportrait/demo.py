"""`make demo`: the embedded default model animates an example portrait with an example voice clip.

Writes `demo/output.mp4` (H.264 + AAC) and `demo/contact_sheet.png` (the reference beside frames
sampled across the video). Usage: `python -m emoportrait.demo --out demo [--image I] [--audio A]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from emoportrait.errors import EMOError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def contact_sheet(reference: np.ndarray, frames: np.ndarray, columns: int = 8, size: int = 160) -> Image.Image:
    """Reference portrait, then `columns` frames evenly spaced over the video, in one labelled row."""
    picks = np.linspace(0, len(frames) - 1, num=min(columns, len(frames))).round().astype(int)
    tiles = [("reference", reference)] + [(f"frame {i} ({i / 25:.2f} s)", frames[i]) for i in picks]
    sheet = Image.new("RGB", (size * len(tiles), size + 18), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (label, img) in enumerate(tiles):
        sheet.paste(Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS), (k * size, 18))
        draw.text((k * size + 4, 3), label, fill="black")
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emoportrait.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo", help="output folder (default: demo)")
    parser.add_argument("--image", default=str(EXAMPLES / "portraits" / "portrait_0.png"))
    parser.add_argument("--audio", default=str(EXAMPLES / "audio" / "voice_1_en.wav"))
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from emoportrait.atomic import atomic_path
    from emoportrait.cli import main as cli_main
    from emoportrait.data.media import read_video
    from emoportrait.pipelines.preprocessing import load_image

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    video = out / "output.mp4"
    cmd = ["generate", "--image", args.image, "--audio", args.audio, "--out", str(video),
           "--steps", str(args.steps), "--seed", str(args.seed)]
    if args.model:
        cmd += ["--model", args.model]
    start = time.perf_counter()
    rc = cli_main(cmd)
    if rc != 0:
        return rc
    try:
        frames = read_video(video)
        reference = load_image(args.image)
    except EMOError as e:
        print(f"emoportrait demo: error: {e}", file=sys.stderr)
        return 2
    with atomic_path(out / "contact_sheet.png") as tmp:
        contact_sheet(reference, frames).save(tmp, format="PNG")
    seconds = time.perf_counter() - start
    print(f"demo: {video} and {out / 'contact_sheet.png'} in {seconds:.1f} s "
          f"({seconds / len(frames):.2f} s/frame, {len(frames)} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
