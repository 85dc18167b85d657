"""Shared fixtures for the generation tests: a tiny random EMO model, a drawn face, a face mask."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the helpers module beside this file
from emo_gen_helpers import TINY_OVERRIDES, draw_face  # noqa: E402


@pytest.fixture(scope="session")
def tiny_config():
    from emoportrait.models import load_model_config

    return load_model_config("tiny", TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_components(tiny_config):
    import torch

    from emoportrait.models import build_components

    torch.set_num_threads(1)  # 2 cores shared with other jobs: more threads spin and stall
    components = build_components(tiny_config, seed=0)
    # New layers start with a zero output projection (audio, speed, face locator), which makes a
    # freshly built model ignore those conditions; give them small random weights, as training would.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in ("unet", "face_locator"):
            for param in components[name].parameters():
                if param.ndim >= 1 and not param.any():
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return components


@pytest.fixture()
def tiny_pipe(tiny_components):
    """A fresh pipeline object over the shared (read-only) tiny components."""
    from diffusers import DDIMScheduler

    from emoportrait.pipelines.pipeline_emo import EMOPipeline

    components = dict(tiny_components)
    components["scheduler"] = DDIMScheduler.from_config(components["scheduler"].config)
    pipe = EMOPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_components, tmp_path_factory) -> Path:
    from emoportrait.pipelines.pipeline_emo import EMOPipeline

    path = tmp_path_factory.mktemp("models") / "tiny"
    EMOPipeline(**tiny_components).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def face_png(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "face.png"
    Image.fromarray(draw_face(256)).save(path)
    return path


@pytest.fixture(scope="session")
def face_mask64() -> np.ndarray:
    mask = np.zeros((64, 64), np.float32)
    mask[12:52, 16:48] = 1.0
    return mask
