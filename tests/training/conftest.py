"""Fixtures of the training tests (helpers live in train_fixtures.py, importable by name)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the helpers module beside this file
from train_fixtures import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)  # tiny ops: threads only add sync overhead (and a loaded machine spins)
