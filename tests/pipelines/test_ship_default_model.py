"""scripts/ship_default_model.py: the embedded default model stored with float16 weights, loaded as float32."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def ship(load_script):
    return load_script("ship_default_model").ship


def test_weights_are_halved_but_the_audio_encoder(ship, tiny_model_dir, tmp_path):
    out = tmp_path / "default_model"
    before, after = ship(tiny_model_dir, out)
    assert 0.45 * before < after < 0.6 * before
    files = sorted(p.relative_to(tiny_model_dir) for p in tiny_model_dir.rglob("*") if p.is_file())
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == files
    for rel in (f for f in files if f.suffix == ".safetensors"):
        src, dst = load_file(tiny_model_dir / rel), load_file(out / rel)
        assert src.keys() == dst.keys()
        for key, x in src.items():
            if rel.parts[0] == "audio_encoder" or x.dtype != torch.float32:
                assert dst[key].dtype == x.dtype and torch.equal(dst[key], x), (rel, key)
            else:
                assert dst[key].dtype == torch.float16 and torch.equal(dst[key], x.half()), (rel, key)


def test_shipped_copy_loads_float32_and_generates_the_same_video(ship, tiny_model_dir, face_png, tmp_path):
    from emoportrait.pipelines.pipeline_emo import EMOPipeline

    out = tmp_path / "default_model"
    out.mkdir()  # the model shipped before: replaced whole
    (out / "stale.txt").write_text("old")
    ship(tiny_model_dir, out)
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["default_model"]  # no temporary or old folder left beside it
    audio = np.sin(np.linspace(0, 400 * np.pi, 16000 // 2)).astype(np.float32) * 0.3
    frames = []
    for folder in (tiny_model_dir, out):
        pipe = EMOPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        assert {p.dtype for p in pipe.unet.parameters()} == {torch.float32}
        frames.append(pipe(face_png, audio, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames)
    assert frames[0].shape == frames[1].shape
    # float16 rounding of the weights (a relative 5e-4) moves the video by less than two gray levels ...
    assert np.abs(frames[0] - frames[1]).max() < 2 / 255
    # ... but it does move it: the copy's weights are not the float32 ones
    assert np.abs(frames[0] - frames[1]).max() > 0


def test_refuses_a_folder_that_is_not_a_model(ship, tmp_path):
    with pytest.raises(SystemExit, match="not a model folder"):
        ship(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
