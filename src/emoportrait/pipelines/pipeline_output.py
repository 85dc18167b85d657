"""Output of `EMOPipeline.__call__`, and its frames as uint8 images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class EMOPipelineOutput(BaseOutput):
    """Frames of one generated talking-portrait video (25 fps, as long as the driving audio).

    Args:
        frames: by `output_type`: "np" -> (1, T, H, W, 3) float32 in [0, 1]; "pt" -> (1, T, 3, H, W)
            float32 in [0, 1]; "pil" -> [[PIL.Image] * T]; "latent" -> (1, C, T, h, w) scaled latents.
    """

    frames: torch.Tensor | np.ndarray | list[list[PIL.Image.Image]]


def to_uint8(frames: torch.Tensor) -> list[np.ndarray]:
    """(T, 3, H, W) float in [0, 1] -> T arrays (H, W, 3) uint8."""
    arr = (frames.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return list(arr)
