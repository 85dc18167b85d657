"""What `EMOPipeline` computes once per video, before its clip loop (paper 3.2, Fig. 2's inputs).

`EMOInputsMixin` frames the reference portrait around its face and builds the face-region mask M,
moves frames into and out of the VAE's latent space, encodes the whole audio once into per-frame audio
tokens (in bounded windows, so any length fits in memory), and embeds the target head speed.
`prepare_inputs` gathers them into a `GenerationInputs`, which every clip then reads. The mixin
expects the pipeline's components (`vae`, `face_locator`, `audio_encoder`, `audio_proj`,
`speed_encoder`, `unet`) and its `sample_size`, `num_frames` and `face_detector`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch

from emoportrait.data.media import FPS, SAMPLE_RATE
from emoportrait.pipelines.overlap import clip_start
from emoportrait.pipelines.overlap import num_clips as count_clips
from emoportrait.pipelines.preprocessing import load_audio, load_image, num_video_frames, prepare_reference

SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640 audio samples per video frame


@dataclass
class GenerationInputs:
    """Everything computed once per video, before the clip loop (see `EMOPipeline.prepare_inputs`).

    Attributes:
        reference_latents: (1, C, h, w) VAE latent of the framed reference image (scaled).
        face_features: (1, C0, h, w) Face Locator output for the face-region mask M.
        audio_embeds: (1, T_gen, K, Ca) audio tokens for every generated frame (T_gen = the last clip's end).
        speed_embeds: (1, F, Cs) embedding of the constant target head speed, or None.
        num_frames: T, frames of the output video (round(audio duration x 25), at least 1).
        num_clips: ceil(T / F) without overlap; 1 + ceil((T - F) / (F - O)) with O frames of overlap.
        clip_overlap: O, frames each clip after the first shares with the one before (`overlap.py`).
    """

    reference_latents: torch.Tensor
    face_features: torch.Tensor
    audio_embeds: torch.Tensor
    speed_embeds: torch.Tensor | None
    num_frames: int
    num_clips: int
    clip_overlap: int = 0


class EMOInputsMixin:
    """The per-video input steps of `EMOPipeline` (see the module's docstring)."""

    audio_window_frames = 750  # 30 s of audio per audio-encoder call (see `encode_audio`)
    audio_context_frames = 50  # 2 s of context on each side of a window

    def prepare_reference(self, image, face_mask=None, face_box=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame the reference portrait around its face (see `preprocessing`) and build the mask M.

        Args:
            image: path, PIL image or array of a portrait in any mode.
            face_mask: (S, S) or (1, 1, S, S) mask; if given, `image` is taken as already framed
                (only resized to S) and no face detection runs.
            face_box: known face box (x0, y0, x1, y1) in the image's pixels; skips detection.

        Returns:
            pixels (1, 3, S, S) in [-1, 1] and mask (1, 1, S, S) in {0, 1}, both float32 on CPU.
        """
        size = self.sample_size
        if face_mask is None:
            prepared = prepare_reference(image, size, detector=self.face_detector, face_box=face_box)
            rgb, mask = prepared.image, torch.from_numpy(prepared.face_mask)
        else:
            rgb = np.array(PIL.Image.fromarray(load_image(image)).resize((size, size), PIL.Image.Resampling.LANCZOS))
            mask = torch.as_tensor(np.asarray(face_mask), dtype=torch.float32).reshape(1, 1, *np.shape(face_mask)[-2:])
            mask = torch.nn.functional.interpolate(mask, size=(size, size), mode="nearest")
        pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # (1, 3, S, S)
        return pixels, (mask.reshape(1, 1, size, size) > 0.5).float()

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """VAE latents (distribution mode, scaled) of frames: (B, 3, S, S) in [-1, 1] -> (B, C, h, w)."""
        pixels = pixels.to(device=self.vae.device, dtype=self.vae.dtype)
        latents = self.vae.encode(pixels).latent_dist.mode()
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int = 16) -> torch.Tensor:
        """Decode (B, C, F, h, w) latents `decode_chunk_size` frames at a time -> (B, 3, F, S, S) in [-1, 1]."""
        b, c, f, h, w = latents.shape
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        latents = latents / self.vae.config.scaling_factor + shift
        latents = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # (B*F, C, h, w)
        video = torch.cat([
            self.vae.decode(latents[i : i + decode_chunk_size].to(self.vae.dtype)).sample
            for i in range(0, b * f, decode_chunk_size)
        ])  # (B*F, 3, S, S)
        return video.reshape(b, f, *video.shape[1:]).permute(0, 2, 1, 3, 4).float().clamp(-1.0, 1.0)

    def encode_audio(self, waveform: np.ndarray, num_frames: int, device, dtype) -> torch.Tensor:
        """Audio tokens for `num_frames` video frames, computed once for the whole audio.

        The encoder runs on windows of `audio_window_frames` frames with `audio_context_frames` of
        audio on each side (kept only as context), so a wav2vec2 encoder's attention never spans
        more than ~34 s and memory stays bounded for any audio length; the projection's +-m window
        then runs over the whole sequence, so clip boundaries see their true neighbours.

        Args:
            waveform: (S,) float32 at 16 kHz; zero-padded (or cut) to `num_frames` x 640 samples.

        Returns:
            (1, num_frames, K, Ca) tokens (K = 2m+1 window of paper 3.2's audio layers).
        """
        wave = torch.from_numpy(np.asarray(waveform, dtype=np.float32))
        need = num_frames * SAMPLES_PER_FRAME
        wave = torch.nn.functional.pad(wave, (0, need - wave.numel())) if wave.numel() < need else wave[:need]
        wave = wave[None].to(device=device, dtype=getattr(self.audio_encoder, "dtype", torch.float32))  # (1, S)
        window, context = self.audio_window_frames, self.audio_context_frames
        chunks = []
        for start in range(0, num_frames, window):
            end = min(start + window, num_frames)
            lo, hi = max(0, start - context), min(num_frames, end + context)
            features = self.audio_encoder(wave[:, lo * SAMPLES_PER_FRAME : hi * SAMPLES_PER_FRAME], num_frames=hi - lo)
            chunks.append(features[:, start - lo : end - lo])  # (1, end - start, L, D)
        features = torch.cat(chunks, dim=1)  # (1, T, L, D)
        return self.audio_proj(features.to(self.audio_proj.dtype)).to(dtype)  # (1, T, K, Ca)

    def encode_speed(self, speed: float | None, device, dtype) -> torch.Tensor | None:
        """(1, F, Cs) embedding of a constant target head speed (degrees/frame; paper 4.1), or None."""
        if speed is None:
            return None
        speeds = torch.full((1, self.num_frames), float(speed), device=device, dtype=self.speed_encoder.dtype)
        return self.speed_encoder(speeds).to(dtype)

    def prepare_inputs(self, image, audio, speed=None, face_mask=None, face_box=None,
                       clip_overlap: int = 0) -> GenerationInputs:
        """Steps computed once per video: reference latent, face features, audio tokens, speed."""
        device, dtype = self._execution_device, self.unet.dtype
        pixels, mask = self.prepare_reference(image, face_mask=face_mask, face_box=face_box)
        waveform = load_audio(audio)
        total = num_video_frames(waveform.size)
        clips = count_clips(total, self.num_frames, clip_overlap)
        return GenerationInputs(
            reference_latents=self.encode_frames(pixels).to(dtype),  # (1, C, h, w)
            face_features=self.face_locator(mask.to(device=device, dtype=self.face_locator.dtype)).to(dtype),
            audio_embeds=self.encode_audio(waveform, clip_start(clips - 1, self.num_frames, clip_overlap) + self.num_frames,
                                           device, dtype),
            speed_embeds=self.encode_speed(speed, device, dtype),
            num_frames=total,
            num_clips=clips,
            clip_overlap=clip_overlap,
        )
