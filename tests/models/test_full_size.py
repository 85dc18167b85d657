"""Opt-in (`-m slow`): random parts at SD1.5 / AnimateDiff v2 / wav2vec2-base size through `init`."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.slow


def test_full_size_init_report_and_forward(tmp_path):
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    from emoportrait.cli import main

    sd = tmp_path / "sd15"
    torch.manual_seed(0)
    # SD1.5's unet/config.json values (diffusers' defaults are SD1.x's, attention_head_dim=8 = 8 heads).
    UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8).save_pretrained(sd / "unet")
    AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, sample_size=512).save_pretrained(sd / "vae")
    Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=32)).save_pretrained(tmp_path / "wav2vec2")
    MotionAdapter(motion_max_seq_length=32, use_motion_mid_block=True).save_pretrained(tmp_path / "mm")

    out = tmp_path / "emo"
    rc = main(["init", "--config", "full", "--sd15", str(sd), "--wav2vec2", str(tmp_path / "wav2vec2"),
               "--motion-adapter", str(tmp_path / "mm"), "--out", str(out)])
    assert rc == 0
    report = {r["component"]: r for r in json.loads((out / "init_report.json").read_text())}
    for component in ("unet", "reference_unet"):
        skipped = report[component]["skipped"]
        # SD1.5 has 16 transformer blocks: 32 text projections replaced, nothing else.
        assert len(skipped) == 32 and all(k.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) for k in skipped)
    assert report["unet (temporal modules)"]["loaded"]

    from emoportrait import EMOPipeline

    pipe = EMOPipeline.from_pretrained(str(out))
    with torch.no_grad():
        ref = pipe.reference_unet(torch.randn(1, 4, 8, 8))
        audio = pipe.audio_proj(pipe.audio_encoder(torch.randn(1, 16000), 25))[:, :2]
        speed = pipe.speed_encoder(torch.ones(1, 2))
        out_sample = pipe.unet(torch.randn(1, 4, 2, 8, 8), 500, reference_features=ref, audio_embeds=audio,
                               speed_embeds=speed).sample
    assert out_sample.shape == (1, 4, 2, 8, 8) and torch.isfinite(out_sample).all()
