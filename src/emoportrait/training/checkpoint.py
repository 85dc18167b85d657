"""Training checkpoints that are complete or absent, and resuming that continues the same run.

A checkpoint is the folder `OUT/checkpoints/checkpoint-<step>` holding what `accelerator.save_state`
writes (model weights as safetensors, optimizer, lr scheduler, EMA, grad scaler; FSDP/DeepSpeed
shards where those are used), the RNG states of python/numpy/torch per process (`rng_<rank>.pt`), the
data position and step (`trainer_state.json`, with a size + sha256 manifest of every file) and the
resolved config (`config.yaml`). It is written into `.checkpoint-<step>.tmp` and renamed when
complete, so a kill or a full disk mid-write leaves the previous checkpoints as they were; older
checkpoints beyond `keep_last` are deleted only after the new one exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoportrait.atomic import atomic_write_text
from emoportrait.config import save_config
from emoportrait.errors import EMOError

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


@dataclass
class TrainState:
    """Where the run is: optimizer steps taken and the data position (epoch, micro-batches into it)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches this process has consumed in `epoch`
    num_processes: int = 1


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, path), oldest first (temporary folders are ignored)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def find_checkpoint(output_dir: str | Path, resume: str) -> Path:
    """Resolve `--resume`: `latest`, a step number, or a checkpoint folder path."""
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise EMOError(f"--resume latest: no checkpoint in {checkpoint_root(output_dir)}; start without --resume")
        return found[-1][1]
    if resume.isdigit():
        path = checkpoint_root(output_dir) / f"checkpoint-{int(resume):06d}"
    else:
        path = Path(resume)
    if not path.is_dir():
        raise EMOError(f"--resume {resume}: checkpoint folder {path} not found; use --resume latest or a checkpoint path")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(folder: Path, checksum: bool) -> dict[str, dict[str, Any]]:
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in (STATE_FILE, "config.yaml"):
            entry: dict[str, Any] = {"size": p.stat().st_size}
            if checksum:
                entry["sha256"] = _sha256(p)
            files[str(p.relative_to(folder))] = entry
    return files


def _fsync_tree(folder: Path) -> None:
    """Flush every file of `folder` to disk before the rename makes it visible."""
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def rng_state() -> dict[str, Any]:
    """The RNG states of python, numpy and torch (CPU and, where present, every CUDA device).

    Only tensors, tuples, ints, floats and strings, so the file loads with `weights_only=True`.
    """
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(accelerator, output_dir: str | Path, state: TrainState, cfg: Any, extra: dict | None = None) -> Path:
    """Write checkpoint-<step> atomically on every process's behalf; returns its path.

    Every process calls this (accelerate writes per-rank and sharded files); the main process writes
    the manifest, renames the temporary folder and prunes old checkpoints.
    """
    root = checkpoint_root(output_dir)
    final = root / f"checkpoint-{state.step:06d}"
    tmp = root / f".checkpoint-{state.step:06d}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    torch.save(rng_state(), tmp / f"rng_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_config(cfg, tmp / "config.yaml")
        _fsync_tree(tmp)
        payload = {**asdict(state), **(extra or {}),
                   "files": _manifest(tmp, checksum=getattr(cfg.checkpoint, "checksum", True))}
        atomic_write_text(tmp / STATE_FILE, json.dumps(payload, indent=1))
        if final.exists():  # a rerun of the same step after a resume: replace only once complete
            old = root / f".checkpoint-{state.step:06d}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        prune_checkpoints(output_dir, cfg.checkpoint.keep_last)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints, and leftover temporary folders."""
    root = checkpoint_root(output_dir)
    for _, path in list_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".checkpoint-"):
                shutil.rmtree(p, ignore_errors=True)


def read_checkpoint_state(path: str | Path, num_processes: int | None = None, verify: bool = True) -> TrainState:
    """Read and verify a checkpoint's trainer state (files present, sizes and checksums as written)."""
    path = Path(path)
    state_file = path / STATE_FILE
    try:
        payload = json.loads(state_file.read_text())
        state = TrainState(**{k: int(payload[k]) for k in ("step", "epoch", "batch_in_epoch", "num_processes")})
        files = payload["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EMOError(f"checkpoint {path} is incomplete or corrupt ({STATE_FILE} unreadable); resume from an older checkpoint") from None
    if num_processes is not None and state.num_processes != num_processes:
        raise EMOError(f"checkpoint {path} was written by {state.num_processes} processes, this run has {num_processes}; resume with the same number")
    if verify:
        for name, entry in files.items():
            f = path / name
            if not f.is_file() or f.stat().st_size != entry["size"] or ("sha256" in entry and _sha256(f) != entry["sha256"]):
                raise EMOError(f"checkpoint {path} is corrupt: {name} differs from what was written; resume from an older checkpoint")
    return state


def load_checkpoint(accelerator, path: str | Path, verify: bool = True) -> TrainState:
    """Verify a checkpoint, then restore models, optimizer, scheduler, EMA, RNG states; returns the state."""
    path = Path(path)
    state = read_checkpoint_state(path, accelerator.num_processes, verify=verify)
    try:
        accelerator.load_state(str(path))
        set_rng_state(torch.load(path / f"rng_{accelerator.process_index}.pt", weights_only=True))
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise EMOError(f"checkpoint {path} cannot be loaded into this run ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return state
