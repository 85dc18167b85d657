"""The one training entry point for EMO's three stages (paper section 3.3) and the tiny VAE.

Reads top to bottom: config -> Accelerator -> models and freezing -> optimizer and data -> prepare
-> loop -> model folder. The same code runs as one CPU process, under `accelerate launch` (DDP on
CPU or GPUs, FSDP/DeepSpeed with the configs in `configs/accelerate/`), multi-node included.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from emoportrait.config import save_config
from emoportrait.data.latent_cache import CACHE_DIR
from emoportrait.errors import EMOError
from emoportrait.pipelines.loading import warn_if_emulated_bf16
from emoportrait.training.checkpoint import (
    TrainState,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
)
from emoportrait.training.config import TrainConfig
from emoportrait.training.data import BatchStream, build_dataloader
from emoportrait.training.logging import RunLogger
from emoportrait.training.module import EMOTrainingModule, VAETrainingModule, encode_batch
from emoportrait.training.parts import (
    DTYPES,
    check_init,
    encoding_vae,
    frozen_vae_dtype,
    load_pipeline,
    lr_lambda,
    measure_scaling_factor,
    set_trainable,
    write_model_folder,
)


def train(cfg: TrainConfig, init: str | Path, output_dir: str | Path, resume: str | None = None,
          dataset: Dataset | None = None) -> Path:
    """Run one stage from the model folder `init`; checkpoints and logs go to `output_dir`.

    Returns `output_dir/model`, a complete model folder `EMOPipeline.from_pretrained` loads.
    `dataset` overrides the stage dataset built from `cfg.data.train` (tests, notebooks).
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import DistributedType, set_seed
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    # 1. Check every input before anything is written: a bad run leaves OUT as it was.
    cfg.validate()
    output_dir = Path(output_dir)
    record = check_init(init, cfg.stage, cfg.force)
    ckpt = find_checkpoint(output_dir, resume) if resume else None
    if ckpt is not None:
        read_checkpoint_state(ckpt)  # sizes + checksums, before any model loads
    if ckpt is None and list_checkpoints(output_dir):
        raise EMOError(f"{output_dir} already holds checkpoints of a run; pass --resume latest or choose another --output-dir")
    val_inputs = None
    if cfg.log.validation_every and cfg.stage != "vae":
        from emoportrait.training.validation import run_validation, validation_inputs

        val_inputs = validation_inputs(cfg, init)
    if dataset is None:
        from emoportrait.training.datasets import build_stage_dataset

        dataset = build_stage_dataset(cfg, init)

    # 2. Accelerator: devices, processes, mixed precision. Noise differs per process (device_specific).
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)  # ReferenceNet's last layers feed nothing
    # A multi-process launch on a machine without GPUs trains DDP on CPU over gloo (accelerate 1.x
    # starts several CPU processes only through its torchrun launcher, `--multi_gpu`, or mpirun).
    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu, kwargs_handlers=[ddp])
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED) and cfg.ema.enabled:
        raise EMOError("ema.enabled is not supported with FSDP/DeepSpeed; use DDP or set --ema.enabled=false")
    if accelerator.distributed_type == DistributedType.DEEPSPEED and cfg.gradient_accumulation_steps > 1:
        raise EMOError("gradient_accumulation_steps > 1 is not supported with DeepSpeed; raise batch_size or use DDP")
    set_seed(cfg.seed, device_specific=True)
    if cfg.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    weight_dtype = DTYPES.get(cfg.mixed_precision, torch.float32)  # "no" -> fp32
    warn_if_emulated_bf16(weight_dtype, accelerator.device)  # bf16 autocast is emulated there as well

    # 3. Models and freezing: the trained networks in one module (one DDP wrapper), the encoders frozen.
    pipe = load_pipeline(init)
    if cfg.stage == "vae":
        module = VAETrainingModule(pipe.vae, cfg.vae.kl_weight, cfg.vae.crop_size, cfg.vae.loss)
    else:
        noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # SD's training schedule
        module = EMOTrainingModule(pipe.unet, pipe.reference_unet, pipe.face_locator, pipe.audio_proj, pipe.speed_encoder,
                                   noise_scheduler, cfg.stage, cfg.dropout.reference, cfg.dropout.audio, cfg.dropout.motion,
                                   cfg.snr_gamma, cfg.mouth_loss_weight, pipe.config.shared_noise_ratio, cfg.noise_offset,
                                   cfg.face_loss_weight, cfg.motion_noise)
        pipe.vae.requires_grad_(False).eval().to(accelerator.device)
        encoder = encoding_vae(pipe.vae, frozen_vae_dtype(cfg.vae_dtype, weight_dtype, pipe.vae))
        if weight_dtype != torch.bfloat16:  # one warning per run: under bf16 autocast it was given above
            warn_if_emulated_bf16(next(encoder.parameters()).dtype, accelerator.device)
        pipe.audio_encoder.requires_grad_(False).eval().to(accelerator.device)
    params = set_trainable(module, cfg.trainable_groups())
    if cfg.gradient_checkpointing:
        for part in (getattr(module, "unet", None), getattr(module, "reference_unet", None), getattr(module, "vae", None)):
            if part is not None:
                part.enable_gradient_checkpointing()
    module.train()

    # 4. Optimizer, lr schedule (warm-up, stepped once per optimizer step), EMA, data.
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
                                  weight_decay=cfg.optim.weight_decay, fused=cfg.optim.fused or None)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.warmup_steps, cfg.max_steps, cfg.optim.schedule))
    ema = EMAModel(params, decay=cfg.ema.decay) if cfg.ema.enabled else None
    loader, sampler = build_dataloader(dataset, cfg.batch_size, cfg.seed, cfg.data.num_workers, cfg.data.shuffle,
                                       accelerator.num_processes)

    # 5. Prepare: wrap for DDP/FSDP, shard the batches over processes, move them to the device.
    module, optimizer = accelerator.prepare(module, optimizer)
    if sampler is not None:  # map-style: accelerate shards the batches; a stream splits itself
        loader = accelerator.prepare(loader)
    accelerator.register_for_checkpointing(lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    state = TrainState(num_processes=accelerator.num_processes)
    if ckpt is not None:
        state = load_checkpoint(accelerator, ckpt, verify=False)
        accelerator.print(f"resumed from {ckpt} at step {state.step}")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, output_dir / "config.yaml")
    latents_dir = getattr(getattr(dataset, "dataset", dataset), "latents_dir", None)  # map-style or streaming
    if latents_dir is not None:
        accelerator.print(f"latents from the cache {latents_dir} (the frames are not encoded)")
    elif cfg.stage != "vae" and cfg.data.latents == "auto" and cfg.data.train and (Path(cfg.data.train) / CACHE_DIR).is_dir():
        accelerator.print(f"no latent cache in {Path(cfg.data.train) / CACHE_DIR} was made by this model's VAE encoder "
                          "from these shards at its frame size: the frames are encoded at every step")
    log = RunLogger(output_dir, accelerator.is_main_process, cfg.log.tensorboard, state.step)
    stream = BatchStream(accelerator, loader, sampler, state)
    accum = cfg.gradient_accumulation_steps
    samples_per_step = cfg.batch_size * accum * accelerator.num_processes

    # 6. Loop: one iteration = one optimizer step over `accum` micro-batches (no DDP sync until the last).
    t0 = time.time()
    while state.step < cfg.max_steps:
        loss_sum = torch.zeros((), device=accelerator.device)
        for micro in range(accum):
            batch = next(stream)
            sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(module)
            with sync:
                if cfg.stage == "vae":  # both images of a stage-1 sample are training frames
                    loss = module(torch.cat([batch["pixel_values"], batch["reference"]]))
                else:
                    loss = module(encode_batch(batch, encoder, pipe.audio_encoder, cfg.stage))
                accelerator.backward(loss / accum)
            loss_sum += loss.detach().float()
        grad_norm = accelerator.clip_grad_norm_(module.parameters(), cfg.optim.max_grad_norm) if cfg.optim.max_grad_norm > 0 else None
        lr = lr_scheduler.get_last_lr()[0]
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)
        state.step += 1

        loss_mean = accelerator.reduce(loss_sum / accum, reduction="mean").item()
        if not math.isfinite(loss_mean):  # the checkpoints before this step stay as they are
            raise EMOError(f"the loss became {loss_mean} at step {state.step}; lower optim.lr or resume from an earlier checkpoint")
        log.log(state.step, {"loss": loss_mean, "lr": lr, "grad_norm": None if grad_norm is None else float(grad_norm),
                             "epoch": state.epoch, "samples": state.step * samples_per_step,
                             "seconds": round(time.time() - t0, 3)})
        if state.step % cfg.log.every == 0 or state.step == cfg.max_steps:
            accelerator.print(f"step {state.step}/{cfg.max_steps} loss {loss_mean:.5f} lr {lr:.2e}")
        if (cfg.checkpoint.every and state.step % cfg.checkpoint.every == 0) or state.step == cfg.max_steps:
            save_checkpoint(accelerator, output_dir, state, cfg)
            log.plot()
        if val_inputs is not None and state.step % cfg.log.validation_every == 0 and accelerator.distributed_type not in (
                DistributedType.FSDP, DistributedType.DEEPSPEED):  # sharded weights: validate from OUT/model instead
            run_validation(accelerator, pipe, cfg, val_inputs, output_dir, state.step)

    # 7. The model folder: EMA weights if kept, gathered from every shard, written atomically.
    accelerator.wait_for_everyone()
    if ema is not None and cfg.ema.use_for_model:
        ema.copy_to(params)
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        full = accelerator.get_state_dict(module)  # gathered on the main process
        if accelerator.is_main_process:
            accelerator.unwrap_model(module).load_state_dict(full)
    out = output_dir / "model"
    if accelerator.is_main_process:
        decoder_only = cfg.stage == "vae" and "vae" not in cfg.trainable_groups()
        if cfg.stage == "vae" and not decoder_only:  # a decoder-only run keeps the latent scale
            frames = (torch.cat([b["pixel_values"], b["reference"]]) for _, b in zip(range(4), loader))
            pipe.vae.register_to_config(scaling_factor=measure_scaling_factor(pipe.vae, frames, torch.float32))
        # A decoder-only run is recorded as its own step, so the record keeps the VAE's own steps.
        write_model_folder(pipe, out, record, "vae_decoder" if decoder_only else cfg.stage, state.step, cfg, init)
        accelerator.print(f"model written to {out}")
    accelerator.wait_for_everyone()
    log.close()
    accelerator.end_training()
    return out
