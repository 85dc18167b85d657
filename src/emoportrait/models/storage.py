"""Loaded weights in storage of their own, so a loaded model computes what the saved one did, bit for bit.

safetensors hands out every tensor of a file as a view into one buffer, at the file's 8-byte offsets, and
diffusers' `from_pretrained` keeps those views as the parameters. On some CPUs the BLAS and oneDNN kernels
take another path for weights that are not 64-byte aligned (measured on a 2-core AMD EPYC, torch 2.13: a
reloaded EMOUNet's output differed from the saved one's by up to 1e-6, and equalled it bit for bit once its
weights were copied; that reload test, tests/models/test_networks.py, had passed on earlier machines).
`own_storage` copies each such CPU tensor once, into the allocator's aligned memory, one tensor at a time.
"""

from __future__ import annotations

import torch

ALIGNMENT = 64  # bytes: PyTorch's CPU allocator (c10 `gAlignment`)


def own_storage(loaded):
    """Give every misaligned CPU parameter and buffer an aligned copy of its own, in place; returns `loaded`.

    `loaded`: a module, or a pipeline (each of its `components` that is a module: diffusers' VAE as well).
    """
    components = [loaded] if isinstance(loaded, torch.nn.Module) else loaded.components.values()
    modules = [m for m in components if isinstance(m, torch.nn.Module)]
    with torch.no_grad():
        for tensor in [t for m in modules for t in [*m.parameters(), *m.buffers()]]:
            if tensor.device.type == "cpu" and tensor.numel() and tensor.data_ptr() % ALIGNMENT:
                tensor.data = tensor.data.clone()
    return loaded


class OwnStorageMixin:
    """`from_pretrained` as diffusers' (a model's or a pipeline's), with the weights in storage of their own."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        own_storage(loaded[0] if isinstance(loaded, tuple) else loaded)  # output_loading_info=True: (model, info)
        return loaded
