"""Training run settings (paper section 3.3, DESIGN.md section 3): one typed dataclass for all stages.

Defaults here, then `configs/<size>/stage<k>.yaml`, then `--key=value` overrides (dotted keys for the
nested groups, e.g. `--optim.lr=1e-4`). The resolved config is saved beside every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emoportrait.errors import EMOError

STAGES = ("vae", "1", "2", "3")

# Trainable groups. The backbone's parameters are split by `parameter_groups(unet)` into
# spatial/temporal/audio/speed; `audio` also covers `audio_proj`, `speed` also covers `speed_encoder`,
# and the ReferenceNet and face locator are groups of their own.
# `vae_decoder` is the VAE's decoder alone (as SD's ft-MSE VAE): the encoder, hence the latent space a
# trained backbone expects, and the scaling factor stay as they are.
GROUPS = ("spatial", "temporal", "audio", "speed", "reference", "face_locator", "vae", "vae_decoder")

# Paper 3.3: stage 1 trains backbone + ReferenceNet + face locator on single frames; stage 2 the
# temporal modules and audio layers; stage 3 the temporal modules and speed layers, audio frozen.
DEFAULT_TRAINABLE: dict[str, tuple[str, ...]] = {
    "vae": ("vae",),
    "1": ("spatial", "reference", "face_locator"),
    "2": ("temporal", "audio"),
    "3": ("temporal", "speed"),
}

# Groups whose layers the stage's forward pass actually runs (stage 1 skips temporal/audio/speed,
# stage 2 passes no speed): training a group outside this set would be a silent no-op.
USED_GROUPS: dict[str, tuple[str, ...]] = {
    "vae": ("vae", "vae_decoder"),
    "1": ("spatial", "reference", "face_locator"),
    "2": ("spatial", "temporal", "audio", "reference", "face_locator"),
    "3": ("spatial", "temporal", "audio", "speed", "reference", "face_locator"),
}


@dataclass
class OptimConfig:
    """AdamW with linear warm-up, then a constant/cosine/linear schedule (paper 4.1: lr 1e-5)."""

    lr: float = 1e-5
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: str = "constant"  # constant | cosine | linear (applied after the warm-up)
    max_grad_norm: float = 1.0  # 0 disables clipping
    # torch's fused AdamW: one kernel over all parameters instead of a loop over tensors (CPU and CUDA): the same
    # update, measured 6x faster on the tiny model's ~1000 parameter tensors on CPU; false = torch's default
    fused: bool = True


@dataclass
class DropoutConfig:
    """Condition dropout (ours, DESIGN.md 3): zeroed conditions make CFG and the first clip in-distribution."""

    reference: float = 0.05  # zero the ReferenceNet features of a sample (reference-image CFG)
    audio: float = 0.05  # zero the audio embeddings of a sample (audio CFG)
    motion: float = 0.05  # zero the motion-frame features of a sample (first clip of a video)


@dataclass
class VAEConfig:
    """The tiny VAE stand-in's objective (stage vae only; DESIGN.md section 6)."""

    crop_size: int = 0  # train on random square crops of this many pixels (0 = whole frames)
    loss: str = "l2"  # l2 | l1 reconstruction
    kl_weight: float = 1e-6


@dataclass
class EMAConfig:
    """Exponential moving average of the trained weights (diffusers `EMAModel`)."""

    enabled: bool = False
    decay: float = 0.9999
    use_for_model: bool = True  # write the EMA weights (not the raw ones) into OUT/model


@dataclass
class CheckpointConfig:
    """Checkpoints under OUT/checkpoints/checkpoint-<step>, each complete or absent."""

    every: int = 1000  # optimizer steps; 0 = only at the end
    keep_last: int = 3  # older checkpoints are deleted after a newer one is complete
    checksum: bool = True  # sha256 of every file, verified on resume (catches silent corruption)


@dataclass
class LogConfig:
    """Per-step loss to OUT/log.jsonl and OUT/log.csv, loss curve PNG, optional TensorBoard and validation."""

    every: int = 10  # print a progress line every N steps (the files get every step)
    tensorboard: bool = False  # needs the optional `tensorboard` package
    validation_every: int = 0  # steps between validation videos; 0 disables
    validation_image: str | None = None  # held-out reference image (default: first sample of data.validation)
    validation_audio: str | None = None  # held-out audio file
    validation_seconds: float = 1.0
    validation_steps: int = 10  # DDIM steps for the validation video


@dataclass
class DataConfig:
    """Where the shards are and how they are read (`emoportrait.data.datasets`)."""

    train: str | None = None  # shards folder (the CLI's --data)
    validation: str | None = None  # held-out shards folder (for the validation reference + audio)
    num_workers: int = 0
    shuffle: bool = True
    streaming: bool = False  # read shards sequentially (IterableDataset split over ranks) instead of by index
    # Stages 1-3: read the frozen VAE's latents from a cache beside the shards (`emoportrait preprocess --latents
    # MODEL`, data/latent_cache.py) instead of decoding and encoding the frames at every step. auto = the cache made
    # by this model's VAE encoder at its frame size, if there is one; NAME = that cache (an error if it does not
    # fit); none = never. The VAE stage always reads frames.
    latents: str = "auto"
    options: dict = field(default_factory=dict)  # extra keyword arguments for the stage dataset


@dataclass
class TrainConfig:
    """Everything a training run needs; `stage` picks the paper's stage (or `vae` for the tiny VAE)."""

    stage: str = "1"
    seed: int = 0
    max_steps: int = 1000  # optimizer steps (each = batch_size x grad accumulation x processes samples)
    batch_size: int = 4  # per process and micro-batch (paper: 48 in stage 1, 4 in stages 2/3)
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | fp16 (GPU) | bf16 (GPU, or a CPU with bf16 instructions)
    # Stages 1-3: the dtype the frozen VAE encodes the frames in (a cast copy; the saved VAE stays as it
    # was). auto = the mixed-precision dtype (fp32 for SD's VAE under fp16: it overflows); bf16 on a CPU
    # with bf16 instructions encodes about 3x faster (benchmarks/bench_training_encode.py).
    vae_dtype: str = "auto"  # auto | fp32 | fp16 | bf16
    gradient_checkpointing: bool = False
    allow_tf32: bool = True
    snr_gamma: float = 0.0  # > 0: Min-SNR-gamma loss weighting (5 is usual); 0: the paper's plain eps-MSE
    mouth_loss_weight: float = 0.0  # stages 2/3: the mouth region's loss counts 1 + this (Hallo-style lip weight); 0: off
    # Stages 1-3: the face locator's region (the union of the target frames' face boxes) counts 1 + this in the
    # loss (Hallo weights its face region likewise); it adds to the mouth weight where both hold. 0: off (the paper).
    face_loss_weight: float = 0.0
    # Stages 1-3: offset noise (diffusers' --noise_offset; 0.1 is usual): the training noise gains a random constant
    # per sample, channel and frame, so the last steps' leftover image no longer gives away each frame's mean
    # colour; generation is unchanged. 0: off (the paper's plain Gaussian noise).
    noise_offset: float = 0.0
    # Stages 2/3: the motion latents gain Gaussian noise of a per-sample std drawn from U(0, this), in the VAE's
    # scaled latent units (std about 1), before the ReferenceNet reads them (noise augmentation of the motion
    # frames, as Hallo2 does; SVD's conditioning augmentation): generation feeds back its own, imperfect frames,
    # training clean ones. 0: off (the paper).
    motion_noise: float = 0.0
    trainable: list[str] | None = None  # None = the stage's default groups (DEFAULT_TRAINABLE)
    force: bool = False  # allow a stage-k run from a model that has not finished stage k-1
    optim: OptimConfig = field(default_factory=OptimConfig)
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def trainable_groups(self) -> tuple[str, ...]:
        """The groups this run trains, validated against what the stage's forward pass uses."""
        groups = tuple(self.trainable) if self.trainable is not None else DEFAULT_TRAINABLE[self.stage]
        return groups

    def validate(self) -> TrainConfig:
        """Check values that the type system cannot; raise EMOError with one line on the first problem."""
        if self.stage not in STAGES:
            raise EMOError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        groups = self.trainable_groups()
        for g in groups:
            if g not in GROUPS:
                raise EMOError(f"unknown trainable group {g!r}; choose from {', '.join(GROUPS)}")
            if g not in USED_GROUPS[self.stage]:
                raise EMOError(f"stage {self.stage} does not run the {g!r} layers, so they cannot train there; remove it from trainable")
        if not groups:
            raise EMOError("trainable is empty: nothing would train; list at least one group")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise EMOError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.vae_dtype not in ("auto", "fp32", "fp16", "bf16"):
            raise EMOError(f"vae_dtype must be auto, fp32, fp16 or bf16, got {self.vae_dtype!r}")
        if self.optim.schedule not in ("constant", "cosine", "linear"):
            raise EMOError(f"optim.schedule must be constant, cosine or linear, got {self.optim.schedule!r}")
        for name, value in (("max_steps", self.max_steps), ("batch_size", self.batch_size),
                            ("gradient_accumulation_steps", self.gradient_accumulation_steps),
                            ("checkpoint.keep_last", self.checkpoint.keep_last), ("log.every", self.log.every)):
            if value < 1:
                raise EMOError(f"{name} must be at least 1, got {value}")
        for name, p in (("reference", self.dropout.reference), ("audio", self.dropout.audio), ("motion", self.dropout.motion)):
            if not 0.0 <= p <= 1.0:
                raise EMOError(f"dropout.{name} must be a probability in [0, 1], got {p}")
        if self.vae.loss not in ("l1", "l2"):
            raise EMOError(f"vae.loss must be l1 or l2, got {self.vae.loss!r}")
        for name, value in (("vae.crop_size", self.vae.crop_size), ("snr_gamma", self.snr_gamma),
                            ("mouth_loss_weight", self.mouth_loss_weight), ("face_loss_weight", self.face_loss_weight),
                            ("noise_offset", self.noise_offset), ("motion_noise", self.motion_noise)):
            if value < 0:
                raise EMOError(f"{name} must be >= 0, got {value}")
        if self.optim.lr <= 0:
            raise EMOError(f"optim.lr must be positive, got {self.optim.lr}")
        return self
