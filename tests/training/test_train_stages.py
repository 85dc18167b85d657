"""The three stages train exactly the paper's layers (3.3): compared tensor by tensor in saved model folders."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from train_fixtures import ContractDataset, fast_config

from emoportrait.errors import EMOError
from emoportrait.training.parts import check_init
from emoportrait.training.train import train

PARTS = ("unet", "reference_unet", "face_locator", "audio_proj", "speed_encoder", "vae")


def _group(name: str) -> str:
    """Backbone group of a saved tensor name (same rule as `parameter_groups`, buffers included)."""
    if ".speed_attn." in name or ".speed_norm." in name:
        return "speed"
    if ".audio_attn." in name:
        return "audio"
    if ".motion_modules." in name:
        return "temporal"
    return "spatial"


def _diff(before, after) -> dict[str, dict[str, tuple[int, int]]]:
    """Per part and group: (tensors changed, tensors total) between two model folders."""
    out = {}
    for part in PARTS:
        a = load_file(str(before / part / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(after / part / "diffusion_pytorch_model.safetensors"))
        assert a.keys() == b.keys()
        groups: dict[str, list[int]] = {}
        for k in a:
            g = _group(k) if part == "unet" else "all"
            c = groups.setdefault(g, [0, 0])
            c[0] += int(not torch.equal(a[k], b[k]))
            c[1] += 1
        out[part] = {g: tuple(c) for g, c in groups.items()}
    return out


@pytest.fixture(scope="module")
def chain(tiny_model_dir, tmp_path_factory):
    """init -> stage 1 -> stage 2 -> stage 3, two optimizer steps each."""
    root = tmp_path_factory.mktemp("chain")
    folders = {"0": tiny_model_dir}
    for stage, prev in (("1", "0"), ("2", "1"), ("3", "2")):
        cfg = fast_config(stage, max_steps=2, batch_size=1)
        folders[stage] = train(cfg, folders[prev], root / f"stage{stage}", dataset=ContractDataset(stage, num_clips=2))
    return folders


def _unchanged(d, part, group="all"):
    return d[part][group][0] == 0


def _changed(d, part, group="all"):
    return d[part][group][0] > 0


def test_stage1_trains_backbone_reference_face_locator_only(chain):
    d = _diff(chain["0"], chain["1"])
    assert _changed(d, "unet", "spatial") and _changed(d, "reference_unet") and _changed(d, "face_locator")
    for g in ("temporal", "audio", "speed"):
        assert _unchanged(d, "unet", g), g
    for part in ("audio_proj", "speed_encoder", "vae"):
        assert _unchanged(d, part), part


def test_stage2_trains_temporal_and_audio_sd_part_unchanged(chain):
    d = _diff(chain["1"], chain["2"])
    assert _unchanged(d, "unet", "spatial"), "the SD (spatial) part of the backbone must stay frozen"
    assert _changed(d, "unet", "temporal") and _changed(d, "unet", "audio") and _changed(d, "audio_proj")
    assert _unchanged(d, "unet", "speed")
    for part in ("reference_unet", "face_locator", "speed_encoder", "vae"):
        assert _unchanged(d, part), part


def test_stage3_audio_bit_identical_speed_changed(chain):
    d = _diff(chain["2"], chain["3"])
    assert _unchanged(d, "unet", "audio") and _unchanged(d, "audio_proj"), "paper 3.3: audio layers frozen in stage 3"
    assert _changed(d, "unet", "speed") and _changed(d, "speed_encoder") and _changed(d, "unet", "temporal")
    assert _unchanged(d, "unet", "spatial")
    for part in ("reference_unet", "face_locator", "vae"):
        assert _unchanged(d, part), part


def test_each_stage_ends_with_a_loadable_model_folder_and_its_record(chain):
    from emoportrait.models.config import DEFAULT_GUIDANCE_AUDIO, load_model_config
    from emoportrait.pipelines import EMOPipeline

    pipe = EMOPipeline.from_pretrained(str(chain["3"]))
    assert pipe.unet.config.num_frames == 4
    # The tiny config's guidance (not the pipeline's default), written by init and kept by every stage.
    tiny = load_model_config("tiny")
    assert pipe.config.guidance_scale_audio == tiny.guidance_scale_audio != DEFAULT_GUIDANCE_AUDIO
    assert pipe.config.strength == tiny.strength
    record = json.loads((chain["3"] / "emo_training.json").read_text())
    assert record["stages"] == ["1", "2", "3"] and record["steps"] == {"1": 2, "2": 2, "3": 2}
    run = chain["3"].parent
    assert (run / "log.csv").is_file() and (run / "loss.png").is_file() and (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "checkpoint-000002" / "config.yaml").is_file()


def test_stage_order_is_enforced_unless_forced(tiny_model_dir, chain):
    with pytest.raises(EMOError, match="stage 2 starts from a stage-1 model"):
        check_init(tiny_model_dir, "2")
    with pytest.raises(EMOError, match="stage 3 starts from a stage-2 model"):
        check_init(chain["1"], "3")
    check_init(tiny_model_dir, "2", force=True)
    check_init(chain["2"], "3")


def test_trainable_groups_are_configurable_and_checked():
    cfg = fast_config("2")
    cfg.trainable = ["temporal", "audio", "spatial"]  # "configurable to unfreeze more"
    cfg.validate()
    cfg.trainable = ["speed"]
    with pytest.raises(EMOError, match="stage 2 does not run the 'speed' layers"):
        cfg.validate()
    cfg.trainable = ["wings"]
    with pytest.raises(EMOError, match="unknown trainable group"):
        cfg.validate()


def test_vae_stage_trains_only_the_vae_and_measures_its_scaling_factor(tiny_model_dir, tmp_path):
    out = train(fast_config("vae", max_steps=2, batch_size=2), tiny_model_dir, tmp_path / "vae",
                dataset=ContractDataset("vae", num_clips=4))
    d = _diff(tiny_model_dir, out)
    assert _changed(d, "vae")
    for part in ("unet", "reference_unet", "face_locator", "audio_proj", "speed_encoder"):
        assert all(c == 0 for c, _ in d[part].values()), part
    scale = json.loads((out / "vae" / "config.json").read_text())["scaling_factor"]
    assert scale != 1.0 and scale > 0
    assert json.loads((out / "emo_training.json").read_text())["stages"] == ["vae"]
    check_init(out, "1")  # stage 1 may start from it


def test_vae_decoder_run_keeps_the_encoder_and_scale_bit_identical(chain, tmp_path):
    """trainable: [vae_decoder] (after stage 3): only decoder + post-quant conv move, so the latents the
    backbone was trained on do not change, and the model keeps its finished stages."""
    before = chain["3"]
    out = train(fast_config("vae", max_steps=2, batch_size=2, trainable=["vae_decoder"]), before, tmp_path / "dec",
                dataset=ContractDataset("vae", num_clips=4))
    a = load_file(str(before / "vae" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors"))
    moved = {k for k in a if not torch.equal(a[k], b[k])}
    assert moved and all(k.startswith(("decoder.", "post_quant_conv.")) for k in moved)
    assert any(k.startswith("post_quant_conv.") for k in moved)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("encoder.", "quant_conv.")))
    d = _diff(before, out)
    for part in ("unet", "reference_unet", "face_locator", "audio_proj", "speed_encoder"):
        assert all(c == 0 for c, _ in d[part].values()), part
    scale = lambda m: json.loads((m / "vae" / "config.json").read_text())["scaling_factor"]  # noqa: E731
    assert scale(out) == scale(before)
    record = json.loads((out / "emo_training.json").read_text())
    assert record["stages"] == ["1", "2", "3", "vae_decoder"] and record["steps"]["vae_decoder"] == 2
    assert record["steps"]["3"] == 2  # the earlier stages' steps are kept
    assert sorted(record["configs"]) == ["1", "2", "3", "vae_decoder"]  # ... and every stage's config and init
    assert record["configs"]["1"]["stage"] == "1" and record["configs"]["vae_decoder"]["stage"] == "vae"
    assert record["config"] == record["configs"]["vae_decoder"] and record["inits"]["2"].endswith("model")


@pytest.mark.parametrize("setting", [{"mixed_precision": "bf16"}, {"vae_dtype": "bf16"}])
def test_a_low_precision_frozen_vae_encodes_but_the_saved_vae_stays_float32_and_bit_identical(tiny_model_dir, tmp_path,
                                                                                                setting, request,
                                                                                                monkeypatch):
    """The frozen VAE encodes stage 1's frames in bf16 (mixed precision, or `vae_dtype` alone), yet the
    model folder keeps the init's fp32 VAE: a cast copy encodes, the saved VAE is never rounded. On a CPU
    without bf16 instructions the run says once that bf16 is emulated there."""
    from accelerate.state import AcceleratorState

    from emoportrait.pipelines import loading

    AcceleratorState._reset_state()  # accelerate keeps one precision per process; this test changes it
    request.addfinalizer(AcceleratorState._reset_state)
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)  # an AVX2 CPU, whatever runs the test
    with pytest.warns(UserWarning, match="emulated") as caught:
        out = train(fast_config("1", max_steps=1, batch_size=1, **setting), tiny_model_dir, tmp_path / "s1",
                    dataset=ContractDataset("1", num_clips=2))
    assert sum("emulated" in str(w.message) for w in caught) == 1
    a = load_file(str(tiny_model_dir / "vae" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(b[k].dtype == torch.float32 and torch.equal(a[k], b[k]) for k in a)
    assert _changed(_diff(tiny_model_dir, out), "unet", "spatial")


def test_the_encoding_copy_runs_in_its_dtype_and_leaves_the_vae_alone(tiny_model_dir):
    from diffusers import AutoencoderKL

    from emoportrait.training.module import encode_batch
    from emoportrait.training.parts import encoding_vae, frozen_vae_dtype

    vae = AutoencoderKL.from_pretrained(str(tiny_model_dir / "vae")).eval()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    assert frozen_vae_dtype("auto", torch.float32, vae) == torch.float32
    assert frozen_vae_dtype("auto", torch.bfloat16, vae) == torch.bfloat16
    vae.register_to_config(force_upcast=True)  # SD's VAE overflows in fp16: auto keeps it fp32
    assert frozen_vae_dtype("auto", torch.float16, vae) == torch.float32
    assert frozen_vae_dtype("bf16", torch.float32, vae) == torch.bfloat16

    torch.manual_seed(0)
    batch = {"pixel_values": torch.rand(2, 3, 32, 32) * 2 - 1, "reference": torch.rand(2, 3, 32, 32) * 2 - 1,
             "face_mask": torch.ones(2, 1, 32, 32)}
    latents = {}
    for dtype in (torch.float32, torch.bfloat16):
        enc = encoding_vae(vae, dtype)
        assert all(p.dtype == dtype and not p.requires_grad for p in enc.parameters())
        torch.manual_seed(1)  # the same posterior sample
        latents[dtype] = encode_batch(batch, enc, None, "1").latents
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())
    assert all(p.dtype == torch.float32 for p in vae.parameters())
    a, b = latents[torch.float32], latents[torch.bfloat16]
    assert a.dtype == b.dtype == torch.float32 and not torch.equal(a, b)
    assert (a - b).abs().max() < 0.05 * a.abs().max()  # bf16 rounding, not another encoding
