"""Run by test_train_ddp.py under `accelerate launch --num_processes 2 --cpu`: a short stage-1 DDP run.

Each rank writes a fingerprint of its trained weights when the checkpoint is saved, so the test can
check that the ranks ended synchronised.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import ContractDataset, fast_config  # noqa: E402

from emoportrait.training import train as train_module  # noqa: E402


def main(init: str, out: str, steps: int) -> None:
    torch.set_num_threads(1)
    original = train_module.save_checkpoint

    def save_and_fingerprint(accelerator, output_dir, state, cfg, extra=None):
        path = original(accelerator, output_dir, state, cfg, extra)
        module = accelerator.unwrap_model(accelerator._models[0])
        trained = [p.detach().double() for p in module.parameters() if p.requires_grad]
        fp = {"sum": sum(float(p.sum()) for p in trained), "sq": sum(float((p * p).sum()) for p in trained),
              "world": accelerator.num_processes}
        Path(output_dir, f"fingerprint_{accelerator.process_index}.json").write_text(json.dumps(fp))
        return path

    train_module.save_checkpoint = save_and_fingerprint
    cfg = fast_config("1", max_steps=steps, batch_size=2, lr=2e-3)
    train_module.train(cfg, init, out, dataset=ContractDataset("1", num_clips=8))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
