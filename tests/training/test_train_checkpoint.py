"""Checkpoints are complete or absent, keep the last K, verify on resume; data order resumes exactly."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import Dataset

from emoportrait.errors import EMOError
from emoportrait.training.checkpoint import (
    TrainState,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from emoportrait.training.config import TrainConfig
from emoportrait.training.data import BatchStream, build_dataloader
from emoportrait.training.logging import RunLogger, read_log


class RandomDraws(Dataset):
    """Items whose content comes from the global RNGs, like a dataset that picks random frames."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"i": torch.tensor(i), "r": torch.tensor([random.random(), float(np.random.rand()), torch.rand(()).item()])}


def _toy(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt


def _cfg(keep_last=2):
    cfg = TrainConfig()
    cfg.checkpoint.keep_last = keep_last
    return cfg


def test_save_keeps_last_k_and_latest_resolves(tmp_path):
    acc = Accelerator(cpu=True)
    model, opt = acc.prepare(*_toy())
    for step in (1, 2, 3):
        save_checkpoint(acc, tmp_path, TrainState(step=step), _cfg(keep_last=2))
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert find_checkpoint(tmp_path, "latest").name == "checkpoint-000003"
    assert find_checkpoint(tmp_path, "2").name == "checkpoint-000002"
    ckpt = find_checkpoint(tmp_path, "latest")
    assert (ckpt / "config.yaml").is_file() and (ckpt / "model.safetensors").is_file()
    manifest = json.loads((ckpt / "trainer_state.json").read_text())["files"]
    assert "model.safetensors" in manifest and "rng_0.pt" in manifest


def test_kill_during_checkpoint_write_leaves_previous_intact(tmp_path, monkeypatch):
    acc = Accelerator(cpu=True)
    model, opt = acc.prepare(*_toy())
    save_checkpoint(acc, tmp_path, TrainState(step=1), _cfg())
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints" / "checkpoint-000001").iterdir()}
    original = acc.save_state

    def killed(output_dir, **kw):  # write part of the state, then die (as SIGKILL / a full disk would)
        original(output_dir, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(acc, "save_state", killed)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(acc, tmp_path, TrainState(step=2), _cfg())
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]  # the half-written one is not a checkpoint
    assert find_checkpoint(tmp_path, "latest").name == "checkpoint-000001"
    after = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints" / "checkpoint-000001").iterdir()}
    assert after == before


@pytest.mark.parametrize("damage", ["truncate", "flip", "state"])
def test_corrupt_checkpoint_is_refused_in_one_line(tmp_path, damage):
    acc = Accelerator(cpu=True)
    model, opt = acc.prepare(*_toy())
    path = save_checkpoint(acc, tmp_path, TrainState(step=1), _cfg())
    target = path / ("trainer_state.json" if damage == "state" else "model.safetensors")
    data = bytearray(target.read_bytes())
    if damage == "truncate":
        target.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "flip":
        data[-3] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        target.write_text("{not json")
    with pytest.raises(EMOError) as e:
        load_checkpoint(acc, path)
    assert "\n" not in str(e.value) and "corrupt" in str(e.value)


def test_load_restores_weights_optimizer_and_rng(tmp_path):
    acc = Accelerator(cpu=True)
    model, opt = acc.prepare(*_toy())
    model(torch.ones(3, 4)).sum().backward()
    opt.step()
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    path = save_checkpoint(acc, tmp_path, TrainState(step=1, epoch=2, batch_in_epoch=3), _cfg())
    expected = (torch.rand(3), random.random(), np.random.rand())
    weights = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.zero_()
    torch.manual_seed(0)
    state = load_checkpoint(acc, path)
    assert (state.step, state.epoch, state.batch_in_epoch) == (1, 2, 3)
    assert torch.equal(model.weight, weights)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1] and np.random.rand() == expected[2]


def test_batch_stream_resumes_same_items_and_randomness():
    """Skipping to (epoch, batch) gives the batches an uninterrupted stream gives, with the same draws."""
    acc = Accelerator(cpu=True)

    def stream(state):
        loader, sampler = build_dataloader(RandomDraws(), batch_size=3, seed=1)
        return BatchStream(acc, acc.prepare(loader), sampler, state)

    full_state = TrainState()
    full = stream(full_state)
    batches = [next(full) for _ in range(7)]  # 3 batches per epoch: crosses two epoch boundaries
    assert full_state.epoch == 2 and full_state.batch_in_epoch == 1
    order = [b["i"].tolist() for b in batches]
    assert order[0] != order[3], "epochs are shuffled differently"
    state = TrainState(epoch=1, batch_in_epoch=1)  # as saved after 4 batches
    torch.manual_seed(999)  # the training RNG stream must not influence the data
    resumed = stream(state)
    for b in batches[4:]:
        r = next(resumed)
        assert torch.equal(r["i"], b["i"]) and torch.equal(r["r"], b["r"])


def test_empty_or_too_small_dataset_is_one_line_error():
    with pytest.raises(EMOError, match="empty"):
        build_dataloader(torch.utils.data.TensorDataset(torch.zeros(0, 2)), batch_size=2, seed=0)
    with pytest.raises(EMOError, match="fewer than one batch"):
        build_dataloader(torch.utils.data.TensorDataset(torch.zeros(3, 2)), batch_size=2, seed=0, num_processes=2)


def test_logger_truncates_rows_after_resume_step_and_plots(tmp_path):
    log = RunLogger(tmp_path)
    for step in range(1, 6):
        log.log(step, {"loss": 1.0 / step, "lr": 1e-4})
    assert log.plot().is_file()
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # a torn line from a kill
    RunLogger(tmp_path, resume_step=3)
    assert [r["step"] for r in read_log(tmp_path / "log.jsonl")] == [1, 2, 3]
    assert (tmp_path / "log.csv").read_text().splitlines()[0].startswith("step,loss")
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 4
