"""Classifier-free guidance with separate reference and audio scales (DESIGN.md section 3).

Training drops the reference and the audio condition with small probabilities (zeroed tensors), so
at inference the backbone can predict eps(-,-) (neither), eps(r,-) (reference only) and eps(r,a)
(both); the branches are stacked into one batch and run as one backbone forward per step.
"""

from __future__ import annotations

import math

import torch

from emoportrait.errors import EMOError


def guidance_branches(guidance_scale_ref: float, guidance_scale_audio: float) -> list[tuple[bool, bool]]:
    """The (use_reference, use_audio) condition sets the guidance formula needs, in batch order.

    eps = eps(-,-) + g_ref (eps(r,-) - eps(-,-)) + g_audio (eps(r,a) - eps(r,-)); a branch whose
    coefficient vanishes (scale 1) is not computed.
    """
    branches = [(True, True)]
    if guidance_scale_audio != 1.0 or guidance_scale_ref != 1.0:
        branches.insert(0, (True, False))
    if guidance_scale_ref != 1.0:
        branches.insert(0, (False, False))
    return branches


def combine_guidance(noise_pred: torch.Tensor, branches: list[tuple[bool, bool]], guidance_scale_ref: float,
                     guidance_scale_audio: float) -> torch.Tensor:
    """Classifier-free guidance with separate reference and audio scales.

    Args:
        noise_pred: (len(branches), C, F, h, w) predictions of the branches in `branches` order.

    Returns:
        (1, C, F, h, w) guided eps.
    """
    preds = dict(zip(branches, noise_pred.chunk(len(branches))))
    eps_ra = preds[(True, True)]
    eps_r = preds.get((True, False), eps_ra)
    eps_0 = preds.get((False, False), eps_r)
    return eps_0 + guidance_scale_ref * (eps_r - eps_0) + guidance_scale_audio * (eps_ra - eps_r)


def checked_scale(name: str, value) -> float:
    """`value` as a float guidance scale; EMOError unless it is a finite number >= 0."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise EMOError(f"{name} must be a finite number >= 0, got {value!r}") from None
    if not math.isfinite(scale) or scale < 0:
        raise EMOError(f"{name} must be a finite number >= 0, got {value!r}")
    return scale
