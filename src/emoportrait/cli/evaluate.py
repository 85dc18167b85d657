"""`emoportrait evaluate`: the paper's metrics and the synthetic-world metrics, with a report.

    emoportrait evaluate --set DIR (--model M | --videos GEN_DIR) [--weights DIR] --out REPORT_DIR

Writes REPORT_DIR/metrics.json, report.md, report.html, plots/, sheets/ (and generated/ with
--model). A metric that cannot be computed is null in metrics.json with its reason; problems
are printed one line each and the rest of the report is still produced.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from emoportrait.errors import EMOError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate", help="score generated videos against a held-out set (FID, FVD, SyncNet, F-SIM, E-FID, ...)",
        description="Score generated videos against a set of ground-truth clips and write a report "
                    "(metrics.json + report.md/html with plots and contact sheets). See docs/evaluation.md.",
    )
    p.add_argument("--set", required=True, metavar="DIR", dest="set_dir",
                   help="ground-truth clips: DIR/<clip>.mp4 (with audio); synthetic-world sets add sidecars + manifest.json")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="M", help="generate the videos with this model (folder or hub id)")
    src.add_argument("--videos", metavar="GEN_DIR", help="already generated videos: GEN_DIR/<clip>.mp4, same names as the set")
    p.add_argument("--weights", metavar="DIR", type=Path,
                   help="metric weights: pt_inception-2015-12-05-6726825d.pth (FID), i3d_torchscript.pt (FVD), "
                        "syncnet_v2.model (SyncNet), optional expression_net.pt (E-FID); absent ones are reported unavailable")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", type=Path, help="report folder (replaced atomically)")
    p.add_argument("--split", default=None,
                   help="manifest split(s) to score, comma-separated, or 'all' (default: heldout_identity, "
                        "the identity-disjoint test split as in the paper)")
    p.add_argument("--frame-stride", type=int, default=1, help="FID/E-FID use every k-th frame (protocol: 1)")
    p.add_argument("--clip-frames", type=int, default=None,
                   help="frames per generated clip for the seam metric (default: the model's; with --videos, what "
                        "`emoportrait generate` recorded in each video, else 12)")
    p.add_argument("--clip-overlap", type=int, default=None, metavar="O",
                   help="frames each later clip shared with the one before, for the seam metric (default: the "
                        "model's; with --videos, what each video records, else 0); with --model, generate with it")
    p.add_argument("--max-frames", type=int, default=None, help="use at most this many frames per video")
    p.add_argument("--steps", type=int, default=40, help="with --model: denoising steps (paper: 40)")
    p.add_argument("--seed", type=int, default=0, help="with --model: noise seed")
    p.add_argument("--device", default="auto", help="with --model: auto, cpu, cuda, ... (metrics run on CPU)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems and the summary")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from emoportrait.evaluation.dataset import load_set
    from emoportrait.evaluation.report import METRIC_KEYS, EvalReport
    from emoportrait.evaluation.runner import EvalOptions, evaluate_set

    out = Path(args.out)
    if not out.parent.is_dir():
        raise EMOError(f"--out {out}: parent folder {out.parent} does not exist")
    for name in ("frame_stride", "clip_frames", "max_frames", "steps"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise EMOError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    if args.clip_overlap is not None:
        from emoportrait.pipelines.overlap import checked_overlap

        checked_overlap(args.clip_overlap, None if args.model else (args.clip_frames or 12), name="--clip-overlap")
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    options = EvalOptions(weights=args.weights, frame_stride=args.frame_stride, max_frames=args.max_frames,
                          clip_frames=args.clip_frames, clip_overlap=args.clip_overlap,
                          splits=tuple(args.split.split(",")) if args.split else None)
    extra, videos = {}, args.videos
    if args.model is not None:
        from emoportrait.evaluation.generation import generate_for_set

        clips = load_set(args.set_dir, options.splits)  # fail before loading the model
        gen_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.generated.", dir=out.parent))
        try:
            f, o = generate_for_set(args.model, clips, gen_dir, args.steps, args.seed, args.device, args.max_frames, log,
                                    clip_overlap=args.clip_overlap)
        except BaseException:
            import shutil

            shutil.rmtree(gen_dir, ignore_errors=True)
            raise
        options.clip_frames, options.clip_overlap = args.clip_frames or f, o
        videos, extra = gen_dir, {"generated": gen_dir}
    elif not Path(videos).is_dir():
        raise EMOError(f"--videos {videos}: folder not found")

    report: EvalReport = evaluate_set(args.set_dir, videos, options, log)
    if extra:
        report.protocol["generated videos"] = "generated/ in this report (--model " + str(args.model) + ")"
    report.write(out, extra_dirs=extra)
    for m in report.messages:
        print(f"emoportrait evaluate: warning: {m}", file=sys.stderr)
    width = max(len(k) for k in METRIC_KEYS)
    for k in METRIC_KEYS:
        v = report.values[k]
        print(f"{k:<{width}}  " + (f"{v:.4f}" if v is not None else f"n/a ({report.reasons.get(k, '')})"))
    print(f"report: {out / 'report.html'}")
    if all(report.values[k] is None for k in METRIC_KEYS):
        raise EMOError(f"no metric could be computed; see {out / 'metrics.json'}")
    return 0
