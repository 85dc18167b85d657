"""Assemble every EMO component of a given size, randomly initialised (seeded)."""

from __future__ import annotations

from dataclasses import asdict

import torch
from diffusers import AutoencoderKL, DDIMScheduler

from emoportrait.errors import EMOError
from emoportrait.models.audio import AudioProjection, LogMelAudioEncoder, Wav2Vec2AudioEncoder
from emoportrait.models.backbone import EMOUNet
from emoportrait.models.config import ModelConfig
from emoportrait.models.face_locator import FaceLocator
from emoportrait.models.reference_net import EMOReferenceNet
from emoportrait.models.speed import SpeedEncoder

# SD1.5's training noise schedule (scaled_linear 0.00085 -> 0.012, 1000 steps); DDIM at inference
# (paper 4.1: 40 steps). The prediction type, terminal SNR and step spacing come from the model config's
# `schedule` (ScheduleConfig; SD1.5's eps, leading by default).
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                   clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def spatial_kwargs(cfg: ModelConfig) -> dict:
    """Arguments shared by the backbone and ReferenceNet (both take and give the VAE's latent channels)."""
    u = cfg.unet
    return dict(
        sample_size=cfg.latent_size, in_channels=cfg.vae.latent_channels, out_channels=cfg.vae.latent_channels,
        block_out_channels=tuple(u.block_out_channels),
        down_block_types=tuple(u.down_block_types), up_block_types=tuple(u.up_block_types),
        layers_per_block=u.layers_per_block, norm_num_groups=u.norm_num_groups,
        num_attention_heads=u.num_attention_heads, use_linear_projection=u.use_linear_projection,
        reference_mode=cfg.reference_mode,
    )


def build_unet(cfg: ModelConfig) -> EMOUNet:
    return EMOUNet(
        **spatial_kwargs(cfg), num_frames=cfg.num_frames, num_motion_frames=cfg.num_motion_frames,
        audio_dim=cfg.audio_dim, speed_dim=cfg.speed_dim,
        motion_num_attention_heads=cfg.motion_num_attention_heads,
        motion_max_seq_length=cfg.motion_max_seq_length, use_motion_mid_block=cfg.use_motion_mid_block,
        reference_latent_input=cfg.reference_latent_input,
    )


def build_audio_encoder(cfg: ModelConfig, wav2vec2_config: dict | None = None):
    if cfg.audio_encoder == "logmel":
        return LogMelAudioEncoder(n_mels=cfg.n_mels)
    if cfg.audio_encoder == "wav2vec2":
        return Wav2Vec2AudioEncoder(wav2vec2_config=wav2vec2_config, layers=tuple(cfg.wav2vec2_layers))
    raise ValueError(f"audio_encoder must be 'wav2vec2' or 'logmel', got {cfg.audio_encoder!r}")


def build_vae(cfg: ModelConfig) -> AutoencoderKL:
    v = cfg.vae
    n = len(v.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=v.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(v.block_out_channels), layers_per_block=v.layers_per_block,
        norm_num_groups=v.norm_num_groups, sample_size=cfg.resolution, scaling_factor=v.scaling_factor,
    )


def build_components(cfg: ModelConfig, seed: int = 0, audio_encoder=None) -> dict:
    """Every component of `EMOPipeline`, randomly initialised from `seed`.

    Returns:
        dict with keys vae, unet, reference_unet, face_locator, audio_encoder, audio_proj,
        speed_encoder, scheduler (the names of the model folder's sub-folders).
    """
    cfg.check_shapes()
    torch.manual_seed(seed)
    unet = build_unet(cfg)
    torch.manual_seed(seed + 1)
    reference_unet = EMOReferenceNet(**spatial_kwargs(cfg))
    if cfg.reference_init == "backbone":
        tie_reference_init(unet, reference_unet)
    elif cfg.reference_init != "random":
        raise EMOError(f"reference_init must be 'random' or 'backbone', got {cfg.reference_init!r}")
    torch.manual_seed(seed + 2)
    vae = build_vae(cfg)
    torch.manual_seed(seed + 3)
    face_locator = FaceLocator(out_channels=cfg.unet.block_out_channels[0],
                               block_out_channels=tuple(cfg.face_locator_channels))
    audio_encoder = audio_encoder if audio_encoder is not None else build_audio_encoder(cfg)
    torch.manual_seed(seed + 4)
    audio_proj = AudioProjection(num_layers=audio_encoder.num_layers, feature_dim=audio_encoder.feature_dim,
                                 window=cfg.window, hidden_dim=cfg.audio_hidden_dim, out_dim=cfg.audio_dim)
    torch.manual_seed(seed + 5)
    speed_encoder = SpeedEncoder(centers=tuple(cfg.speed_centers), radii=tuple(cfg.speed_radii), window=cfg.window,
                                 hidden_dim=cfg.speed_hidden_dim, out_dim=cfg.speed_dim)
    return dict(vae=vae, unet=unet, reference_unet=reference_unet, face_locator=face_locator,
                audio_encoder=audio_encoder, audio_proj=audio_proj, speed_encoder=speed_encoder,
                scheduler=build_scheduler(cfg))


@torch.no_grad()
def tie_reference_init(unet: EMOUNet, reference_unet: EMOReferenceNet) -> None:
    """Start a random ReferenceNet where SD1.5 starts the paper's: as a copy of the backbone's spatial part.

    Both networks then give equal features for equal inputs. In cross mode each block's reference-attention
    (`attn2`, whose SD1.5 K/V come from `attn1` too: models/loading.py) starts as a copy of its self-attention,
    in both networks, so the backbone's tokens first look up the reference's tokens most like themselves.
    The backbone's own layers (temporal, audio, speed) keep their initialisation.
    """
    backbone = unet.state_dict()
    target = reference_unet.state_dict()
    state = {key: backbone[key] for key in target}  # every ReferenceNet tensor has a backbone twin
    if reference_unet.config.reference_mode == "cross":
        for key in target:
            if ".attn2." in key and ".processor." not in key:
                state[key] = backbone[key.replace(".attn2.", ".attn1.")]
        unet.load_state_dict({key: state[key] for key in state if ".attn2." in key}, strict=False)
    reference_unet.load_state_dict({key: value.clone() for key, value in state.items()})


def build_scheduler(cfg: ModelConfig) -> DDIMScheduler:
    """SD1.5's DDIM schedule with the model config's prediction type, terminal SNR and step spacing."""
    cfg.schedule.check()
    return DDIMScheduler(**{**SD_SCHEDULE, **asdict(cfg.schedule)})
