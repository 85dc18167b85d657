"""The latent cache (data/latent_cache.py): it holds the frozen encoder's distribution of every frame, the stage
datasets read it in place of the frames only for the encoder that made it, and training on it reproduces
training on the frames."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate
from train_fixtures import fast_config, write_shards

from emoportrait.cli import main
from emoportrait.data.datasets import ImageClipDataset, VideoClipDataset
from emoportrait.data.latent_cache import (
    build_latent_cache,
    encoder_fingerprint,
    load_model_vae,
    model_encoder_fingerprint,
    resolve_latent_cache,
)
from emoportrait.data.streaming import StreamingClipDataset
from emoportrait.errors import EMOError
from emoportrait.training.module import encode_batch
from emoportrait.training.train import train

FP16 = {"atol": 2e-3, "rtol": 2e-3}  # moments are stored as float16


@pytest.fixture(scope="module")
def cached(tiny_model_dir, tmp_path_factory):
    """(shards, vae, cache folder): 4 clips of 16 frames at the tiny model's 32 px, cached by its VAE."""
    shards = write_shards(tmp_path_factory.mktemp("lc") / "shards", num_clips=4, size=32, clip_frames=16)
    vae = load_model_vae(tiny_model_dir)
    return shards, vae, build_latent_cache(shards, vae, batch_size=5, progress=False)


def encoded(vae, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vae.encode(frames).latent_dist.parameters


def test_the_cache_holds_the_encoders_distribution_of_every_frame(cached, tiny_model_dir):
    shards, vae, cache = cached
    info = json.loads((cache / "info.json").read_text())
    assert info["complete"] and info["size"] == 32 and info["fingerprint"] == model_encoder_fingerprint(tiny_model_dir)
    pixels = ImageClipDataset(shards)  # frame i of a clip, decoded as the datasets decode it
    moments = ImageClipDataset(shards, latents="default")
    for clip in pixels.clips[:2]:
        src_p, src_m = pixels.source(clip), moments.source(clip)
        frames = torch.stack([src_p.frame(i, 32) for i in range(clip.num_frames)])
        want = encoded(vae, frames)  # (T, 2C, h, w)
        got = torch.stack([src_m.moments(i) for i in range(clip.num_frames)])
        assert got.shape == want.shape == (16, 2 * vae.config.latent_channels, 4, 4)
        torch.testing.assert_close(got, want, **FP16)
        assert not torch.allclose(got[0], got[5])  # different frames, different latents


def test_stage_datasets_return_the_moments_of_the_frames_they_would_decode(cached):
    shards, vae, _ = cached
    for cls, kw in ((ImageClipDataset, {}), (VideoClipDataset, {"num_frames": 8, "num_motion_frames": 2, "window": 1})):
        pixels = cls(shards, samples_per_clip=2, seed=3, **kw)
        moments = cls(shards, samples_per_clip=2, seed=3, latents="auto", **kw)
        assert pixels.latents_dir is None and moments.latents_dir is not None
        for i in range(len(pixels)):
            a, b = pixels[i], moments[i]
            assert "pixel_values" not in b and "reference" not in b
            assert set(a) - {"pixel_values", "reference"} == set(b) - {"latent_moments", "reference_moments"}
            frames = a["pixel_values"] if a["pixel_values"].dim() == 4 else a["pixel_values"][None]
            torch.testing.assert_close(b["latent_moments"].reshape(-1, *b["latent_moments"].shape[-3:]),
                                       encoded(vae, frames), **FP16)
            torch.testing.assert_close(b["reference_moments"], encoded(vae, a["reference"][None])[0], **FP16)
            for k in set(a) - {"pixel_values", "reference"}:
                assert torch.equal(a[k], b[k])  # masks, audio, speed: untouched
    stream = StreamingClipDataset(ImageClipDataset(shards, latents="default"), rank=0, world_size=1)
    items = list(DataLoader(stream, batch_size=None))
    assert len(items) == 4 and all(x["latent_moments"].shape == (8, 4, 4) for x in items)


def test_encode_batch_samples_the_cached_distribution_as_the_encoder_does(cached):
    shards, vae, _ = cached
    kw = {"num_frames": 8, "num_motion_frames": 2, "window": 1, "seed": 1}
    batch_p = default_collate([VideoClipDataset(shards, **kw)[i] for i in range(2)])
    batch_m = default_collate([VideoClipDataset(shards, latents="default", **kw)[i] for i in range(2)])
    torch.manual_seed(7)
    a = encode_batch(batch_p, vae, None, "1")
    torch.manual_seed(7)
    b = encode_batch(batch_m, vae, None, "1")
    assert a.latents.shape == b.latents.shape == (2, 10, 4, 4, 4) and b.reference.shape == (2, 4, 4, 4)
    torch.testing.assert_close(b.latents, a.latents, **FP16)  # the same draw around the same distribution
    torch.testing.assert_close(b.reference, a.reference, **FP16)
    torch.manual_seed(8)
    assert not torch.allclose(encode_batch(batch_m, vae, None, "1").latents, b.latents)  # still a sample


def test_only_the_encoder_that_made_the_cache_reads_it(cached, tiny_model_dir, tmp_path):
    shards, vae, cache = cached
    fp = encoder_fingerprint(vae.state_dict().items())
    assert fp == model_encoder_fingerprint(tiny_model_dir)
    other = load_model_vae(tiny_model_dir)
    with torch.no_grad():
        other.decoder.conv_out.weight.add_(1.0)
    assert encoder_fingerprint(other.state_dict().items()) == fp  # a fine-tuned decoder keeps the latents
    with torch.no_grad():
        other.encoder.conv_in.weight.mul_(1.001)
    fp_other = encoder_fingerprint(other.state_dict().items())
    assert fp_other != fp
    assert resolve_latent_cache(shards, "auto", fp, 32) == cache
    assert resolve_latent_cache(shards, "auto", fp_other, 32) is None  # auto: frames are encoded instead
    assert resolve_latent_cache(shards, "auto", fp, 64) is None
    assert resolve_latent_cache(shards, "none", fp, 32) is None
    with pytest.raises(EMOError, match="another VAE encoder"):
        resolve_latent_cache(shards, "default", fp_other, 32)
    with pytest.raises(EMOError, match="holds 32 px frames"):
        ImageClipDataset(shards, size=64, latents="default")
    with pytest.raises(EMOError, match="no latent cache"):
        resolve_latent_cache(shards, "missing")
    with pytest.raises(EMOError, match="another VAE encoder, frame size or shard set"):
        build_latent_cache(shards, other, progress=False)  # into the cache of another encoder


def test_a_cache_is_only_read_beside_the_shards_it_was_made_from(tiny_model_dir, tmp_path):
    shards = write_shards(tmp_path / "shards", num_clips=4, size=32, clip_frames=16)
    cache = build_latent_cache(shards, load_model_vae(tiny_model_dir), progress=False)
    assert resolve_latent_cache(shards, "auto") == cache
    (shards / "plan.json").write_text('{"config": {"size": 32, "crop_scale": 2.0}}')  # made with other settings
    assert resolve_latent_cache(shards, "auto") is None
    with pytest.raises(EMOError, match="other shards"):
        resolve_latent_cache(shards, "default")
    (shards / "plan.json").unlink()
    assert resolve_latent_cache(shards, "auto") == cache
    write_shards(shards, num_clips=4, size=32, clip_frames=20)  # other clips under the same keys
    assert resolve_latent_cache(shards, "auto") is None


def test_an_interrupted_build_is_never_read_and_resumes(tiny_model_dir, tmp_path):
    shards = write_shards(tmp_path / "shards", num_clips=4, size=32, clip_frames=16)
    vae = load_model_vae(tiny_model_dir)
    cache = build_latent_cache(shards, vae, name="x", progress=False)
    first = {p.name: p.read_bytes() for p in cache.glob("*.tar")}
    assert len(first) == 2
    kept = cache / "shard-000000.tar"
    stamp = kept.stat().st_mtime_ns
    (cache / "shard-000001.tar").unlink()  # as if stopped during the second shard
    info = json.loads((cache / "info.json").read_text())
    (cache / "info.json").write_text(json.dumps({**info, "complete": False}))
    assert resolve_latent_cache(shards, "auto") is None
    with pytest.raises(EMOError, match="incomplete"):
        resolve_latent_cache(shards, "x")
    (cache / "info.json").write_text('{"complete": tr')  # damaged by hand: one line, not a traceback
    with pytest.raises(EMOError, match="damaged"):
        resolve_latent_cache(shards, "auto")
    (cache / "info.json").write_text(json.dumps({**info, "complete": False}))
    assert build_latent_cache(shards, vae, name="x", progress=False) == cache
    assert kept.stat().st_mtime_ns == stamp  # finished shards are not redone
    assert {p.name: p.read_bytes() for p in cache.glob("*.tar")} == first  # the same bytes again
    assert resolve_latent_cache(shards, "x") == cache


def test_training_on_the_cache_reproduces_training_on_the_frames(tiny_model_dir, tmp_path):
    shards = write_shards(tmp_path / "shards", num_clips=4, size=32, clip_frames=16)
    losses = {}
    for latents in ("none", "auto"):
        if latents == "auto":
            build_latent_cache(shards, load_model_vae(tiny_model_dir), progress=False)
        cfg = fast_config("1", max_steps=3, batch_size=2)
        cfg.data.train, cfg.data.latents = str(shards), latents
        out = train(cfg, tiny_model_dir, tmp_path / latents)
        rows = [json.loads(r) for r in (out.parent / "log.jsonl").read_text().splitlines()]
        losses[latents] = np.array([r["loss"] for r in rows if "loss" in r])
    assert len(losses["none"]) == 3
    np.testing.assert_allclose(losses["auto"], losses["none"], rtol=1e-3)
    # ... and the VAE stage, which trains the encoder, never reads the cache.
    cfg = fast_config("vae", max_steps=1, batch_size=2)
    cfg.data.train = str(shards)
    assert os.fspath(train(cfg, tiny_model_dir, tmp_path / "vae")).endswith("model")


def test_preprocess_cli_builds_the_cache_and_says_why_not(tiny_model_dir, tmp_path, capsys):
    shards = write_shards(tmp_path / "shards", num_clips=2, size=32, clip_frames=16)
    assert main(["preprocess", "--out", str(shards), "--latents", str(tiny_model_dir), "--device", "cpu",
                 "--no-progress"]) == 0
    assert f"latents in {shards / 'latents' / 'default'}" in capsys.readouterr().out
    assert resolve_latent_cache(shards, "default", model_encoder_fingerprint(tiny_model_dir), 32) is not None
    assert main(["preprocess", "--out", str(shards), "--latents", str(tmp_path / "no-model"), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "no vae/config.json" in err and len(err.strip().splitlines()) == 1


def test_the_fingerprint_of_a_model_folder_reads_safetensors_or_what_diffusers_reads(cached, tmp_path):
    _, vae, _ = cached
    vae.save_pretrained(tmp_path / "bin" / "vae", safe_serialization=False)  # diffusion_pytorch_model.bin
    assert not list((tmp_path / "bin" / "vae").glob("*.safetensors"))
    assert model_encoder_fingerprint(tmp_path / "bin") == encoder_fingerprint(vae.state_dict().items())
    with pytest.raises(EMOError, match="no vae/config.json"):
        model_encoder_fingerprint(tmp_path / "nothing")


def test_training_says_when_the_caches_beside_its_shards_do_not_fit(tiny_model_dir, tmp_path, capsys):
    shards = write_shards(tmp_path / "shards", num_clips=2, size=32, clip_frames=16)
    other = load_model_vae(tiny_model_dir)
    with torch.no_grad():
        other.encoder.conv_in.weight.mul_(1.001)  # another encoder made this cache
    build_latent_cache(shards, other, progress=False)
    cfg = fast_config("1", max_steps=1, batch_size=2)
    cfg.data.train = str(shards)
    train(cfg, tiny_model_dir, tmp_path / "s1")
    out = capsys.readouterr().out
    assert "no latent cache" in out and "the frames are encoded at every step" in out
