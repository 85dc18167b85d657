"""Evaluation results and the report people look at: metrics.json, report.md, report.html,
plots (per-video metric distributions, mouth-opening curves) and contact sheets of frames.

metrics.json has every key of `METRIC_KEYS` at the top level, a number or null; a null always
has its reason in `unavailable`. Nothing is ever filled in with a made-up value.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emoportrait.atomic import atomic_dir

# Paper 4.2 metrics, then the synthetic-world ground-truth metrics (DESIGN.md 5).
METRIC_KEYS = ("fid", "fvd", "sync_c", "sync_d", "f_sim", "e_fid",
               "lipsync_r", "identity_sim", "speed_adherence", "jitter", "seam")

METRIC_INFO = {
    "fid": ("FID (frames)", "lower is better; Inception-v3 pool features, generated vs ground-truth frames"),
    "fvd": ("FVD (16-frame clips)", "lower is better; I3D features, generated vs ground-truth clips"),
    "sync_c": ("SyncNet LSE-C", "higher is better; compare with the ground truth's value"),
    "sync_d": ("SyncNet LSE-D", "lower is better; compare with the ground truth's value"),
    "f_sim": ("F-SIM", "closer to the ground truth's F-SIM is better (paper 4.2)"),
    "e_fid": ("E-FID", "lower is better; Frechet distance of expression parameters"),
    "lipsync_r": ("lip-sync r", "higher is better; measured vs ground-truth mouth opening"),
    "identity_sim": ("identity similarity", "higher is better; centred dlib descriptor cosine to the reference"),
    "speed_adherence": ("head-speed error", "lower is better; |generated - ground truth| measured speed, deg/frame"),
    "jitter": ("temporal jitter", "1 = as smooth as the ground truth; > 1 flicker"),
    "seam": ("clip-boundary seam", "1 = invisible; > 1 visible jumps every clip"),
}


@dataclass
class EvalReport:
    """Everything an evaluation produced; `write` turns it into the report folder."""

    values: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(METRIC_KEYS))
    reasons: dict[str, str] = field(default_factory=dict)
    details: dict[str, dict] = field(default_factory=dict)
    per_video: dict[str, dict[str, float | None]] = field(default_factory=dict)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # mouth opening per video
    sheets: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)  # (K,H,W,3) gt, gen
    messages: list[str] = field(default_factory=list)
    protocol: dict = field(default_factory=dict)

    def set(self, key: str, value: float | None, reason: str | None = None, **details) -> None:
        """Record a metric; a None value needs a reason."""
        if value is not None and not math.isfinite(value):
            value, reason = None, reason or "the computation gave a non-finite value"
        self.values[key] = None if value is None else float(value)
        if value is None:
            self.reasons[key] = reason or "not computed"
        else:
            self.reasons.pop(key, None)
        if details:
            self.details.setdefault(key, {}).update(details)

    def unavailable_all(self, reason: str) -> None:
        for k in METRIC_KEYS:
            if self.values.get(k) is None:
                self.set(k, None, reason)

    def note(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)

    def to_json(self) -> dict:
        out = {k: self.values.get(k) for k in METRIC_KEYS}
        out["unavailable"] = {k: self.reasons.get(k, "not computed") for k in METRIC_KEYS if out[k] is None}
        out["details"] = _clean(self.details)
        out["per_video"] = _clean(self.per_video)
        out["messages"] = list(self.messages)
        out["protocol"] = _clean(self.protocol)
        return out

    def write(self, out_dir: str | Path, extra_dirs: dict[str, Path] | None = None) -> Path:
        """Write metrics.json, report.md, report.html, plots/ and sheets/ into `out_dir` atomically.

        `extra_dirs` (name -> folder) are moved inside the report, e.g. the generated videos.
        """
        import shutil

        out_dir = Path(out_dir)
        with atomic_dir(out_dir) as tmp:
            for name, folder in (extra_dirs or {}).items():
                shutil.move(str(folder), str(tmp / name))
            (tmp / "metrics.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")
            figures = _plots(self, tmp)
            sheets = _contact_sheets(self, tmp)
            (tmp / "report.md").write_text(_markdown(self, figures, sheets))
            (tmp / "report.html").write_text(_html(self, figures, sheets))
        return out_dir


def _clean(obj):
    """JSON-safe copy: numpy scalars to floats, NaN/inf to null."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


# ---------------------------------------------------------------- figures


def _plots(rep: EvalReport, out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "plots").mkdir()
    figures = []
    keys = [k for k in METRIC_KEYS if any(v.get(k) is not None for v in rep.per_video.values())]
    if keys:
        cols = min(4, len(keys))
        rows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
        for ax, k in zip(axes.flat, keys):
            vals = np.array([v[k] for v in rep.per_video.values() if v.get(k) is not None], float)
            ax.hist(vals, bins=min(20, max(3, len(vals))), color="#4a7ab5")
            gt = [v.get(f"{k}_gt") for v in rep.per_video.values() if v.get(f"{k}_gt") is not None]
            if gt:
                ax.axvline(float(np.mean(gt)), color="#c0392b", ls="--", label="ground truth mean")
                ax.legend(fontsize=7)
            ax.set_title(METRIC_INFO[k][0], fontsize=9)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.suptitle("per-video metric distributions", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "plots" / "per_video.png", dpi=110)
        plt.close(fig)
        figures.append(("plots/per_video.png", "Per-video metric distributions (dashed: ground-truth videos)"))
    names = list(rep.curves)[:6]
    if names:
        fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.9 * len(names)), squeeze=False)
        for ax, name in zip(axes[:, 0], names):
            c = rep.curves[name]
            for label, color in (("ground truth", "#2c3e50"), ("generated (measured)", "#e67e22"),
                                 ("ground-truth video (measured)", "#27ae60")):
                if c.get(label) is not None:
                    y = np.asarray(c[label], float)
                    ax.plot(np.arange(len(y)) / 25.0, y, color=color, lw=1.2, label=label)
            ax.set_title(name, fontsize=8)
            ax.set_ylabel("mouth opening", fontsize=7)
        axes[0, 0].legend(fontsize=7, loc="upper right")
        axes[-1, 0].set_xlabel("seconds")
        fig.tight_layout()
        fig.savefig(out / "plots" / "mouth_curves.png", dpi=110)
        plt.close(fig)
        figures.append(("plots/mouth_curves.png", "Mouth opening: ground truth of the audio vs measured in the videos"))
    return figures


def _strip(frames: np.ndarray, h: int):
    """Frames side by side at height `h` (PIL image)."""
    from PIL import Image

    ims = [Image.fromarray(f).resize((max(1, round(f.shape[1] * h / f.shape[0])), h)) for f in frames]
    canvas = Image.new("RGB", (sum(i.width for i in ims), h), "white")
    x = 0
    for im in ims:
        canvas.paste(im, (x, 0))
        x += im.width
    return canvas


def _contact_sheets(rep: EvalReport, out: Path) -> list[tuple[str, str]]:
    from PIL import Image

    (out / "sheets").mkdir()
    sheets = []
    for name, (gt, gen) in list(rep.sheets.items())[:8]:
        rows = [r for r in (gt, gen) if r is not None and len(r)]
        if not rows:
            continue
        strips = [_strip(r, 128) for r in rows]
        h = 128
        sheet = Image.new("RGB", (max(s.width for s in strips), h * len(strips)), "white")
        for i, s in enumerate(strips):
            sheet.paste(s, (0, i * h))
        rel = f"sheets/{name}.jpg"
        sheet.save(out / rel, quality=90)
        sheets.append((rel, f"{name}: top ground truth, bottom generated" if len(rows) == 2 else name))
    return sheets


# ---------------------------------------------------------------- text


def _rows(rep: EvalReport) -> list[tuple[str, str, str, str]]:
    rows = []
    for k in METRIC_KEYS:
        label, meaning = METRIC_INFO[k]
        gt = rep.details.get(k, {}).get("ground_truth")
        value = _fmt(rep.values.get(k)) if rep.values.get(k) is not None else f"n/a: {rep.reasons.get(k, '')}"
        rows.append((f"{label} (`{k}`)", value, _fmt(gt) if gt is not None else "", meaning))
    return rows


def _markdown(rep: EvalReport, figures, sheets) -> str:
    lines = ["# emoportrait evaluation report", ""]
    for k, v in rep.protocol.items():
        lines.append(f"- **{k}**: {v}")
    lines += ["", "| metric | value | ground truth | reading |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(rep)]
    for k, d in rep.details.items():
        if d.get("label"):
            lines.append(f"\n*{k}*: {d['label']}")
    if rep.messages:
        lines += ["", "## Problems found", ""] + [f"- {m}" for m in rep.messages]
    if rep.per_video:
        keys = [k for k in METRIC_KEYS if any(v.get(k) is not None for v in rep.per_video.values())]
        lines += ["", "## Per video", "", "| video | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for name, v in rep.per_video.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(v.get(k)) for k in keys) + " |")
    lines += ["", "## Figures", ""] + [f"![{c}]({p})\n\n{c}\n" for p, c in figures + sheets]
    return "\n".join(lines) + "\n"


def _html(rep: EvalReport, figures, sheets) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>emoportrait evaluation</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}.na{color:#a33}img{max-width:100%}</style>",
             "</head><body><h1>emoportrait evaluation report</h1><ul>"]
    parts += [f"<li><b>{e(str(k))}</b>: {e(str(v))}</li>" for k, v in rep.protocol.items()]
    parts.append("</ul><table><tr><th>metric</th><th>value</th><th>ground truth</th><th>reading</th></tr>")
    for a, b, c, d in _rows(rep):
        cls = " class='na'" if b.startswith("n/a") else ""
        parts.append(f"<tr><td>{e(a.replace('`', ''))}</td><td{cls}>{e(b)}</td><td>{e(c)}</td><td>{e(d)}</td></tr>")
    parts.append("</table>")
    if rep.messages:
        parts.append("<h2>Problems found</h2><ul>" + "".join(f"<li>{e(m)}</li>" for m in rep.messages) + "</ul>")
    for p, c in figures + sheets:
        parts.append(f"<figure><img src='{e(p)}' alt='{e(c)}'><figcaption>{e(c)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
