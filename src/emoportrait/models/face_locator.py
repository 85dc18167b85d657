"""Face Locator (paper section 3.2): encodes the face-region mask M into the backbone's latent space."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
from diffusers.models.modeling_utils import ModelMixin

from emoportrait.models.storage import OwnStorageMixin


class FaceLocator(OwnStorageMixin, ModelMixin, ConfigMixin):
    """Light convolutional encoder of the face mask, its last conv zero-initialised (ours, as
    AnimateAnyone's pose guider): its output is added after the backbone's `conv_in`, so an
    untrained locator leaves the backbone unchanged.

    Args:
        out_channels: width of the output; the backbone's block_out_channels[0] (320 for SD1.5).
        block_out_channels: widths of the encoder, one per VAE block: a stride-2 conv between each two
            gives the VAE's factor (four widths: SD's 8x; `ModelConfig.check_shapes` enforces it).
        conditioning_channels: channels of the mask (1).
    """

    @register_to_config
    def __init__(self, out_channels: int = 320, block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
                 conditioning_channels: int = 1):
        super().__init__()
        self.embedding = ControlNetConditioningEmbedding(
            conditioning_embedding_channels=out_channels,
            conditioning_channels=conditioning_channels,
            block_out_channels=tuple(block_out_channels),
        )

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """mask (B, 1, H, W) in {0, 1} at pixel resolution -> (B, out_channels, h, w) at latent resolution."""
        return self.embedding(mask.to(self.dtype))
