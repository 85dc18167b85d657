"""Training logs: per-step metrics to JSONL + CSV, optional TensorBoard, a loss-curve PNG at checkpoints.

Only the main process writes. The files are append-only while training; when a run resumes from
checkpoint-<k>, rows after step k (written by the killed run after its last checkpoint) are dropped,
so the log always reads as one uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from emoportrait.atomic import atomic_path, atomic_write_text
from emoportrait.errors import EMOError

CSV_FIELDS = ("step", "loss", "lr", "grad_norm", "epoch", "samples", "seconds")


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a log.jsonl (a torn last line from a kill is skipped)."""
    rows = []
    path = Path(path)
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


class RunLogger:
    """Writes OUT/log.jsonl, OUT/log.csv, OUT/loss.png and (optionally) OUT/tensorboard/ for one run."""

    def __init__(self, output_dir: str | Path, enabled: bool = True, tensorboard: bool = False, resume_step: int | None = None):
        self.dir = Path(output_dir)
        self.enabled = enabled
        self.jsonl = self.dir / "log.jsonl"
        self.csv = self.dir / "log.csv"
        self.tb = None
        if not enabled:
            return
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise EMOError("log.tensorboard=true needs the tensorboard package: pip install 'emoportrait[tensorboard]'") from None
            self.tb = SummaryWriter(str(self.dir / "tensorboard"), purge_step=resume_step)
        self._truncate(resume_step or 0)

    def _truncate(self, step: int) -> None:
        """Keep rows up to `step` (0 = a fresh run: start empty files)."""
        rows = [r for r in read_log(self.jsonl) if r.get("step", 0) <= step] if step else []
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in rows))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.csv, buf.getvalue())

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Append one step's metrics (loss, lr, grad_norm, ...)."""
        if not self.enabled:
            return
        row = {"step": step, **{k: (float(v) if isinstance(v, float) else v) for k, v in metrics.items()}}
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, step)

    def plot(self) -> Path | None:
        """Draw the loss curve (raw and smoothed, log scale) to OUT/loss.png; returns its path."""
        if not self.enabled:
            return None
        rows = [r for r in read_log(self.jsonl) if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]
        if not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [r["step"] for r in rows]
        loss = [r["loss"] for r in rows]
        smooth, s = [], loss[0]
        alpha = 2.0 / (1.0 + max(1, len(loss) // 20))  # window ~ 1/20 of the run
        for v in loss:
            s = (1 - alpha) * s + alpha * v
            smooth.append(s)
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax.plot(steps, loss, lw=0.6, alpha=0.4, label="loss")
        ax.plot(steps, smooth, lw=1.5, label="smoothed")
        if min(loss) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("eps MSE")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = self.dir / "loss.png"
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        return out

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
