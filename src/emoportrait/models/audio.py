"""Audio layers' inputs (paper section 3.2, "Audio Layers").

- `Wav2Vec2AudioEncoder`: a frozen `transformers.Wav2Vec2Model`; the hidden states of several blocks
  are stacked per frame and resampled to the video's 25 fps -> A(f).
- `LogMelAudioEncoder`: a weight-free log-mel frontend with the same interface, for models trained
  without wav2vec (the tiny size).
- `AudioProjection`: the window {A(f-m) .. A(f+m)} of every frame -> 2m+1 audio tokens, which the
  backbone's audio-attention layers attend to.

Both encoders map `waveform (B, S) at 16 kHz, num_frames` to features `(B, num_frames, L, D)` whose
row t is centred on time t / fps.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from emoportrait.models.storage import OwnStorageMixin

SAMPLE_RATE = 16_000


def _resample_frames(features: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, T_in, ...) features at any rate -> (B, num_frames, ...) by linear interpolation in time."""
    b, t = features.shape[:2]
    flat = features.reshape(b, t, -1).transpose(1, 2)  # (B, X, T_in)
    out = F.interpolate(flat.float(), size=num_frames, mode="linear", align_corners=False)
    return out.transpose(1, 2).reshape(b, num_frames, *features.shape[2:]).to(features.dtype)


def _mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filters (HTK mel scale), (n_mels, n_fft // 2 + 1)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / np.maximum(center - lower, 1e-9)
    down = (upper - freqs[None]) / np.maximum(upper - center, 1e-9)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


class LogMelAudioEncoder(OwnStorageMixin, ModelMixin, ConfigMixin):
    """Weight-free log-mel features per video frame (the tiny size's stand-in for wav2vec2).

    Each video frame t gets the `hops_per_frame` mel frames centred on t / fps, stacked: one
    "layer" (L = 1) of width D = n_mels * hops_per_frame.
    """

    @register_to_config
    def __init__(self, n_mels: int = 40, n_fft: int = 512, fps: int = 25, hops_per_frame: int = 4,
                 fmin: float = 60.0, fmax: float = 7600.0):
        super().__init__()
        self.hop = SAMPLE_RATE // (fps * hops_per_frame)  # 160 samples = 10 ms at 25 fps, 4 hops
        fb = _mel_filterbank(n_mels, n_fft, SAMPLE_RATE, fmin, fmax)
        # Stored with the model (it has no trainable weights) so the folder holds a weights file
        # like every other component and the frontend is reproducible exactly.
        self.register_buffer("mel_fb", torch.from_numpy(fb))
        self.register_buffer("window", torch.hann_window(n_fft))
        self.requires_grad_(False)

    @property
    def num_layers(self) -> int:
        return 1

    @property
    def feature_dim(self) -> int:
        return self.config.n_mels * self.config.hops_per_frame

    def forward(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        """waveform (B, S) float at 16 kHz -> (B, num_frames, 1, n_mels * hops_per_frame)."""
        cfg = self.config
        hops = cfg.hops_per_frame
        # Pad so that hop k is centred on sample k * hop and the frames' windows stay inside.
        need = (num_frames * hops + hops) * self.hop
        x = F.pad(waveform.float(), (0, max(0, need - waveform.shape[1])))
        spec = torch.stft(x, cfg.n_fft, hop_length=self.hop, window=self.window, center=True,
                          return_complex=True).abs().pow(2)  # (B, n_fft/2+1, T_hop)
        mel = torch.log(torch.clamp(self.mel_fb @ spec, min=1e-6))  # (B, n_mels, T_hop)
        mel = (mel + 6.0) / 6.0  # roughly zero-centred for speech at typical levels
        # Video frame t is centred on hop t*hops; take hops [t*hops - hops/2, t*hops + hops/2).
        mel = F.pad(mel, (hops // 2, 0), mode="replicate")
        mel = mel[:, :, : num_frames * hops]
        if mel.shape[-1] < num_frames * hops:
            mel = F.pad(mel, (0, num_frames * hops - mel.shape[-1]), mode="replicate")
        b = mel.shape[0]
        frames = mel.reshape(b, cfg.n_mels, num_frames, hops).permute(0, 2, 3, 1)  # (B, T, hops, n_mels)
        return frames.reshape(b, num_frames, 1, hops * cfg.n_mels).to(self.dtype)


class Wav2Vec2AudioEncoder(OwnStorageMixin, ModelMixin, ConfigMixin):
    """Frozen wav2vec2 whose chosen blocks' hidden states, resampled to fps, are the audio features.

    Args:
        wav2vec2_config: the `transformers.Wav2Vec2Config` as a dict (so the folder is self-contained).
        layers: hidden-state indices to stack (0 = the CNN feature projection, i = block i).
        fps: video frame rate the features are resampled to.
        normalize: zero-mean unit-variance input, as wav2vec2-base-960h's feature extractor does.
    """

    @register_to_config
    def __init__(self, wav2vec2_config: dict | None = None, layers: tuple[int, ...] = tuple(range(1, 13)),
                 fps: int = 25, normalize: bool = True):
        super().__init__()
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        self.wav2vec2 = Wav2Vec2Model(Wav2Vec2Config(**(wav2vec2_config or {})))
        n = self.wav2vec2.config.num_hidden_layers
        if any(not 0 <= i <= n for i in layers):
            raise ValueError(f"layers {tuple(layers)} out of range for a wav2vec2 with {n} blocks")
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_wav2vec2(cls, path: str, layers: tuple[int, ...] | None = None, **kwargs) -> Wav2Vec2AudioEncoder:
        """Wrap a transformers wav2vec2 folder (e.g. facebook/wav2vec2-base-960h) as an encoder."""
        from transformers import Wav2Vec2Model

        model = Wav2Vec2Model.from_pretrained(path)
        n = model.config.num_hidden_layers
        enc = cls(wav2vec2_config=model.config.to_dict(), layers=tuple(layers or range(1, n + 1)), **kwargs)
        enc.wav2vec2.load_state_dict(model.state_dict())
        return enc

    @property
    def num_layers(self) -> int:
        return len(self.config.layers)

    @property
    def feature_dim(self) -> int:
        return self.wav2vec2.config.hidden_size

    def train(self, mode: bool = True):
        # Frozen (paper 3.3): stay in eval mode so dropout never runs, even inside a training loop.
        return super().train(False)

    def forward(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        """waveform (B, S) float at 16 kHz -> (B, num_frames, len(layers), hidden_size)."""
        x = waveform.to(self.dtype)
        if self.config.normalize:
            x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True) + 1e-7)
        # wav2vec2's receptive field needs >= 400 samples; pad very short clips.
        if x.shape[1] < 400:
            x = F.pad(x, (0, 400 - x.shape[1]))
        out = self.wav2vec2(x, output_hidden_states=True)
        hidden = torch.stack([out.hidden_states[i] for i in self.config.layers], dim=2)  # (B, T50, L, D)
        # Resample the 50 Hz hidden states to the frame grid of the audio's duration.
        duration_frames = waveform.shape[1] * self.config.fps / SAMPLE_RATE
        t = torch.arange(num_frames, device=hidden.device, dtype=torch.float32)
        pos = (t / max(duration_frames, 1e-6)) * hidden.shape[1]  # hidden index of time t/fps
        pos = pos.clamp(0, hidden.shape[1] - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=hidden.shape[1] - 1)
        w = (pos - lo.float()).view(1, -1, 1, 1).to(hidden.dtype)
        return hidden[:, lo] * (1 - w) + hidden[:, hi] * w


def audio_windows(features: torch.Tensor, m: int) -> torch.Tensor:
    """Per-frame windows {A(f-m) .. A(f+m)}, replicating the edges.

    Args:
        features: (B, T, X) per-frame features.

    Returns:
        (B, T, 2m+1, X).
    """
    if m == 0:
        return features.unsqueeze(2)
    padded = torch.cat([features[:, :1].expand(-1, m, -1), features, features[:, -1:].expand(-1, m, -1)], dim=1)
    return padded.unfold(1, 2 * m + 1, 1).permute(0, 1, 3, 2)  # (B, T, 2m+1, X)


class AudioProjection(OwnStorageMixin, ModelMixin, ConfigMixin):
    """Window of per-frame audio features -> 2m+1 audio tokens per frame for audio-attention.

    Args:
        num_layers, feature_dim: L and D of the encoder's (B, T, L, D) features.
        window: m; every frame sees frames f-m .. f+m (paper: m = 2).
        hidden_dim: width of the per-token MLP.
        out_dim: width Ca of the tokens (the backbone's `audio_dim`).
    """

    @register_to_config
    def __init__(self, num_layers: int = 12, feature_dim: int = 768, window: int = 2, hidden_dim: int = 768,
                 out_dim: int = 768):
        super().__init__()
        k = 2 * window + 1
        self.proj = nn.Sequential(
            nn.Linear(num_layers * feature_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, out_dim))
        self.position = nn.Parameter(torch.zeros(1, 1, k, out_dim))
        nn.init.normal_(self.position, std=0.02)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, T, L, D) -> tokens (B, T, 2m+1, out_dim)."""
        b, t = features.shape[:2]
        tokens = self.proj(features.reshape(b, t, -1).to(self.dtype))  # (B, T, Ca)
        windows = audio_windows(tokens, self.config.window)  # (B, T, 2m+1, Ca)
        return self.norm(windows + self.position)


def frames_for_duration(num_samples: int, fps: int = 25, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of video frames for an audio of `num_samples`: round(duration * fps), at least 1."""
    return max(1, int(math.floor(num_samples * fps / sample_rate + 0.5)))
