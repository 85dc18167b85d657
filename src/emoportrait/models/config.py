"""Model sizes (DESIGN.md section 6): one dataclass, two YAML files, nothing branches on the size.

`configs/full.yaml` has SD1.5's dimensions (512 px, F=12, N=4, m=2, wav2vec2-base); `configs/tiny.yaml`
the same classes with small widths (128 px, log-mel audio) for CPU training, tests and the
embedded default model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from emoportrait.config import load_config
from emoportrait.errors import EMOError

DEFAULT_GUIDANCE_REF = 2.0  # a model's guidance scales when its config / model_index.json names none
DEFAULT_GUIDANCE_AUDIO = 3.0


@dataclass
class UNetSizeConfig:
    """Spatial UNet dimensions shared by the backbone and ReferenceNet (SD1.5 by default)."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                         "CrossAttnDownBlock2D", "DownBlock2D")
    up_block_types: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                       "CrossAttnUpBlock2D")
    layers_per_block: int = 2
    norm_num_groups: int = 32
    num_attention_heads: int = 8
    use_linear_projection: bool = False


@dataclass
class VAESizeConfig:
    """AutoencoderKL dimensions (SD1.5's; the tiny size trains a small one on the synthetic world)."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    latent_channels: int = 4
    scaling_factor: float = 0.18215


@dataclass
class ScheduleConfig:
    """What the backbone predicts and the ends of SD's noise schedule (the folder's `scheduler/`).

    SD1.5's: eps prediction, the last training step keeps sqrt(alpha_bar) = 0.068 of the image, DDIM
    steps spaced "leading" (10 steps start at t = 901). A model trained that way reads the
    image's low frequencies (background colour, layout) from that leftover signal, which pure noise at
    inference does not have; "zero terminal SNR" (Lin et al. 2024, "Common Diffusion Noise Schedules
    and Sample Steps are Flawed") rescales the betas so the last step is pure noise, which needs v
    prediction, and starts DDIM at t = 999 ("trailing"). (ours) A switch, off in both sizes: tried on the
    tiny default model, it steadied the frames but cost their detail (docs/experiments.md).
    """

    prediction_type: str = "epsilon"  # "epsilon" (SD1.5) | "v_prediction"
    rescale_betas_zero_snr: bool = False
    timestep_spacing: str = "leading"  # "leading" (SD1.5) | "trailing" | "linspace"

    def check(self) -> None:
        """Raise EMOError for a value diffusers' schedulers do not take, or zero SNR with eps prediction."""
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise EMOError(f"schedule.prediction_type must be epsilon or v_prediction, got {self.prediction_type!r}")
        if self.rescale_betas_zero_snr and self.prediction_type != "v_prediction":
            raise EMOError("schedule.rescale_betas_zero_snr needs --schedule.prediction_type=v_prediction "
                           "(eps says nothing about the image at zero SNR)")
        if self.timestep_spacing not in ("leading", "trailing", "linspace"):
            raise EMOError(f"schedule.timestep_spacing must be leading, trailing or linspace, got {self.timestep_spacing!r}")


@dataclass
class ModelConfig:
    """Everything that fixes the shapes of an EMO model, and the defaults its folder records (guidance, noise prior)."""

    name: str = "full"
    resolution: int = 512  # frame size in pixels (square)
    num_frames: int = 12  # F
    num_motion_frames: int = 4  # N
    window: int = 2  # m, audio and speed window half-width
    reference_mode: str = "cross"  # "cross" (paper) | "concat" (AnimateAnyone/Hallo/EchoMimic)
    # How a randomly initialised ReferenceNet starts (models/build.py, tie_reference_init; a pretrained init
    # loads SD1.5 into both networks instead): "random" = its own random weights; "backbone" = what SD1.5 gives
    # the paper, the backbone's spatial weights, with reference-attention starting as a copy of self-attention.
    reference_init: str = "random"
    # (ours, off = the paper) The backbone also reads the reference latent pixel-aligned, through a zero-initialised
    # conv added after conv_in: Stable Video Diffusion's channel-concatenated conditioning image (models/backbone.py).
    reference_latent_input: bool = False
    unet: UNetSizeConfig = field(default_factory=UNetSizeConfig)
    motion_num_attention_heads: int = 8
    motion_max_seq_length: int = 32
    use_motion_mid_block: bool = True
    audio_encoder: str = "wav2vec2"  # "wav2vec2" | "logmel"
    wav2vec2_layers: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
    n_mels: int = 40
    audio_dim: int = 768  # Ca, width of audio tokens
    audio_hidden_dim: int = 768
    speed_dim: int = 320  # Cs, width of speed embeddings
    speed_hidden_dim: int = 256
    speed_centers: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
    speed_radii: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25, 0.375, 0.5, 0.75, 1.0, 1.0)
    face_locator_channels: tuple[int, ...] = (16, 32, 96, 256)
    vae: VAESizeConfig = field(default_factory=VAESizeConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # Classifier-free guidance defaults written into the model folder's model_index.json (EMOPipeline's
    # config); a call or `--guidance-*` overrides them. Not shapes: tuned per model, not in the paper.
    guidance_scale_ref: float = DEFAULT_GUIDANCE_REF
    guidance_scale_audio: float = DEFAULT_GUIDANCE_AUDIO
    # Noise prior of the video stages and generation (models/noise.py), also written into model_index.json:
    # 0 = independent per frame (the paper); r > 0 = a share r of each frame's noise variance common to the clip.
    shared_noise_ratio: float = 0.0
    # Where generation starts each clip, also written into model_index.json (pipelines/strength.py): 1 = pure
    # noise (the paper); s < 1 = the reference noised a fraction s into the schedule (img2img's `strength`).
    strength: float = 1.0
    # Frames each generated clip after the first shares with the one before, also written into model_index.json
    # (pipelines/overlap.py): 0 = the paper's clips; O > 0 = denoised over the previous clip's last O frames.
    clip_overlap: int = 0

    def check_shapes(self) -> None:
        """Raise EMOError where two sizes cannot work together (called when the components are built,
        after `init` has taken a pretrained VAE's size, so overrides may arrive in any order)."""
        # The face locator's output is added to the backbone's first latent features, so it must
        # downsample the mask by the VAE's factor: one stride-2 conv per VAE block after the first.
        n, m = len(self.face_locator_channels), len(self.vae.block_out_channels)
        if n != m:
            fit = [*self.face_locator_channels[:m], *[self.face_locator_channels[-1]] * (m - n)]
            raise EMOError(
                f"face_locator_channels has {n} widths ({2 ** (n - 1)}x downsampling) but vae.block_out_channels "
                f"has {m} ({self.vae_factor}x); give both the same length, e.g. "
                f"--face_locator_channels=[{','.join(map(str, fit))}]")
        from emoportrait.pipelines.overlap import checked_overlap

        checked_overlap(self.clip_overlap, self.num_frames, self.num_motion_frames)
        factor = self.vae_factor
        if self.resolution % factor:  # else frames would come back smaller than asked, silently
            raise EMOError(f"resolution {self.resolution} is not a multiple of the VAE's {factor}x downsampling; "
                           f"use e.g. --resolution={max(factor, round(self.resolution / factor) * factor)}")

    @property
    def vae_factor(self) -> int:
        """How many times smaller than the frames the latents are: 2 per VAE block after the first."""
        return 2 ** (len(self.vae.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae_factor


CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def load_model_config(name_or_path: str | Path, overrides=()) -> ModelConfig:
    """Load a model size by name (`tiny`, `full`: the packaged YAML files) or from a YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        packaged = CONFIG_DIR / f"{name_or_path}.yaml"
        if not packaged.is_file():
            known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
            raise EMOError(f"unknown model config {name_or_path!r}; use one of {known} or a YAML path")
        path = packaged
    return load_config(ModelConfig, path, overrides)
