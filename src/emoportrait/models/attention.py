"""Attention processors that turn SD1.5's transformer blocks into EMO's (paper section 3.2).

diffusers' `Attention` modules keep their weights; only their processors change:

- ReferenceNet `attn1`: `CaptureSelfAttnProcessor` stores its input tokens (the "self-attention
  features" of the block) in the shared conditioning state, then runs ordinary self-attention.
- Backbone `attn2` in **cross** mode (paper): `ReferenceAttnProcessor` attends from the frame tokens
  to the ReferenceNet tokens of the *same* layer, then `audio_attn` attends to the frame's audio
  tokens ("audio-attention after each reference-attention").
- Backbone `attn1` in **concat** mode (AnimateAnyone/Hallo/EchoMimic): `ConcatReferenceAttnProcessor`
  appends the reference tokens to self-attention's keys and values; `attn2` then carries only the
  audio attention (SD's text keys/values are unused in that mode).

Processors with weights are `nn.Module`s (as IP-Adapter's are), so their weights live in the
model's `state_dict` under `...attn2.processor.audio_attn.*`. All per-call inputs come from one
`ConditioningState` shared by the model and its processors (set by the model's `forward`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn


@dataclass
class ConditioningState:
    """Per-forward inputs shared by a model and its processors/temporal modules.

    The model's `forward` overwrites it on every call; it is not cleared afterwards so that
    gradient-checkpoint recomputation during backward sees the same inputs.
    """

    features: dict[str, torch.Tensor] = field(default_factory=dict)  # ReferenceNet capture: (B, L, C)
    reference: dict[str, torch.Tensor] | None = None  # backbone: (B, L, C) per layer
    motion: dict[str, torch.Tensor] | None = None  # backbone: (B*N, L, C) per layer
    audio: torch.Tensor | None = None  # (B*F, K, Ca)
    speed: torch.Tensor | None = None  # (B, F, Cs)
    face: torch.Tensor | None = None  # (B*F, C0, h, w) added after conv_in: Face Locator (+ reference latent) features
    num_frames: int = 1
    num_motion_frames: int = 0
    skip_temporal: bool = False


def _attend(attn: Attention, query_tokens: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Multi-head SDPA with `attn`'s query/output projections. key/value are already projected."""
    b = query_tokens.shape[0]
    heads = attn.heads
    q = attn.to_q(query_tokens)  # (B, Lq, inner)
    if attn.norm_q is not None or attn.norm_k is not None:
        raise NotImplementedError("EMO processors do not support qk-norm attention")
    head_dim = q.shape[-1] // heads
    q = q.view(b, -1, heads, head_dim).transpose(1, 2)  # (B, h, Lq, d)
    k = key.view(key.shape[0], -1, heads, head_dim).transpose(1, 2)  # (B, h, Lk, d)
    v = value.view(value.shape[0], -1, heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)  # (B, h, Lq, d)
    out = out.transpose(1, 2).reshape(b, -1, heads * head_dim).to(q.dtype)
    out = attn.to_out[0](out)
    out = attn.to_out[1](out)  # dropout
    return out / attn.rescale_output_factor


def _self_attention(attn: Attention, hidden_states: torch.Tensor, extra_kv: torch.Tensor | None = None) -> torch.Tensor:
    """Self-attention over `hidden_states`, optionally with `extra_kv` tokens appended to keys/values."""
    kv_tokens = hidden_states if extra_kv is None else torch.cat([hidden_states, extra_kv], dim=1)
    return _attend(attn, hidden_states, attn.to_k(kv_tokens), attn.to_v(kv_tokens))


def _check_plain(attn: Attention, hidden_states: torch.Tensor) -> None:
    if hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None:
        raise NotImplementedError("EMO processors expect (B, L, C) tokens without spatial/group norm")


def _per_frame(x: torch.Tensor, batch_frames: int) -> torch.Tensor:
    """Repeat per-video (B, ...) tensors for every frame: (B, ...) -> (B*F, ...)."""
    if x.shape[0] == batch_frames:
        return x
    return x.repeat_interleave(batch_frames // x.shape[0], dim=0)


class CaptureSelfAttnProcessor:
    """ReferenceNet self-attention that records its input tokens as this layer's reference feature."""

    def __init__(self, state: ConditioningState, layer: str):
        self.state = state
        self.layer = layer

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        _check_plain(attn, hidden_states)
        self.state.features[self.layer] = hidden_states  # (B, L, C)
        return _self_attention(attn, hidden_states)


class ReferenceSelfAttnProcessor:
    """ReferenceNet `attn2` in cross mode: reference-attention of the ReferenceNet to its own features.

    Keeps the ReferenceNet structurally identical to the backbone's spatial part, so with equal
    weights and input both produce equal features.
    """

    def __init__(self, state: ConditioningState, layer: str):
        self.state = state
        self.layer = layer

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        ref = self.state.features[self.layer]
        return _attend(attn, hidden_states, attn.to_k(ref), attn.to_v(ref))


class NullAttnProcessor:
    """An `attn` slot that contributes nothing (ReferenceNet `attn2` in concat mode)."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


class AudioAttention(nn.Module):
    """Audio-attention: frame tokens attend to that frame's audio tokens (paper 3.2, "Audio Layers").

    The output projection starts at zero, so a freshly added layer leaves the backbone unchanged.
    """

    def __init__(self, dim: int, audio_dim: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(query_dim=dim, cross_attention_dim=audio_dim, heads=heads,
                              dim_head=dim // heads, out_bias=True)
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)

    def forward(self, hidden_states: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """hidden_states (B*F, L, C), audio (B*F, K, Ca) -> (B*F, L, C) residual update."""
        x = self.norm(hidden_states)
        return _attend(self.attn, x, self.attn.to_k(audio), self.attn.to_v(audio))


class ReferenceAttnProcessor(nn.Module):
    """Backbone `attn2`: reference-attention (cross mode) followed by audio-attention.

    Args:
        state: the backbone's conditioning state.
        layer: this block's name; the ReferenceNet feature of the same name is attended to.
        dim, audio_dim, heads: sizes of the audio-attention.
        reference: True for cross mode (this slot attends to the reference); False for concat mode
            (the reference is handled in `attn1`; this slot only runs audio-attention).
    """

    def __init__(self, state: ConditioningState, layer: str, dim: int, audio_dim: int, heads: int,
                 reference: bool = True):
        super().__init__()
        self.state = state  # shared plain object, not a submodule
        self.layer = layer
        self.reference = reference
        self.audio_attn = AudioAttention(dim, audio_dim, heads)

    def forward(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        _check_plain(attn, hidden_states)
        st = self.state
        bf = hidden_states.shape[0]  # B*F
        out = torch.zeros_like(hidden_states)
        if self.reference and st.reference is not None:
            ref = st.reference[self.layer]  # (B, L, C)
            # Project the reference once per video, then share it across that video's frames.
            key = _per_frame(attn.to_k(ref), bf)  # (B*F, L, inner)
            value = _per_frame(attn.to_v(ref), bf)
            out = _attend(attn, hidden_states, key, value)
        if st.audio is not None:
            out = out + self.audio_attn(hidden_states + out, st.audio)
        return out


class ConcatReferenceAttnProcessor:
    """Backbone `attn1` in concat mode: self-attention whose keys/values include the reference tokens."""

    def __init__(self, state: ConditioningState, layer: str):
        self.state = state
        self.layer = layer

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        _check_plain(attn, hidden_states)
        st = self.state
        extra = None
        if st.reference is not None:
            extra = _per_frame(st.reference[self.layer], hidden_states.shape[0])  # (B*F, L, C)
        return _self_attention(attn, hidden_states, extra)
