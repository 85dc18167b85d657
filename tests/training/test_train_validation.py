"""Validation videos: written at the interval from held-out shards, without changing the training run."""

from __future__ import annotations

import numpy as np
import pytest
from train_fixtures import ContractDataset, fast_config, write_shards

from emoportrait.data.media import probe_video, read_video
from emoportrait.errors import EMOError
from emoportrait.training.logging import read_log
from emoportrait.training.train import train


def test_validation_video_and_sheet_leave_the_run_unchanged(tiny_model_dir, tmp_path):
    held_out = write_shards(tmp_path / "val", num_clips=1, seed=9)

    def run(out, validate):
        cfg = fast_config("2", max_steps=2, batch_size=1, force=True)
        if validate:
            cfg.data.validation = str(held_out)
            cfg.log.validation_every = 1
            cfg.log.validation_steps = 2
            cfg.log.validation_seconds = 0.4
        train(cfg, tiny_model_dir, out, dataset=ContractDataset("2", num_clips=2))
        return [r["loss"] for r in read_log(out / "log.jsonl")]

    plain = run(tmp_path / "plain", False)
    validated = run(tmp_path / "validated", True)
    assert plain == validated, "validation must not consume the training RNG streams"
    for step in (1, 2):
        video = tmp_path / "validated" / "validation" / f"step-{step:06d}.mp4"
        assert len(read_video(video)) == 10 and probe_video(video).has_audio
        from PIL import Image

        sheet = np.asarray(Image.open(video.with_suffix(".png")))
        assert sheet.shape[0] == 32 and sheet.shape[1] > 32 * 8


def test_validation_without_inputs_fails_before_training(tiny_model_dir, tmp_path):
    cfg = fast_config("2", force=True)
    cfg.log.validation_every = 1
    with pytest.raises(EMOError, match="data.validation"):
        train(cfg, tiny_model_dir, tmp_path / "out", dataset=ContractDataset("2"))
    assert not (tmp_path / "out").exists()
