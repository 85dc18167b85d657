"""`strength` (pipelines/strength.py): each clip starts from the reference noised into the schedule and runs
only the last steps; 1 (the default, the paper) is pure noise, bit for bit the pipeline without the option."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from emo_gen_helpers import draw_face, speech_like

from emoportrait.errors import EMOError
from emoportrait.pipelines.pipeline_emo import EMOPipeline

STEPS = 4
IMAGE = draw_face(64)


def run(pipe, mask, seed=0, audio_seconds=0.3, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    return pipe(IMAGE, speech_like(audio_seconds), face_mask=mask, generator=torch.Generator().manual_seed(seed),
                **kwargs).frames


def first_inputs(pipe):
    """Forward pre-hook on the backbone: each call's timestep and its first branch's noisy latents."""
    calls = []

    def hook(module, args, kwargs):
        calls.append((int(args[1] if len(args) > 1 else kwargs["timestep"]), args[0][:1].clone(), pipe.clip_index))

    return calls, pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)


def test_each_clip_starts_from_the_noised_reference_and_runs_the_last_steps(tiny_pipe, face_mask64):
    calls, handle = first_inputs(tiny_pipe)
    try:
        run(tiny_pipe, face_mask64, strength=1.0)  # 8 frames: 2 clips of 4
        pure = list(calls)
        calls.clear()
        run(tiny_pipe, face_mask64, strength=0.5)
    finally:
        handle.remove()
    schedule = [t for t, _, clip in pure if clip == 0]
    assert len(schedule) == STEPS and len(pure) == 2 * STEPS
    assert [(t, clip) for t, _, clip in calls] == [(t, c) for c in (0, 1) for t in schedule[2:]]  # int(4 x 0.5)
    # The same seed draws the same noise; the start is sqrt(abar) x reference + sqrt(1 - abar) x that noise,
    # the reference's latent in every frame of every clip.
    abar = tiny_pipe.scheduler.alphas_cumprod[schedule[2]]
    reference = tiny_pipe.prepare_inputs(IMAGE, speech_like(0.3), face_mask=face_mask64).reference_latents
    for clip in (0, 1):
        noise = pure[clip * STEPS][1]
        start = calls[clip * 2][1]
        recovered = (start - (1 - abar).sqrt() * noise) / abar.sqrt()  # (1, C, F, h, w)
        torch.testing.assert_close(recovered, reference[:, :, None].expand_as(recovered), atol=1e-4, rtol=1e-4)
    assert tiny_pipe.steps_per_clip(STEPS, 0.5) == 2 and tiny_pipe.steps_per_clip(STEPS) == STEPS


def test_a_low_strength_keeps_the_reference_and_one_is_the_papers_start(tiny_pipe, face_mask64):
    pure, explicit = run(tiny_pipe, face_mask64), run(tiny_pipe, face_mask64, strength=1.0)
    np.testing.assert_array_equal(pure, explicit)  # the default path is untouched
    # One step from t = 1: the frames are the reference through the VAE; from pure noise they are not.
    pixels, _ = tiny_pipe.prepare_reference(IMAGE, face_mask=face_mask64)
    with torch.no_grad():
        roundtrip = tiny_pipe.decode_latents(tiny_pipe.encode_frames(pixels)[:, :, None])  # (1, 3, 1, S, S) in [-1, 1]
    roundtrip = ((roundtrip[0, :, 0].permute(1, 2, 0) + 1) / 2).numpy()  # (S, S, 3) in [0, 1]
    low = run(tiny_pipe, face_mask64, strength=0.25)
    # (measured: 0.017 of the [0, 1] range, what t = 1's noise and the random model's last step leave; from
    # pure noise 0.14)
    assert np.abs(low[0] - roundtrip).mean() < 0.03
    assert np.abs(pure[0] - roundtrip).mean() > 5 * np.abs(low[0] - roundtrip).mean()
    assert not np.array_equal(run(tiny_pipe, face_mask64, strength=0.75), pure)


def test_strength_travels_in_the_model_folder(tiny_components, tmp_path, face_mask64):
    EMOPipeline(**tiny_components, strength=0.5).save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model_index.json").read_text())["strength"] == 0.5
    pipe = EMOPipeline.from_pretrained(tmp_path / "m")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.strength == 0.5 and pipe.steps_per_clip(STEPS) == 2
    np.testing.assert_array_equal(run(pipe, face_mask64), run(pipe, face_mask64, strength=0.5))
    assert not np.array_equal(run(pipe, face_mask64), run(pipe, face_mask64, strength=1.0))  # a call overrides
    # FreeInit re-noises each clip from the first timestep: a call naming no strength starts from pure noise
    pipe.enable_free_init(num_iters=2)
    assert pipe.default_strength == 1.0 and pipe.steps_per_clip(STEPS) == 2 * STEPS
    np.testing.assert_array_equal(run(pipe, face_mask64), run(pipe, face_mask64, strength=1.0))
    pipe.disable_free_init()
    assert pipe.default_strength == 0.5
    # A folder written before the option, or with a null, starts from pure noise; a bad value fails on load.
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    del index["strength"]
    (tmp_path / "m" / "model_index.json").write_text(json.dumps(index))
    assert EMOPipeline.from_pretrained(tmp_path / "m").config.strength == 1.0
    (tmp_path / "m" / "model_index.json").write_text(json.dumps({**index, "strength": None}))
    assert EMOPipeline.from_pretrained(tmp_path / "m").config.strength == 1.0
    for bad in (0.0, 1.5, "half"):
        (tmp_path / "m" / "model_index.json").write_text(json.dumps({**index, "strength": bad}))
        with pytest.raises(EMOError, match=r"strength must be a number in \(0, 1\]"):
            EMOPipeline.from_pretrained(tmp_path / "m")


def test_bad_strengths_fail_before_any_step(tiny_pipe, face_mask64):
    for bad in (0.0, -0.2, 1.01, float("nan")):
        with pytest.raises(EMOError, match=r"strength must be a number in \(0, 1\]"):
            run(tiny_pipe, face_mask64, strength=bad)
    with pytest.raises(EMOError, match="strength 0.2 with 4 denoising steps runs no step"):
        run(tiny_pipe, face_mask64, strength=0.2)
    tiny_pipe.enable_free_init(num_iters=2)
    with pytest.raises(EMOError, match="strength 0.5 and FreeInit do not combine"):
        run(tiny_pipe, face_mask64, strength=0.5)


@pytest.mark.parametrize("scheduler", ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler"])
def test_schedulers_that_count_their_steps_start_where_the_strength_says(tiny_pipe, face_mask64, scheduler):
    import diffusers

    tiny_pipe.scheduler = getattr(diffusers, scheduler).from_config(tiny_pipe.scheduler.config)
    calls, handle = first_inputs(tiny_pipe)
    try:
        out = run(tiny_pipe, face_mask64, strength=0.5, audio_seconds=0.1)  # one clip
    finally:
        handle.remove()
    tiny_pipe.scheduler.set_timesteps(STEPS)
    assert [t for t, _, _ in calls] == [int(t) for t in tiny_pipe.scheduler.timesteps[2:]]
    assert np.isfinite(out).all() and out.shape[1] == 3
