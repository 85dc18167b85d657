"""Speed layers' input: head rotation speed -> soft buckets (paper section 3.2, "Speed Layers")."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from emoportrait.models.audio import audio_windows
from emoportrait.models.storage import OwnStorageMixin


def speed_to_buckets(speed: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Soft bucket encoding of head rotation speed, paper's s_d = tanh((w_f - c_d) / r_d * 3).

    Args:
        speed: (..., ) rotation speed w_f in degrees per frame.
        centers: (D,) bucket centres c_d.
        radii: (D,) bucket radii r_d.

    Returns:
        (..., D) bucket activations in (-1, 1).
    """
    centers = torch.as_tensor(centers, dtype=speed.dtype, device=speed.device)
    radii = torch.as_tensor(radii, dtype=speed.dtype, device=speed.device)
    return torch.tanh((speed.unsqueeze(-1) - centers) / radii * 3.0)  # (..., D)


class SpeedEncoder(OwnStorageMixin, ModelMixin, ConfigMixin):
    """Speed layers' embedding (paper 3.2): per-frame speed buckets over a +-m window -> MLP.

    Args:
        centers, radii: bucket centres c_d and radii r_d in degrees per frame.
        window: m; frame f sees the buckets of frames f-m .. f+m (edges replicated).
        out_dim: width Cs of the embedding (the backbone's `speed_dim`).
    """

    @register_to_config
    def __init__(
        self,
        centers: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0),
        radii: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25, 0.375, 0.5, 0.75, 1.0, 1.0),
        window: int = 2,
        hidden_dim: int = 256,
        out_dim: int = 320,
    ):
        super().__init__()
        if len(centers) != len(radii):
            raise ValueError("speed bucket centers and radii must have the same length")
        self.register_buffer("bucket_centers", torch.tensor(centers, dtype=torch.float32), persistent=False)
        self.register_buffer("bucket_radii", torch.tensor(radii, dtype=torch.float32), persistent=False)
        k = 2 * window + 1
        self.mlp = nn.Sequential(nn.Linear(k * len(centers), hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, speed: torch.Tensor) -> torch.Tensor:
        """speed (B, T) degrees per frame -> (B, T, out_dim)."""
        buckets = speed_to_buckets(speed.float(), self.bucket_centers, self.bucket_radii)  # (B, T, D)
        windows = audio_windows(buckets, self.config.window)  # (B, T, 2m+1, D)
        return self.mlp(windows.flatten(2).to(self.dtype))
