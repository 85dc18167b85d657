"""Speed layers' input: head rotation speed -> soft buckets (paper section 3.2, "Speed Layers")."""

from __future__ import annotations

import torch


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
