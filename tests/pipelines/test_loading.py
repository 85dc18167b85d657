"""Device and dtype resolution (pipelines/loading.py): bf16 on a CPU without bf16 instructions warns."""

import warnings

import pytest
import torch

from emoportrait.errors import EMOError
from emoportrait.pipelines import loading


def _resolve(dtype: str, device: str, native: bool | None, monkeypatch) -> tuple[torch.dtype, list]:
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native)  # True / False / None (cannot tell)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = loading.resolve_dtype(dtype, device)
    return out, [w for w in caught if "emulated" in str(w.message)]


def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch):
    dtype, caught = _resolve("bfloat16", "cpu", False, monkeypatch)
    assert dtype == torch.bfloat16  # still what was asked for: the warning says what it costs
    assert len(caught) == 1 and "use float32" in str(caught[0].message)


@pytest.mark.parametrize(("dtype", "device", "native"), [("bfloat16", "cpu", True), ("bfloat16", "cpu", None), ("float32", "cpu", False),
                                                         ("auto", "cpu", False), ("bfloat16", "cuda", False)])
def test_no_warning_where_bf16_is_native_or_not_asked_for(dtype, device, native, monkeypatch):
    out, caught = _resolve(dtype, device, native, monkeypatch)
    assert caught == []
    assert out == (torch.float32 if dtype == "auto" else getattr(torch, dtype))


def test_cpu_has_native_bf16_reads_the_cpu_flags(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx2 fma\n")
    assert loading.cpu_has_native_bf16(f) is False  # the AMD EPYC this was measured on
    f.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    assert loading.cpu_has_native_bf16(f) is True
    f.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # Arm (Graviton 3, Apple M2 under Linux)
    assert loading.cpu_has_native_bf16(f) is True
    assert loading.cpu_has_native_bf16(tmp_path / "missing") is None  # cannot tell: no warning


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(EMOError, match="unknown dtype 'bf17'"):
        loading.resolve_dtype("bf17", "cpu")


def test_a_loaded_pipeline_has_its_weights_in_aligned_storage(tiny_model_dir):
    """diffusers' AutoencoderKL too: the pipeline gives every component's weights storage of their own."""
    from safetensors.torch import load_file

    from emoportrait.models.storage import ALIGNMENT
    from emoportrait.pipelines.pipeline_emo import EMOPipeline

    raw = load_file(str(tiny_model_dir / "vae" / "diffusion_pytorch_model.safetensors"))
    assert any(t.data_ptr() % ALIGNMENT for t in raw.values())  # what diffusers alone would keep
    pipe = EMOPipeline.from_pretrained(tiny_model_dir)
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            tensors = [*component.parameters(), *component.buffers()]
            assert all(t.data_ptr() % ALIGNMENT == 0 for t in tensors if t.numel()), name
