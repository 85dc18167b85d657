"""The behaviour test's 2-frame generation (tests/pipelines/test_default_model.py) over several seeds and
portraits: how many generated frames hold a face, and how much the mouth region changes between an open
vowel and silence against the rest of the frame. One line per (portrait, seed), then the face count.

    python scripts/two_frame_check.py MODEL [--seeds 0 1 2 3] [--portraits 2 1] [--steps 10]
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from emoportrait import EMOPipeline
from emoportrait.data.faces import FaceDetector
from emoportrait.data.media import read_audio
from emoportrait.evaluation.model_checks import loudest_window, mouth_change
from emoportrait.pipelines.preprocessing import prepare_reference

EXAMPLES = Path(__file__).parents[1] / "examples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--portraits", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    pipe = EMOPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    vowel = loudest_window(read_audio(EXAMPLES / "audio" / "voice_1_en.wav"), 2)
    found = total = 0
    with FaceDetector() as det:
        for p in args.portraits:
            portrait = str(EXAMPLES / "portraits" / f"portrait_{p}.png")
            ref = prepare_reference(portrait, pipe.sample_size).image.astype(float)
            for seed in args.seeds:
                frames = {}
                for name, audio in (("vowel", vowel), ("silence", np.zeros_like(vowel))):
                    out = pipe(portrait, audio, num_inference_steps=args.steps,
                               generator=torch.Generator().manual_seed(seed)).frames
                    frames[name] = (out[0] * 255).round().astype(np.uint8)
                boxes = {k: [det.detect(f) for f in v] for k, v in frames.items()}
                n = sum(b is not None for v in boxes.values() for b in v)
                found, total = found + n, total + sum(len(v) for v in boxes.values())
                copied = min(np.abs(f.astype(float) - ref).mean() for v in frames.values() for f in v)
                line = f"portrait_{p} seed {seed}: faces {n}/4, min difference to the reference {copied:.1f}"
                if boxes["silence"][0] is not None:
                    mouth, elsewhere = mouth_change(frames["vowel"], frames["silence"], boxes["silence"][0])
                    line += f", mouth {mouth:.1f} vs elsewhere {elsewhere:.1f}"
                print(line, flush=True)
    print(f"generated frames with a face: {found} of {total}")


if __name__ == "__main__":
    main()
