"""`clip_overlap`: generate each clip over the last O frames of the one before, as temporal inpainting.

The EMO paper generates a long video as clips of F new frames, each conditioned on the previous
clip's last N frames through the motion frames only (paper 3.2). The backbone's temporal layers
then never see two clips' frames side by side, and a small model's clip boundary jumps more than
its frames move inside a clip (docs/experiments.md, the seams). With an overlap O > 0 each clip
after the first starts O frames before the previous one ends: at every denoising step its first O
frames are replaced by the previous clip's clean latents of those frames noised to that step
(`scheduler.add_noise`, the clip's own noise for them; "replacement" temporal inpainting as in
Ho et al.'s video diffusion and RePaint), and after the last step by those clean latents. The
temporal layers so denoise the new frames next to frames already shown, the join falls inside a
clip, and only the F - O new frames are output. The motion frames stay the N frames just before
the clip's first frame, as in training. Not in the paper: an inference option (the model folder's
`clip_overlap` sets its default, 0 = the paper), at (F / (F - O)) x the denoising time.
"""

from __future__ import annotations

import math

import torch

from emoportrait.errors import EMOError


def checked_overlap(value, num_frames: int | None = None, num_motion_frames: int = 0, name: str = "clip_overlap") -> int:
    """`value` as an overlap in [0, F - max(N, 1)] (F, N: the backbone's; unchecked against F when None).

    O + N <= F keeps the N motion frames before a clip's start inside the frames already made.
    """
    try:
        overlap = int(value)
    except (TypeError, ValueError):
        raise EMOError(f"{name} must be a whole number of frames, got {value!r}") from None
    if overlap != value or overlap < 0:
        raise EMOError(f"{name} must be a whole number of frames >= 0 (0 = the paper's clips), got {value!r}")
    if num_frames is not None and overlap > num_frames - max(num_motion_frames, 1):
        raise EMOError(f"{name} {overlap} leaves no room in a clip of {num_frames} frames with {num_motion_frames} "
                       f"motion frames; use at most {num_frames - max(num_motion_frames, 1)}")
    return overlap


def num_clips(total_frames: int, num_frames: int, overlap: int) -> int:
    """Clips to cover `total_frames`: the first makes F frames, every later one F - O new ones."""
    return 1 + math.ceil(max(0, total_frames - num_frames) / (num_frames - overlap))


def clip_start(clip: int, num_frames: int, overlap: int) -> int:
    """Video frame index of a clip's first frame (its first O frames are the previous clip's last O)."""
    return clip * (num_frames - overlap)


def replace_known(scheduler, latents: torch.Tensor, known: torch.Tensor | None, noise: torch.Tensor | None,
                  timestep) -> torch.Tensor:
    """`latents` (B, C, F, h, w) with its first O frames set to `known` (B, C, O, h, w) noised to `timestep`.

    `timestep` None sets the clean `known` (after the last step). Returns `latents` as is without `known`.
    """
    if known is None:
        return latents
    o = known.shape[2]
    if timestep is None:
        part = known
    else:
        t = torch.as_tensor(timestep, device=latents.device).reshape(1)
        part = scheduler.add_noise(known, noise, t)
    return torch.cat([part.to(latents.dtype), latents[:, :, o:]], dim=2)
