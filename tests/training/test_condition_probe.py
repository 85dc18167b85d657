"""The condition probe: the loss with the right vs a shuffled / zeroed reference and audio."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from train_fixtures import write_shards

from emoportrait.evaluation.condition_probe import main, probe_conditions
from emoportrait.pipelines.loading import load_pipeline


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("probe_shards") / "train", num_clips=4)


@pytest.fixture(scope="module")
def deaf_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with an audio projection whose output does not depend on its input."""
    out = tmp_path_factory.mktemp("deaf") / "model"
    shutil.copytree(tiny_model_dir, out)
    pipe = load_pipeline(out)
    last = pipe.audio_proj.proj[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    pipe.audio_proj.save_pretrained(out / "audio_proj")
    return out


def test_a_model_that_cannot_hear_has_no_audio_gap_but_a_reference_gap(deaf_model, shards):
    result = probe_conditions(deaf_model, shards, "2", num_samples=4, repeats=1, batch_size=3)
    loss = result["loss"]
    assert set(loss) == {"right", "reference_shuffled", "reference_zero", "audio_shuffled", "audio_zero"}
    assert all(math.isfinite(v) for v in loss.values())
    assert result["samples"] == 4  # 3 + a lone fourth sample joined to the first batch
    assert loss["audio_shuffled"] == loss["right"] and loss["audio_zero"] == loss["right"]
    assert result["gap"]["audio"] == 0.0
    assert loss["reference_shuffled"] != loss["right"] and loss["reference_zero"] != loss["right"]
    assert result["gap"]["reference"] == pytest.approx(loss["reference_shuffled"] - loss["right"], abs=1e-6)


def test_the_probe_is_deterministic_and_stage_1_has_no_audio(tiny_model_dir, shards, tmp_path, capsys):
    a = probe_conditions(tiny_model_dir, shards, "1", num_samples=4, repeats=2)
    b = probe_conditions(tiny_model_dir, shards, "1", num_samples=4, repeats=2)
    assert a == b and set(a["loss"]) == {"right", "reference_shuffled", "reference_zero"} and "audio" not in a["gap"]
    out = tmp_path / "probe.json"
    assert main(["--model", str(tiny_model_dir), "--data", str(shards), "--stage", "1", "--samples", "4",
                 "--repeats", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == a
    assert main(["--model", str(tiny_model_dir), "--data", str(tmp_path / "none"), "--stage", "1"]) == 2
    assert "condition_probe: error:" in capsys.readouterr().err


def test_stage_3_probes_the_speed_layers_which_init_leaves_silent(tiny_model_dir, shards, tmp_path):
    """Fresh speed layers add zero (zero-initialised output projection): no speed gap; trained ones do not."""
    fresh = probe_conditions(tiny_model_dir, shards, "3", num_samples=4, repeats=1)
    assert "speed_shuffled" in fresh["loss"] and fresh["gap"]["speed"] == 0.0
    assert fresh["gap"]["reference"] != 0.0  # the rest of the stage-3 forward pass is probed as before
    out = tmp_path / "model"
    shutil.copytree(tiny_model_dir, out)
    pipe = load_pipeline(out)
    torch.manual_seed(0)
    for name, p in pipe.unet.named_parameters():
        if ".speed_attn.to_out." in name:
            torch.nn.init.normal_(p, std=0.5)
    pipe.unet.save_pretrained(out / "unet")
    assert probe_conditions(out, shards, "3", num_samples=4, repeats=1)["gap"]["speed"] != 0.0
