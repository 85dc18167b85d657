"""EMO's generation pipeline: one portrait + one voice clip -> a talking/singing video (paper 3.2).

`EMOPipeline` is a diffusers `DiffusionPipeline`, so `from_pretrained` / `save_pretrained` read and
write the model folder of DESIGN.md section 7. A video of any length is made of clips of F frames
generated one after another; the last N frames of each clip are the next clip's motion frames
(zero maps for the first clip). What is computed once per video before them (the framed reference, the
audio tokens, the speed embedding) is `inputs.py`'s `EMOInputsMixin`. Per clip the ReferenceNet runs once
(reference latent and motion latents in one batch) and its features are reused at every denoising step; the audio embeddings
are computed once for the whole audio; the classifier-free guidance branches run in one batched
backbone forward; each clip is decoded in frame chunks and handed on before the next one starts,
so `iter_frames` streams a video of any length in memory bounded by one clip. FreeInit (diffusers'
`FreeInitMixin`, `pipe.enable_free_init(num_iters=...)`) denoises each clip again from noise that
keeps the previous pass's low spatio-temporal frequencies: an opt-in, num_iters x the cost. A
`strength` below 1 starts each clip from the noised reference instead of pure noise (`strength.py`).
A `clip_overlap` O > 0 denoises each later clip over the previous clip's last O frames, held to
them at every step, so the join falls inside a clip (`overlap.py`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline

import emoportrait.models  # noqa: F401  (diffusers resolves the model folder's classes in loaded modules)
from emoportrait.errors import EMOError
from emoportrait.models.config import DEFAULT_GUIDANCE_AUDIO, DEFAULT_GUIDANCE_REF
from emoportrait.models.noise import checked_ratio, draw_frame_noise
from emoportrait.models.storage import OwnStorageMixin
from emoportrait.pipelines.free_init import EMOFreeInitMixin
from emoportrait.pipelines.guidance import checked_scale, combine_guidance, guidance_branches
from emoportrait.pipelines.inputs import EMOInputsMixin, GenerationInputs
from emoportrait.pipelines.overlap import checked_overlap, clip_start, replace_known
from emoportrait.pipelines.pipeline_output import EMOPipelineOutput, to_uint8
from emoportrait.pipelines.strength import checked_strength, noised_reference, steps_run, strength_timesteps

OUTPUT_TYPES = ("np", "pil", "pt", "latent")
DEFAULT_SPEED = 0.5  # degrees/frame (12.5 deg/s): calm talking-head motion, inside the speed buckets' range


class EMOPipeline(OwnStorageMixin, DiffusionPipeline, EMOInputsMixin, EMOFreeInitMixin):
    r"""Audio-driven portrait video generation (EMO, paper section 3.2, Fig. 2).

    Components:
        vae ([`AutoencoderKL`]): encodes the reference and motion frames, decodes generated latents.
        unet ([`EMOUNet`]): the Backbone Network, denoising F frames per clip.
        reference_unet ([`EMOReferenceNet`]): reference/motion-frame features for reference-attention
            and the temporal modules.
        face_locator ([`FaceLocator`]): encodes the face-region mask, added to the noisy latents.
        audio_encoder ([`Wav2Vec2AudioEncoder`] or [`LogMelAudioEncoder`]): per-frame audio features.
        audio_proj ([`AudioProjection`]): windowed audio tokens for audio-attention.
        speed_encoder ([`SpeedEncoder`]): target head-speed embeddings for the speed layers.
        scheduler ([`DDIMScheduler`] or any diffusers scheduler): the sampler.

    Config (saved in `model_index.json`, as SDXL's `force_zeros_for_empty_prompt`):
        guidance_scale_ref, guidance_scale_audio: the model's default classifier-free guidance scales,
            used when a call passes none (they are tuned per model: README, the default model).
        shared_noise_ratio: the noise prior the model was trained with (models/noise.py; 0 = independent).
        strength: the default start of each clip: 1 = pure noise (the paper); s < 1 = the reference noised
            to the step a fraction s into the schedule, running only those steps (img2img's `strength`).
        clip_overlap: the default overlap O of successive clips in frames: 0 = the paper's clips; O > 0
            denoises each later clip over the previous clip's last O frames (`overlap.py`).

    A face detector for reference framing can be set as `pipe.face_detector` (an object with
    `detect(rgb) -> box | None`); by default MediaPipe's is used.

    `enable_free_init(num_iters=N, ...)` (diffusers' `FreeInitMixin`, as for AnimateDiff) turns on
    FreeInit (Wu et al. 2023) for every clip: N denoising passes, each after the first starting from
    the previous pass's clean latents diffused back to the last timestep with the first pass's noise,
    low-pass filtered in (frame, height, width), plus fresh noise's high frequencies. Not in the EMO
    paper; less frame-to-frame flicker at N x the time (measured: docs/experiments.md, r47).
    """

    model_cpu_offload_seq = "audio_encoder->audio_proj->speed_encoder->face_locator->reference_unet->unet->vae"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, vae, unet, reference_unet, face_locator, audio_encoder, audio_proj, speed_encoder, scheduler,
                 guidance_scale_ref: float = DEFAULT_GUIDANCE_REF, guidance_scale_audio: float = DEFAULT_GUIDANCE_AUDIO,
                 shared_noise_ratio: float = 0.0, strength: float = 1.0, clip_overlap: int = 0):
        super().__init__()
        self.register_modules(
            vae=vae,
            unet=unet,
            reference_unet=reference_unet,
            face_locator=face_locator,
            audio_encoder=audio_encoder,
            audio_proj=audio_proj,
            speed_encoder=speed_encoder,
            scheduler=scheduler,
        )
        vae_config = getattr(vae, "config", None)
        self.vae_scale_factor = 2 ** (len(vae_config.block_out_channels) - 1) if vae_config is not None else 8
        self.face_detector = None
        ref = DEFAULT_GUIDANCE_REF if guidance_scale_ref is None else guidance_scale_ref  # None: a null in the folder
        audio = DEFAULT_GUIDANCE_AUDIO if guidance_scale_audio is None else guidance_scale_audio
        self.register_to_config(guidance_scale_ref=checked_scale("guidance_scale_ref", ref),
                                guidance_scale_audio=checked_scale("guidance_scale_audio", audio),
                                shared_noise_ratio=checked_ratio(shared_noise_ratio or 0.0),
                                strength=checked_strength(1.0 if strength is None else strength),
                                clip_overlap=checked_overlap(clip_overlap or 0))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, **kwargs):
        """diffusers' `from_pretrained`; with no location, the packaged default model (README: the default model).

        Raises `EMOError` when no location is given and no default model is installed. Every component's
        weights get storage of their own (models/storage.py), so the loaded pipeline computes what the saved one did.
        """
        if pretrained_model_name_or_path is None:
            from emoportrait.pipelines.loading import resolve_model

            pretrained_model_name_or_path = resolve_model(None)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    # ------------------------------------------------------------------ model-derived settings

    @property
    def num_frames(self) -> int:
        """F: frames denoised together per clip (backbone config; paper: 12)."""
        return int(self.unet.config.num_frames)

    @property
    def num_motion_frames(self) -> int:
        """N: previous frames fed back as motion frames (backbone config; paper: 4)."""
        return int(self.unet.config.num_motion_frames)

    @property
    def sample_size(self) -> int:
        """Square frame size S in pixels (backbone's latent size x the VAE's factor)."""
        for model in (self.unet, self.reference_unet):
            size = getattr(model.config, "sample_size", None)
            if size:
                return int(size if isinstance(size, int) else size[0]) * self.vae_scale_factor
        return 512

    @property
    def clip_index(self) -> int:
        """Index of the clip being denoised (for `callback_on_step_end`)."""
        return getattr(self, "_clip_index", 0)

    @property
    def num_clips(self) -> int:
        return getattr(self, "_num_clips", 0)

    @property
    def interrupt(self) -> bool:
        return getattr(self, "_interrupt", False)

    # ------------------------------------------------------------------ helpers

    def check_inputs(self, num_inference_steps, guidance_scale_ref, guidance_scale_audio, output_type,
                     decode_chunk_size, callback_on_step_end_tensor_inputs, strength: float = 1.0):
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise EMOError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        steps_run(num_inference_steps, checked_strength(strength))
        if strength < 1.0 and self.free_init_enabled:
            raise EMOError(f"strength {strength} and FreeInit do not combine (FreeInit re-noises each clip from its "
                           f"first timestep); leave strength out or pass 1 to use FreeInit")
        checked_scale("guidance_scale_ref", guidance_scale_ref)
        checked_scale("guidance_scale_audio", guidance_scale_audio)
        if output_type not in OUTPUT_TYPES:
            raise EMOError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if not isinstance(decode_chunk_size, int) or decode_chunk_size < 1:
            raise EMOError(f"decode_chunk_size must be a positive integer, got {decode_chunk_size!r}")
        unknown = set(callback_on_step_end_tensor_inputs or []) - set(self._callback_tensor_inputs)
        if unknown:
            raise EMOError(f"callback_on_step_end_tensor_inputs may only name {self._callback_tensor_inputs}, got {sorted(unknown)}")
        if self.free_init_enabled:
            self._check_free_init()

    def prepare_latents(self, num_frames, height, width, dtype, device, generator) -> torch.Tensor:
        """Initial noise (1, C, F, h, w) from the model's prior (its clip-common draw is kept for the video's
        later clips), scaled by the scheduler's `init_noise_sigma`."""
        shape = (1, self.unet.config.in_channels, num_frames, height // self.vae_scale_factor, width // self.vae_scale_factor)
        latents, self._shared_noise = draw_frame_noise(shape, self.config.shared_noise_ratio, generator,
                                                       torch.device(device), dtype, getattr(self, "_shared_noise", None))
        return latents * self.scheduler.init_noise_sigma

    def prepare_extra_step_kwargs(self, generator, eta):
        """`eta` (DDIM's eta, eq. 16 of the DDIM paper) and `generator` for schedulers that take them."""
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    # ------------------------------------------------------------------ the clip loop

    def _denoise_clip(self, inputs: GenerationInputs, clip: int, motion_latents: torch.Tensor | None,
                      num_inference_steps: int, guidance_scale_ref: float, guidance_scale_audio: float,
                      generator, extra_step_kwargs, callback_on_step_end, callback_on_step_end_tensor_inputs,
                      progress_bar, strength: float = 1.0, known_latents: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise one clip of F frames; returns its clean latents (1, C, F, h, w).

        `known_latents` (1, C, O, h, w): the previous clip's clean last O frames, which this clip's first O
        frames are held to at every step (`overlap.py`); None for none.
        """
        device, dtype = self._execution_device, self.unet.dtype
        f = self.num_frames
        branches = guidance_branches(guidance_scale_ref, guidance_scale_audio)
        nb = len(branches)
        use_ref = torch.tensor([r for r, _ in branches], device=device, dtype=dtype)  # (nb,)
        use_audio = torch.tensor([a for _, a in branches], device=device, dtype=dtype)

        # a. ReferenceNet ONCE per clip: the reference latent and the N motion latents in one batch.
        ref_in = inputs.reference_latents
        if motion_latents is not None:
            ref_in = torch.cat([ref_in, motion_latents.to(dtype)])  # (1+N, C, h, w)
        features = self.reference_unet(ref_in.to(self.reference_unet.dtype))  # layer -> (1[+N], L, C)
        # Dropping a condition = zeroing it for that branch (DESIGN.md section 3), in one batch.
        reference_features = {k: v[:1].to(dtype) * use_ref.view(nb, 1, 1) for k, v in features.items()}  # (nb, L, C)
        motion_features = None
        if motion_latents is not None:
            motion_features = {k: v[1:].to(dtype).repeat(nb, 1, 1) for k, v in features.items()}  # (nb*N, L, C)
        start = clip_start(clip, f, inputs.clip_overlap)
        audio = inputs.audio_embeds[:, start : start + f]  # (1, F, K, Ca)
        conditions = {  # the backbone's conditioning, the same at every step (and every FreeInit pass)
            "reference_features": reference_features,
            "motion_features": motion_features,
            "audio_embeds": audio * use_audio.view(nb, 1, 1, 1),  # (nb, F, K, Ca)
            "speed_embeds": None if inputs.speed_embeds is None else inputs.speed_embeds.expand(nb, -1, -1),
            "face_features": inputs.face_features.expand(nb, -1, -1, -1),  # (nb, C0, h, w)
            "reference_latents": inputs.reference_latents * use_ref.view(nb, 1, 1, 1),  # (nb, C, h, w)
        }

        # b. Initial noise for this clip.
        size = self.sample_size
        latents = self.prepare_latents(f, size, size, dtype, device, generator)  # (1, C, F, h, w)
        known = None  # (known clean latents, their noise) of the overlap frames
        if known_latents is not None:
            known = (known_latents.to(dtype), latents[:, :, : known_latents.shape[2]] / self.scheduler.init_noise_sigma)

        # c. Denoising loop (DDIM by default, paper 4.1); the guidance branches share one forward.
        #    With FreeInit on, the clip is denoised `num_iters` times, each pass from re-initialised noise.
        passes = self._free_init_num_iters if self.free_init_enabled else 1
        for free_init_iteration in range(passes):
            if self.free_init_enabled:
                latents, timesteps = self._apply_free_init(latents, free_init_iteration, num_inference_steps,
                                                           device, dtype, generator)
            else:
                timesteps = strength_timesteps(self.scheduler, num_inference_steps, strength, device)
                if strength < 1.0:  # start from the reference noised to the first step run (img2img)
                    latents = noised_reference(self.scheduler, inputs.reference_latents, latents, timesteps[:1])
            latents = self._denoise_pass(latents, timesteps, conditions, branches, guidance_scale_ref,
                                         guidance_scale_audio, extra_step_kwargs, callback_on_step_end,
                                         callback_on_step_end_tensor_inputs, progress_bar, known)
            if self.interrupt:
                break
        return latents

    def _denoise_pass(self, latents, timesteps, conditions: dict, branches, guidance_scale_ref, guidance_scale_audio,
                      extra_step_kwargs, callback_on_step_end, callback_on_step_end_tensor_inputs,
                      progress_bar, known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """One pass of the denoising loop over `timesteps`, the guidance branches in one batched forward.

        `known` (clean latents, noise) of the clip's first O frames holds them to the clean latents noised
        to each step, and to the clean latents after the last (`overlap.py`).
        """
        known_latents, known_noise = known if known is not None else (None, None)
        nb = len(branches)
        self._num_timesteps = len(timesteps)
        for i, t in enumerate(timesteps):
            if self.interrupt:
                break
            latents = replace_known(self.scheduler, latents, known_latents, known_noise, t)
            model_input = self.scheduler.scale_model_input(latents, t).expand(nb, -1, -1, -1, -1)  # (nb, C, F, h, w)
            noise_pred = self.unet(model_input, t, **conditions).sample  # (nb, C, F, h, w)
            noise_pred = combine_guidance(noise_pred, branches, guidance_scale_ref, guidance_scale_audio)
            latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs).prev_sample
            if callback_on_step_end is not None:
                step_tensors = {"latents": latents}
                callback_kwargs = {k: step_tensors[k] for k in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                latents = callback_outputs.pop("latents", latents)
            progress_bar.update()
        return replace_known(self.scheduler, latents, known_latents, known_noise, None)

    def _iter_clips(self, inputs: GenerationInputs, num_inference_steps, guidance_scale_ref, guidance_scale_audio,
                    generator, eta, decode: bool, decode_chunk_size, callback_on_step_end,
                    callback_on_step_end_tensor_inputs, motion_frames: bool = True,
                    strength: float = 1.0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Generate clip after clip; yields each clip's new frames: (latents (1, C, f, h, w), video (1, 3, f, S, S) or None).

        The last clip is trimmed so the frames total `inputs.num_frames`. The N frames before each clip's
        first frame, re-encoded with the VAE, are its motion frames (paper 3.2): without overlap the
        previous clip's last N. Without `motion_frames` every clip is generated as the first one is, with
        none. With an overlap O a clip's first O frames are the previous clip's last O (`overlap.py`),
        which it does not yield again.
        """
        f, n, o = self.num_frames, self.num_motion_frames if motion_frames else 0, inputs.clip_overlap
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        self._num_clips, self._interrupt = inputs.num_clips, False
        motion_latents, self._shared_noise = None, None  # zero motion frames for the first clip; a new video's noise
        known_latents = None  # the previous clip's clean last O latents
        history: torch.Tensor | None = None  # last decoded frames before the next clip's first, (1, 3, <=N, S, S)
        with self.progress_bar(total=inputs.num_clips * self.steps_per_clip(num_inference_steps, strength)) as progress_bar:
            for clip in range(inputs.num_clips):
                self._clip_index = clip
                if hasattr(progress_bar, "set_description"):
                    progress_bar.set_description(f"clip {clip + 1}/{inputs.num_clips}")
                latents = self._denoise_clip(
                    inputs, clip, motion_latents, num_inference_steps, guidance_scale_ref, guidance_scale_audio,
                    generator, extra_step_kwargs, callback_on_step_end, callback_on_step_end_tensor_inputs,
                    progress_bar, strength, known_latents)
                if self.interrupt:
                    return
                skip = 0 if clip == 0 else o  # frames already yielded by the previous clip
                keep = min(f - skip, inputs.num_frames - clip_start(clip, f, o) - skip)  # new frames up to T
                last = clip == inputs.num_clips - 1
                video = self.decode_latents(latents[:, :, skip:], decode_chunk_size) if decode else None  # (1, 3, F - skip, S, S)
                if not last and n > 0:
                    lo, hi = max(0, f - o - n), f - o  # this clip's frames just before the next clip's first
                    if decode and lo >= skip:
                        before = video[:, :, lo - skip : hi - skip]
                    else:
                        before = self.decode_latents(latents[:, :, lo:hi], decode_chunk_size)
                    recent = before if history is None else torch.cat([history, before], dim=2)
                    history = recent[:, :, -n:]
                    if history.shape[2] == n:
                        motion = history[0].permute(1, 0, 2, 3)  # (N, 3, S, S)
                        motion_latents = self.encode_frames(motion)  # (N, C, h, w)
                if not last and o:
                    known_latents = latents[:, :, f - o :]
                yield latents[:, :, skip : skip + keep], (video[:, :, :keep] if decode else None)

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def __call__(
        self,
        image,
        audio,
        num_inference_steps: int = 40,
        guidance_scale_ref: float | None = None,
        guidance_scale_audio: float | None = None,
        speed: float | None = DEFAULT_SPEED,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        face_mask=None,
        face_box=None,
        output_type: str = "np",
        return_dict: bool = True,
        decode_chunk_size: int = 16,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        motion_frames: bool = True,
        strength: float | None = None,
        clip_overlap: int | None = None,
    ) -> EMOPipelineOutput | tuple:
        r"""Generate the video for one portrait and one audio, as long as the audio (25 fps).

        Args:
            image: the reference portrait: a path, PIL image or (H, W[, C]) array, any mode.
            audio: the driving audio: a path (any format PyAV reads) or a (S,) 16 kHz array.
            num_inference_steps: denoising steps per clip (paper: DDIM, 40).
            guidance_scale_ref: classifier-free guidance scale of the reference image (1 = off; None =
                the model's `config.guidance_scale_ref`).
            guidance_scale_audio: classifier-free guidance scale of the audio (1 = off; None = the
                model's `config.guidance_scale_audio`).
            speed: constant target head rotation speed in degrees/frame for every frame (paper 4.1);
                None skips the speed layers (as a model trained without stage 3 would).
            generator: torch generator for reproducible noise.
            eta: DDIM's eta (0 = deterministic DDIM).
            face_mask: (S, S) face-region mask; with it `image` counts as already framed (no detection).
            face_box: face box in the image's pixels; skips face detection.
            output_type: "np", "pil", "pt" or "latent" (see `EMOPipelineOutput`).
            return_dict: return an `EMOPipelineOutput` (else a tuple `(frames,)`).
            decode_chunk_size: frames the VAE decodes at once.
            callback_on_step_end: `fn(pipe, step, timestep, callback_kwargs) -> dict`, called after
                every denoising step of every clip (`pipe.clip_index` tells the clip).
            callback_on_step_end_tensor_inputs: tensors passed in `callback_kwargs` ("latents").
            motion_frames: feed each clip's last N frames to the next clip (paper 3.2). False generates
                every clip as the first, without motion frames: an ablation, and the control that tells
                a long video's drift (carried from clip to clip) from what its audio does.
            strength: where each clip starts (None = the model's `config.strength`): 1 = pure noise (the
                paper); s < 1 = the reference latent noised to the step a fraction s into the schedule,
                and only the last int(num_inference_steps * s) steps run (img2img's `strength`). Lower
                keeps more of the reference's look and pose (`pipelines/strength.py`).
            clip_overlap: frames each clip after the first shares with the one before (None = the model's
                `config.clip_overlap`): 0 = the paper's clips; O > 0 holds each later clip's first O frames
                to the previous clip's last O while it denoises, so the temporal layers see across the join
                (`pipelines/overlap.py`), at F / (F - O) x the denoising time.

        Returns:
            `EMOPipelineOutput` with `frames`, or `(frames,)` when `return_dict` is False.
        """
        # 1. Check inputs
        guidance_scale_ref, guidance_scale_audio = self._resolve_guidance(guidance_scale_ref, guidance_scale_audio)
        strength = self._resolve_strength(strength)
        self.check_inputs(num_inference_steps, guidance_scale_ref, guidance_scale_audio, output_type,
                          decode_chunk_size, callback_on_step_end_tensor_inputs, strength)

        # 2-5. Prepare the reference (framing, mask), audio tokens, speed, once per video
        inputs = self.prepare_inputs(image, audio, speed=self._resolve_speed(speed), face_mask=face_mask, face_box=face_box,
                                     clip_overlap=self.resolve_clip_overlap(clip_overlap))

        # 6-8. Clip loop: ReferenceNet once per clip, batched CFG denoising, chunked decoding
        decode = output_type != "latent"
        chunks = []
        for latents, video in self._iter_clips(inputs, num_inference_steps, guidance_scale_ref, guidance_scale_audio,
                                               generator, eta, decode, decode_chunk_size, callback_on_step_end,
                                               list(callback_on_step_end_tensor_inputs), motion_frames, strength):
            chunks.append(latents if not decode else (video.cpu() + 1.0) / 2.0)  # video in [0, 1]

        # 9. Post-process
        frames = torch.cat(chunks, dim=2) if chunks else None  # (1, C, T, H, W)
        if frames is not None and output_type != "latent":
            frames = frames.permute(0, 2, 1, 3, 4)  # (1, T, 3, S, S)
            if output_type == "np":
                frames = frames.permute(0, 1, 3, 4, 2).numpy()
            elif output_type == "pil":
                frames = [[PIL.Image.fromarray(f) for f in to_uint8(frames[0])]]

        # 10. Offload all models
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return EMOPipelineOutput(frames=frames)

    @torch.no_grad()
    def iter_frames(
        self,
        image,
        audio,
        num_inference_steps: int = 40,
        guidance_scale_ref: float | None = None,
        guidance_scale_audio: float | None = None,
        speed: float | None = DEFAULT_SPEED,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        face_mask=None,
        face_box=None,
        decode_chunk_size: int = 16,
        callback_on_step_end: Callable | None = None,
        motion_frames: bool = True,
        strength: float | None = None,
        clip_overlap: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Stream the video as (S, S, 3) uint8 RGB frames, clip by clip (memory bounded by one clip).

        Same arguments and the same frames as `__call__` (output_type "np", as uint8); use it to
        write long videos, e.g. into `emoportrait.data.media.VideoWriter`.
        """
        guidance_scale_ref, guidance_scale_audio = self._resolve_guidance(guidance_scale_ref, guidance_scale_audio)
        strength = self._resolve_strength(strength)
        self.check_inputs(num_inference_steps, guidance_scale_ref, guidance_scale_audio, "np", decode_chunk_size, [],
                          strength)
        inputs = self.prepare_inputs(image, audio, speed=self._resolve_speed(speed), face_mask=face_mask, face_box=face_box,
                                     clip_overlap=self.resolve_clip_overlap(clip_overlap))
        for _, video in self._iter_clips(inputs, num_inference_steps, guidance_scale_ref, guidance_scale_audio,
                                         generator, eta, True, decode_chunk_size, callback_on_step_end, ["latents"],
                                         motion_frames, strength):
            yield from to_uint8(((video.cpu() + 1.0) / 2.0)[0].permute(1, 0, 2, 3))
        self.maybe_free_model_hooks()

    def _resolve_guidance(self, ref: float | None, audio: float | None) -> tuple[float, float]:
        """The call's guidance scales, each falling back to the model's config (a folder naming none: the defaults)."""
        return (self.config.guidance_scale_ref if ref is None else ref,
                self.config.guidance_scale_audio if audio is None else audio)

    @property
    def default_strength(self) -> float:
        """The strength of a call that names none: the model's config (1 where a folder names none), or 1,
        pure noise, while FreeInit is on (it re-noises each clip from the first timestep)."""
        return 1.0 if self.free_init_enabled else checked_strength(getattr(self.config, "strength", 1.0))

    def _resolve_strength(self, strength: float | None) -> float:
        return self.default_strength if strength is None else checked_strength(strength)

    def steps_per_clip(self, num_inference_steps: int, strength: float | None = None) -> int:
        """Backbone steps one clip takes: FreeInit's passes, or the steps a `strength` below 1 runs."""
        strength = self._resolve_strength(strength)
        if strength < 1.0:
            return steps_run(num_inference_steps, strength)
        return super().steps_per_clip(num_inference_steps)

    @property
    def default_clip_overlap(self) -> int:
        """The clip overlap of a call that names none: the model's config (0 where a folder names none)."""
        return checked_overlap(getattr(self.config, "clip_overlap", 0) or 0, self.num_frames, self.num_motion_frames)

    def resolve_clip_overlap(self, clip_overlap: int | None = None, name: str = "clip_overlap") -> int:
        """A call's clip overlap (None: the model's default), checked against F and N (errors call it `name`)."""
        if clip_overlap is None:
            return self.default_clip_overlap
        return checked_overlap(clip_overlap, self.num_frames, self.num_motion_frames, name=name)

    @staticmethod
    def _resolve_speed(speed: float | None) -> float | None:
        if speed is not None and not math.isfinite(float(speed)):
            raise EMOError(f"speed must be a finite number of degrees per frame, got {speed!r}")
        return None if speed is None else float(speed)
