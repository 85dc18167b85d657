"""The trained networks of one stage and their loss: eps-prediction MSE on SD's DDPM schedule (paper eq. 1),
or v-prediction where the model's schedule says so (models/config.py, ScheduleConfig).

`EMOTrainingModule` holds every network that can receive gradients (backbone, ReferenceNet, face
locator, audio projection, speed encoder) so that DDP/FSDP wrap one module and synchronise once per
step; which of its parameters train is decided by `set_trainable`. The frozen encoders (VAE, audio
encoder) stay outside and run under `no_grad` in `encode_batch`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr
from torch import nn

from emoportrait.errors import EMOError
from emoportrait.models.noise import checked_ratio, mix_shared_noise, shares_noise

SAMPLES_PER_FRAME = 640  # 16000 Hz / 25 fps


@dataclass
class EncodedBatch:
    """A batch in latent space. Shapes: B batch, N motion frames, F frames, h/w latent size."""

    latents: torch.Tensor  # (B, N+F, C, h, w) frames (stage 1: (B, 1, C, h, w))
    reference: torch.Tensor  # (B, C, h, w) reference-image latent
    face_mask: torch.Tensor  # (B, 1, H, W) pixel-space face-region mask
    audio_features: torch.Tensor | None = None  # (B, N+F+2m, L, D) audio-encoder features
    speed: torch.Tensor | None = None  # (B, N+F) head rotation speed, degrees/frame
    mouth_mask: torch.Tensor | None = None  # (B, F, 1, H, W) pixel-space mouth regions of the F target frames


def _zero_where(x: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Zero the batch items of `x` (dim 0) where `drop` (B0,) is True."""
    keep = (~drop).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return x * keep


def _has_grad(module: nn.Module | None) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())


def region_weighted_mean(err: torch.Tensor, *regions: tuple[torch.Tensor, float]) -> torch.Tensor:
    """Per-sample mean of (B, C, F, h, w) `err` where each (mask, weight) region counts 1 + weight.

    A mask is a (B, F, 1, H, W) pixel mask; each is reduced to the latent grid by area (a latent cell
    half inside counts half), and overlapping regions add their weights. The mean is normalised by the
    weights, so the loss keeps its scale and only its share moves to the regions.
    """
    b, c, f, h, w = err.shape
    weights = torch.ones(b, 1, f, h, w, device=err.device, dtype=err.dtype)
    for mask, weight in regions:
        cells = F.adaptive_avg_pool2d(mask.flatten(0, 1).to(err.dtype), (h, w))  # (B*F, 1, h, w)
        weights = weights + weight * cells.reshape(b, f, 1, h, w).permute(0, 2, 1, 3, 4)  # (B, 1, F, h, w)
    return (err * weights).sum(dim=(1, 2, 3, 4)) / (weights.sum(dim=(1, 2, 3, 4)) * c)


class EMOTrainingModule(nn.Module):
    """Backbone + ReferenceNet + face locator + audio projection + speed encoder, and the loss of a stage."""

    def __init__(self, unet, reference_unet, face_locator, audio_proj, speed_encoder, noise_scheduler, stage: str,
                 p_drop_reference: float = 0.0, p_drop_audio: float = 0.0, p_drop_motion: float = 0.0,
                 snr_gamma: float = 0.0, mouth_loss_weight: float = 0.0, shared_noise_ratio: float = 0.0,
                 noise_offset: float = 0.0, face_loss_weight: float = 0.0, motion_noise: float = 0.0):
        super().__init__()
        self.unet = unet
        self.reference_unet = reference_unet
        self.face_locator = face_locator
        self.audio_proj = audio_proj
        self.speed_encoder = speed_encoder
        self.noise_scheduler = noise_scheduler  # DDPMScheduler (not a module: no state to sync)
        prediction = noise_scheduler.config.prediction_type
        if prediction not in ("epsilon", "v_prediction"):
            raise EMOError(f"the model's scheduler predicts {prediction!r}; training supports epsilon and v_prediction")
        self.predicts_v = prediction == "v_prediction"
        self.stage = stage
        self.p_drop_reference, self.p_drop_audio, self.p_drop_motion = p_drop_reference, p_drop_audio, p_drop_motion
        self.snr_gamma = snr_gamma  # > 0: Min-SNR-gamma loss weights (Hang et al. 2023); 0: the paper's plain MSE
        self.mouth_loss_weight = mouth_loss_weight  # > 0: extra weight of the mouth region (stages 2/3)
        self.face_loss_weight = face_loss_weight  # > 0: extra weight of the face locator's region (all stages)
        self.shared_noise_ratio = checked_ratio(shared_noise_ratio)  # the model's noise prior (models/noise.py)
        self.noise_offset = noise_offset  # > 0: offset noise, a training-only change (TrainConfig.noise_offset)
        self.motion_noise = motion_noise  # > 0: Gaussian noise on the motion latents (TrainConfig.motion_noise)

    def _reference_features(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """ReferenceNet self-attention features of (B', C, h, w) latents; no graph when it is frozen."""
        if _has_grad(self.reference_unet):
            return self.reference_unet(latents)
        with torch.no_grad():
            return self.reference_unet(latents)

    def forward(self, batch: EncodedBatch) -> torch.Tensor:
        """Noise the target latents at random DDPM steps and return the eps- (or v-) prediction MSE (scalar)."""
        lat = batch.latents
        b = lat.shape[0]
        n = 0 if self.stage == "1" else self.unet.config.num_motion_frames
        target = lat[:, n:].permute(0, 2, 1, 3, 4)  # (B, C, F, h, w)
        f = target.shape[2]
        device = lat.device

        # Conditions: reference features (dropped -> zeros, the CFG "no reference" branch) ...
        reference = self._reference_features(batch.reference)  # layer -> (B, L, C)
        drop_ref = torch.rand(b, device=device) < self.p_drop_reference
        reference = {k: _zero_where(v, drop_ref) for k, v in reference.items()}
        reference_latents = _zero_where(batch.reference, drop_ref)  # read only by a reference_latent_input backbone
        face = self.face_locator(batch.face_mask)  # (B, C0, h, w)

        motion = audio = speed = None
        if self.stage != "1":
            # ... motion frames through the ReferenceNet, zeroed with a small probability (first clip) ...
            m_lat = lat[:, :n].reshape(b * n, *lat.shape[2:])  # (B*N, C, h, w)
            if self.motion_noise > 0:  # generation feeds back its own decoded and re-encoded frames, not clean ones
                sigma = self.motion_noise * torch.rand(b, device=device, dtype=m_lat.dtype)  # one level per sample
                m_lat = m_lat + sigma.repeat_interleave(n).view(-1, 1, 1, 1) * torch.randn_like(m_lat)
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

        # Forward diffusion q(z_t | z_0) at uniformly drawn steps, then eps-prediction MSE (eq. 1), or the
        # v-prediction MSE when the model's schedule says so (v = sqrt(a_bar) eps - sqrt(1 - a_bar) z_0).
        noise = torch.randn_like(target)
        if shares_noise(self.shared_noise_ratio, f):  # the prior's share common to the clip's F frames
            noise = mix_shared_noise(noise, torch.randn_like(target[:, :, :1]), self.shared_noise_ratio)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,), device=device).long()
        if self.noise_offset > 0:  # plus a random constant per sample, channel and frame: each frame's mean
            # colour is then mostly noise even at t = 999, so the model cannot read it from the leftover image
            noise = noise + self.noise_offset * torch.randn(*noise.shape[:3], 1, 1, device=device, dtype=noise.dtype)
        noisy = self.noise_scheduler.add_noise(target, noise, t)
        pred = self.unet(noisy, t, reference_features=reference, motion_features=motion, audio_embeds=audio,
                         speed_embeds=speed, face_features=face, skip_temporal=self.stage == "1",
                         reference_latents=reference_latents).sample
        objective = self.noise_scheduler.get_velocity(target, noise, t) if self.predicts_v else noise
        err = (pred.float() - objective.float()).pow(2)  # (B, C, F, h, w)
        regions = []
        if self.face_loss_weight > 0:  # the face locator's mask (B, 1, H, W) holds for each of the F frames
            regions.append((batch.face_mask.to(err.device).unsqueeze(1).expand(-1, f, -1, -1, -1), self.face_loss_weight))
        if self.mouth_loss_weight > 0 and self.stage != "1":
            if batch.mouth_mask is None:
                raise EMOError("mouth_loss_weight > 0 needs mouth masks in the batch (the dataset's with_mouth_mask)")
            regions.append((batch.mouth_mask.to(err.device), self.mouth_loss_weight))
        if regions:
            per_sample = region_weighted_mean(err, *regions)
        else:
            per_sample = err.mean(dim=tuple(range(1, err.dim())))  # (B,)
        if self.snr_gamma > 0:
            # Min-SNR-gamma: weight min(SNR, gamma) / SNR per sample for eps-prediction, so the nearly clean
            # steps (huge SNR, easy) stop dominating the gradient; a from-scratch model converges faster.
            # The v-MSE is (SNR + 1) x the z_0-MSE (eps: SNR x), so v uses SNR + 1, as diffusers' training
            # examples do; it stays finite at zero terminal SNR.
            snr = compute_snr(self.noise_scheduler, t).float() + (1.0 if self.predicts_v else 0.0)
            per_sample = per_sample * torch.clamp(snr, max=self.snr_gamma) / snr
        return per_sample.mean()


def random_crops(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """One random (size x size) window of every (B, 3, H, W) image; the whole image if it is not larger."""
    h, w = pixels.shape[-2:]
    if size <= 0 or (size >= h and size >= w):
        return pixels
    size_h, size_w = min(size, h), min(size, w)
    tops = torch.randint(0, h - size_h + 1, (pixels.shape[0],)).tolist()
    lefts = torch.randint(0, w - size_w + 1, (pixels.shape[0],)).tolist()
    return torch.stack([img[:, y : y + size_h, x : x + size_w] for img, y, x in zip(pixels, tops, lefts)])


class VAETrainingModule(nn.Module):
    """The tiny AutoencoderKL stand-in for SD's VAE: L2 (or L1) reconstruction + a small KL term.

    With `crop_size` it trains on random crops (the autoencoder is fully convolutional, as SD's VAE was
    trained on 256 px crops): at half size a step costs about a quarter (measured 0.25 vs 1.03 s for 8 images).
    With only the decoder trainable (group `vae_decoder`) the encoder runs without gradients.
    """

    def __init__(self, vae, kl_weight: float = 1e-6, crop_size: int = 0, loss: str = "l2"):
        super().__init__()
        if loss not in ("l1", "l2"):
            raise EMOError(f"vae.loss must be l1 or l2, got {loss!r}")
        self.vae = vae
        self.kl_weight = kl_weight
        self.crop_size = crop_size
        self.loss = loss

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: (B, 3, H, W) in [-1, 1]; returns the scalar loss."""
        pixels = random_crops(pixels, self.crop_size)
        encoder_trains = _has_grad(self.vae.encoder)
        with contextlib.nullcontext() if encoder_trains else torch.no_grad():
            posterior = self.vae.encode(pixels).latent_dist
            z = posterior.sample()
        recon = self.vae.decode(z).sample  # (B, 3, h, w)
        rec = F.l1_loss if self.loss == "l1" else F.mse_loss
        loss = rec(recon.float(), pixels.float())
        # A frozen encoder (trainable: [vae_decoder]) makes the KL a constant: left out of the logged loss.
        return loss + self.kl_weight * posterior.kl().mean() if encoder_trains else loss


@torch.no_grad()
def encode_batch(batch: dict, vae, audio_encoder, stage: str) -> EncodedBatch:
    """Frames to VAE latents (x scaling_factor) and audio to features, with the frozen encoders.

    Args:
        batch: a stage dataset batch (data contract): `pixel_values` (B, 3, H, W) or (B, N+F, 3, H, W),
            `reference` (B, 3, H, W), `face_mask` (B, 1, H, W), and for stages 2/3 `audio`
            (B, (N+F+2m)*640) or `audio_features` (B, N+F+2m, L, D), `speed` (B, N+F). From a latent
            cache (`data/latent_cache.py`) `latent_moments` and `reference_moments` replace the frames:
            the latents are then drawn from that stored distribution, as `latent_dist.sample()` draws
            them (the same global-RNG draw), and the encoder does not run.
    """
    cached = "latent_moments" in batch
    frames, reference = (batch["latent_moments"], batch["reference_moments"]) if cached else (
        batch["pixel_values"], batch["reference"])
    if frames.dim() == 4:
        frames = frames.unsqueeze(1)  # (B, 1, ., H, W)
    b, t = frames.shape[:2]
    scale = vae.config.scaling_factor
    frames = torch.cat([frames.flatten(0, 1), reference])  # (B*T + B, ., H, W)
    if cached:
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        z = DiagonalGaussianDistribution(frames.to(vae.device, torch.float32)).sample() * scale
    else:
        frames = frames.to(vae.device, vae.dtype, memory_format=torch.channels_last)  # the layout `encoding_vae` runs fastest
        z = vae.encode(frames).latent_dist.sample() * scale
    # Contiguous whatever layout the encoder ran in: the training noise is drawn `randn_like` these, and its
    # values follow the strides, so encoded and cached latents get the same draw.
    latents = z[: b * t].reshape(b, t, *z.shape[1:]).float().contiguous()  # (B, T, C, h, w)
    reference = z[b * t :].float().contiguous()  # (B, C, h, w)
    audio_features = speed = None
    if stage in ("2", "3"):
        if batch.get("audio_features") is not None:
            audio_features = batch["audio_features"].float()
        else:
            audio = batch["audio"].float()  # (B, S)
            audio_features = audio_encoder(audio, num_frames=audio.shape[1] // SAMPLES_PER_FRAME).float()
        speed = batch["speed"].float()
    mouth = batch.get("mouth_mask")
    return EncodedBatch(latents, reference, batch["face_mask"].float(), audio_features, speed,
                        None if mouth is None else mouth.float())
