"""Clip overlap (pipelines/overlap.py): each later clip is denoised over the previous clip's last O frames,
held to them at every step; only its new frames are output; its motion frames and audio follow its start."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from emo_gen_helpers import speech_like
from test_pipeline_emo import Spy, run

from emoportrait.errors import EMOError
from emoportrait.evaluation import synthetic
from emoportrait.pipelines.overlap import checked_overlap, clip_start, num_clips
from emoportrait.pipelines.pipeline_emo import EMOPipeline


def test_clip_layout_arithmetic():
    assert [num_clips(t, 12, 0) for t in (1, 12, 13, 24, 25)] == [1, 1, 2, 2, 3]  # ceil(T / F), the paper's
    assert [num_clips(t, 12, 4) for t in (1, 12, 13, 20, 21, 500)] == [1, 1, 2, 2, 3, 62]  # 1 + ceil((T - F) / 8)
    assert [clip_start(c, 12, 4) for c in range(4)] == [0, 8, 16, 24]
    assert checked_overlap(4, 12, 4) == 4
    assert checked_overlap(8, 12, 4) == 8
    for bad, match in ((-1, ">= 0"), (2.5, "whole number"), ("two", "whole number"), (9, "at most 8")):
        with pytest.raises(EMOError, match=match):
            checked_overlap(bad, 12, 4)


def test_seams_are_read_at_each_later_clips_first_new_frame():
    rng = np.random.default_rng(0)
    t = np.arange(60)
    base = (np.sin(t / 5.0)[:, None, None, None] * 40 + 120 + rng.normal(0, 1, (60, 32, 32, 3)))
    jumps = np.zeros(60)
    jumps[[20, 28, 44, 52]] = 60.0  # F = 12, O = 4: later clips' first new frames are 12, 20, 28, ..., 52
    video = np.clip(base + np.cumsum(jumps)[:, None, None, None] % 120, 0, 255).astype(np.uint8)
    assert synthetic.seam_ratio(video, 12, 4) > 3  # read where the overlapped clips join
    assert synthetic.seam_ratio(video, 12, 0) < 1.5  # at 12, 24, 36, 48 the video does not jump
    assert list(synthetic.clip_of_frame(np.array([0, 11, 12, 19, 20, 28]), 12, 4)) == [0, 0, 1, 1, 2, 3]
    assert len(synthetic.clip_hf_energy(video, 12, 4)) == 7


def test_overlapped_clips_hold_the_previous_frames_and_output_only_new_ones(tiny_pipe, face_mask64):
    pipe = tiny_pipe
    f, n, o = pipe.num_frames, pipe.num_motion_frames, 2  # F = 4, N = 2
    audio = speech_like(0.4)  # 10 frames: clips start at 0, 2, 4, 6 -> 4 clips
    unet_spy = Spy(pipe.unet, pipe, keep=True)
    samples, refs = [], []  # (clip, backbone input) per step; ReferenceNet input per clip
    grab = pipe.unet.register_forward_pre_hook(lambda m, a: samples.append((pipe.clip_index, a[0][:1].clone())))
    grab_ref = pipe.reference_unet.register_forward_pre_hook(lambda m, a: refs.append(a[0].clone()))
    try:
        latents = run(pipe, audio, face_mask64, clip_overlap=o, output_type="latent", num_inference_steps=3,
                      guidance_scale_ref=1.0, guidance_scale_audio=1.0)
        video = run(pipe, audio, face_mask64, clip_overlap=o, output_type="pt", num_inference_steps=3,
                    guidance_scale_ref=1.0, guidance_scale_audio=1.0)
    finally:
        for h in (unet_spy, grab, grab_ref):
            h.remove()
    assert latents.shape[2] == 10 and video.shape[1] == 10  # only new frames: T in all
    assert pipe.num_clips == 4
    calls = len(samples) // 2  # the latent run's calls come first
    samples, refs = samples[:calls], refs[: len(refs) // 2]
    assert [c for c, _ in samples] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    # Clip 1's first O frames are clip 0's last O clean latents noised with one noise at every step:
    # (x_t - sqrt(a_t) x0) / sqrt(1 - a_t) is the same at each step.
    known = latents[:, :, f - o : f]
    alphas = pipe.scheduler.alphas_cumprod
    noises = []
    for (_, sample), t in zip(samples[3:6], pipe.scheduler.timesteps):
        a = alphas[int(t)]
        noises.append((sample[:, :, :o] - a.sqrt() * known) / (1 - a).sqrt())
    for other in noises[1:]:
        torch.testing.assert_close(other, noises[0], atol=1e-4, rtol=1e-4)
    assert noises[0].std() > 0.5  # noise, not a copy of the clean latents
    # Motion frames: the N frames just before the clip's first frame (clip 1 starts at F - O = 2).
    start = f - o
    expected = pipe.encode_frames(video[0, start - n : start] * 2.0 - 1.0)
    torch.testing.assert_close(refs[1][1:], expected, atol=1e-4, rtol=1e-4)
    # Audio: the clip's own frames [start, start + F) of the whole audio's tokens.
    inputs = pipe.prepare_inputs(np.full((64, 64, 3), 150, np.uint8), audio, face_mask=face_mask64, clip_overlap=o)
    clip1 = next(c for c in unet_spy.calls if c["clip"] == 1)
    torch.testing.assert_close(clip1["kwargs"]["audio_embeds"], inputs.audio_embeds[:, start : start + f])


def test_overlap_changes_only_later_clips_and_streams_the_same(tiny_pipe, face_mask64):
    audio = speech_like(0.4)
    plain = run(tiny_pipe, audio, face_mask64)
    np.testing.assert_array_equal(run(tiny_pipe, audio, face_mask64, clip_overlap=0), plain)  # 0 = the paper's clips
    over = run(tiny_pipe, audio, face_mask64, clip_overlap=2)
    f = tiny_pipe.num_frames
    np.testing.assert_array_equal(over[:, :f], plain[:, :f])  # the first clip is made as before
    assert not np.array_equal(over[:, f:], plain[:, f:])
    streamed = np.stack(list(tiny_pipe.iter_frames(np.full((64, 64, 3), 150, np.uint8), audio, num_inference_steps=2,
                                                   face_mask=face_mask64, generator=torch.Generator().manual_seed(0),
                                                   clip_overlap=2)))
    assert np.abs(streamed.astype(int) - np.round(over[0] * 255).astype(int)).max() <= 1
    with pytest.raises(EMOError, match="clip_overlap 3 leaves no room"):  # F = 4, N = 2: at most 2
        run(tiny_pipe, audio, face_mask64, clip_overlap=3)


def test_the_models_default_overlap_is_saved_and_loaded(tiny_components, tmp_path, face_mask64):
    EMOPipeline(**tiny_components, clip_overlap=2).save_pretrained(tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["clip_overlap"] == 2
    pipe = EMOPipeline.from_pretrained(tmp_path / "m")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.default_clip_overlap == 2
    audio = speech_like(0.4)
    np.testing.assert_array_equal(run(pipe, audio, face_mask64), run(pipe, audio, face_mask64, clip_overlap=2))
    del index["clip_overlap"]  # a folder written before the option: the paper's clips
    (tmp_path / "m" / "model_index.json").write_text(json.dumps(index))
    assert EMOPipeline.from_pretrained(tmp_path / "m").default_clip_overlap == 0
    (tmp_path / "m" / "model_index.json").write_text(json.dumps({**index, "clip_overlap": 3}))
    with pytest.raises(EMOError, match="clip_overlap 3 leaves no room"):  # checked against F and N at the call
        EMOPipeline.from_pretrained(tmp_path / "m").default_clip_overlap  # noqa: B018
