"""The video noise prior (models/noise.py): each frame N(0, I), a clip's frames correlated by the ratio."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from emoportrait.errors import EMOError
from emoportrait.models.noise import checked_ratio, draw_frame_noise, mix_shared_noise


def frame_correlations(noise: torch.Tensor) -> torch.Tensor:
    """(B, C, F, h, w) -> correlation of every pair of distinct frames of a sample, (B * F * (F - 1),)."""
    frames = noise.permute(0, 2, 1, 3, 4).flatten(2)  # (B, F, C*h*w)
    corr = torch.stack([torch.corrcoef(sample) for sample in frames])  # (B, F, F)
    return corr[:, ~torch.eye(frames.shape[1], dtype=torch.bool)].flatten()


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.9])
def test_each_frame_stays_standard_normal_and_frames_correlate_by_the_ratio(ratio):
    noise, shared = draw_frame_noise((2, 4, 6, 48, 48), ratio, torch.Generator().manual_seed(0))
    assert (shared is None) == (ratio == 0)
    assert noise.shape == (2, 4, 6, 48, 48)
    per_frame = noise.permute(0, 2, 1, 3, 4).flatten(2)  # 9216 values per frame
    assert torch.allclose(per_frame.mean(-1), torch.zeros(2, 6), atol=0.05)
    assert torch.allclose(per_frame.var(-1), torch.ones(2, 6), atol=0.06)
    corr = frame_correlations(noise)
    assert corr.mean().item() == pytest.approx(ratio, abs=0.03)
    assert (corr - ratio).abs().max() < 0.06


def test_ratio_zero_and_single_frames_draw_exactly_the_independent_noise():
    """A model without the prior (every folder before it) reproduces its old seeds bit for bit."""
    for shape, ratio in (((1, 4, 5, 8, 8), 0.0), ((1, 4, 1, 8, 8), 0.8)):
        expected = randn_tensor(shape, generator=torch.Generator().manual_seed(3))
        noise, shared = draw_frame_noise(shape, ratio, torch.Generator().manual_seed(3))
        assert torch.equal(noise, expected) and shared is None
    noise, shared = torch.randn(1, 4, 5, 8, 8), torch.randn(1, 4, 1, 8, 8)
    assert mix_shared_noise(noise, shared, 0.0) is noise
    mixed = mix_shared_noise(noise, shared, 0.36)
    assert torch.allclose(mixed, 0.6 * shared + 0.8 * noise, atol=1e-6)
    # the independent draw comes first, then one shared draw per sample
    g = torch.Generator().manual_seed(5)
    first, second = randn_tensor((1, 4, 5, 8, 8), generator=g), randn_tensor((1, 4, 1, 8, 8), generator=g)
    drawn, shared = draw_frame_noise((1, 4, 5, 8, 8), 0.5, torch.Generator().manual_seed(5))
    assert torch.allclose(drawn, math.sqrt(0.5) * (first + second), atol=1e-6) and torch.equal(shared, second)
    # a given common draw (the video's, for its later clips) is used instead of a new one
    again, kept = draw_frame_noise((1, 4, 5, 8, 8), 0.5, torch.Generator().manual_seed(5), shared=-second)
    assert kept is not None and torch.equal(kept, -second)
    assert torch.allclose(again, math.sqrt(0.5) * (first - second), atol=1e-6)
    # one kept for another size (a video of another resolution) is not reused: a new common draw
    g = torch.Generator().manual_seed(5)
    first, second = randn_tensor((1, 4, 5, 16, 16), generator=g), randn_tensor((1, 4, 1, 16, 16), generator=g)
    drawn, kept = draw_frame_noise((1, 4, 5, 16, 16), 0.5, torch.Generator().manual_seed(5), shared=-second[..., :8, :8])
    assert torch.equal(kept, second) and torch.allclose(drawn, math.sqrt(0.5) * (first + second), atol=1e-6)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), "some", None])
def test_a_ratio_outside_zero_to_one_is_one_clear_error(bad):
    with pytest.raises(EMOError, match=r"shared_noise_ratio must be a number in \[0, 1\)"):
        checked_ratio(bad)
    assert checked_ratio("0.25") == 0.25
