"""The trained networks of one stage and their loss: eps-prediction MSE on SD's DDPM schedule (paper eq. 1).

`EMOTrainingModule` holds every network that can receive gradients (backbone, ReferenceNet, face
locator, audio projection, speed encoder) so that DDP/FSDP wrap one module and synchronise once per
step; which of its parameters train is decided by `set_trainable`. The frozen encoders (VAE, audio
encoder) stay outside and run under `no_grad` in `encode_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from emoportrait.errors import EMOError

SAMPLES_PER_FRAME = 640  # 16000 Hz / 25 fps


@dataclass
class EncodedBatch:
    """A batch in latent space. Shapes: B batch, N motion frames, F frames, h/w latent size."""

    latents: torch.Tensor  # (B, N+F, 4, h, w) frames (stage 1: (B, 1, 4, h, w))
    reference: torch.Tensor  # (B, 4, h, w) reference-image latent
    face_mask: torch.Tensor  # (B, 1, H, W) pixel-space face-region mask
    audio_features: torch.Tensor | None = None  # (B, N+F+2m, L, D) audio-encoder features
    speed: torch.Tensor | None = None  # (B, N+F) head rotation speed, degrees/frame


def _zero_where(x: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Zero the batch items of `x` (dim 0) where `drop` (B0,) is True."""
    keep = (~drop).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return x * keep


def _has_grad(module: nn.Module | None) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())


class EMOTrainingModule(nn.Module):
    """Backbone + ReferenceNet + face locator + audio projection + speed encoder, and the loss of a stage."""

    def __init__(self, unet, reference_unet, face_locator, audio_proj, speed_encoder, noise_scheduler, stage: str,
                 p_drop_reference: float = 0.0, p_drop_audio: float = 0.0, p_drop_motion: float = 0.0):
        super().__init__()
        self.unet = unet
        self.reference_unet = reference_unet
        self.face_locator = face_locator
        self.audio_proj = audio_proj
        self.speed_encoder = speed_encoder
        self.noise_scheduler = noise_scheduler  # DDPMScheduler (not a module: no state to sync)
        self.stage = stage
        self.p_drop_reference, self.p_drop_audio, self.p_drop_motion = p_drop_reference, p_drop_audio, p_drop_motion

    def _reference_features(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """ReferenceNet self-attention features of (B', 4, h, w) latents; no graph when it is frozen."""
        if _has_grad(self.reference_unet):
            return self.reference_unet(latents)
        with torch.no_grad():
            return self.reference_unet(latents)

    def forward(self, batch: EncodedBatch) -> torch.Tensor:
        """Noise the target latents at random DDPM steps and return the eps-prediction MSE (scalar)."""
        lat = batch.latents
        b = lat.shape[0]
        n = 0 if self.stage == "1" else self.unet.config.num_motion_frames
        target = lat[:, n:].permute(0, 2, 1, 3, 4)  # (B, 4, F, h, w)
        f = target.shape[2]
        device = lat.device

        # Conditions: reference features (dropped -> zeros, the CFG "no reference" branch) ...
        reference = self._reference_features(batch.reference)  # layer -> (B, L, C)
        drop_ref = torch.rand(b, device=device) < self.p_drop_reference
        reference = {k: _zero_where(v, drop_ref) for k, v in reference.items()}
        face = self.face_locator(batch.face_mask)  # (B, C0, h, w)

        motion = audio = speed = None
        if self.stage != "1":
            # ... motion frames through the ReferenceNet, zeroed with a small probability (first clip) ...
            m_lat = lat[:, :n].reshape(b * n, *lat.shape[2:])  # (B*N, 4, h, w)
            motion = self._reference_features(m_lat)  # layer -> (B*N, L, C)
            drop_motion = (torch.rand(b, device=device) < self.p_drop_motion).repeat_interleave(n)
            motion = {k: _zero_where(v, drop_motion) for k, v in motion.items()}
            # ... audio tokens of the F generated frames (features carry m context frames per side) ...
            feats = batch.audio_features  # (B, N+F+2m, L, D)
            want = (self.audio_proj.config.num_layers, self.audio_proj.config.feature_dim)
            if tuple(feats.shape[2:]) != want:
                raise EMOError(f"audio features are {tuple(feats.shape[2:])} (L, D) per frame but the model's audio "
                               f"projection takes {want}; the audio-feature cache was made with another encoder")
            m = (feats.shape[1] - n - f) // 2
            if m < 0 or feats.shape[1] != n + f + 2 * m:
                raise EMOError(f"audio features cover {feats.shape[1]} frames; expected N+F+2m with N={n}, F={f}")
            audio = self.audio_proj(feats)[:, m + n : m + n + f]  # (B, F, K, Ca)
            drop_audio = torch.rand(b, device=device) < self.p_drop_audio
            audio = _zero_where(audio, drop_audio)
            if self.stage == "3":  # ... and the speed embeddings (paper 3.2, speed layers)
                speed = self.speed_encoder(batch.speed)[:, n : n + f]  # (B, F, Cs)

        # Forward diffusion q(z_t | z_0) at uniformly drawn steps, then eps-prediction MSE (eq. 1).
        noise = torch.randn_like(target)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,), device=device).long()
        noisy = self.noise_scheduler.add_noise(target, noise, t)
        pred = self.unet(noisy, t, reference_features=reference, motion_features=motion, audio_embeds=audio,
                         speed_embeds=speed, face_features=face, skip_temporal=self.stage == "1").sample
        return F.mse_loss(pred.float(), noise.float())


class VAETrainingModule(nn.Module):
    """The tiny AutoencoderKL stand-in for SD's VAE: L2 reconstruction + a small KL term."""

    def __init__(self, vae, kl_weight: float = 1e-6):
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: (B, 3, H, W) in [-1, 1]; returns the scalar loss."""
        posterior = self.vae.encode(pixels).latent_dist
        recon = self.vae.decode(posterior.sample()).sample  # (B, 3, H, W)
        return F.mse_loss(recon.float(), pixels.float()) + self.kl_weight * posterior.kl().mean()


@torch.no_grad()
def encode_batch(batch: dict, vae, audio_encoder, stage: str) -> EncodedBatch:
    """Frames to VAE latents (x scaling_factor) and audio to features, with the frozen encoders.

    Args:
        batch: a stage dataset batch (data contract): `pixel_values` (B, 3, H, W) or (B, N+F, 3, H, W),
            `reference` (B, 3, H, W), `face_mask` (B, 1, H, W), and for stages 2/3 `audio`
            (B, (N+F+2m)*640) or `audio_features` (B, N+F+2m, L, D), `speed` (B, N+F).
    """
    pixels = batch["pixel_values"]
    if pixels.dim() == 4:
        pixels = pixels.unsqueeze(1)  # (B, 1, 3, H, W)
    b, t = pixels.shape[:2]
    scale = vae.config.scaling_factor
    frames = torch.cat([pixels.flatten(0, 1), batch["reference"]]).to(vae.dtype)  # (B*T + B, 3, H, W)
    z = vae.encode(frames).latent_dist.sample() * scale
    latents = z[: b * t].reshape(b, t, *z.shape[1:]).float()  # (B, T, 4, h, w)
    reference = z[b * t :].float()  # (B, 4, h, w)
    audio_features = speed = None
    if stage in ("2", "3"):
        if batch.get("audio_features") is not None:
            audio_features = batch["audio_features"].float()
        else:
            audio = batch["audio"].float()  # (B, S)
            audio_features = audio_encoder(audio, num_frames=audio.shape[1] // SAMPLES_PER_FRAME).float()
        speed = batch["speed"].float()
    return EncodedBatch(latents, reference, batch["face_mask"].float(), audio_features, speed)
