"""Validation during training: a short video from a fixed held-out reference + audio, and a contact sheet.

Every `log.validation_every` steps the main process runs `EMOPipeline` with the current weights and
writes OUT/validation/step-<k>.mp4 (with the audio) and step-<k>.png (reference, then frames spread
over the video). The inputs are fixed for the whole run: `log.validation_image` + `log.validation_audio`,
or else the first clip of the held-out shards `data.validation` (its first frame, face mask and audio).
The training RNG streams are saved and restored around it, so validation never changes the run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emoportrait.atomic import atomic_path
from emoportrait.errors import EMOError


@dataclass
class ValidationInputs:
    image: object  # path or (H, W, 3) uint8 array
    audio: object  # path or (S,) float32 16 kHz array
    face_mask: np.ndarray | None  # (S, S) {0, 1}; None = detect the face in `image`


def validation_inputs(cfg, model_dir: str | Path) -> ValidationInputs:
    """The fixed inputs of this run's validation videos (checked at start: a bad path fails early)."""
    log = cfg.log
    if log.validation_image or log.validation_audio:
        if not (log.validation_image and log.validation_audio):
            raise EMOError("validation needs both log.validation_image and log.validation_audio")
        for p in (log.validation_image, log.validation_audio):
            if not Path(p).is_file():
                raise EMOError(f"validation input {p} not found")
        return ValidationInputs(log.validation_image, log.validation_audio, None)
    if not cfg.data.validation:
        raise EMOError("log.validation_every needs held-out inputs: data.validation (shards) or "
                       "log.validation_image + log.validation_audio")
    from emoportrait.data.datasets import ImageClipDataset, face_mask
    from emoportrait.training.datasets import dataset_options

    size = dataset_options(model_dir, cfg.seed)["size"]
    ds = ImageClipDataset(cfg.data.validation, size=size, seed=cfg.seed)
    src = ds.source(ds.clips[0])
    frames = min(int(src.meta["num_frames"]), max(1, round(log.validation_seconds * 25)))
    image = ((src.frame(0, size).permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()  # (S, S, 3)
    mask = face_mask(src.array("boxes"), ds.stored_size, size)[0].numpy()  # (S, S)
    return ValidationInputs(image, src.audio(0, frames), mask)


def contact_sheet(reference: np.ndarray, frames: np.ndarray, columns: int = 8) -> np.ndarray:
    """One row: the reference (H, W, 3) then `columns` frames evenly spread over (T, H, W, 3) uint8."""
    idx = np.linspace(0, len(frames) - 1, num=min(columns, len(frames))).round().astype(int)
    h = frames.shape[1]
    if reference.shape[0] != h:
        from PIL import Image

        reference = np.asarray(Image.fromarray(reference).resize((h, h)))
    gap = np.full((h, 4, 3), 255, np.uint8)
    tiles = [reference, gap] + [t for i in idx for t in (frames[i], gap[:, :2])]
    return np.concatenate(tiles, axis=1)


@torch.no_grad()
def run_validation(accelerator, pipe, cfg, inputs: ValidationInputs, output_dir: str | Path, step: int) -> Path | None:
    """Generate and save the validation video + contact sheet of `step` (main process; others wait)."""
    from PIL import Image

    from emoportrait.data.media import SAMPLE_RATE, write_video
    from emoportrait.pipelines.preprocessing import load_audio, load_image

    out = Path(output_dir) / "validation"
    path = None
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        py_state, np_state = random.getstate(), np.random.get_state()
        modules = [pipe.unet, pipe.reference_unet, pipe.face_locator, pipe.audio_proj, pipe.speed_encoder]
        was_training = [m.training for m in modules]
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        try:
            with torch.random.fork_rng(devices=devices), accelerator.autocast():
                for m in modules:
                    m.eval()
                audio = load_audio(inputs.audio)
                generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
                pipe.set_progress_bar_config(disable=True)
                frames = pipe(inputs.image, audio, num_inference_steps=cfg.log.validation_steps, generator=generator,
                              face_mask=inputs.face_mask, output_type="np").frames[0]  # (T, H, W, 3) in [0, 1]
        finally:
            for m, t in zip(modules, was_training):
                m.train(t)
            random.setstate(py_state)
            np.random.set_state(np_state)
        frames = (np.asarray(frames) * 255).round().clip(0, 255).astype(np.uint8)
        path = out / f"step-{step:06d}.mp4"
        write_video(path, frames, audio=audio, sample_rate=SAMPLE_RATE)
        reference = load_image(inputs.image) if not isinstance(inputs.image, np.ndarray) else inputs.image
        with atomic_path(out / f"step-{step:06d}.png") as tmp:
            Image.fromarray(contact_sheet(np.asarray(reference), frames)).save(tmp, format="PNG")
    accelerator.wait_for_everyone()
    return path
