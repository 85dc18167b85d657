"""ReferenceNet / FrameEncoding (paper section 3.2): SD1.5's UNet as a feature extractor.

Same structure as the backbone's spatial part, no temporal layers, initialised from SD1.5. It
runs once per clip on the reference latent (identity, for reference-attention) and once on the N
motion-frame latents (for the temporal modules); its features are reused at every denoising step.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers looks it up here when loading)
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from emoportrait.models.attention import (
    CaptureSelfAttnProcessor,
    ConditioningState,
    NullAttnProcessor,
    ReferenceSelfAttnProcessor,
)
from emoportrait.models.backbone import REFERENCE_MODES, register_own_config, spatial_layer_names
from emoportrait.models.storage import OwnStorageMixin


class EMOReferenceNet(OwnStorageMixin, UNet2DConditionModel):
    """Extracts the per-layer self-attention features of one or more images.

    Args: SD1.5's `UNet2DConditionModel` arguments, plus `reference_mode` ("cross": `attn2` becomes
    reference-attention of the network to its own same-layer features, C -> C; "concat": `attn2`
    is unused) and `text_cross_attention_dim` (SD's 768, used in concat mode).
    """

    has_compatibles = True

    @classmethod
    def _get_compatibles(cls):
        return [UNet2DConditionModel]

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = 64,
        in_channels: int = 4,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                             "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                           "CrossAttnUpBlock2D"),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        num_attention_heads: int | tuple[int, ...] = 8,
        use_linear_projection: bool = False,
        reference_mode: str = "cross",
        text_cross_attention_dim: int = 768,
    ):
        if reference_mode not in REFERENCE_MODES:
            raise ValueError(f"reference_mode must be one of {REFERENCE_MODES}, got {reference_mode!r}")
        cross_dims = tuple(block_out_channels) if reference_mode == "cross" else text_cross_attention_dim
        super().__init__(
            sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
            down_block_types=tuple(down_block_types), up_block_types=tuple(up_block_types),
            block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups, norm_eps=norm_eps, cross_attention_dim=cross_dims,
            attention_head_dim=num_attention_heads, use_linear_projection=use_linear_projection,
        )
        register_own_config(self, EMOReferenceNet, locals())
        self.conditioning = ConditioningState()
        for layer in spatial_layer_names(self):
            block = self.get_submodule(layer)
            block.attn1.set_processor(CaptureSelfAttnProcessor(self.conditioning, layer))
            if reference_mode == "cross":
                block.attn2.set_processor(ReferenceSelfAttnProcessor(self.conditioning, layer))
            else:
                block.attn2.set_processor(NullAttnProcessor())

    @property
    def layer_names(self) -> list[str]:
        """Names of the layers whose features `forward` returns (shared with the backbone)."""
        return spatial_layer_names(self)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int = 0) -> dict[str, torch.Tensor]:
        """Features of clean latents (the reference image or motion frames; t = 0, no noise).

        Args:
            sample: (B, C, h, w) latents; motion frames are passed as (B*N, C, h, w).

        Returns:
            layer name -> (B, L, C) tokens, the input of that transformer block's self-attention.
        """
        st = self.conditioning
        st.features = {}
        super().forward(sample, timestep, encoder_hidden_states=None)
        features, st.features = st.features, {}
        return features
