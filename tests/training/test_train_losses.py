"""The loss options: eps or v prediction, Min-SNR-gamma weighting, the VAE stand-in's crops and L1, float config values."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr
from torch import nn

from emoportrait.config import load_config
from emoportrait.errors import EMOError
from emoportrait.training.config import TrainConfig
from emoportrait.training.module import (
    EMOTrainingModule,
    EncodedBatch,
    VAETrainingModule,
    random_crops,
    region_weighted_mean,
)


class _ConstantUNet(nn.Module):
    """Predicts eps = 0 everywhere, so each sample's squared error is exactly its noise energy."""

    def forward(self, noisy, t, **kwargs):
        return type("Out", (), {"sample": torch.zeros_like(noisy)})()


class _Zeros(nn.Module):
    def forward(self, x):
        return {} if x.dim() == 4 and x.shape[1] == 4 else torch.zeros(x.shape[0], 8, 2, 2)


def _module(snr_gamma: float) -> EMOTrainingModule:
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    return EMOTrainingModule(_ConstantUNet(), _Zeros(), _Zeros(), None, None, sched, "1", snr_gamma=snr_gamma)


def _batch(b: int = 64) -> EncodedBatch:
    return EncodedBatch(latents=torch.randn(b, 1, 4, 2, 2), reference=torch.randn(b, 4, 2, 2), face_mask=torch.ones(b, 1, 16, 16))


def _plain_and_weighted(plain, weighted, batch):
    """Both modules' losses on the same draws, and those draws (noise (B, C, 1, h, w), steps (B,)) redrawn by hand."""
    torch.manual_seed(3)
    loss_plain = plain(batch)
    torch.manual_seed(3)
    loss_weighted = weighted(batch)
    torch.manual_seed(3)
    b = batch.latents.shape[0]
    torch.rand(b)  # the reference-dropout draw comes first in forward()
    noise = torch.randn(b, 4, 1, 2, 2)
    return loss_plain, loss_weighted, noise, torch.randint(0, 1000, (b,))


def test_snr_gamma_zero_is_the_plain_mse_and_gamma_weights_each_sample_by_min_snr_over_snr():
    batch = _batch()
    plain, weighted = _module(0.0), _module(5.0)
    loss_plain, loss_weighted, noise, t = _plain_and_weighted(plain, weighted, batch)
    per_sample = noise.pow(2).mean(dim=(1, 2, 3, 4))
    snr = compute_snr(plain.noise_scheduler, t)
    assert torch.allclose(loss_plain, per_sample.mean())
    expected = (per_sample * torch.clamp(snr, max=5.0) / snr).mean()
    assert torch.allclose(loss_weighted, expected)
    assert (snr > 5).any() and loss_weighted < loss_plain  # the clean steps were down-weighted


def test_noise_offset_adds_one_constant_per_sample_channel_and_frame_to_the_eps_target():
    batch = _batch()
    plain = _module(0.0)
    offset = EMOTrainingModule(_ConstantUNet(), _Zeros(), _Zeros(), None, None, plain.noise_scheduler, "1", noise_offset=0.5)
    loss_plain, loss_offset, noise, _ = _plain_and_weighted(plain, offset, batch)
    torch.manual_seed(3)
    b = batch.latents.shape[0]
    torch.rand(b), torch.randn(b, 4, 1, 2, 2), torch.randint(0, 1000, (b,))  # the draws before the offset's
    shift = torch.randn(b, 4, 1, 1, 1)  # constant over each frame's h x w
    assert torch.allclose(loss_plain, noise.pow(2).mean())  # the same noise and steps: only the offset differs
    assert torch.allclose(loss_offset, (noise + 0.5 * shift).pow(2).mean())  # the UNet predicts 0: error = target
    assert loss_offset > loss_plain


def test_noise_offset_must_not_be_negative():
    with pytest.raises(EMOError, match="noise_offset must be >= 0"):
        load_config(TrainConfig, None, ["noise_offset=-0.1"]).validate()


def _v_module(snr_gamma: float) -> EMOTrainingModule:
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          prediction_type="v_prediction", rescale_betas_zero_snr=True)
    return EMOTrainingModule(_ConstantUNet(), _Zeros(), _Zeros(), None, None, sched, "1", snr_gamma=snr_gamma)


def test_v_prediction_regresses_the_velocity_with_min_snr_over_snr_plus_one():
    batch = _batch()
    plain, weighted = _v_module(0.0), _v_module(5.0)
    loss_plain, loss_weighted, noise, t = _plain_and_weighted(plain, weighted, batch)
    b = len(t)
    a_bar = plain.noise_scheduler.alphas_cumprod[t].view(b, 1, 1, 1, 1)
    z0 = batch.latents.permute(0, 2, 1, 3, 4)  # (B, C, F, h, w)
    v = a_bar.sqrt() * noise - (1 - a_bar).sqrt() * z0  # the UNet predicts 0, so the error is v itself
    per_sample = v.pow(2).mean(dim=(1, 2, 3, 4))
    assert torch.allclose(loss_plain, per_sample.mean(), atol=1e-6)
    snr_plus_one = compute_snr(plain.noise_scheduler, t) + 1
    assert torch.allclose(loss_weighted, (per_sample * torch.clamp(snr_plus_one, max=5.0) / snr_plus_one).mean(), atol=1e-6)


def test_at_zero_terminal_snr_the_last_step_is_pure_noise_and_its_loss_weight_is_one(monkeypatch):
    module = _v_module(5.0)
    b = 8
    monkeypatch.setattr(torch, "randint", lambda low, high, size, **kw: torch.full(size, high - 1))  # every t = 999
    z0 = torch.randn(b, 4, 1, 2, 2)
    noise = torch.randn_like(z0)
    assert torch.equal(module.noise_scheduler.add_noise(z0, noise, torch.full((b,), 999)), noise)  # nothing of z0 left
    batch = _batch(b)
    loss = module(batch)
    target = batch.latents.permute(0, 2, 1, 3, 4)
    assert torch.isfinite(loss) and torch.allclose(loss, target.pow(2).mean(), atol=1e-6)  # v = -z0, weight 1


def test_a_scheduler_predicting_anything_else_is_refused():
    sched = DDPMScheduler(prediction_type="sample")
    with pytest.raises(EMOError, match="epsilon and v_prediction"):
        EMOTrainingModule(_ConstantUNet(), _Zeros(), _Zeros(), None, None, sched, "1")


def test_random_crops_take_windows_of_the_images_and_leave_small_images_whole():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    torch.manual_seed(0)
    crops = random_crops(x, 4)
    assert crops.shape == (2, 3, 4, 4)
    for img, crop in zip(x, crops):  # each crop is a contiguous window of its own image
        y, xx = divmod(int(crop[0, 0, 0].item()) % 64, 8)
        assert torch.equal(crop, img[:, y : y + 4, xx : xx + 4])
    assert random_crops(x, 0) is x and random_crops(x, 8) is x


def test_vae_module_crops_and_uses_l1_when_asked():
    seen = []

    class _Identity(nn.Module):  # records what it encodes; decodes to zeros, so the loss is |x| or x^2
        config = None

        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(1, 1)  # trainable, as in a whole-VAE run

        def encode(self, x):
            seen.append(x.shape)
            dist = type("D", (), {"sample": lambda s: torch.zeros_like(x), "kl": lambda s: torch.zeros(x.shape[0])})()
            return type("E", (), {"latent_dist": dist})()

        def decode(self, z):
            return type("S", (), {"sample": z})()

    x = torch.full((2, 3, 16, 16), 0.5)
    l1 = VAETrainingModule(_Identity(), crop_size=8, loss="l1")(x)
    l2 = VAETrainingModule(_Identity(), loss="l2")(x)
    assert seen == [(2, 3, 8, 8), (2, 3, 16, 16)]
    assert l1.item() == pytest.approx(0.5) and l2.item() == pytest.approx(0.25)
    with pytest.raises(EMOError, match="vae.loss"):
        VAETrainingModule(_Identity(), loss="l3")


def test_vae_module_with_a_frozen_encoder_drops_the_constant_kl_and_runs_it_without_grad():
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8,), layers_per_block=1, norm_num_groups=4, latent_channels=4)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    torch.manual_seed(0)
    whole = VAETrainingModule(vae, kl_weight=1.0)(x)
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    torch.manual_seed(0)  # the same posterior sample
    decoder_only = VAETrainingModule(vae, kl_weight=1.0)(x)
    kl = vae.encode(x).latent_dist.kl().mean()
    assert whole.item() == pytest.approx(decoder_only.item() + kl.item(), rel=1e-5)
    decoder_only.backward()
    assert all(p.grad is None for p in vae.encoder.parameters())
    assert all(p.grad is not None for p in vae.decoder.parameters() if p.requires_grad)


def test_float_keys_accept_exponents_without_a_dot_and_reject_words():
    cfg = load_config(TrainConfig, None, ["optim.lr=1e-3", "snr_gamma=5"])
    assert cfg.optim.lr == 1e-3 and cfg.snr_gamma == 5.0
    with pytest.raises(EMOError, match="optim.lr expects float"):
        load_config(TrainConfig, None, ["optim.lr=fast"])
    with pytest.raises(EMOError, match="vae.loss"):
        load_config(TrainConfig, None, ["vae.loss=ssim"]).validate()


def test_region_weighted_mean_moves_the_loss_share_to_the_mouth_and_keeps_uniform_errors():
    b, c, f, h, w = 2, 4, 3, 4, 4
    mask = torch.zeros(b, f, 1, 16, 16)
    mask[..., 8:16, 0:8] = 1.0  # the lower-left latent quarter (cells (2..3, 0..1)) of 16 px frames
    uniform = torch.full((b, c, f, h, w), 0.7)
    assert torch.allclose(region_weighted_mean(uniform, (mask, 4.0)), torch.full((b,), 0.7))  # scale kept
    err = torch.zeros(b, c, f, h, w)
    err[..., 2:4, 0:2] = 1.0  # all the error sits in the mouth region
    # plain mean 4/16 = 0.25; weighted: (5 * 4 cells) / (4 * 5 + 12 * 1) = 20 / 32
    assert torch.allclose(region_weighted_mean(err, (mask, 4.0)), torch.full((b,), 20 / 32))
    assert torch.allclose(region_weighted_mean(err, (mask, 0.0)), torch.full((b,), 0.25))


def test_region_weighted_mean_adds_the_weights_of_overlapping_regions():
    b, c, f, h, w = 1, 2, 2, 4, 4
    face = torch.zeros(b, f, 1, 16, 16)
    face[..., 0:16, 0:8] = 1.0  # the left half: latent columns 0..1
    mouth = torch.zeros(b, f, 1, 16, 16)
    mouth[..., 8:16, 0:8] = 1.0  # inside the face: the lower-left quarter
    err = torch.zeros(b, c, f, h, w)
    err[..., 2:4, 0:2] = 1.0  # the error sits where both regions hold: 1 + 2 + 4 = 7 per cell
    # weights: 4 cells x 7 + 4 cells x 3 (face only) + 8 cells x 1 = 48; weighted error 4 x 7 = 28
    assert torch.allclose(region_weighted_mean(err, (face, 2.0), (mouth, 4.0)), torch.full((b,), 28 / 48))
    assert torch.allclose(region_weighted_mean(err), torch.full((b,), 0.25))  # no region: the plain mean


@pytest.mark.parametrize("ratio", [0.0, 0.9])
def test_the_video_stages_noise_with_the_models_prior(tmp_path, monkeypatch, ratio):
    """Stage 2 draws its training noise from the model folder's `shared_noise_ratio` (models/noise.py),
    so a clip's F frames are correlated by the ratio; the saved model keeps the ratio."""
    import json

    from train_fixtures import MODEL_OVERRIDES, ContractDataset, build_tiny_model, fast_config

    from emoportrait.training.train import train

    init = build_tiny_model(tmp_path / "init", [*MODEL_OVERRIDES, f"shared_noise_ratio={ratio}"])
    drawn = []
    add_noise = DDPMScheduler.add_noise
    monkeypatch.setattr(DDPMScheduler, "add_noise",
                        lambda self, x, noise, t: drawn.append(noise) or add_noise(self, x, noise, t))
    out = train(fast_config("2", max_steps=2, batch_size=2, force=True), init, tmp_path / "s2",
                dataset=ContractDataset("2", num_clips=4))
    assert json.loads((out / "model_index.json").read_text())["shared_noise_ratio"] == ratio
    noise = torch.cat(drawn)  # (4, C, F, h, w): 2 steps x 2 samples
    assert noise.shape[2] == 4
    frames = noise.permute(0, 2, 1, 3, 4).flatten(2)  # (4, F, C*h*w)
    corr = torch.stack([torch.corrcoef(sample) for sample in frames])
    off_diagonal = corr[:, ~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.mean().item() == pytest.approx(ratio, abs=0.1)  # each frame's N(0, I): tests/models/test_noise.py


class _RecordingReferenceNet(nn.Module):
    """Records the latents it reads; one feature layer of zeros."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        return {"layer": torch.zeros(x.shape[0], 1, 8)}


class _AudioProj(nn.Module):
    config = type("Config", (), {"num_layers": 1, "feature_dim": 3})()

    def forward(self, feats):
        return torch.zeros(feats.shape[0], feats.shape[1], 2, 8)


def _stage2_motion_inputs(motion_noise: float, batch: EncodedBatch) -> torch.Tensor:
    unet = _ConstantUNet()
    unet.config = type("Config", (), {"num_motion_frames": 2})()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    ref = _RecordingReferenceNet()
    module = EMOTrainingModule(unet, ref, _Zeros(), _AudioProj(), None, sched, "2", motion_noise=motion_noise)
    module(batch)
    assert len(ref.inputs) == 2  # the reference latent, then the motion latents
    assert torch.equal(ref.inputs[0], batch.reference)  # only the motion frames are noised
    return ref.inputs[1]


def test_motion_noise_adds_a_per_sample_level_of_gaussian_noise_to_the_motion_latents_only():
    b, n, f = 64, 2, 2
    lat = torch.randn(b, n + f, 4, 4, 4)
    batch = EncodedBatch(latents=lat, reference=torch.randn(b, 4, 4, 4), face_mask=torch.ones(b, 1, 16, 16),
                         audio_features=torch.zeros(b, n + f, 1, 3))
    clean = lat[:, :n].reshape(b * n, 4, 4, 4)
    assert torch.equal(_stage2_motion_inputs(0.0, batch), clean)  # off: the paper's clean motion frames
    noised = _stage2_motion_inputs(0.5, batch)
    rms = (noised - clean).reshape(b, -1).pow(2).mean(dim=1).sqrt()  # per sample (its N frames share one level)
    assert (rms < 0.5 * 1.35).all()  # levels are drawn from U(0, 0.5); 128 values per sample estimate each
    assert rms.min() < 0.1 and rms.max() > 0.4  # and they differ between samples, some nearly clean
    assert torch.equal(lat[:, :n].reshape(b * n, 4, 4, 4), clean)  # the batch itself is not modified


def test_motion_noise_must_not_be_negative():
    with pytest.raises(EMOError, match="motion_noise must be >= 0"):
        load_config(TrainConfig, None, ["motion_noise=-0.1"]).validate()
