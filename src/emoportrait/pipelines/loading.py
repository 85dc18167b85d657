"""Find and load a model folder for generation: local path, Hugging Face Hub id, or the packaged default."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from emoportrait.errors import EMOError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "default_model"
DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_device(device: str = "auto") -> str:
    """"auto" -> cuda if available, else mps, else cpu; anything else is checked and returned."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise EMOError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EMOError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EMOError(f"device {device!r} requested but MPS is not available; use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str):
    """"auto" -> float16 on GPUs (bfloat16 where supported), float32 on CPU."""
    import torch

    if dtype not in DTYPES:
        raise EMOError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.startswith("mps") else torch.float32
    torch_dtype = getattr(torch, dtype)
    warn_if_emulated_bf16(torch_dtype, device)
    return torch_dtype


def cpu_has_native_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU has bf16 instructions (x86: avx512_bf16 or amx_bf16; Arm: bf16), read from the
    flags in `cpuinfo`; None where there is no such file to tell (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    words = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            words.update(value.split())
    return bool(words & {"avx512_bf16", "amx_bf16", "bf16"})


def warn_if_emulated_bf16(dtype, device) -> None:
    """Warn when bf16 is asked for on a CPU known to lack bf16 instructions: PyTorch then emulates it,
    which is slower than fp32, not faster (the tiny stage 1 with a bf16 frozen VAE: 2.65 s per step vs 0.71 s in
    fp32 on a 2-core AVX2 AMD EPYC)."""
    import torch

    if dtype == torch.bfloat16 and torch.device(device).type == "cpu" and cpu_has_native_bf16() is False:
        warnings.warn("bfloat16 on this CPU is emulated (it has no bf16 instructions) and runs slower than float32; "
                      "use float32 here", stacklevel=2)


def resolve_model(model: str | os.PathLike | None) -> str:
    """The model location to load: `model` itself, or the packaged default when it is None.

    Raises `EMOError` when no model is given and no default model is installed (never random weights).
    """
    if model is None:
        if (DEFAULT_MODEL_DIR / "model_index.json").is_file():
            return str(DEFAULT_MODEL_DIR)
        raise EMOError(
            "no default model is installed (src/emoportrait/assets/default_model is missing); "
            "pass --model DIR with a trained model folder (emoportrait train) or a Hugging Face Hub id"
        )
    path = Path(model)
    if path.exists():
        if not path.is_dir() or not (path / "model_index.json").is_file():
            raise EMOError(f"{path}: not a model folder (no model_index.json); pass a folder written by emoportrait init/train")
        return str(path)
    text = str(model)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise EMOError(f"{model}: model folder not found (and it is not a Hugging Face Hub id like owner/name)")
    return text


def load_pipeline(model: str | os.PathLike | None = None, device: str = "auto", dtype: str = "auto"):
    """Load an `EMOPipeline` on `device` in `dtype` (the audio encoder stays float32).

    Args:
        model: local model folder, Hub id (owner/name), or None for the packaged default.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        dtype: "auto", "float32", "float16" or "bfloat16".
    """
    import torch

    from emoportrait.pipelines.pipeline_emo import EMOPipeline

    location = resolve_model(model)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    is_local = Path(location).exists()
    from diffusers.utils import logging as diffusers_logging

    bar = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # no "Loading pipeline components" bar
    try:
        pipe = EMOPipeline.from_pretrained(
            # The audio front-ends (STFT, wav2vec2's feature extractor) stay float32 for accuracy.
            location, dtype={"default": torch_dtype, "audio_encoder": torch.float32})
    except EMOError:
        raise
    except Exception as e:  # hub/network errors, missing parts, corrupt weights: all library-specific
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if not is_local:
            raise EMOError(
                f"could not load model {location!r} from the Hugging Face Hub (offline, not found or not an EMO "
                f"model: {type(e).__name__}); pass a local model folder with --model DIR"
            ) from None
        inside = [m for m in re.findall(r"'([^']+)'", str(e)) if m.startswith(str(location).rstrip("/") + "/")]
        if inside:  # name the damaged file, relative to the folder
            first = f"cannot read {os.path.relpath(inside[0], location)}; the file is damaged or incomplete"
        raise EMOError(f"{location}: model folder could not be loaded ({type(e).__name__}: {first})") from None
    finally:
        if bar:
            diffusers_logging.enable_progress_bar()
    if not isinstance(pipe, EMOPipeline):
        raise EMOError(f"{location}: is a {type(pipe).__name__} folder, not an EMO model")
    return pipe.to(device)
