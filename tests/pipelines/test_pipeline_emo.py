"""EMOPipeline semantics on a tiny random model: length, determinism, audio drive, ReferenceNet once
per clip, motion frames across clips, batched CFG branches, output types, save/load, schedulers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from emo_gen_helpers import speech_like

from emoportrait.errors import EMOError
from emoportrait.pipelines.guidance import combine_guidance, guidance_branches
from emoportrait.pipelines.pipeline_emo import EMOPipeline

STEPS = 2


def run(pipe, audio, mask, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    image = kwargs.pop("image", np.full((64, 64, 3), 150, np.uint8))
    return pipe(image, audio, face_mask=mask, generator=torch.Generator().manual_seed(seed), **kwargs).frames


class Spy:
    """Forward hook that records each call's batch size, kwargs and the pipeline's clip index."""

    def __init__(self, module, pipe, keep=False):
        self.calls, self.pipe, self.keep = [], pipe, keep
        self.handle = module.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.calls.append({"batch": sample.shape[0], "clip": self.pipe.clip_index,
                           "kwargs": kwargs if self.keep else None})

    def remove(self):
        self.handle.remove()


def test_length_and_output_types(tiny_pipe, face_mask64):
    audio = speech_like(0.42)  # 10.5 frames -> 11 frames = clips of 4 + 4 + 3
    frames = run(tiny_pipe, audio, face_mask64)
    assert frames.shape == (1, 11, 64, 64, 3) and frames.dtype == np.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    assert tiny_pipe.num_clips == 3
    pt = run(tiny_pipe, audio, face_mask64, output_type="pt")
    assert pt.shape == (1, 11, 3, 64, 64)
    np.testing.assert_allclose(pt.permute(0, 1, 3, 4, 2).numpy(), frames, atol=1e-6)
    pil = run(tiny_pipe, audio, face_mask64, output_type="pil")
    assert len(pil) == 1 and len(pil[0]) == 11 and pil[0][0].size == (64, 64)
    latent = run(tiny_pipe, audio, face_mask64, output_type="latent")
    assert latent.shape == (1, 4, 11, 8, 8)
    (tup,) = tiny_pipe(np.full((64, 64, 3), 150, np.uint8), speech_like(0.01), face_mask=face_mask64,
                       num_inference_steps=1, return_dict=False)
    assert tup.shape[1] == 1  # very short audio: one frame


def test_seed_determinism_and_audio_drive(tiny_pipe, face_mask64):
    a = speech_like(0.3, seed=0, f0=150)
    b = speech_like(0.3, seed=5, f0=320)
    first = run(tiny_pipe, a, face_mask64, seed=3)
    assert np.array_equal(first, run(tiny_pipe, a, face_mask64, seed=3))
    assert not np.array_equal(first, run(tiny_pipe, a, face_mask64, seed=4))
    other_audio = run(tiny_pipe, b, face_mask64, seed=3)
    assert np.abs(first - other_audio).mean() > 1e-4
    # Silence is a valid input (a still-ish face), as is a different target speed.
    silent = run(tiny_pipe, np.zeros(4800, np.float32), face_mask64, seed=3)
    assert silent.shape == first.shape and np.isfinite(silent).all()
    assert not np.array_equal(first, run(tiny_pipe, a, face_mask64, seed=3, speed=3.0))


def test_iter_frames_streams_the_same_video(tiny_pipe, face_mask64):
    audio = speech_like(0.36)  # 9 frames, 3 clips
    frames = run(tiny_pipe, audio, face_mask64, seed=1)
    streamed = list(tiny_pipe.iter_frames(np.full((64, 64, 3), 150, np.uint8), audio, num_inference_steps=STEPS,
                                          face_mask=face_mask64, generator=torch.Generator().manual_seed(1)))
    assert len(streamed) == 9 and streamed[0].dtype == np.uint8 and streamed[0].shape == (64, 64, 3)
    expected = (np.clip(frames[0], 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(np.stack(streamed), expected)


def test_reference_net_runs_once_per_clip(tiny_pipe, face_mask64):
    ref_spy = Spy(tiny_pipe.reference_unet, tiny_pipe)
    unet_spy = Spy(tiny_pipe.unet, tiny_pipe)
    try:
        run(tiny_pipe, speech_like(0.4), face_mask64, num_inference_steps=3)  # 10 frames: 3 clips
    finally:
        ref_spy.remove()
        unet_spy.remove()
    assert [c["clip"] for c in ref_spy.calls] == [0, 1, 2]  # once per clip, not per step
    # Clip 1 has no motion frames (batch 1: reference only); later clips batch reference + N motion frames.
    assert [c["batch"] for c in ref_spy.calls] == [1, 1 + tiny_pipe.num_motion_frames, 1 + tiny_pipe.num_motion_frames]
    assert [c["clip"] for c in unet_spy.calls] == [0] * 3 + [1] * 3 + [2] * 3  # one backbone forward per step


def test_cfg_branches_share_one_batched_forward(tiny_pipe, face_mask64):
    spy = Spy(tiny_pipe.unet, tiny_pipe, keep=True)
    try:
        run(tiny_pipe, speech_like(0.16), face_mask64, guidance_scale_ref=2.5, guidance_scale_audio=3.5)
        n_full = len(spy.calls)
        run(tiny_pipe, speech_like(0.16), face_mask64, guidance_scale_ref=1.0, guidance_scale_audio=3.5)
        run(tiny_pipe, speech_like(0.16), face_mask64, guidance_scale_ref=1.0, guidance_scale_audio=1.0)
    finally:
        spy.remove()
    assert n_full == STEPS  # one forward per step carries all three branches
    assert [c["batch"] for c in spy.calls] == [3] * STEPS + [2] * STEPS + [1] * STEPS
    kw = spy.calls[0]["kwargs"]
    # Branch order (no ref, no audio), (ref, no audio), (ref, audio): dropping = zeroing.
    for feats in kw["reference_features"].values():
        assert not feats[0].any() and feats[1].abs().sum() > 0 and torch.equal(feats[1], feats[2])
    audio = kw["audio_embeds"]
    assert audio.shape[0] == 3 and not audio[0].any() and not audio[1].any() and audio[2].abs().sum() > 0
    assert torch.equal(kw["face_features"][0], kw["face_features"][2])
    ref_latents = kw["reference_latents"]  # read by a reference_latent_input backbone; dropped with the reference
    assert ref_latents.shape[0] == 3 and not ref_latents[0].any() and ref_latents[1].abs().sum() > 0
    assert torch.equal(ref_latents[1], ref_latents[2])
    assert kw["motion_features"] is None  # first clip: zero motion frames


def test_default_guidance_scales_come_from_the_model_folder(tiny_components, tmp_path, face_mask64):
    import json

    EMOPipeline(**tiny_components, guidance_scale_ref=1.0, guidance_scale_audio=2.5).save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model_index.json").read_text())["guidance_scale_audio"] == 2.5
    pipe = EMOPipeline.from_pretrained(tmp_path / "m")
    pipe.set_progress_bar_config(disable=True)
    assert (pipe.config.guidance_scale_ref, pipe.config.guidance_scale_audio) == (1.0, 2.5)
    spy = Spy(pipe.unet, pipe)
    try:
        default = run(pipe, speech_like(0.16), face_mask64)  # the folder's scales: ref off -> 2 branches
        explicit = run(pipe, speech_like(0.16), face_mask64, guidance_scale_ref=1.0, guidance_scale_audio=2.5)
        other = run(pipe, speech_like(0.16), face_mask64, guidance_scale_audio=1.0)  # a call overrides: 1 branch
    finally:
        spy.remove()
    assert [c["batch"] for c in spy.calls] == [2] * STEPS + [2] * STEPS + [1] * STEPS
    np.testing.assert_array_equal(default, explicit)
    assert not np.array_equal(default, other)
    # A folder written before the scales were recorded loads with the pipeline's defaults (2.0, 3.0).
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    for key in ("guidance_scale_ref", "guidance_scale_audio"):
        del index[key]
    (tmp_path / "m" / "model_index.json").write_text(json.dumps(index))
    old = EMOPipeline.from_pretrained(tmp_path / "m")
    assert (old.config.guidance_scale_ref, old.config.guidance_scale_audio) == (2.0, 3.0)
    for bad in (-1.0, "loud"):  # a hand-edited folder: one clear error when it loads
        (tmp_path / "m" / "model_index.json").write_text(json.dumps({**index, "guidance_scale_audio": bad}))
        with pytest.raises(EMOError, match="guidance_scale_audio must be a finite number"):
            EMOPipeline.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model_index.json").write_text(json.dumps({**index, "guidance_scale_audio": None}))
    assert EMOPipeline.from_pretrained(tmp_path / "m").config.guidance_scale_audio == 3.0  # null: the default


def test_the_models_noise_prior_is_saved_loaded_and_starts_every_clip(tiny_components, tmp_path, face_mask64):
    """`shared_noise_ratio` (models/noise.py) travels in model_index.json and shapes each clip's first noise,
    with one clip-common draw per video."""
    import json

    EMOPipeline(**tiny_components, shared_noise_ratio=0.8).save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model_index.json").read_text())["shared_noise_ratio"] == 0.8
    pipe = EMOPipeline.from_pretrained(tmp_path / "m")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.shared_noise_ratio == 0.8
    firsts = []  # the noisy latents of each clip's first denoising step
    handle = pipe.unet.register_forward_pre_hook(
        lambda m, args, kw: firsts.append(args[0][:1].clone()) if len(firsts) == pipe.clip_index else None,
        with_kwargs=True)
    try:
        video = run(pipe, speech_like(0.4), face_mask64, num_inference_steps=1)  # 10 frames: 3 clips of 4
    finally:
        handle.remove()
    assert len(firsts) == pipe.num_clips == 3
    # a new call draws a new video's noise: the same seed, the same video
    np.testing.assert_array_equal(run(pipe, speech_like(0.4), face_mask64, num_inference_steps=1), video)
    frames = torch.cat(firsts).permute(0, 2, 1, 3, 4).flatten(2)  # (3 clips, F, C*h*w)
    corr = torch.stack([torch.corrcoef(clip) for clip in frames])  # (3, F, F)
    off_diagonal = corr[:, ~torch.eye(frames.shape[1], dtype=torch.bool)]
    assert off_diagonal.mean().item() == pytest.approx(0.8, abs=0.1)
    # the clip-common draw is the video's: a later clip's frames share it with the first clip's
    across = torch.corrcoef(torch.cat([frames[0], frames[1], frames[2]]))[: frames.shape[1], frames.shape[1] :]
    assert across.mean().item() == pytest.approx(0.8, abs=0.1)
    # Without the prior (the default, and a folder written before it) the frames' noise is independent
    # and the same seed draws exactly the noise it always drew.
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    del index["shared_noise_ratio"]
    (tmp_path / "m" / "model_index.json").write_text(json.dumps(index))
    old = EMOPipeline.from_pretrained(tmp_path / "m")
    assert old.config.shared_noise_ratio == 0.0
    f, size = old.num_frames, old.sample_size
    lat = old.prepare_latents(f, size, size, torch.float32, "cpu", torch.Generator().manual_seed(0))
    expected = torch.randn((1, old.unet.config.in_channels, f, size // 8, size // 8),
                           generator=torch.Generator().manual_seed(0))
    assert torch.equal(lat, expected * old.scheduler.init_noise_sigma)
    for bad in (1.0, -0.5, "some"):
        (tmp_path / "m" / "model_index.json").write_text(json.dumps({**index, "shared_noise_ratio": bad}))
        with pytest.raises(EMOError, match=r"shared_noise_ratio must be a number in \[0, 1\)"):
            EMOPipeline.from_pretrained(tmp_path / "m")


def test_guidance_formula():
    assert guidance_branches(1.0, 1.0) == [(True, True)]
    assert guidance_branches(1.0, 2.0) == [(True, False), (True, True)]
    assert guidance_branches(2.0, 1.0) == [(False, False), (True, False), (True, True)]
    e0, er, era = torch.full((1, 1), 1.0), torch.full((1, 1), 2.0), torch.full((1, 1), 4.0)
    out = combine_guidance(torch.cat([e0, er, era]), guidance_branches(2.0, 3.0), 2.0, 3.0)
    assert out.item() == pytest.approx(1 + 2 * (2 - 1) + 3 * (4 - 2))
    assert combine_guidance(era, [(True, True)], 1.0, 1.0).item() == 4.0
    assert combine_guidance(torch.cat([er, era]), guidance_branches(1.0, 2.0), 1.0, 2.0).item() == pytest.approx(6.0)


def test_motion_frames_carry_the_previous_clip(tiny_pipe, face_mask64):
    pipe = tiny_pipe
    f, n = pipe.num_frames, pipe.num_motion_frames
    temporal = next(m for m in pipe.unet.modules() if type(m).__name__ == "EMOTemporalModule" and m.motion_layer)
    seen = {}

    def grab(module, args):
        if pipe.clip_index not in seen:
            motion = module.state.motion
            seen[pipe.clip_index] = None if motion is None else motion[module.motion_layer].clone()

    handle = temporal.register_forward_pre_hook(grab)
    try:
        video = run(pipe, speech_like(0.44), face_mask64, output_type="pt", guidance_scale_ref=1.0,
                    guidance_scale_audio=1.0)  # 11 frames: 3 clips, one branch
    finally:
        handle.remove()
    assert seen[0] is None  # clip 1: zero motion frames
    for clip in (1, 2):
        # The last N frames of the previous clip, re-encoded and passed through ReferenceNet...
        last = video[0, clip * f - n : clip * f] * 2.0 - 1.0  # (N, 3, S, S)
        with torch.no_grad():
            expected = pipe.reference_unet(pipe.encode_frames(last))[temporal.motion_layer]  # (N, L, C)
        # ...are what this clip's temporal module attends to.
        torch.testing.assert_close(seen[clip], expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(seen[1], seen[2])


def test_callback_scheduler_swap_and_checks(tiny_pipe, face_mask64):
    from diffusers import DPMSolverMultistepScheduler

    events = []

    def callback(pipe, step, t, kwargs):
        events.append((pipe.clip_index, step))
        return {"latents": kwargs["latents"]}

    run(tiny_pipe, speech_like(0.3), face_mask64, callback_on_step_end=callback)  # 8 frames: 2 clips
    assert events == [(0, 0), (0, 1), (1, 0), (1, 1)]
    tiny_pipe.scheduler = DPMSolverMultistepScheduler.from_config(tiny_pipe.scheduler.config)
    out = run(tiny_pipe, speech_like(0.3), face_mask64)
    assert out.shape == (1, 8, 64, 64, 3) and np.isfinite(out).all()
    for bad in (dict(num_inference_steps=0), dict(output_type="gif"), dict(guidance_scale_ref=float("nan")),
                dict(decode_chunk_size=0), dict(speed=float("inf"))):
        with pytest.raises(EMOError):
            run(tiny_pipe, speech_like(0.1), face_mask64, **bad)


def test_save_load_round_trip(tiny_pipe, tiny_model_dir, face_mask64):
    loaded = EMOPipeline.from_pretrained(tiny_model_dir)
    loaded.set_progress_bar_config(disable=True)
    audio = speech_like(0.2)
    np.testing.assert_allclose(run(loaded, audio, face_mask64), run(tiny_pipe, audio, face_mask64), atol=1e-4)


def test_latent_channels_follow_the_vae(tiny_config, face_mask64, tmp_path):
    """A VAE with 8 latent channels (a tiny-size option): UNet and ReferenceNet take and give 8, and the
    pipeline denoises, decodes and round-trips 8-channel latents."""
    import dataclasses

    from emoportrait.models import build_components

    cfg = dataclasses.replace(tiny_config, vae=dataclasses.replace(tiny_config.vae, latent_channels=8))
    components = build_components(cfg, seed=0)
    assert components["unet"].conv_in.in_channels == 8 and components["unet"].conv_out.out_channels == 8
    assert components["reference_unet"].conv_in.in_channels == 8
    pipe = EMOPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    audio = speech_like(0.2)
    latent = run(pipe, audio, face_mask64, output_type="latent")
    assert latent.shape == (1, 8, 5, 8, 8) and torch.isfinite(latent).all()
    frames = run(pipe, audio, face_mask64)
    assert frames.shape == (1, 5, 64, 64, 3)
    pipe.save_pretrained(tmp_path / "m8")
    loaded = EMOPipeline.from_pretrained(tmp_path / "m8")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.unet.config.in_channels == 8
    np.testing.assert_allclose(run(loaded, audio, face_mask64), frames, atol=1e-4)


def test_a_4x_vae_sizes_the_latents_and_the_face_locator(face_mask64):
    """A VAE with 3 blocks (4x, not SD's 8x): 64 px frames give 16x16 latents, the face locator must
    downsample by the same factor, and its mask reaches the backbone. Sizes that cannot work together
    (that face locator with 8x, a resolution not a multiple of the VAE's factor) are one-line errors."""
    from emo_gen_helpers import TINY_OVERRIDES

    from emoportrait.models import build_components, load_model_config

    vae4x = [*TINY_OVERRIDES, "--vae.block_out_channels=[32,64,64]"]
    with pytest.raises(EMOError, match=r"face_locator_channels has 4 widths .*--face_locator_channels=\[8,16,32\]"):
        build_components(load_model_config("tiny", vae4x))
    with pytest.raises(EMOError, match=r"resolution 100 is not a multiple of the VAE's 8x .*--resolution=96"):
        build_components(load_model_config("tiny", [*TINY_OVERRIDES, "--resolution=100"]))
    cfg = load_model_config("tiny", [*vae4x, "--face_locator_channels=[8,16,32]"])
    assert cfg.latent_size == 16
    components = build_components(cfg, seed=0)
    torch.manual_seed(0)
    for p in components["face_locator"].parameters():  # its last conv starts at zero; as if trained
        torch.nn.init.normal_(p, std=0.1)
    pipe = EMOPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    audio = speech_like(0.2)
    latent = run(pipe, audio, face_mask64, output_type="latent")
    assert latent.shape == (1, 4, 5, 16, 16) and torch.isfinite(latent).all()
    smaller = np.zeros_like(face_mask64)
    smaller[24:40, 24:40] = 1.0
    assert (run(pipe, audio, smaller, output_type="latent") - latent).abs().max() > 1e-3
    assert run(pipe, audio, face_mask64).shape == (1, 5, 64, 64, 3)


def test_face_detection_path(tiny_pipe):
    from emo_gen_helpers import draw_face

    class Stub:
        calls = 0

        def detect(self, rgb):
            Stub.calls += 1
            return np.array([60.0, 50.0, 190.0, 210.0])

    tiny_pipe.face_detector = Stub()
    frames = tiny_pipe(draw_face(256), speech_like(0.08), num_inference_steps=1).frames
    assert Stub.calls == 1 and frames.shape == (1, 2, 64, 64, 3)
    tiny_pipe.face_detector = type("NoFace", (), {"detect": lambda self, rgb: None})()
    with pytest.raises(EMOError, match="no face"):
        tiny_pipe(draw_face(256), speech_like(0.08), num_inference_steps=1)


def test_audio_encoded_in_bounded_windows(tiny_pipe):
    audio = speech_like(2.0)  # 50 frames
    whole = tiny_pipe.encode_audio(audio, 52, "cpu", torch.float32)  # padded to 52 frames
    tiny_pipe.audio_window_frames, tiny_pipe.audio_context_frames = 12, 4
    calls = []
    handle = tiny_pipe.audio_encoder.register_forward_pre_hook(lambda m, args, kw: calls.append(kw["num_frames"]),
                                                               with_kwargs=True)
    try:
        windowed = tiny_pipe.encode_audio(audio, 52, "cpu", torch.float32)
    finally:
        handle.remove()
    assert max(calls) <= 12 + 2 * 4 and len(calls) == 5  # 12-frame windows, 4 frames of context each side
    torch.testing.assert_close(windowed, whole, atol=1e-4, rtol=1e-4)  # local features: same tokens


def test_without_motion_frames_every_clip_is_generated_as_the_first(tiny_pipe, face_mask64):
    audio = speech_like(0.4)  # 10 frames: 3 clips
    ref_spy = Spy(tiny_pipe.reference_unet, tiny_pipe)
    try:
        alone = run(tiny_pipe, audio, face_mask64, seed=2, motion_frames=False)
    finally:
        ref_spy.remove()
    assert [c["batch"] for c in ref_spy.calls] == [1, 1, 1]  # the reference only, in every clip
    carried = run(tiny_pipe, audio, face_mask64, seed=2)
    f = tiny_pipe.num_frames
    assert np.array_equal(alone[:, :f], carried[:, :f])  # the first clip never has motion frames
    assert np.abs(alone[:, f:] - carried[:, f:]).mean() > 1e-4  # later clips lose what was carried



def _spectrum(x):
    """(1, C, F, h, w) latents -> their centred spatio-temporal spectrum, FreeInit's layout."""
    return torch.fft.fftshift(torch.fft.fftn(x, dim=(-3, -2, -1)), dim=(-3, -2, -1))


def test_free_init_repasses_each_clip_from_the_first_noises_low_frequencies(tiny_pipe, face_mask64, monkeypatch):
    audio = speech_like(0.4)  # 10 frames: 3 clips
    plain = run(tiny_pipe, audio, face_mask64, seed=2)
    tiny_pipe.enable_free_init(num_iters=1)  # one pass is the plain pipeline, bit for bit
    assert np.array_equal(run(tiny_pipe, audio, face_mask64, seed=2), plain)

    tiny_pipe.enable_free_init(num_iters=2)
    from diffusers.pipelines.free_init_utils import FreeInitMixin

    built = []
    make_filter = FreeInitMixin._get_free_init_freq_filter
    monkeypatch.setattr(FreeInitMixin, "_get_free_init_freq_filter", lambda *a, **k: built.append(1) or make_filter(*a, **k))
    ref_spy, unet_spy = Spy(tiny_pipe.reference_unet, tiny_pipe), Spy(tiny_pipe.unet, tiny_pipe, keep=True)
    starts, ends = [], []
    hook = tiny_pipe.unet.register_forward_pre_hook(lambda m, args: starts.append(args[0][:1].clone()))

    def keep_latents(pipe, i, t, kwargs):
        ends.append(kwargs["latents"].clone())
        return kwargs

    try:
        twice = run(tiny_pipe, audio, face_mask64, seed=2, callback_on_step_end=keep_latents)
    finally:
        for handle in (ref_spy, unet_spy, hook):
            handle.remove()
    assert [c["clip"] for c in ref_spy.calls] == [0, 1, 2]  # the ReferenceNet still runs once per clip
    assert [c["clip"] for c in unet_spy.calls] == [0] * 4 + [1] * 4 + [2] * 4  # two passes of STEPS per clip
    assert tiny_pipe.steps_per_clip(STEPS) == 2 * STEPS
    assert len(built) == 1  # the low-pass filter is built once, not per clip and pass
    assert twice.shape == plain.shape and np.abs(twice - plain).mean() > 1e-4
    assert np.array_equal(run(tiny_pipe, audio, face_mask64, seed=2), twice)  # still seeded
    # Pass 2 of clip 1 starts, in the low band, from pass 1's result diffused back to the last timestep with
    # pass 1's own noise, and from fresh noise above it.
    first, second, result = starts[0], starts[STEPS], ends[STEPS - 1]
    last_t = torch.tensor([tiny_pipe.scheduler.config.num_train_timesteps - 1])
    diffused = _spectrum(tiny_pipe.scheduler.add_noise(result, first, last_t))
    band = tiny_pipe._get_free_init_freq_filter((1, *first.shape[1:]), "cpu", "butterworth", 4, 0.25, 0.25)
    low, high = band > 0.999, band < 0.01  # the filter passes the clip's mean and stops most of the spectrum
    assert low.any() and high.sum() > band.numel() // 2
    assert torch.allclose(_spectrum(second)[low], diffused[low], rtol=1e-4, atol=1e-3)
    a, b = _spectrum(second)[high].real, diffused[high].real
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.2
    tiny_pipe.disable_free_init()
    assert np.array_equal(run(tiny_pipe, audio, face_mask64, seed=2), plain)


def test_free_init_fast_sampling_and_bad_settings(tiny_pipe, face_mask64):
    tiny_pipe.enable_free_init(num_iters=3, use_fast_sampling=True)
    spy = Spy(tiny_pipe.unet, tiny_pipe)
    try:
        run(tiny_pipe, speech_like(0.16), face_mask64, num_inference_steps=6)  # one clip
    finally:
        spy.remove()
    assert len(spy.calls) == tiny_pipe.steps_per_clip(6) == 2 + 4 + 6  # coarse to fine
    for bad, match in (({"num_iters": 0}, "num_iters"), ({"num_iters": 2.5}, "num_iters"),
                       ({"method": "box"}, "method"), ({"spatial_stop_frequency": 0}, "spatial_stop_frequency"),
                       ({"temporal_stop_frequency": 1.5}, "temporal_stop_frequency")):
        tiny_pipe.enable_free_init(**bad)
        with pytest.raises(EMOError, match=match):
            run(tiny_pipe, speech_like(0.16), face_mask64)
