"""The Backbone Network: SD1.5's UNet made into EMO's video denoiser (paper section 3.2).

`EMOUNet` is a diffusers `UNetMotionModel` (SD1.5 UNet + AnimateDiff temporal modules, every
parameter under its usual name) with four additions, none of which forks diffusers code:

1. cross-attention becomes reference-attention (`ReferenceAttnProcessor` on every `attn2`, or
   reference tokens concatenated into `attn1` in concat mode);
2. audio-attention after each reference-attention (`attn2.processor.audio_attn`);
3. temporal modules (`EMOTemporalModule`) that prepend the N motion-frame features to the F frames
   along the frame axis, attend, then drop them, and that carry the speed layers
   (`motion_modules.*.speed_attn`: cross-attention from frame features to speed embeddings);
4. face-locator features added to the output of `conv_in` (`FaceConditionedConv2d`).
"""

from __future__ import annotations

import inspect
import re

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers looks it up here when loading)
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D, UNetMotionModel
from torch import nn

from emoportrait.models.attention import (
    ConcatReferenceAttnProcessor,
    ConditioningState,
    ReferenceAttnProcessor,
    _attend,
)
from emoportrait.models.storage import OwnStorageMixin

REFERENCE_MODES = ("cross", "concat")

# 2D block names (SD1.5 unet/config.json) -> their motion counterparts.
MOTION_BLOCK = {
    "CrossAttnDownBlock2D": "CrossAttnDownBlockMotion",
    "DownBlock2D": "DownBlockMotion",
    "CrossAttnUpBlock2D": "CrossAttnUpBlockMotion",
    "UpBlock2D": "UpBlockMotion",
}


def register_own_config(model: nn.Module, cls: type, values: dict) -> None:
    """Re-register `cls.__init__`'s arguments after the diffusers parent's `__init__` overwrote them.

    The parent class registers its own signature (e.g. `UNet2DConditionModel` stores
    `num_attention_heads=None` and `UNetMotionModel` stores motion block names); the subclass's
    config must hold the values it was called with so that `from_pretrained` rebuilds it exactly.
    """
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    model.register_to_config(**{p: values[p] for p in params})


def spatial_layer_names(model: nn.Module) -> list[str]:
    """Names of the transformer blocks whose features ReferenceNet shares with the backbone.

    Example: `down_blocks.0.attentions.1.transformer_blocks.0` (same names in both networks).
    """
    pattern = re.compile(r"^(down_blocks\.\d+|mid_block|up_blocks\.\d+)\.attentions\.\d+\.transformer_blocks\.\d+$")
    return [name for name, _ in model.named_modules() if pattern.match(name)]


class FaceConditionedConv2d(nn.Conv2d):
    """`conv_in` that adds the Face Locator's features (and, with `reference_latent_input`, the reference latent's)
    to its output (same parameters as nn.Conv2d)."""

    state: ConditioningState

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)  # (B*F, C0, h, w)
        face = self.state.face
        return out if face is None else out + face.to(out.dtype)


class EMOTemporalModule(AnimateDiffTransformer3D):
    """AnimateDiff temporal module with EMO's motion frames and speed layers.

    The N motion-frame features (from ReferenceNet, same resolution and width) are concatenated
    before the F frames along the frame axis, attended over N+F positions, then dropped. The speed
    layers then let every frame attend to the per-frame speed embeddings; their output projection
    starts at zero so a pretrained AnimateDiff module is unchanged at initialisation. A module built
    without AnimateDiff weights starts as the identity too: its `proj_out` is zero-initialised, as in
    AnimateDiff's own training, so the image model of stage 1 is unchanged when stage 2 begins.
    """

    def __init__(self, *, speed_dim: int, motion_layer: str | None, **kwargs):
        super().__init__(**kwargs)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        dim = self.in_channels
        heads = self.num_attention_heads
        self.speed_norm = nn.LayerNorm(dim)
        self.speed_attn = Attention(query_dim=dim, cross_attention_dim=speed_dim, heads=heads,
                                    dim_head=dim // heads, out_bias=True)
        nn.init.zeros_(self.speed_attn.to_out[0].weight)
        nn.init.zeros_(self.speed_attn.to_out[0].bias)
        self.motion_layer = motion_layer
        self.state: ConditioningState | None = None

    def _motion(self, batch: int, channels: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """(B, N, C, H, W) motion-frame features for this module (zeros for the first clip)."""
        st = self.state
        n = st.num_motion_frames
        if st.motion is not None and self.motion_layer is not None:
            tokens = st.motion[self.motion_layer]  # (B*N, H*W, C)
            maps = tokens.reshape(batch, n, height, width, channels).permute(0, 1, 4, 2, 3)
            return maps.to(like.dtype)
        return like.new_zeros(batch, n, channels, height, width)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states=None, timestep=None,
                class_labels=None, num_frames: int = 1, cross_attention_kwargs=None) -> torch.Tensor:
        """hidden_states (B*F, C, H, W) -> (B*F, C, H, W)."""
        st = self.state
        if st is None or st.skip_temporal:
            return hidden_states
        bf, c, h, w = hidden_states.shape
        b = bf // num_frames
        n = st.num_motion_frames
        if n > 0:
            frames = hidden_states.reshape(b, num_frames, c, h, w)
            x = torch.cat([self._motion(b, c, h, w, hidden_states), frames], dim=1)  # (B, N+F, C, H, W)
            x = super().forward(x.reshape(b * (n + num_frames), c, h, w), num_frames=n + num_frames)
            out = x.reshape(b, n + num_frames, c, h, w)[:, n:]  # drop the motion frames
        else:
            out = super().forward(hidden_states, num_frames=num_frames).reshape(b, num_frames, c, h, w)
        if st.speed is not None:
            tokens = out.permute(0, 3, 4, 1, 2).reshape(b * h * w, num_frames, c)  # (B*H*W, F, C)
            speed = st.speed.to(tokens.dtype).repeat_interleave(h * w, dim=0)  # (B*H*W, F, Cs)
            q = self.speed_norm(tokens)
            delta = _attend(self.speed_attn, q, self.speed_attn.to_k(speed), self.speed_attn.to_v(speed))
            out = out + delta.reshape(b, h, w, num_frames, c).permute(0, 3, 4, 1, 2)
        return out.reshape(bf, c, h, w)


class EMOUNet(OwnStorageMixin, UNetMotionModel):
    """EMO's Backbone Network (paper Fig. 2): denoises F frames conditioned on reference, audio, speed, face.

    Args (beyond SD1.5's `UNet2DConditionModel` ones, which keep their meaning):
        reference_mode: "cross" (paper: `attn2` attends to ReferenceNet features) or "concat"
            (reference tokens appended to `attn1`'s keys/values).
        num_frames: F, frames denoised per clip (paper: 12).
        num_motion_frames: N, previous frames given as motion frames (paper: 4).
        audio_dim: width Ca of the audio tokens from `AudioProjection`.
        speed_dim: width Cs of the speed embeddings from `SpeedEncoder`.
        face_locator_channels: width of the Face Locator's output (must equal block_out_channels[0]).
        text_cross_attention_dim: SD's text-embedding width (768); only used in concat mode, where the
            `attn2` layers keep SD's shapes.
        motion_*: AnimateDiff motion-module settings (mm_sd_v15_v2: 8 heads, length 32); the temporal
            modules' GroupNorm uses `norm_num_groups`, as in AnimateDiff.
        reference_latent_input: (ours) also read the reference latent through `reference_conv_in`, added
            after `conv_in` (Stable Video Diffusion's channel-concatenated image; off in the paper's design).
    """

    # The parent registers its own (wider) signature too; declaring it compatible makes
    # `from_pretrained` drop those keys silently instead of warning about them.
    has_compatibles = True

    @classmethod
    def _get_compatibles(cls):
        return [UNetMotionModel]

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
        num_frames: int = 12,
        num_motion_frames: int = 4,
        audio_dim: int = 768,
        speed_dim: int = 320,
        motion_num_attention_heads: int = 8,
        motion_max_seq_length: int = 32,
        use_motion_mid_block: bool = True,
        reference_latent_input: bool = False,
    ):
        if reference_mode not in REFERENCE_MODES:
            raise ValueError(f"reference_mode must be one of {REFERENCE_MODES}, got {reference_mode!r}")
        if num_motion_frames + num_frames > motion_max_seq_length:
            raise ValueError("num_motion_frames + num_frames exceeds motion_max_seq_length")
        # Cross mode: reference-attention takes same-layer C-dim features, so attn2's K/V are C -> C.
        cross_dims = list(block_out_channels) if reference_mode == "cross" else [text_cross_attention_dim] * len(block_out_channels)
        super().__init__(
            sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
            down_block_types=tuple(MOTION_BLOCK.get(t, t) for t in down_block_types),
            up_block_types=tuple(MOTION_BLOCK.get(t, t) for t in up_block_types),
            block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups, norm_eps=norm_eps, cross_attention_dim=cross_dims,
            num_attention_heads=num_attention_heads, use_linear_projection=use_linear_projection,
            motion_num_attention_heads=motion_num_attention_heads,
            motion_max_seq_length=motion_max_seq_length, use_motion_mid_block=use_motion_mid_block,
        )
        register_own_config(self, EMOUNet, locals())
        self.conditioning = ConditioningState(num_motion_frames=num_motion_frames)
        self._install_face_conv_in()
        self._install_temporal_modules(speed_dim)
        self._install_processors(reference_mode, audio_dim)
        # (ours, a switch; Stable Video Diffusion's channel-concatenated conditioning image) The reference latent
        # through its own conv, added after conv_in as the face features are: the same as concatenating it to
        # every frame's channels, but SD1.5's conv_in keeps its shape. Zero-initialised: no change at init.
        self.reference_conv_in = None
        if reference_latent_input:
            self.reference_conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
            nn.init.zeros_(self.reference_conv_in.weight)
            nn.init.zeros_(self.reference_conv_in.bias)

    # ---------------------------------------------------------------- construction
    def _install_face_conv_in(self) -> None:
        old = self.conv_in
        new = FaceConditionedConv2d(old.in_channels, old.out_channels, old.kernel_size, padding=old.padding)
        new.load_state_dict(old.state_dict())
        new.state = self.conditioning
        self.conv_in = new

    def _motion_layer_for(self, module_name: str, channels: int) -> str | None:
        """The ReferenceNet layer whose features feed the motion frames of this temporal module.

        Same block and index when the block has attentions (the module follows that attention);
        otherwise the mid-block's attention when its width matches (SD1.5's 8x8 blocks).
        """
        block, _, index = module_name.rpartition(".motion_modules.")
        names = spatial_layer_names(self)
        same = [n for n in names if n.startswith(f"{block}.attentions.{index}.")]
        if same:
            return same[-1]
        if self.mid_block is not None and getattr(self.mid_block, "attentions", None):
            mid = [n for n in names if n.startswith("mid_block.attentions.")]
            if mid and self.mid_block.attentions[0].in_channels == channels:
                return mid[-1]
        return None

    def _install_temporal_modules(self, speed_dim: int) -> None:
        cfg = self.config
        for name, module in list(self.named_modules()):
            if not isinstance(module, AnimateDiffTransformer3D) or isinstance(module, EMOTemporalModule):
                continue
            parent_name, _, idx = name.rpartition(".")
            parent = self.get_submodule(parent_name)
            new = EMOTemporalModule(
                speed_dim=speed_dim,
                motion_layer=self._motion_layer_for(name, module.in_channels),
                num_attention_heads=module.num_attention_heads,
                attention_head_dim=module.attention_head_dim,
                in_channels=module.in_channels,
                num_layers=len(module.transformer_blocks),
                norm_num_groups=module.norm.num_groups,
                cross_attention_dim=None,
                attention_bias=False,
                activation_fn="geglu",
                positional_embeddings="sinusoidal",
                num_positional_embeddings=cfg.motion_max_seq_length,
                double_self_attention=True,
            )
            new.state = self.conditioning
            parent[int(idx)] = new

    def _install_processors(self, reference_mode: str, audio_dim: int) -> None:
        for layer in spatial_layer_names(self):
            block = self.get_submodule(layer)
            dim = block.attn1.query_dim
            heads = block.attn1.heads
            if reference_mode == "concat":
                block.attn1.set_processor(ConcatReferenceAttnProcessor(self.conditioning, layer))
            block.attn2.set_processor(ReferenceAttnProcessor(
                self.conditioning, layer, dim, audio_dim, heads, reference=reference_mode == "cross"))

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        reference_features: dict[str, torch.Tensor] | None = None,
        motion_features: dict[str, torch.Tensor] | None = None,
        audio_embeds: torch.Tensor | None = None,
        speed_embeds: torch.Tensor | None = None,
        face_features: torch.Tensor | None = None,
        skip_temporal: bool = False,
        return_dict: bool = True,
        reference_latents: torch.Tensor | None = None,
    ):
        """Predict the noise of F noisy frame latents (paper eq. 1's eps_theta).

        Args:
            sample: (B, C, F, h, w) noisy latents z_t.
            timestep: diffusion step t (scalar or (B,)).
            reference_features: ReferenceNet features of the reference image, layer -> (B, L, C).
                None skips reference-attention; zeroed entries are the "no reference" condition.
            motion_features: ReferenceNet features of the N motion frames, layer -> (B*N, L, C);
                None means zero motion frames (the first clip).
            audio_embeds: (B, F, K, Ca) audio tokens per frame; None skips audio-attention.
            speed_embeds: (B, F, Cs) speed embeddings per frame; None skips the speed layers.
            face_features: (B, C0, h, w) Face Locator output, added after `conv_in`.
            skip_temporal: run as an image model (stage 1): temporal and speed layers are identity.
            reference_latents: (B, C, h, w) the reference image's latent, read by a model built with
                `reference_latent_input` (else ignored); zeros are the "no reference" condition, None skips it.

        Returns:
            `UNetMotionOutput` with `sample` (B, C, F, h, w), or a tuple when `return_dict=False`.
        """
        b, _, f = sample.shape[:3]
        st = self.conditioning
        st.reference = reference_features
        st.motion = motion_features
        st.audio = None if audio_embeds is None else audio_embeds.reshape(b * f, *audio_embeds.shape[2:])
        st.speed = speed_embeds
        added = face_features  # (B, C0, h, w) features added after conv_in to each of the F frames
        if self.reference_conv_in is not None and reference_latents is not None:
            ref = self.reference_conv_in(reference_latents.to(self.reference_conv_in.weight.dtype))
            added = ref if added is None else added + ref.to(added.dtype)
        st.face = None if added is None else added.repeat_interleave(f, dim=0)
        st.num_frames = f
        st.num_motion_frames = self.config.num_motion_frames
        st.skip_temporal = skip_temporal
        return super().forward(sample, timestep, encoder_hidden_states=None, return_dict=return_dict)


def parameter_groups(unet: EMOUNet) -> dict[str, str]:
    """Map every backbone parameter name to its training group (DESIGN.md section 3).

    Groups: "speed" (speed layers), "audio" (audio-attention), "temporal" (AnimateDiff temporal
    modules), "spatial" (the SD1.5 part, reference-attention included).
    """
    groups = {}
    for name, _ in unet.named_parameters():
        if ".speed_attn." in name or ".speed_norm." in name:
            groups[name] = "speed"
        elif ".audio_attn." in name:
            groups[name] = "audio"
        elif ".motion_modules." in name:
            groups[name] = "temporal"
        else:
            groups[name] = "spatial"
    return groups
