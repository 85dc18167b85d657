"""Small pretrained checkpoints in the real on-disk layouts, made by the tests (no downloads).

- a diffusers SD1.5-style folder (unet/, vae/, scheduler/ with SD's PNDM config),
- a transformers wav2vec2 folder saved from `Wav2Vec2ForCTC` (like wav2vec2-base-960h, CTC head included),
- an AnimateDiff `MotionAdapter` folder and the same weights as an original single-file `.ckpt`.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

SD_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=24, attention_head_dim=4, norm_num_groups=8,
)

MODEL_YAML = """
name: test-small
resolution: 32
num_frames: 4
num_motion_frames: 2
window: 1
audio_encoder: wav2vec2
wav2vec2_layers: [1, 2]
audio_dim: 16
audio_hidden_dim: 16
speed_dim: 8
speed_hidden_dim: 16
face_locator_channels: [4, 8, 8, 8]
motion_num_attention_heads: 4
motion_max_seq_length: 16
guidance_scale_ref: 1.5
guidance_scale_audio: 4.5
strength: 0.75
clip_overlap: 2
"""


def to_original_animatediff(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers MotionAdapter keys -> the original AnimateDiff checkpoint's keys (with pos_encoder tables)."""
    out = {}
    for key, value in state.items():
        if key.endswith("pos_embed.pe"):
            continue
        m = re.match(r"^(.*\.motion_modules\.\d+\.)(.*)$", key)
        head, tail = m.group(1), m.group(2)
        tail = (tail.replace(".attn1.", ".attention_blocks.0.").replace(".attn2.", ".attention_blocks.1.")
                .replace(".norm1.", ".norms.0.").replace(".norm2.", ".norms.1.").replace(".norm3.", ".ff_norm."))
        out[f"{head}temporal_transformer.{tail}"] = value
        if tail.endswith("attention_blocks.0.to_q.weight"):
            pe_key = f"{head}temporal_transformer.{tail.replace('to_q.weight', 'pos_encoder.pe')}"
            out[pe_key] = torch.zeros(1, 24, value.shape[1])
    return out


@pytest.fixture(scope="session")
def pretrained_parts(tmp_path_factory):
    """Paths of the tiny SD1.5 folder, wav2vec2 folder, MotionAdapter folder, .ckpt, and the model YAML."""
    from diffusers import AutoencoderKL, MotionAdapter, PNDMScheduler, UNet2DConditionModel
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    root = tmp_path_factory.mktemp("pretrained")
    sd = root / "sd15"
    torch.manual_seed(0)
    UNet2DConditionModel(**SD_UNET).save_pretrained(sd / "unet")
    torch.manual_seed(1)
    AutoencoderKL(block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,  # SD's 8x
                  up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4,
                  sample_size=32).save_pretrained(sd / "vae")
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  skip_prk_steps=True).save_pretrained(sd / "scheduler")
    (sd / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))

    torch.manual_seed(2)
    w2v_cfg = Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                             conv_dim=(8, 8), conv_stride=(5, 64), conv_kernel=(10, 64), num_conv_pos_embeddings=16,
                             num_conv_pos_embedding_groups=2, vocab_size=12)
    w2v = root / "wav2vec2"
    Wav2Vec2ForCTC(w2v_cfg).save_pretrained(w2v)

    torch.manual_seed(3)
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=4,
                            motion_norm_num_groups=8, motion_max_seq_length=16, use_motion_mid_block=True)
    adapter_dir = root / "motion_adapter"
    adapter.save_pretrained(adapter_dir)
    ckpt = root / "mm_test_v2.ckpt"
    torch.save(to_original_animatediff(adapter.state_dict()), ckpt)

    config = root / "small.yaml"
    config.write_text(MODEL_YAML)
    return dict(sd15=sd, wav2vec2=w2v, adapter=adapter_dir, ckpt=ckpt, config=config, root=root)
