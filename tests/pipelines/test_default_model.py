"""The embedded default model (src/emoportrait/assets/default_model): packaged as safetensors and
found without a location."""

import json
from pathlib import Path

import pytest

from emoportrait import EMOPipeline
from emoportrait.errors import EMOError
from emoportrait.pipelines.loading import DEFAULT_MODEL_DIR


@pytest.fixture(scope="module")
def pipe():
    p = EMOPipeline.from_pretrained()  # no location: the packaged default model
    p.set_progress_bar_config(disable=True)
    return p


def test_default_model_is_packaged_and_loaded_without_a_location(pipe):
    assert (DEFAULT_MODEL_DIR / "model_index.json").is_file()
    assert Path(pipe.name_or_path).resolve() == DEFAULT_MODEL_DIR.resolve()
    weights = list(DEFAULT_MODEL_DIR.rglob("*.safetensors"))
    assert weights and not list(DEFAULT_MODEL_DIR.rglob("*.bin"))  # safetensors only
    assert sum(w.stat().st_size for w in weights) < 60 * 2**20  # small enough to ship in the repo
    record = json.loads((DEFAULT_MODEL_DIR / "emo_training.json").read_text())
    assert record["stages"] == ["vae", "1", "2", "3"]  # trained through every stage by the recipe
    assert pipe.sample_size == 128 and pipe.num_frames == 12 and pipe.num_motion_frames == 4


def test_no_default_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr("emoportrait.pipelines.loading.DEFAULT_MODEL_DIR", tmp_path / "absent")
    with pytest.raises(EMOError, match="no default model is installed"):
        EMOPipeline.from_pretrained()
