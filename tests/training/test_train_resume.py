"""A run killed at step k and resumed reaches the weights and losses of an uninterrupted run (CPU)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from train_fixtures import ContractDataset, fast_config

from emoportrait.training import logging as train_logging
from emoportrait.training.logging import read_log
from emoportrait.training.train import train


def _config():
    # Every source of randomness on: condition dropout, motion zeroing, EMA, accumulation, a new epoch
    # mid-run (3 clips, 2 micro-batches per step), warm-up + cosine schedule.
    cfg = fast_config("2", max_steps=3, batch_size=1, checkpoint_every=1, force=True)
    cfg.gradient_accumulation_steps = 2
    cfg.dropout.reference = cfg.dropout.audio = cfg.dropout.motion = 0.3
    cfg.ema.enabled = True
    cfg.ema.decay = 0.9
    cfg.optim.warmup_steps = 1
    cfg.optim.schedule = "cosine"
    return cfg


def test_resume_after_kill_matches_uninterrupted_run(tiny_model_dir, tmp_path, monkeypatch):
    full = train(_config(), tiny_model_dir, tmp_path / "full", dataset=ContractDataset("2", num_clips=3))

    original = train_logging.RunLogger.log

    def die_at_step_3(self, step, metrics):
        original(self, step, metrics)
        if step == 3:
            raise KeyboardInterrupt  # killed after step 3's update, before its checkpoint

    monkeypatch.setattr(train_logging.RunLogger, "log", die_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(_config(), tiny_model_dir, tmp_path / "killed", dataset=ContractDataset("2", num_clips=3))
    monkeypatch.setattr(train_logging.RunLogger, "log", original)
    assert not (tmp_path / "killed" / "model").exists()
    resumed = train(_config(), tiny_model_dir, tmp_path / "killed", resume="latest", dataset=ContractDataset("2", num_clips=3))

    full_log, resumed_log = read_log(tmp_path / "full" / "log.jsonl"), read_log(tmp_path / "killed" / "log.jsonl")
    assert [r["step"] for r in resumed_log] == [1, 2, 3]
    for a, b in zip(full_log, resumed_log):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
        assert a["lr"] == pytest.approx(b["lr"])
    for part in ("unet", "audio_proj"):
        wa = load_file(str(full / part / "diffusion_pytorch_model.safetensors"))
        wb = load_file(str(resumed / part / "diffusion_pytorch_model.safetensors"))
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=f"{part}.{k}")
