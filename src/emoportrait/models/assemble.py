"""`emoportrait init`: assemble an untrained EMO model folder from the public pretrained parts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from emoportrait.atomic import atomic_dir
from emoportrait.errors import EMOError
from emoportrait.models.build import build_components
from emoportrait.models.config import ModelConfig
from emoportrait.models.loading import (
    LoadReport,
    load_motion_weights,
    load_spatial_weights,
    load_wav2vec2,
    read_motion_modules,
    sd15_unet,
    unet_size_from_sd15,
)


def assemble(cfg: ModelConfig, sd15: str | Path | None = None, wav2vec2: str | Path | None = None,
             motion_adapter: str | Path | None = None, seed: int = 0) -> tuple[dict, ModelConfig, list[LoadReport]]:
    """Build every component of `cfg`'s size and load whichever pretrained parts are given.

    Returns:
        (components for `EMOPipeline(**components)`, the resolved config, one report per loaded part).
    """
    reports: list[LoadReport] = []
    sd = None
    if sd15 is not None:
        sd = sd15_unet(sd15)
        cfg = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, **unet_size_from_sd15(sd[0])))
        vae_config = Path(sd15) / "vae" / "config.json"
        if vae_config.is_file():
            v = json.loads(vae_config.read_text())
            cfg = dataclasses.replace(cfg, vae=dataclasses.replace(
                cfg.vae, **{k: (tuple(v[k]) if isinstance(v[k], list) else v[k]) for k in
                            ("block_out_channels", "layers_per_block", "norm_num_groups", "latent_channels",
                             "scaling_factor") if k in v}))
    motion = None
    if motion_adapter is not None:
        motion = read_motion_modules(motion_adapter)
        adapter_cfg = motion[2]
        if adapter_cfg:
            cfg = dataclasses.replace(
                cfg,
                motion_num_attention_heads=adapter_cfg.get("motion_num_attention_heads", cfg.motion_num_attention_heads),
                motion_max_seq_length=adapter_cfg.get("motion_max_seq_length", cfg.motion_max_seq_length),
                use_motion_mid_block=adapter_cfg.get("use_motion_mid_block", cfg.use_motion_mid_block),
            )
        else:
            cfg = dataclasses.replace(cfg, use_motion_mid_block=any(k.startswith("mid_block.") for k in motion[0]))
    audio_encoder = None
    if wav2vec2 is not None:
        if cfg.audio_encoder != "wav2vec2":
            raise EMOError(f"--wav2vec2 given but config {cfg.name!r} uses the {cfg.audio_encoder!r} audio encoder")
        audio_encoder, report = load_wav2vec2(wav2vec2, tuple(cfg.wav2vec2_layers))
        reports.append(report)

    components = build_components(cfg, seed=seed, audio_encoder=audio_encoder)

    if sd is not None:
        config, state, weights = sd
        reports.append(load_spatial_weights(components["unet"], state, weights, "unet"))
        reports.append(load_spatial_weights(components["reference_unet"], state, weights, "reference_unet"))
        sd_dir = Path(sd15)
        if (sd_dir / "vae" / "config.json").is_file():  # the config records the loaded VAE's size
            components["vae"], vae_report = _load_vae(sd_dir / "vae")
            reports.append(vae_report)
        if (sd_dir / "scheduler" / "scheduler_config.json").is_file():
            from diffusers import DDIMScheduler

            sched = json.loads((sd_dir / "scheduler" / "scheduler_config.json").read_text())
            keep = {k: sched[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule") if k in sched}
            components["scheduler"] = DDIMScheduler.from_config({**components["scheduler"].config, **keep})
    if motion is not None:
        state, weights, _ = motion
        reports.append(load_motion_weights(components["unet"], state, weights))
    return components, cfg, reports


def _load_vae(vae_dir: Path):
    from diffusers import AutoencoderKL

    from emoportrait.models.loading import find_weights, read_state_dict

    weights = find_weights(vae_dir)
    state = read_state_dict(weights)
    try:
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(vae_dir)))
    except Exception as e:
        raise EMOError(f"{vae_dir}/config.json: not an AutoencoderKL config ({e.__class__.__name__})") from None
    target = vae.state_dict()
    for key, value in state.items():
        if key not in target or tuple(target[key].shape) != tuple(value.shape):
            expected = tuple(target[key].shape) if key in target else "no such tensor"
            raise EMOError(f"{weights}: tensor {key} has shape {tuple(value.shape)}, expected {expected}")
    missing = [k for k in target if k not in state]
    if missing:
        raise EMOError(f"{weights}: VAE tensor {missing[0]} is missing (and {len(missing) - 1} more)")
    vae.load_state_dict(state)
    report = LoadReport("vae", str(weights), loaded=list(state))
    return vae, report


def write_model(components: dict, cfg: ModelConfig, reports: list[LoadReport], out: str | Path,
                overwrite: bool = False) -> Path:
    """Save an `EMOPipeline` folder atomically, with the resolved size config and the load report."""
    from emoportrait.config import save_config
    from emoportrait.pipelines.pipeline_emo import EMOPipeline

    out = Path(out)
    if out.exists() and not overwrite:
        raise EMOError(f"{out} already exists; pass --force to replace it")
    with atomic_dir(out, overwrite=True) as tmp:
        EMOPipeline(**components, guidance_scale_ref=cfg.guidance_scale_ref,
                    guidance_scale_audio=cfg.guidance_scale_audio,
                    shared_noise_ratio=cfg.shared_noise_ratio, strength=cfg.strength,
                    clip_overlap=cfg.clip_overlap).save_pretrained(tmp)
        save_config(cfg, tmp / "emo_config.yaml")
        (tmp / "init_report.json").write_text(json.dumps([r.to_dict() for r in reports], indent=1))
    return out


def format_report(reports: list[LoadReport], max_names: int = 8) -> str:
    """Human summary: per component, counts and the names of skipped and newly initialised keys."""
    lines = []
    for r in reports:
        lines.append(f"{r.component}: {len(r.loaded)} loaded, {len(r.initialised)} newly initialised, "
                     f"{len(r.skipped)} skipped  <- {r.source}")
        for key, why in r.skipped.items():
            lines.append(f"  skipped  {key}: {why}")
        groups: dict[str, list[str]] = {}
        for key, how in r.initialised.items():
            groups.setdefault(how, []).append(key)
        for how, keys in groups.items():
            shown = ", ".join(keys[:max_names]) + (f", ... (+{len(keys) - max_names})" if len(keys) > max_names else "")
            lines.append(f"  new ({how}, {len(keys)}): {shown}")
    return "\n".join(lines)
