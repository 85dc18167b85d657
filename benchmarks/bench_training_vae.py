"""Training benchmark: a VAE-stage step in fp32 vs under bf16 autocast (`mixed_precision: bf16`).

The recipe's two VAE stages (the tiny VAE stand-in, then its decoder alone) are a third of its
training time. On a randomly initialised VAE of the chosen size, with the tiny configs' batch (4
stage-1 samples, so 8 frames at the model's resolution), one run measures the median seconds of a
whole step (forward, backward, optimizer) of `VAETrainingModule`:

- vae: the whole VAE trains (configs/tiny/vae.yaml);
- decoder: only the decoder trains, the encoder runs without gradients (configs/tiny/vae_decoder.yaml);

each in fp32 and under `torch.autocast(dtype=bfloat16)` (what accelerate wraps the forward in for
`mixed_precision: bf16`; the weights and the optimizer stay fp32), and reports fp32 / bf16.
bf16 is fast only on CPUs with bf16 instructions (avx512_bf16 or AMX) and on GPUs.

Usage:
    .venv/bin/python benchmarks/bench_training_vae.py [--size tiny|full] [--device cpu|cuda] [--threads N] [--repeats 7]
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import torch
from bench_generate import timed, training_bench_args  # median of repeats; the common options

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main(argv: list[str] | None = None) -> int:
    args = training_bench_args(__doc__.splitlines()[0], argv)

    from emoportrait.models import build_components, load_model_config
    from emoportrait.training.module import VAETrainingModule
    from emoportrait.training.parts import set_trainable

    cfg = load_model_config(args.size)
    dev = args.device
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(8, 3, cfg.resolution, cfg.resolution, generator=g) * 2 - 1).to(dev)
    report: dict = {"size": args.size, "device": dev, "threads": torch.get_num_threads(), "frames_per_step": 8,
                    "stages": {}}
    for stage, groups in (("vae", ("vae",)), ("decoder", ("vae_decoder",))):
        module = VAETrainingModule(build_components(cfg, seed=0)["vae"].to(dev)).train()
        params = set_trainable(module, groups)
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        seconds = {}
        for name, ctx in (("fp32", contextlib.nullcontext),
                          ("bf16", lambda: torch.autocast(torch.device(dev).type, dtype=torch.bfloat16))):
            def step(ctx=ctx, module=module, optimizer=optimizer):
                with ctx():
                    loss = module(pixels)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            seconds[name] = timed(step, dev, args.repeats)
        report["stages"][stage] = {"step_s": {k: round(v, 4) for k, v in seconds.items()},
                                   "speedup_bf16": round(seconds["fp32"] / seconds["bf16"], 2)}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
