"""The noise prior over a clip's frames: independent per frame (SD, AnimateDiff, EMO) or partly shared.

With a shared-noise ratio r > 0 each frame's noise is sqrt(r) * one draw shared by all F frames of
the clip + sqrt(1 - r) * the frame's own draw: PYoCo's "mixed" video noise prior (Ge et al. 2023,
"Preserve Your Own Correlation"). Every frame's marginal stays N(0, I), so a frame is noised and
denoised as before, but a clip's frames start correlated by r and the model learns to keep what
they share. Generation draws the common part once per video, so consecutive clips share it too.
Training (the video stages) and generation must use the same prior, so r is the model's:
`shared_noise_ratio` in EMOPipeline's config (model_index.json), written by `init` from the model
config. A single frame's noise is N(0, I) either way and is drawn as before. Measured on the
default model's recipe (docs/experiments.md): less flicker, but less lip-sync at this budget; the configs keep 0.
"""

from __future__ import annotations

import math

import torch
from diffusers.utils.torch_utils import randn_tensor

from emoportrait.errors import EMOError


def checked_ratio(value) -> float:
    """`value` as a shared-noise ratio; EMOError unless it is a number in [0, 1)."""
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise EMOError(f"shared_noise_ratio must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= ratio < 1.0:  # 1 would leave the frames no noise of their own (and NaN fails here too)
        raise EMOError(f"shared_noise_ratio must be a number in [0, 1), got {value!r}")
    return ratio


def shares_noise(ratio: float, num_frames: int) -> bool:
    """Whether F frames under this ratio get a common draw (a single frame's noise is N(0, I) either way)."""
    return ratio > 0 and num_frames > 1


def mix_shared_noise(noise: torch.Tensor, shared: torch.Tensor, ratio: float) -> torch.Tensor:
    """Per-frame noise (B, C, F, h, w) and one draw per clip (B, C, 1, h, w) -> the prior's (B, C, F, h, w)."""
    if ratio == 0:
        return noise
    return math.sqrt(ratio) * shared + math.sqrt(1.0 - ratio) * noise


def draw_frame_noise(shape, ratio: float, generator=None, device=None, dtype=None,
                     shared: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Noise (B, C, F, h, w) from the prior, drawn with diffusers' `randn_tensor` (generator, device, dtype),
    and its clip-common draw (B, C, 1, h, w), or None without one.

    With ratio 0 or one frame the noise is exactly the independent draw. Otherwise the common draw is
    `shared` when given (a video's clips reuse one, so a clip boundary does not change what the
    frames share), else drawn after the per-frame noise; a `shared` of another shape (kept from a
    video of another size) is not reused: a new one is drawn.
    """
    noise = randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)
    if not shares_noise(ratio, shape[2]):
        return noise, None
    common = (*shape[:2], 1, *shape[3:])
    if shared is None or tuple(shared.shape) != common:
        shared = randn_tensor(common, generator=generator, device=device, dtype=dtype)
    return mix_shared_noise(noise, shared.to(noise.device, noise.dtype), ratio), shared
