"""`strength`: start each clip from the reference, as diffusers' img2img pipelines start from their image.

The EMO paper starts every clip from pure noise (strength 1, the default). With a strength s < 1 the
pipeline runs only the last `int(N * s)` of the N denoising steps (diffusers' `get_timesteps` rule) and
starts each clip from the reference latent, repeated over the clip's frames, noised to the first of
them (`scheduler.add_noise`): the start then carries the reference's layout and colours, which a small
backbone copies too little of through its ReferenceNet alone (docs/experiments.md, r54), while the
audio and motion frames still shape the steps that run. Not in the paper: an inference option (the
model folder's `strength` sets its default), at the price of a head that stays closer to the
reference's pose.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from emoportrait.errors import EMOError

if TYPE_CHECKING:
    import torch


def checked_strength(value, name: str = "strength") -> float:
    """`value` as a strength in (0, 1]; EMOError (naming `name`) otherwise."""
    try:
        strength = float(value)
    except (TypeError, ValueError):
        raise EMOError(f"{name} must be a number in (0, 1], got {value!r}") from None
    if not math.isfinite(strength) or not 0.0 < strength <= 1.0:
        raise EMOError(f"{name} must be a number in (0, 1] (1 = start from pure noise), got {value!r}")
    return strength


def check_strength_option(strength: float | None, num_inference_steps: int, free_init_iters: int) -> None:
    """The CLIs' `--strength` checks, before any model loads (None: the model's own, checked when it loads)."""
    if strength is None:
        return
    steps_run(num_inference_steps, checked_strength(strength, "--strength"))
    if strength < 1.0 and free_init_iters > 1:
        raise EMOError("--strength below 1 and --free-init-iters do not combine; use one of them")


def steps_run(num_inference_steps: int, strength: float) -> int:
    """Denoising steps a clip runs at `strength`: int(N * s), as diffusers' img2img; EMOError if none."""
    run = min(int(num_inference_steps * strength), num_inference_steps)
    if run < 1:
        raise EMOError(f"strength {strength} with {num_inference_steps} denoising steps runs no step; "
                       f"raise the strength or the steps (at least {math.ceil(1 / strength)})")
    return run


def strength_timesteps(scheduler, num_inference_steps: int, strength: float, device) -> torch.Tensor:
    """Set the scheduler's N steps and return the timesteps a clip runs at `strength` (all of them at 1)."""
    scheduler.set_timesteps(num_inference_steps, device=device)
    if strength >= 1.0:
        return scheduler.timesteps
    start = (num_inference_steps - steps_run(num_inference_steps, strength)) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):  # schedulers that count their steps (Euler, DPM-Solver)
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def noised_reference(scheduler, reference_latents: torch.Tensor, latents: torch.Tensor,
                     timestep: torch.Tensor) -> torch.Tensor:
    """The clip's start at `strength` < 1: the reference noised to `timestep` with the clip's own noise.

    Args:
        reference_latents: (1, C, h, w) scaled reference latent.
        latents: (1, C, F, h, w) the clip's initial noise, already scaled by `init_noise_sigma`.
        timestep: (1,) the first timestep the clip runs.
    """
    noise = latents / scheduler.init_noise_sigma
    reference = reference_latents[:, :, None].to(noise.dtype).expand_as(noise)  # (1, C, F, h, w)
    return scheduler.add_noise(reference, noise, timestep)
