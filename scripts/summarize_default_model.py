"""Turn the default-model recipe's outputs into docs/default_model.md and its pictures.

Reads WORK (default runs/default): the loss logs of the VAE, stages 1-3 and the decoder run, the behaviour checks
(`checks/checks.json`, evaluation/model_checks.py) and the evaluation report (`eval/metrics.json`);
writes docs/default_model.md (every number with the command that produced it, each target next to
it) and docs/images/default_model_{losses,long}.png. The page's hand-written notes blocks
("origin" under the header, "behaviour" under the behaviour table; `kept_notes`) are kept when it is written again.

    .venv/bin/python scripts/summarize_default_model.py [--work runs/default]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from emoportrait.training.logging import read_log

ROOT = Path(__file__).resolve().parents[1]
RUNS = (("vae", "VAE stand-in"), ("stage1", "stage 1 (image)"), ("stage2", "stage 2 (video + audio)"),
        ("stage3", "stage 3 (speed)"), ("decoder", "VAE decoder alone"))


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _se(x) -> str:
    """' +- 0.034 (s.e.)' where a standard error was measured, else nothing."""
    return f" +- {x:.3f} (s.e.)" if x is not None else ""


def kept_notes(path: Path, name: str) -> list[str]:
    """The hand-written block `name` in `path`, between "<!-- notes NAME: ... -->" and "<!-- /notes NAME -->"
    (markers included, then an empty line), so that writing the page again keeps what was noted about the
    model after its recipe ran (e.g. later readings at other seeds); [] where the page has none."""
    begin, end = f"<!-- notes {name}: kept by scripts/summarize_default_model.py -->", f"<!-- /notes {name} -->"
    text = path.read_text() if path.is_file() else ""
    if begin not in text or end not in text.split(begin, 1)[1]:
        return []
    body = text.split(begin, 1)[1].split(end, 1)[0]
    return [begin, *body.strip("\n").splitlines(), end, ""]


def loss_summary(work: Path) -> list[tuple[str, int, float, float, float]]:
    """(stage, steps, mean loss over the first and the last 10 % of steps, wall minutes) per run."""
    out = []
    for run, label in RUNS:
        rows = read_log(work / run / "log.jsonl")
        if not rows:
            continue
        k = max(1, len(rows) // 10)
        first, last = np.mean([r["loss"] for r in rows[:k]]), np.mean([r["loss"] for r in rows[-k:]])
        out.append((label, rows[-1]["step"], float(first), float(last), rows[-1]["seconds"] / 60))
    return out


def plot_losses(work: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(RUNS), figsize=(3.2 * len(RUNS), 3))
    for ax, (run, label) in zip(axes, RUNS):
        rows = read_log(work / run / "log.jsonl")
        if rows:
            steps, loss = np.array([r["step"] for r in rows]), np.array([r["loss"] for r in rows])
            ax.plot(steps, loss, lw=0.5, alpha=0.4)
            w = max(1, len(loss) // 30)
            ax.plot(steps[w - 1:], np.convolve(loss, np.ones(w) / w, "valid"), lw=1.5)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_yscale("log")
    axes[0].set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "default")
    p.add_argument("--model", type=Path, default=None, help="the evaluated model (default: WORK/decoder/model)")
    args = p.parse_args()
    work = args.work
    model = args.model or work / "decoder" / "model"
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    plot_losses(work, images / "default_model_losses.png")
    checks = json.loads((work / "checks" / "checks.json").read_text()) if (work / "checks" / "checks.json").is_file() else {}
    metrics = json.loads((work / "eval" / "metrics.json").read_text()) if (work / "eval" / "metrics.json").is_file() else {}
    if (work / "checks" / "long_sheet.png").is_file():
        shutil.copyfile(work / "checks" / "long_sheet.png", images / "default_model_long.png")
    weights = sorted((ROOT / "src" / "emoportrait" / "assets" / "default_model").rglob("*.safetensors"))
    size = sum(w.stat().st_size for w in weights) / 2**20
    page = ROOT / "docs" / "default_model.md"

    lines = ["# The default model: measured", "",
             "Produced by `make default-model` (scripts/train_default_model.sh) on the 2-core CPU machine, then",
             "`.venv/bin/python scripts/summarize_default_model.py`. Weights: "
             f"{size:.1f} MiB of safetensors in src/emoportrait/assets/default_model.", "",
             *kept_notes(page, "origin"),
             "## Training (loss = mean of the first / last 10 % of steps)", "",
             "Stages 1-3 log their training objective: Min-SNR-5 weighted, and in stages 2-3 with the mouth "
             "region weighted 5x (configs/tiny/*.yaml), so their values are not the plain prediction MSE "
             "(of eps, or of v where the model's schedule says so: docs/networks.md).", "",
             "| run | steps | first | last | wall min |", "|---|---|---|---|---|"]
    for label, steps, first, last, minutes in loss_summary(work):
        lines.append(f"| {label} | {steps} | {first:.4f} | {last:.4f} | {minutes:.0f} |")
    lines += ["", "![losses](images/default_model_losses.png)", ""]

    ls, sp, lg, vc = checks.get("lipsync", {}), checks.get("speed", {}), checks.get("long", {}), checks.get("vae", {})
    own, shuf = ls.get("own", {}), ls.get("shuffled", {})
    q1, q4 = lg.get("first_quarter", {}), lg.get("last_quarter", {})
    index = json.loads((ROOT / "src" / "emoportrait" / "assets" / "default_model" / "model_index.json").read_text())
    guidance = ls.get("guidance") or {"ref": index.get("guidance_scale_ref"), "audio": index.get("guidance_scale_audio")}
    lines += ["## Behaviour on held-out identities and sentences", "",
              f"Generated with the model's guidance scales (reference {guidance['ref']}, audio {guidance['audio']}; "
              "`model_index.json`) and the DDIM steps the commands below name.", "",
              "| what | measured | target |", "|---|---|---|",
              f"| lip-sync r, own audio ({ls.get('clips')} clips) | {_f(own.get('lipsync_r'))}{_se(own.get('lipsync_r_sem'))} | >= 0.5 |",
              f"| lip-sync r, shuffled audio | {_f(shuf.get('lipsync_r'))}{_se(shuf.get('lipsync_r_sem'))} | |",
              f"| own - shuffled | {_f(ls.get('lipsync_gap'))}{_se(ls.get('lipsync_gap_sem'))} | >= 0.3 |",
              f"| lip-sync r of the ground-truth videos (the measuring device's ceiling) | {_f(own.get('lipsync_r_gt_video'))} | |",
              f"| identity similarity, generated / ground truth | {_f(own.get('identity_sim'))} / "
              f"{_f(own.get('identity_sim_gt'))} = {_f(ls.get('identity_ratio'))} | >= 0.8 |"]
    if vc:
        lines += [f"| the same clips' ground truth through the VAE alone (the ceiling of any backbone with this VAE): "
                  f"identity / ground truth, lip-sync r, pixel MSE | {_f(vc.get('identity_sim'))} / "
                  f"{_f(vc.get('identity_sim_gt'))} = {_f(vc.get('identity_ratio'))}, {_f(vc.get('lipsync_r'))}, "
                  f"{_f(vc.get('mse'), 4)} | |"]
    measured = sp.get("measured", {})
    seeds = f" (mean of generation seeds {', '.join(map(str, sp['seeds']))}; in order only if every seed's is)" \
        if sp.get("seeds") else ""
    lines.append("| head speed measured at requested " + ", ".join(f"{k}" for k in measured) + f" deg/frame{seeds} | "
                 + ", ".join(_f(v) for v in measured.values()) + f" (monotonic: {sp.get('monotonic')}) | increasing |")
    for seed, sweep in sp.get("per_seed", {}).items():
        lines.append(f"| ... seed {seed} | " + ", ".join(_f(v) for v in sweep["measured"].values())
                     + f" (monotonic: {sweep['monotonic']}) | |")
    if sp.get("head_motion"):  # the same tracks, pose smoothed over 6 frames (speed checks written since 2026-12-06)
        lines.append("| ... head motion (pose smoothed over 6 frames) | " + ", ".join(_f(v) for v in sp["head_motion"].values())
                     + f" (monotonic: {sp.get('head_motion_monotonic')}) | increasing |")
    if sp.get("pose_motion"):  # the head-pose regressor's reading (speed checks written since 2026-12-06)
        lines.append("| ... head motion read by the head-pose regressor (3 frames) | "
                     + ", ".join(_f(v) for v in sp["pose_motion"].values())
                     + f" (monotonic: {sp.get('pose_motion_monotonic')}) | increasing |")
    for name, what in (("measured", "labels' filter"), ("head_motion", "6 frames"), ("pose_motion", "regressor")):
        steps = sp.get("rises", {}).get(name, {})  # paired clip by clip (speed checks written since 2026-12-07)
        if any(r["mean"] is not None for r in steps.values()):
            lines.append(f"| ... each clip's own rise to the next level ({what}; mean +- s.e. over clips and seeds) | "
                         + "; ".join(f"{k}: {r['mean']:+.3f} +- {_f(r['se'])} (n {r['n']})" for k, r in steps.items()
                                     if r["mean"] is not None) + " | > 0 |")
    n_long = len(lg.get("videos", [])) or 1
    each = "; per video " + ", ".join(f"{100 * v['jitter_growth']:+.0f} %" for v in lg["videos"]
                                     if v.get("jitter_growth") is not None) if n_long > 1 else ""
    if lg.get("jitter_growth_sem") is not None:  # the mean growth with its standard error over the videos
        each = f": {100 * lg['jitter_growth']:+.1f} % +- {100 * lg['jitter_growth_sem']:.1f} (s.e.){each}"
    seam_max = f" (largest video {_f(lg['seam_max'])})" if n_long > 1 and lg.get("seam_max") is not None else ""
    lines += [f"| {lg.get('seconds', 0):.0f} s video ({'mean of ' + str(n_long) + ' videos' if n_long > 1 else 'one video'}): "
              f"jitter (HF energy) first / last quarter | "
              f"{_f(q1.get('jitter_hf'), 4)} / {_f(q4.get('jitter_hf'), 4)}{each} | no growth |",
              f"| {lg.get('seconds', 0):.0f} s video: identity similarity first / last quarter | "
              f"{_f(q1.get('identity_sim'))} / {_f(q4.get('identity_sim'))} | no drift |",
              f"| {lg.get('seconds', 0):.0f} s video: seam ratio (boundary / within-clip change) | {_f(lg.get('seam'))}{seam_max} | <= 1.5 |",
              ""]
    lines += kept_notes(page, "behaviour")
    lines += ["Commands:", ""]
    for name in ("lipsync", "speed", "long", "vae"):
        if "command" in checks.get(name, {}):
            lines.append(f"- {name}: `{checks[name]['command']}`")
    pv = metrics.get("per_video", {})
    if pv:
        faces, frames = sum(v.get("face_frames", 0) for v in pv.values()), sum(v.get("frames", 0) for v in pv.values())
        lines.insert(lines.index("| what | measured | target |") + 2,
                     f"| generated frames in which MediaPipe finds a face (every face metric needs one) | {faces} of {frames} | |")
    if metrics:
        lines += ["", "## Full evaluation report (own-audio videos)", "",
                  f"`emoportrait evaluate --set {work}/world --split heldout_identity,heldout_sentence "
                  f"--videos {work}/checks/videos/lipsync_own --max-frames 75 --out {work}/eval`", "",
                  "| metric | value |", "|---|---|"]
        for k in ("fid", "fvd", "sync_c", "sync_d", "f_sim", "e_fid", "lipsync_r", "identity_sim", "speed_adherence",
                  "jitter", "seam"):
            v = metrics.get(k)
            lines.append(f"| {k} | {_f(v) if v is not None else 'null: ' + metrics.get('unavailable', {}).get(k, '')} |")
    probe_path = work / "checks" / "probe.json"
    if probe_path.is_file():
        probe = json.loads(probe_path.read_text())
        loss = probe["loss"]
        lines += ["", "## Does it use its conditions? (condition probe)", "",
                  f"The stage-{probe['stage']} prediction MSE (plain) on {probe['samples']} training samples x {probe['repeats']} "
                  "noise draws, the same draws for each variant (`python -m emoportrait.evaluation.condition_probe "
                  f"--model {model} --data {work}/shards --stage {probe['stage']} --samples "
                  f"{probe['samples']}`):", "", "| condition | own | shuffled | zeros | gap (shuffled - own) |", "|---|---|---|---|---|"]
        for c in ("reference", "audio"):
            if f"{c}_shuffled" in loss:
                lines.append(f"| {c} | {loss['right']:.5f} | {loss[c + '_shuffled']:.5f} | {loss[c + '_zero']:.5f} | "
                             f"{probe['gap'][c]:+.5f} |")
    if (images / "default_model_long.png").is_file():
        lines += ["", f"Frames of the {lg.get('seconds', 0):.0f} s video:", "", "![long video](images/default_model_long.png)"]
    page.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
