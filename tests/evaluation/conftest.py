"""Shared fixture: one tiny synthetic world (3 identities x 2 clips of 2.4 s at 128 px)."""

import pytest


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    from emoportrait.data.synth.config import SynthConfig
    from emoportrait.data.synth.world import synthesize_world

    out = tmp_path_factory.mktemp("world") / "w"
    cfg = SynthConfig(identities=3, clips_per_identity=2, seconds=2.4, size=128, seed=11, sung_fraction=0.0)
    synthesize_world(cfg, out, workers=1, progress=False)
    return out


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core machine two spinning OpenMP threads run 3-6x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
