"""Loaded weights get storage of their own (models/storage.py): safetensors' views are 8-byte aligned, not 64."""

import torch
from safetensors.torch import load_file

from emoportrait.models import build_components, load_model_config
from emoportrait.models.storage import ALIGNMENT, own_storage


def misaligned(module: torch.nn.Module) -> list[str]:
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, t in tensors if t.numel() and t.data_ptr() % ALIGNMENT]


def test_own_storage_copies_only_misaligned_tensors_and_keeps_their_values():
    layer = torch.nn.Linear(5, 3)
    layer.register_buffer("scale", torch.ones(3))
    pool = torch.arange(64, dtype=torch.float32)
    with torch.no_grad():
        layer.weight.data = pool[1:16].view(3, 5)  # 4 bytes into the pool: misaligned, as a safetensors view
        layer.scale.data = pool[17:20]
    assert misaligned(layer) == ["weight", "scale"]
    weight, bias_ptr, param = layer.weight.detach().clone(), layer.bias.data_ptr(), layer.weight
    assert own_storage(layer) is layer
    assert misaligned(layer) == []
    assert layer.weight is param and torch.equal(layer.weight, weight)  # the same Parameter, the same values
    assert torch.equal(layer.scale, pool[17:20]) and layer.scale.data_ptr() != pool[17:20].data_ptr()
    assert layer.bias.data_ptr() == bias_ptr  # aligned already: not copied
    pool.zero_()  # the old buffer no longer backs the module
    assert torch.equal(layer.weight, weight)


def test_every_component_class_loads_into_aligned_storage(tmp_path):
    cfg = load_model_config("tiny", ["--resolution=64", "--num_frames=4", "--num_motion_frames=2"])
    comps = build_components(cfg, seed=0)
    for name in ("unet", "reference_unet", "face_locator", "audio_encoder", "audio_proj", "speed_encoder"):
        comps[name].save_pretrained(tmp_path / name)
        raw = load_file(str(tmp_path / name / "diffusion_pytorch_model.safetensors"))
        if len(raw) > 1:  # one tensor sits at the buffer's start; with more, safetensors' views are misaligned
            assert any(t.data_ptr() % ALIGNMENT for t in raw.values()), name
        loaded = type(comps[name]).from_pretrained(tmp_path / name)
        assert misaligned(loaded) == [], name
        model, info = type(comps[name]).from_pretrained(tmp_path / name, output_loading_info=True)
        assert misaligned(model) == [] and info["missing_keys"] == [], name
