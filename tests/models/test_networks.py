"""Semantics of EMO's networks (paper 3.2), on a tiny random model."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from emoportrait.errors import EMOError
from emoportrait.models import build_components, load_model_config, parameter_groups

F, N = 6, 2


@pytest.fixture(scope="module")
def parts():
    cfg = load_model_config("tiny", ["--resolution=64", f"--num_frames={F}", f"--num_motion_frames={N}"])
    comps = build_components(cfg, seed=0)
    for m in comps.values():
        if isinstance(m, torch.nn.Module):
            m.eval()
    return cfg, comps


@pytest.fixture(scope="module")
def inputs(parts):
    cfg, c = parts
    g = torch.Generator().manual_seed(0)
    h = cfg.latent_size
    with torch.no_grad():
        ref = c["reference_unet"](torch.randn(1, 4, h, h, generator=g))
        motion = c["reference_unet"](torch.randn(N, 4, h, h, generator=g))
        audio = c["audio_proj"](c["audio_encoder"](torch.randn(1, 16000, generator=g) * 0.1, 25))[:, :F]
        speed = c["speed_encoder"](torch.full((1, F), 0.5))
        face = c["face_locator"](torch.ones(1, 1, cfg.resolution, cfg.resolution))
    return dict(sample=torch.randn(1, 4, F, h, h, generator=g), ref=ref, motion=motion, audio=audio, speed=speed,
                face=face)


def run(unet, x, **kw):
    kwargs = dict(reference_features=x["ref"], motion_features=x["motion"], audio_embeds=x["audio"],
                  speed_embeds=x["speed"], face_features=x["face"])
    kwargs.update(kw)
    sample = kwargs.pop("sample", x["sample"])
    with torch.no_grad():
        return unet(sample, 500, **kwargs).sample


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_parameter_groups_cover_the_new_layers(parts):
    groups = parameter_groups(parts[1]["unet"])
    assert set(groups.values()) == {"spatial", "temporal", "audio", "speed"}
    assert all(".audio_attn." in k for k, g in groups.items() if g == "audio")
    assert all(".motion_modules." in k for k, g in groups.items() if g in ("temporal", "speed"))


def test_audio_changes_output_and_zero_audio_attention_does_not(parts, inputs):
    unet = parts[1]["unet"]
    base = run(unet, inputs)
    # Freshly built: the audio-attention output projections are zero -> audio has no effect yet.
    assert torch.equal(base, run(unet, inputs, audio_embeds=None))
    unet2 = copy.deepcopy(unet)
    for name, module in unet2.named_modules():
        if name.endswith("audio_attn"):
            randomize_(module)
    a = run(unet2, inputs)
    b = run(unet2, inputs, audio_embeds=inputs["audio"].flip(1) + 1.0)
    assert (a - b).abs().max() > 1e-4, "different audio must change the output"
    # Zeroing the audio-attention output again removes the audio's effect exactly.
    for name, module in unet2.named_modules():
        if name.endswith("audio_attn"):
            torch.nn.init.zeros_(module.attn.to_out[0].weight)
            torch.nn.init.zeros_(module.attn.to_out[0].bias)
    assert torch.allclose(run(unet2, inputs), run(unet2, inputs, audio_embeds=None), atol=1e-6)


def test_speed_acts_only_through_temporal_modules(parts, inputs):
    unet = copy.deepcopy(parts[1]["unet"])
    for name, module in unet.named_modules():
        if name.endswith("speed_attn"):
            randomize_(module, seed=1)
    slow = parts[1]["speed_encoder"](torch.full((1, F), 0.1))
    fast = parts[1]["speed_encoder"](torch.full((1, F), 3.0))
    assert (run(unet, inputs, speed_embeds=slow) - run(unet, inputs, speed_embeds=fast)).abs().max() > 1e-4
    # Without the temporal modules (image mode), speed has no path to the output.
    a = run(unet, inputs, speed_embeds=slow, skip_temporal=True, sample=inputs["sample"][:, :, :1], audio_embeds=None)
    b = run(unet, inputs, speed_embeds=fast, skip_temporal=True, sample=inputs["sample"][:, :, :1], audio_embeds=None)
    assert torch.equal(a, b)


def test_face_locator_is_zero_at_init_and_acts_once_trained(parts, inputs):
    unet, locator = parts[1]["unet"], copy.deepcopy(parts[1]["face_locator"])
    assert torch.equal(run(unet, inputs), run(unet, inputs, face_features=None))
    randomize_(locator.embedding.conv_out, seed=2)
    mask = torch.zeros(1, 1, parts[0].resolution, parts[0].resolution)
    mask[..., 16:48, 16:48] = 1
    with torch.no_grad():
        face = locator(mask)
    assert (run(unet, inputs, face_features=face) - run(unet, inputs, face_features=None)).abs().max() > 1e-4


def with_trained_temporal(unet: torch.nn.Module) -> torch.nn.Module:
    """A copy whose temporal modules' output projections are non-zero, as after stage 2."""
    unet = copy.deepcopy(unet)
    for name, module in unet.named_modules():
        if name.endswith(".proj_out") and ".motion_modules." in name:
            randomize_(module, seed=3)
    return unet


def test_temporal_modules_are_the_identity_at_init(parts, inputs):
    # AnimateDiff zero-initialises the temporal output projection: a freshly built backbone computes
    # exactly its image model, whatever the motion frames or the speed.
    unet = parts[1]["unet"]
    image_mode = run(unet, inputs, skip_temporal=True, speed_embeds=None)
    assert torch.equal(run(unet, inputs), image_mode)
    assert torch.equal(run(unet, inputs, motion_features=None), image_mode)
    assert not torch.equal(run(with_trained_temporal(unet), inputs), image_mode)


def test_motion_frames_change_the_first_frames(parts, inputs):
    unet = with_trained_temporal(parts[1]["unet"])
    with_motion = run(unet, inputs)
    zero_motion = run(unet, inputs, motion_features=None)
    assert (with_motion[:, :, 0] - zero_motion[:, :, 0]).abs().max() > 1e-4


def test_temporal_modules_mix_frames_but_reference_net_does_not(parts, inputs):
    unet, refnet = with_trained_temporal(parts[1]["unet"]), parts[1]["reference_unet"]
    sample = inputs["sample"].clone()
    sample[:, :, 0] += 1.0
    a, b = run(unet, inputs), run(unet, inputs, sample=sample)
    assert (a[:, :, 5] - b[:, :, 5]).abs().max() > 1e-5, "perturbing frame 0 must reach frame 5"
    # Image mode: frames are independent.
    a1 = run(unet, inputs, skip_temporal=True, speed_embeds=None)
    b1 = run(unet, inputs, sample=sample, skip_temporal=True, speed_embeds=None)
    assert torch.allclose(a1[:, :, 5], b1[:, :, 5], atol=1e-6)
    # ReferenceNet encodes each frame on its own: frame 0 does not reach frame 1's features.
    frames = torch.randn(2, 4, parts[0].latent_size, parts[0].latent_size)
    moved = frames.clone()
    moved[0] += 1.0
    with torch.no_grad():
        fa, fb = refnet(frames), refnet(moved)
    for layer in fa:
        assert torch.allclose(fa[layer][1], fb[layer][1], atol=1e-6)
        assert (fa[layer][0] - fb[layer][0]).abs().max() > 1e-5


def test_reference_changes_output_in_both_modes(parts, inputs):
    cfg = parts[0]
    unet = parts[1]["unet"]
    zero_ref = {k: torch.zeros_like(v) for k, v in inputs["ref"].items()}
    assert (run(unet, inputs) - run(unet, inputs, reference_features=zero_ref)).abs().max() > 1e-4
    concat = build_components(dataclasses.replace(cfg, reference_mode="concat"), seed=0)
    for m in ("unet", "reference_unet"):
        concat[m].eval()
    with torch.no_grad():
        ref = concat["reference_unet"](torch.randn(1, 4, cfg.latent_size, cfg.latent_size))
    x = dict(inputs, ref=ref, motion=None)
    other = {k: -v for k, v in ref.items()}  # (a permutation of the tokens would not do: attention ignores order)
    assert (run(concat["unet"], x) - run(concat["unet"], x, reference_features=other)).abs().max() > 1e-4


def test_save_load_round_trip(parts, inputs, tmp_path):
    from emoportrait import EMOPipeline

    comps = {k: copy.deepcopy(v) for k, v in parts[1].items()}
    for name, module in comps["unet"].named_modules():
        if name.endswith(("audio_attn", "speed_attn")):
            randomize_(module, seed=3)
    EMOPipeline(**comps).save_pretrained(tmp_path / "m")
    loaded = EMOPipeline.from_pretrained(str(tmp_path / "m"))
    loaded.unet.eval()
    with torch.no_grad():
        ref = loaded.reference_unet(torch.ones(1, 4, parts[0].latent_size, parts[0].latent_size))
        ref0 = comps["reference_unet"](torch.ones(1, 4, parts[0].latent_size, parts[0].latent_size))
    for k in ref0:
        assert torch.allclose(ref[k], ref0[k], atol=1e-5)
    assert torch.allclose(run(loaded.unet, inputs), run(comps["unet"], inputs), atol=1e-5)


def test_speed_buckets_follow_the_paper_formula():
    # Paper 3.2: s_d = tanh((w_f - c_d) / r_d * 3); numbers worked out by hand, not by the code under test.
    from emoportrait.models.speed import speed_to_buckets

    w = torch.tensor([0.0, 0.5, 1.25])
    s = speed_to_buckets(w, torch.tensor([0.0, 0.5, 1.0]), torch.tensor([0.5, 0.25, 1.5]))  # (3 speeds, 3 buckets)
    t = torch.tanh(torch.tensor([[0.0, -6.0, -2.0],  # w = 0: (0-0)/.5*3, (0-.5)/.25*3, (0-1)/1.5*3
                                 [3.0, 0.0, -1.0],
                                 [7.5, 9.0, 0.5]]))
    assert s.shape == (3, 3) and torch.allclose(s, t, atol=1e-6)
    assert s[1, 1] == 0  # a speed at a bucket's centre reads 0 there


def test_backbone_reference_init_starts_the_reference_net_as_the_backbone(parts):
    """reference_init=backbone is what SD1.5 gives the paper: both networks see an image alike.

    At init (temporal, audio and face layers act as the identity or zero), a backbone run on a latent whose
    reference is that same latent sees, in every transformer block, exactly the ReferenceNet's features.
    """
    cfg = dataclasses.replace(parts[0], reference_init="backbone")
    comps = build_components(cfg, seed=0)
    unet, refnet = comps["unet"].eval(), comps["reference_unet"].eval()
    seen = {}

    def keep(layer):
        def hook(module, args, kwargs):
            seen[layer] = args[0] if args else kwargs["hidden_states"]
        return hook

    for layer in refnet.layer_names:
        unet.get_submodule(layer).attn1.register_forward_pre_hook(keep(layer), with_kwargs=True)
    x = torch.randn(1, 4, cfg.latent_size, cfg.latent_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = refnet(x)
        unet(x[:, :, None].expand(-1, -1, F, -1, -1), 0, reference_features=features)
    assert set(seen) == set(features) and len(features) >= 3
    # Reference-attention starts as a copy of self-attention (SD1.5's attn2 K/V come from attn1 too).
    for net in (unet, refnet):
        for layer in refnet.layer_names:
            block = net.get_submodule(layer)
            own = {k: v for k, v in block.attn2.named_parameters() if not k.startswith("processor.")}
            assert own.keys() == dict(block.attn1.named_parameters()).keys()
            assert all(torch.equal(v, block.attn1.get_parameter(k)) for k, v in own.items())
    for layer, tokens in features.items():
        assert torch.allclose(seen[layer][:1], tokens, atol=1e-5), layer
    # The random init: the two networks differ, and so do their features.
    random_refnet = build_components(dataclasses.replace(cfg, reference_init="random"), seed=0)["reference_unet"]
    with torch.no_grad():
        random_features = random_refnet.eval()(x)
    assert all((random_features[k] - features[k]).abs().max() > 1e-3 for k in features)
    with pytest.raises(EMOError, match="reference_init"):
        build_components(dataclasses.replace(cfg, reference_init="sd"), seed=0)


def test_reference_latent_input_adds_only_a_zero_conv_that_training_reaches(parts, inputs, tmp_path):
    """reference_latent_input (SVD's channel-concatenated image) adds one conv after conv_in and nothing else.

    It starts at zero, so a new model is the paper's; once trained, the reference latent drives the output; it
    belongs to the spatial group (stage 1 trains it, stages 2-3 freeze it); dropping the reference zeroes it too.
    """
    from diffusers import DDPMScheduler

    from emoportrait.training.module import EMOTrainingModule, EncodedBatch

    cfg = dataclasses.replace(parts[0], reference_latent_input=True)
    comps = build_components(cfg, seed=0)
    unet = comps["unet"].eval()
    plain = build_components(dataclasses.replace(cfg, reference_latent_input=False), seed=0)["unet"].eval()
    assert plain.reference_conv_in is None
    own = unet.state_dict()
    extra = {k for k in own if k.startswith("reference_conv_in.")}
    assert extra == {"reference_conv_in.weight", "reference_conv_in.bias"}
    assert all(not own[k].any() for k in extra)
    assert all(torch.equal(v, own[k]) for k, v in plain.state_dict().items())  # the same model otherwise
    assert {parameter_groups(unet)[k] for k in extra} == {"spatial"}
    g = torch.Generator().manual_seed(2)
    h = cfg.latent_size
    lat_a, lat_b = torch.randn(1, 4, h, h, generator=g), torch.randn(1, 4, h, h, generator=g)
    base = run(unet, inputs)
    assert torch.equal(run(unet, inputs, reference_latents=lat_a), base)  # zero-initialised: no change
    assert torch.equal(run(plain, inputs, reference_latents=lat_a), run(plain, inputs))  # ignored without the switch

    # The stage-1 loss reaches the conv; dropping the reference drops its latent (zeros) as well.
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    batch = EncodedBatch(latents=torch.randn(2, 1, 4, h, h, generator=g), reference=lat_a.repeat(2, 1, 1, 1),
                         face_mask=torch.ones(2, 1, cfg.resolution, cfg.resolution))
    module = EMOTrainingModule(unet, comps["reference_unet"], comps["face_locator"], None, None, sched, "1")
    module(batch).backward()
    assert unet.reference_conv_in.weight.grad.abs().sum() > 0
    randomize_(unet.reference_conv_in, seed=3)
    out_a, out_b = run(unet, inputs, reference_latents=lat_a), run(unet, inputs, reference_latents=lat_b)
    assert (out_a - base).abs().max() > 1e-3 and (out_a - out_b).abs().max() > 1e-3
    unet.save_pretrained(tmp_path / "unet")  # the switch is in its config.json: the folder rebuilds the conv
    loaded = type(unet).from_pretrained(tmp_path / "unet").eval()
    assert torch.equal(run(loaded, inputs, reference_latents=lat_a), out_a)
    seen = []
    unet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["reference_latents"]), with_kwargs=True)
    module.p_drop_reference = 1.0
    with torch.no_grad():
        module(batch)
    assert seen[-1].shape == (2, 4, h, h) and not seen[-1].any()
