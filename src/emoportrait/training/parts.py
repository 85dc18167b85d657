"""Model folders in and out of training: loading, the stage record, freezing, the final `OUT/model`.

A model folder records the training stages it has been through in `emo_training.json`
(`{"stages": ["1", "2"], "steps": ..., "configs": {"1": ..., "2": ...}, ...}`: each stage's steps,
init folder and config, and the last run's as `init` and `config`); stage k >= 2 refuses a model that
has not finished stage k-1 unless forced, because the paper's stages build on each other (section 3.3).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emoportrait.atomic import atomic_dir
from emoportrait.config import config_to_dict
from emoportrait.errors import EMOError

RECORD = "emo_training.json"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Which completed stage each stage starts from (the VAE stage and stage 1 start from anything).
PREVIOUS = {"2": "1", "3": "2"}


def read_stage_record(model_dir: str | Path) -> dict[str, Any]:
    """The model folder's training record; an untrained `init` folder has `{"stages": []}`."""
    path = Path(model_dir) / RECORD
    if not path.is_file():
        return {"stages": []}
    try:
        record = json.loads(path.read_text())
        record["stages"] = [str(s) for s in record["stages"]]
        return record
    except (ValueError, KeyError, TypeError):
        raise EMOError(f"{path} is corrupt; restore it or pass --force to ignore the stage order") from None


def check_init(model_dir: str | Path, stage: str, force: bool = False) -> dict[str, Any]:
    """Check that `model_dir` is a model folder this stage may start from; returns its record."""
    model_dir = Path(model_dir)
    if not (model_dir / "model_index.json").is_file():
        raise EMOError(f"--init {model_dir} is not a model folder (no model_index.json); create one with `emoportrait init`")
    record = read_stage_record(model_dir)
    prev = PREVIOUS.get(stage)
    if prev and prev not in record["stages"] and not force:
        done = ", ".join(record["stages"]) or "none"
        raise EMOError(f"stage {stage} starts from a stage-{prev} model, but {model_dir} has finished stages: {done}; "
                       f"pass the stage-{prev} output (OUT/model) or --force")
    return record


def load_pipeline(model_dir: str | Path):
    """`EMOPipeline.from_pretrained(model_dir)` (float32 weights), with a one-line error for a broken folder."""
    from diffusers.utils import logging as diffusers_logging

    import emoportrait.models  # noqa: F401  (diffusers loads only component classes already imported)
    from emoportrait.pipelines import EMOPipeline

    bars = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # one bar per process per load is noise in training logs
    try:
        return EMOPipeline.from_pretrained(str(model_dir))
    except EMOError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise EMOError(f"cannot load the model folder {model_dir}: {str(e).splitlines()[0][:200]}") from None
    finally:
        if bars:
            diffusers_logging.enable_progress_bar()


def set_trainable(module: nn.Module, groups: tuple[str, ...]) -> list[nn.Parameter]:
    """Freeze everything, then unfreeze the parameters of `groups`; returns the trainable parameters.

    Backbone membership comes from `parameter_groups(unet)` (spatial/temporal/audio/speed); the audio
    projection belongs to `audio`, the speed encoder to `speed`, the ReferenceNet to `reference`;
    `vae_decoder` is the VAE's decoder and post-quant conv.
    """
    module.requires_grad_(False)
    if hasattr(module, "vae"):  # VAETrainingModule
        module.vae.requires_grad_("vae" in groups)
        if "vae_decoder" in groups:
            module.vae.decoder.requires_grad_(True)
            if module.vae.post_quant_conv is not None:
                module.vae.post_quant_conv.requires_grad_(True)
    else:
        from emoportrait.models import parameter_groups

        membership = parameter_groups(module.unet)
        for name, p in module.unet.named_parameters():
            p.requires_grad_(membership[name] in groups)
        for group, part in (("audio", module.audio_proj), ("speed", module.speed_encoder),
                            ("reference", module.reference_unet), ("face_locator", module.face_locator)):
            if group in groups:
                part.requires_grad_(True)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise EMOError(f"the trainable groups {', '.join(groups)} hold no parameters in this model; check trainable")
    return params


def lr_lambda(warmup_steps: int, max_steps: int, schedule: str):
    """Learning-rate factor per optimizer step: linear warm-up, then constant / linear / cosine decay."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        if schedule == "linear":
            return 1.0 - progress
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


@torch.no_grad()
def measure_scaling_factor(vae, batches, dtype: torch.dtype) -> float:
    """1 / std of the VAE's latents over some batches, so diffusion sees unit-variance latents (as SD's 0.18215)."""
    values = []
    for pixels in batches:
        values.append(vae.encode(pixels.to(dtype)).latent_dist.sample().float().flatten())
    std = torch.cat(values).std().item()
    return 1.0 / max(std, 1e-6)


def write_model_folder(pipe, out: str | Path, record: dict[str, Any], stage: str, step: int, cfg: Any, init: str | Path) -> Path:
    """Save the pipeline to `out` atomically, with its training record extended by this stage."""
    out = Path(out)
    stages = [s for s in record.get("stages", []) if s != stage] + [stage]
    config = config_to_dict(cfg)
    # `init` and `config` are this run's; `inits` and `configs` keep every stage's (the last run of each).
    new_record = {"stages": stages, "last_stage": stage, "steps": {**record.get("steps", {}), stage: step},
                  "init": str(init), "config": config, "inits": {**record.get("inits", {}), stage: str(init)},
                  "configs": {**record.get("configs", {}), stage: config}}
    with atomic_dir(out) as tmp:
        pipe.save_pretrained(str(tmp))
        (tmp / RECORD).write_text(json.dumps(new_record, indent=1))
    return out


def frozen_vae_dtype(vae_dtype: str, weight_dtype: torch.dtype, vae) -> torch.dtype:
    """The `vae_dtype` setting resolved: auto is the mixed-precision dtype, except fp32 for a VAE that
    overflows in fp16 (SD's, `force_upcast` in its config)."""
    if vae_dtype != "auto":
        return DTYPES[vae_dtype]
    if weight_dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        return torch.float32
    return weight_dtype


def encoding_vae(vae, dtype: torch.dtype):
    """A frozen copy of `vae` that encodes the training frames: in `dtype` and with channels-last weights
    (the conv layout oneDNN and cuDNN run fastest). `vae` itself is never cast, so the model folder keeps
    its weights bit-identical and validation decodes with them."""
    enc = copy.deepcopy(vae).requires_grad_(False).eval()
    # nn.Module.to: diffusers' ModelMixin.to warns about fp32-only modules even when it has none.
    nn.Module.to(enc, dtype=dtype, memory_format=torch.channels_last)
    return enc
