"""`emoportrait init` on checkpoints in the real layouts: every key lands where documented."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from emoportrait.cli import main


def _state(folder, sub):
    return load_file(str(folder / sub / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="module")
def assembled(pretrained_parts, tmp_path_factory):
    out = tmp_path_factory.mktemp("init") / "model"
    p = pretrained_parts
    rc = main(["init", "--config", str(p["config"]), "--sd15", str(p["sd15"]), "--wav2vec2", str(p["wav2vec2"]),
               "--motion-adapter", str(p["adapter"]), "--out", str(out)])
    assert rc == 0
    return out


def test_init_writes_the_documented_layout(assembled):
    names = {p.name for p in assembled.iterdir()}
    assert {"model_index.json", "unet", "reference_unet", "face_locator", "audio_encoder", "audio_proj",
            "speed_encoder", "vae", "scheduler"} <= names
    for sub in ("unet", "reference_unet", "face_locator", "audio_proj", "speed_encoder", "vae", "audio_encoder"):
        assert (assembled / sub / "diffusion_pytorch_model.safetensors").is_file(), sub
    assert not [p for p in assembled.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"


def test_init_records_the_configs_guidance_scales_strength_and_clip_overlap(assembled):
    from emoportrait.pipelines.pipeline_emo import EMOPipeline

    index = json.loads((assembled / "model_index.json").read_text())
    assert (index["guidance_scale_ref"], index["guidance_scale_audio"], index["strength"], index["clip_overlap"]) == (
        1.5, 4.5, 0.75, 2)  # small.yaml
    pipe = EMOPipeline.from_pretrained(assembled)
    assert (pipe.config.guidance_scale_audio, pipe.config.strength, pipe.default_clip_overlap) == (4.5, 0.75, 2)


def test_init_refuses_an_overlap_that_leaves_no_room(tmp_path, capsys):
    assert main(["init", "--config", "tiny", "--clip_overlap=9", "--out", str(tmp_path / "m")]) == 2  # F 12, N 4
    assert capsys.readouterr().err.strip() == ("emoportrait init: error: clip_overlap 9 leaves no room in a clip of "
                                               "12 frames with 4 motion frames; use at most 8")
    assert not (tmp_path / "m").exists()


def test_an_sd15_init_keeps_sds_eps_schedule(assembled):
    sched = json.loads((assembled / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["prediction_type"], sched["rescale_betas_zero_snr"], sched["timestep_spacing"]) == (
        "epsilon", False, "leading")


ZERO_SNR = ["--schedule.prediction_type=v_prediction", "--schedule.rescale_betas_zero_snr=true",
            "--schedule.timestep_spacing=trailing"]


def test_a_v_prediction_zero_terminal_snr_schedule_reaches_the_folder_and_samples_from_t_999(tmp_path):
    """The model config's schedule (models/config.py, ScheduleConfig) reaches the model folder and the pipeline."""
    from emoportrait.pipelines.pipeline_emo import EMOPipeline

    assert main(["init", "--config", "tiny", *ZERO_SNR, "--out", str(tmp_path / "m")]) == 0
    scheduler = EMOPipeline.from_pretrained(tmp_path / "m").scheduler
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.alphas_cumprod[-1] == 0
    scheduler.set_timesteps(10)
    assert scheduler.timesteps[0] == 999  # SD's "leading" spacing would start at 901


def test_zero_terminal_snr_with_eps_prediction_is_refused(capsys, tmp_path, pretrained_parts):
    err = _init_fails(capsys, ["--config", str(pretrained_parts["config"]), "--schedule.rescale_betas_zero_snr=true"],
                      tmp_path / "m")
    assert "--schedule.prediction_type=v_prediction" in err


def test_every_sd_key_lands_under_its_own_name(assembled, pretrained_parts):
    source = _state(pretrained_parts["sd15"], "unet")
    report = {r["component"]: r for r in json.loads((assembled / "init_report.json").read_text())}
    for component in ("unet", "reference_unet"):
        target = _state(assembled, component)
        skipped = set(report[component]["skipped"])
        # Only the text projections of attn2 are skipped, and they are reported by name.
        assert skipped == {k for k in source if k.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))}
        assert skipped, "cross mode must replace attn2 K/V"
        for key, value in source.items():
            if key in skipped:
                attn1 = key.replace(".attn2.", ".attn1.")
                assert torch.equal(target[key], source[attn1]), f"{component}: {key} not initialised from attn1"
            else:
                assert torch.equal(target[key], value), f"{component}: {key} differs from SD1.5"


def test_motion_module_tensors_land_in_temporal_modules(assembled, pretrained_parts):
    source = _state(pretrained_parts["adapter"], "")
    target = _state(assembled, "unet")
    assert source and all(torch.equal(target[k], v) for k, v in source.items())


def test_single_file_ckpt_loads_like_the_folder(pretrained_parts, tmp_path):
    p = pretrained_parts
    out = tmp_path / "from_ckpt"
    rc = main(["init", "--config", str(p["config"]), "--sd15", str(p["sd15"]), "--motion-adapter", str(p["ckpt"]),
               "--out", str(out), "--audio_encoder=logmel"])
    assert rc == 0
    source = _state(p["adapter"], "")
    target = _state(out, "unet")
    for key, value in source.items():
        assert torch.equal(target[key], value), key


def test_wav2vec2_and_vae_load_unchanged(assembled, pretrained_parts):
    from transformers import Wav2Vec2Model

    ref = Wav2Vec2Model.from_pretrained(str(pretrained_parts["wav2vec2"])).state_dict()
    enc = _state(assembled, "audio_encoder")
    assert all(torch.equal(enc[f"wav2vec2.{k}"], v) for k, v in ref.items())
    report = {r["component"]: r for r in json.loads((assembled / "init_report.json").read_text())}
    assert any("lm_head" in k for k in report["audio_encoder"]["skipped"])  # the CTC head is reported
    vae_src, vae = _state(pretrained_parts["sd15"], "vae"), _state(assembled, "vae")
    assert vae_src.keys() == vae.keys() and all(torch.equal(vae[k], v) for k, v in vae_src.items())


def test_assembled_model_loads_and_runs(assembled):
    from emoportrait import EMOPipeline

    pipe = EMOPipeline.from_pretrained(str(assembled))
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    latents = torch.randn(1, 4, 8, 8)
    feats = pipe.reference_unet(latents)
    assert feats and all(v.shape[0] == 1 for v in feats.values())
    audio = pipe.audio_proj(pipe.audio_encoder(torch.randn(1, 16000), 25))
    assert audio.shape[:3] == (1, 25, 3)
    out = pipe.unet(torch.randn(1, 4, 4, 8, 8), 10, reference_features=feats, audio_embeds=audio[:, :4]).sample
    assert out.shape == (1, 4, 4, 8, 8) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------ bad input
def _init_fails(capsys, args, out):
    rc = main(["init", *args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and err.startswith("emoportrait init: error:"), err
    assert not out.exists(), "a partial model folder was left behind"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    return err


@pytest.mark.parametrize("flag", ["--sd15", "--wav2vec2", "--motion-adapter"])
def test_missing_folder(capsys, tmp_path, pretrained_parts, flag):
    given = {"--sd15": pretrained_parts["sd15"], "--wav2vec2": pretrained_parts["wav2vec2"],
             "--motion-adapter": pretrained_parts["adapter"], flag: tmp_path / "nope"}
    args = ["--config", str(pretrained_parts["config"])] + [str(x) for kv in given.items() for x in kv]
    err = _init_fails(capsys, args, tmp_path / "m")
    assert "nope" in err and "not found" in err


def test_wrong_layout(capsys, tmp_path, pretrained_parts):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "config.json").write_text("{}")
    err = _init_fails(capsys, ["--config", str(pretrained_parts["config"]), "--sd15", str(tmp_path / "flat")],
                      tmp_path / "m")
    assert "unet/config.json" in err


def test_wrong_shape_checkpoint(capsys, tmp_path, pretrained_parts):
    import shutil

    from safetensors.torch import save_file

    sd = tmp_path / "sd_bad"
    shutil.copytree(pretrained_parts["sd15"], sd)
    weights = sd / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["conv_in.weight"] = torch.zeros(32, 4, 5, 5)
    save_file(state, str(weights))
    err = _init_fails(capsys, ["--config", str(pretrained_parts["config"]), "--sd15", str(sd)], tmp_path / "m")
    assert "conv_in.weight" in err and "expected" in err and str(weights) in err


def test_truncated_safetensors(capsys, tmp_path, pretrained_parts):
    import shutil

    adapter = tmp_path / "adapter_bad"
    shutil.copytree(pretrained_parts["adapter"], adapter)
    weights = adapter / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    err = _init_fails(capsys, ["--config", str(pretrained_parts["config"]), "--sd15", str(pretrained_parts["sd15"]),
                               "--motion-adapter", str(adapter)], tmp_path / "m")
    assert str(weights) in err and "safetensors" in err


def test_motion_adapter_of_another_size(capsys, tmp_path, pretrained_parts):
    from diffusers import MotionAdapter

    other = tmp_path / "adapter_wide"
    MotionAdapter(block_out_channels=(16, 32), motion_layers_per_block=1, motion_num_attention_heads=4,
                  motion_norm_num_groups=8, motion_max_seq_length=16).save_pretrained(other)
    err = _init_fails(capsys, ["--config", str(pretrained_parts["config"]), "--sd15", str(pretrained_parts["sd15"]),
                               "--motion-adapter", str(other)], tmp_path / "m")
    assert "shape" in err and "motion_modules" in err


def test_a_vae_of_another_depth_needs_a_matching_face_locator(capsys, tmp_path, pretrained_parts):
    """A 4x VAE (3 blocks) under a config whose face locator downsamples 8x: a one-line error, no folder;
    with the face locator's widths matched (an override) the same init works."""
    import shutil

    from diffusers import AutoencoderKL

    sd = tmp_path / "sd_vae4x"
    shutil.copytree(pretrained_parts["sd15"], sd)
    shutil.rmtree(sd / "vae")
    AutoencoderKL(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                  up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=4).save_pretrained(sd / "vae")
    args = ["--config", str(pretrained_parts["config"]), "--sd15", str(sd)]
    err = _init_fails(capsys, args, tmp_path / "m")
    assert "face_locator_channels has 4 widths" in err and "--face_locator_channels=[4,8,8]" in err
    assert main(["init", *args, "--out", str(tmp_path / "m"), "--face_locator_channels=[4,8,8]"]) == 0
    locator = json.loads((tmp_path / "m" / "face_locator" / "config.json").read_text())
    assert locator["block_out_channels"] == [4, 8, 8]


def test_an_sd15_init_with_the_reference_latent_input_keeps_sd_and_starts_the_conv_at_zero(pretrained_parts, tmp_path):
    p = pretrained_parts
    out = tmp_path / "m"
    assert main(["init", "--config", str(p["config"]), "--sd15", str(p["sd15"]), "--audio_encoder=logmel",
                 "--reference_latent_input=true", "--out", str(out)]) == 0
    source, target = _state(p["sd15"], "unet"), _state(out, "unet")
    assert torch.equal(target["conv_in.weight"], source["conv_in.weight"])  # SD1.5's conv_in keeps its shape
    assert target["reference_conv_in.weight"].shape[1] == source["conv_in.weight"].shape[1]
    assert not target["reference_conv_in.weight"].any() and not target["reference_conv_in.bias"].any()
    report = {r["component"]: r for r in json.loads((out / "init_report.json").read_text())}
    assert report["unet"]["initialised"]["reference_conv_in.weight"] == "new layer (zero init)"
