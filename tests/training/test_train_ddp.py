"""DDP: two CPU processes under `accelerate launch` train, stay synchronised, save one checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from emoportrait.training.logging import read_log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_cpu_ddp_trains_syncs_and_checkpoints(tiny_model_dir, tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate launcher is not installed")
    out = tmp_path / "run"
    steps = 12
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # accelerate 1.x runs `--cpu --num_processes 2` as one process without MPI; the CPU DDP config uses
    # its torchrun launcher, and train() picks CPU + gloo when there is no GPU.
    config = Path(__file__).parents[2] / "configs" / "accelerate" / "cpu_ddp.yaml"
    cmd = [accelerate, "launch", "--config_file", str(config), "--num_processes", "2", "--main_process_port", str(_free_port()),
           str(Path(__file__).parent / "ddp_train_script.py"), str(tiny_model_dir), str(out), str(steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    fps = [json.loads((out / f"fingerprint_{r}.json").read_text()) for r in (0, 1)]
    assert fps[0]["world"] == fps[1]["world"] == 2
    assert fps[0]["sum"] == fps[1]["sum"] and fps[0]["sq"] == fps[1]["sq"], "ranks diverged: gradients not synchronised"
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == [f"checkpoint-{steps:06d}"]
    assert {"rng_0.pt", "rng_1.pt"} <= {p.name for p in (out / "checkpoints" / ckpts[0]).iterdir()}
    assert (out / "model" / "model_index.json").is_file()

    losses = [r["loss"] for r in read_log(out / "log.jsonl")]
    assert len(losses) == steps
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first, f"loss did not decrease: {losses}"
