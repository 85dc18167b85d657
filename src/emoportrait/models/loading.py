"""Load the public pretrained parts into EMO's networks, reporting every key by name.

Sources, in their real on-disk layouts:
- SD1.5 as a diffusers folder (`unet/`, `vae/`, `scheduler/`): every `unet/` tensor lands under its
  own name in both the backbone and ReferenceNet, except `attn2.to_k` / `attn2.to_v` in cross mode
  (768 -> C text projections, which cannot take C-dim reference features): those are reported as
  skipped and their C -> C replacements start from the same block's `attn1.to_k` / `attn1.to_v`.
- AnimateDiff motion modules as a diffusers `MotionAdapter` folder or the original single
  `mm_sd_v15_v2.ckpt` (converted with diffusers' own key mapping): every tensor lands in the
  backbone's temporal modules.
- wav2vec2 as a transformers folder (e.g. facebook/wav2vec2-base-960h).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from emoportrait.errors import EMOError

REPLACED_IN_CROSS_MODE = re.compile(r"\.attn2\.to_[kv]\.weight$")


@dataclass
class LoadReport:
    """What happened to every tensor of one component."""

    component: str
    source: str | None = None
    loaded: list[str] = field(default_factory=list)  # copied from the source under the same name
    initialised: dict[str, str] = field(default_factory=dict)  # target key -> how it was initialised
    skipped: dict[str, str] = field(default_factory=dict)  # source key -> why it was not copied

    def to_dict(self) -> dict:
        return {"component": self.component, "source": self.source, "loaded": sorted(self.loaded),
                "initialised": dict(sorted(self.initialised.items())), "skipped": dict(sorted(self.skipped.items()))}


# ------------------------------------------------------------------------------------------ files
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a torch file loaded with `weights_only=True`."""
    path = Path(path)
    if not path.is_file():
        raise EMOError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise EMOError(f"{path}: not a valid safetensors file (truncated or corrupt: {e})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt pickles
        raise EMOError(f"{path}: cannot be read as a torch checkpoint ({e.__class__.__name__})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EMOError(f"{path}: expected a dict of tensors")
    return obj


def find_weights(folder: Path, stem: str = "diffusion_pytorch_model") -> Path:
    """The weights file of a diffusers component folder (safetensors preferred)."""
    for name in (f"{stem}.safetensors", f"{stem}.bin"):
        if (folder / name).is_file():
            return folder / name
    raise EMOError(f"{folder}: no {stem}.safetensors (or .bin) found; expected a diffusers model folder")


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise EMOError(f"{path}: not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EMOError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None


# ------------------------------------------------------------------------------------------ SD1.5
def sd15_unet(sd_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor], Path]:
    """(config, state_dict, weights path) of the `unet/` of a diffusers SD1.5 folder."""
    sd_dir = Path(sd_dir)
    if not sd_dir.is_dir():
        raise EMOError(f"{sd_dir}: SD1.5 folder not found")
    unet_dir = sd_dir / "unet"
    if not (unet_dir / "config.json").is_file():
        raise EMOError(f"{sd_dir}: not a diffusers SD1.5 folder (expected unet/config.json)")
    config = read_json(unet_dir / "config.json")
    weights = find_weights(unet_dir)
    return config, read_state_dict(weights), weights


def unet_size_from_sd15(config: dict) -> dict:
    """The `ModelConfig.unet` fields that an SD1.5 `unet/config.json` fixes."""
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    return dict(
        block_out_channels=tuple(config["block_out_channels"]),
        down_block_types=tuple(config["down_block_types"]),
        up_block_types=tuple(config["up_block_types"]),
        layers_per_block=config.get("layers_per_block", 2),
        norm_num_groups=config.get("norm_num_groups", 32),
        num_attention_heads=heads if isinstance(heads, int) else heads[0],
        use_linear_projection=config.get("use_linear_projection", False),
    )


def load_spatial_weights(model: torch.nn.Module, source: dict[str, torch.Tensor], weights: Path,
                         component: str) -> LoadReport:
    """Copy SD1.5 `unet/` tensors into the backbone or ReferenceNet under their own names."""
    report = LoadReport(component, str(weights))
    target = model.state_dict()
    cross = model.config.reference_mode == "cross"
    unexpected = [k for k in source if k not in target]
    if unexpected:
        raise EMOError(f"{weights}: tensor {unexpected[0]} has no place in {component} "
                       f"(and {len(unexpected) - 1} more); expected an SD1.5-layout UNet")
    new_state = {}
    for key, value in source.items():
        if tuple(value.shape) == tuple(target[key].shape):
            new_state[key] = value.to(target[key].dtype)
            report.loaded.append(key)
        elif cross and REPLACED_IN_CROSS_MODE.search(key):
            report.skipped[key] = "text projection; reference-attention K/V initialised from attn1"
            attn1_key = key.replace(".attn2.", ".attn1.")
            new_state[key] = source[attn1_key].to(target[key].dtype)
            report.initialised[key] = f"copied from {attn1_key}"
        else:
            raise EMOError(f"{weights}: tensor {key} has shape {tuple(value.shape)}, expected "
                           f"{tuple(target[key].shape)} (is this an SD1.5 UNet of the configured size?)")
    model.load_state_dict(new_state, strict=False)
    for key in target:
        if key not in source and key not in report.initialised:
            if key.endswith(".pe"):
                report.initialised[key] = "sinusoidal table"
            else:  # a new layer's output projection starts at zero (audio, speed, temporal, reference latent)
                report.initialised[key] = "new layer (zero init)" if not target[key].any() else "new layer (random init)"
    missing_spatial = [k for k in report.initialised
                       if not any(s in k for s in (".motion_modules.", ".audio_attn.", ".speed_", "reference_conv_in."))
                       and not REPLACED_IN_CROSS_MODE.search(k)]
    if missing_spatial:
        raise EMOError(f"{weights}: SD1.5 tensor {missing_spatial[0]} is missing "
                       f"(and {len(missing_spatial) - 1} more); the file is incomplete")
    return report


# ------------------------------------------------------------------------------------------ AnimateDiff
def read_motion_modules(path: str | Path) -> tuple[dict[str, torch.Tensor], Path, dict]:
    """Motion-module tensors in diffusers naming, from a MotionAdapter folder or an original ckpt.

    Returns:
        (state_dict, the file read, the adapter config or {}).
    """
    path = Path(path)
    if path.is_dir():
        config = read_json(path / "config.json") if (path / "config.json").is_file() else {}
        if not config:
            raise EMOError(f"{path}: not a diffusers MotionAdapter folder (expected config.json)")
        weights = find_weights(path)
        return read_state_dict(weights), weights, config
    if not path.exists():
        raise EMOError(f"{path}: motion module not found (a MotionAdapter folder or a .ckpt/.safetensors file)")
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    raw = read_state_dict(path)
    if not any("motion_modules" in k for k in raw):
        raise EMOError(f"{path}: no motion_modules tensors; expected an AnimateDiff motion module checkpoint")
    return convert_animatediff_checkpoint_to_diffusers(raw), path, {}


def load_motion_weights(unet: torch.nn.Module, source: dict[str, torch.Tensor], weights: Path) -> LoadReport:
    """Copy every motion-module tensor into the backbone's temporal modules."""
    report = LoadReport("unet (temporal modules)", str(weights))
    target = unet.state_dict()
    new_state = {}
    for key, value in source.items():
        if key not in target or ".motion_modules." not in f".{key}":
            raise EMOError(f"{weights}: tensor {key} has no place in the backbone's temporal modules")
        if tuple(value.shape) != tuple(target[key].shape):
            raise EMOError(f"{weights}: tensor {key} has shape {tuple(value.shape)}, expected "
                           f"{tuple(target[key].shape)} (motion module for another UNet size?)")
        new_state[key] = value.to(target[key].dtype)
        report.loaded.append(key)
    unet.load_state_dict(new_state, strict=False)
    for key in target:
        if ".motion_modules." in key and key not in source:
            report.initialised[key] = ("speed layer (new, output zero-initialised)" if ".speed_" in key
                                       else "sinusoidal table" if key.endswith(".pe") else "not in the motion module")
    return report


# ------------------------------------------------------------------------------------------ wav2vec2
def load_wav2vec2(path: str | Path, layers: tuple[int, ...] | None):
    """A `Wav2Vec2AudioEncoder` wrapping a transformers wav2vec2 folder, and its report."""
    from transformers import Wav2Vec2Model

    from emoportrait.models.audio import Wav2Vec2AudioEncoder

    path = Path(path)
    if not path.is_dir():
        raise EMOError(f"{path}: wav2vec2 folder not found")
    if not (path / "config.json").is_file():
        raise EMOError(f"{path}: not a transformers wav2vec2 folder (expected config.json)")
    weights = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
    if weights is None:
        raise EMOError(f"{path}: no model.safetensors or pytorch_model.bin found")
    read_state_dict(weights)  # one-line error for truncated/corrupt files before transformers sees them
    try:
        model, info = Wav2Vec2Model.from_pretrained(str(path), output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise EMOError(f"{weights}: cannot be loaded as wav2vec2 ({str(e).splitlines()[0][:200]})") from None
    if info.get("mismatched_keys"):
        key = info["mismatched_keys"][0]
        raise EMOError(f"{weights}: tensor {key[0] if isinstance(key, tuple) else key} has the wrong shape")
    n = model.config.num_hidden_layers
    enc = Wav2Vec2AudioEncoder(wav2vec2_config=model.config.to_dict(), layers=tuple(layers or range(1, n + 1)))
    enc.wav2vec2.load_state_dict(model.state_dict())
    report = LoadReport("audio_encoder", str(weights))
    report.loaded = [f"wav2vec2.{k}" for k in model.state_dict()]
    for key in info.get("missing_keys", []):
        report.initialised[f"wav2vec2.{key}"] = "not in the checkpoint (transformers default init)"
    for key in info.get("unexpected_keys", []):
        report.skipped[key] = "not part of Wav2Vec2Model (e.g. the CTC head)"
    return enc, report
