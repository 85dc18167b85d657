"""Copy a trained model folder into the package as the embedded default model, its weights stored in float16.

Float32 tensors are written as float16 (half the bytes; the loaders cast them back to the dtype asked for,
float32 by default), except the audio encoder's, which stays float32 as at run time (pipelines/loading.py).
Every other file is copied as it is. The new folder is written beside the old one and swapped in only when it
is complete (emoportrait.atomic.atomic_dir), so a run interrupted while writing leaves the old model in place.

    python scripts/ship_default_model.py runs/default/decoder/model [--out src/emoportrait/assets/default_model]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from emoportrait.atomic import atomic_dir

ROOT = Path(__file__).resolve().parents[1]
KEEP_FLOAT32 = {"audio_encoder"}


def ship(src: Path, out: Path) -> tuple[int, int]:
    """Write `src` to `out` with float16 weights; returns (bytes of weights before, after)."""
    if not (src / "model_index.json").is_file():
        raise SystemExit(f"{src}: not a model folder (no model_index.json)")
    before = after = 0
    with atomic_dir(out) as tmp:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.safetensors"), dirs_exist_ok=True)
        for f in sorted(src.rglob("*.safetensors")):
            rel = f.relative_to(src)
            with safe_open(str(f), framework="pt") as g:
                metadata = g.metadata()
                tensors = {k: g.get_tensor(k) for k in g.keys()}
            if rel.parts[0] not in KEEP_FLOAT32:
                tensors = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
            save_file(tensors, str(tmp / rel), metadata=metadata)
            before += f.stat().st_size
            after += (tmp / rel).stat().st_size
        record = tmp / "emo_training.json"
        if record.is_file():  # say where the shipped copy came from and how it was stored
            info = json.loads(record.read_text())
            info["shipped"] = {"from": str(src), "weights": "float16 (audio_encoder float32)",
                               "tool": "scripts/ship_default_model.py"}
            record.write_text(json.dumps(info, indent=2) + "\n")
    return before, after


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="trained model folder (the recipe's WORK/decoder/model)")
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "emoportrait" / "assets" / "default_model")
    args = ap.parse_args()
    before, after = ship(args.model, args.out)
    print(f"{args.out}: {after / 2**20:.1f} MiB of safetensors (float32 {before / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
