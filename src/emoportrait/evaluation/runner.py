"""Run every available metric over an evaluation set and collect an `EvalReport`.

Each metric is computed only from what it needs; a missing weights file, a video without
audio or without a face removes that metric (or that video from it) with a one-line reason,
and every other metric is still computed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emoportrait.errors import EMOError
from emoportrait.evaluation.dataset import EvalClip, load_set
from emoportrait.evaluation.report import METRIC_KEYS, EvalReport

SHEET_FRAMES = 6
DEFAULT_CLIP_FRAMES = 12  # the seam metric's clip length where neither the options nor the video name one (the paper's F)


@dataclass
class EvalOptions:
    """Settings of one evaluation (defaults = the documented protocol, docs/evaluation.md)."""

    weights: Path | None = None  # folder with pt_inception-...pth, i3d_torchscript.pt, syncnet_v2.model, expression_net.pt
    frame_stride: int = 1  # FID / E-FID use every k-th frame
    sim_every: int = 5  # F-SIM / identity similarity use every k-th frame
    # The clip layout for the seam metric: frames per generated clip (the model's F) and frames each later clip
    # shares with the one before (the model's O). None for both: the layout each video records (`emoportrait
    # generate` writes it into the mp4: data/media.py, clip_layout_tags), else 12 / 0; one set: that one (the
    # other 12 / 0) for every video.
    clip_frames: int | None = None
    clip_overlap: int | None = None
    max_frames: int | None = None  # cap per video (None = whole video)
    face_backend: str = "mediapipe"
    device: str = "cpu"
    splits: tuple[str, ...] | None = None  # manifest splits (None: heldout_identity, see dataset.load_set)


def _tool(report: EvalReport, keys: tuple[str, ...], loader: Callable, needs_weights: bool, weights: Path | None):
    """Load a metric's network; on failure mark its metrics unavailable with the one-line reason."""
    if needs_weights and weights is None:
        for k in keys:
            report.set(k, None, "no --weights folder given")
        return None
    try:
        return loader()
    except EMOError as e:
        for k in keys:
            report.set(k, None, str(e))
        report.note(str(e))
        return None


def finite_mean(xs) -> float | None:
    """The mean of the values that are neither None nor NaN/inf; None when there are none."""
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.mean(xs)) if xs else None


def _resize_to(frames: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    if frames.shape[1:3] == shape:
        return frames
    return np.stack([cv2.resize(f, (shape[1], shape[0]), interpolation=cv2.INTER_AREA) for f in frames])


def _first_box(track) -> np.ndarray | None:
    found = np.flatnonzero(track.found)
    return track.boxes[found[0]] if len(found) else None


def evaluate_set(set_dir: str | Path, videos_dir: str | Path, options: EvalOptions,
                 log: Callable[[str], None] = lambda m: None) -> EvalReport:
    """Compare generated videos (`videos_dir/<clip>.mp4`) with the set's ground-truth clips."""
    from emoportrait.data.faces import FaceAnalyzer
    from emoportrait.data.media import read_audio, read_video
    from emoportrait.evaluation import efid, fid, fsim, fvd, mouth_regressor, syncnet, synthetic
    from emoportrait.evaluation.frechet import frechet_distance_features

    report = EvalReport()
    report.protocol = {"set": str(set_dir), "generated videos": str(videos_dir),
                       "weights": str(options.weights) if options.weights else "none",
                       "reference image": "frame 0 of each ground-truth clip",
                       "frame stride (FID, E-FID)": options.frame_stride}
    try:
        clips = load_set(set_dir, options.splits)
    except EMOError as e:
        report.note(str(e))
        report.unavailable_all(str(e))
        return report
    videos_dir = Path(videos_dir)
    w = options.weights
    if w is not None and not Path(w).is_dir() and not Path(w).is_file():
        report.note(f"--weights {w}: not found; metrics that need weights are unavailable")
        w = None
    fid_net = _tool(report, ("fid",), lambda: fid.load_fid_inception(w, options.device), True, w)
    i3d = _tool(report, ("fvd",), lambda: fvd.load_i3d(w, options.device), True, w)
    sync_net = _tool(report, ("sync_c", "sync_d"), lambda: syncnet.load_syncnet(w, options.device), True, w)
    expr_net = None
    if w is not None and (Path(w) / efid.EXPRESSION_NET_NAME).is_file():
        expr_net = _tool(report, ("e_fid",), lambda: efid.load_expression_net(w), True, w)
    mesh = _tool(report, ("e_fid",), efid.FaceMesh3D, False, None) if expr_net is None else None
    embedder = _tool(report, ("f_sim", "identity_sim"), fsim.FaceEmbedder, False, None)
    analyzer = FaceAnalyzer(options.face_backend)
    has_truth = any(c.truth is not None for c in clips)
    regressor = _tool(report, ("lipsync_r",), mouth_regressor.load_mouth_regressor, False, None) if has_truth else None
    center = synthetic.load_identity_center() if has_truth else None

    acc = {k: [] for k in ("fid_gen", "fid_gt", "fvd_gen", "fvd_gt", "efid_gen", "efid_gt", "clip_layout")}
    for i, clip in enumerate(clips):
        log(f"[{i + 1}/{len(clips)}] {clip.name}")
        for n in clip.notes:
            report.note(n)
        try:
            _evaluate_clip(clip, videos_dir, options, report, acc, locals_=dict(
                read_video=read_video, read_audio=read_audio, analyzer=analyzer, fid_net=fid_net, i3d=i3d,
                sync_net=sync_net, expr_net=expr_net, mesh=mesh, embedder=embedder, regressor=regressor,
                center=center))
        except EMOError as e:
            report.note(str(e))
    analyzer.close()
    layouts = Counter(acc["clip_layout"])
    report.protocol["clip layout (seam): frames, overlap"] = "; ".join(
        f"{f}, {ov} ({n} video{'s' * (n != 1)}, {source})" for (f, ov, source), n in sorted(layouts.items())) or "none"

    # Set-level (distribution) metrics.
    for key, gen, gt, what in (("fid", "fid_gen", "fid_gt", "frames"), ("fvd", "fvd_gen", "fvd_gt", "16-frame clips"),
                               ("e_fid", "efid_gen", "efid_gt", "frames with a face")):
        if report.reasons.get(key) and report.values.get(key) is None and key in report.reasons:
            continue
        a, b = acc[gen], acc[gt]
        na, nb = sum(len(x) for x in a), sum(len(x) for x in b)
        if na < 2 or nb < 2:
            report.set(key, None, f"fewer than 2 {what} on each side ({na} generated, {nb} ground truth)")
            continue
        report.set(key, frechet_distance_features(np.concatenate(a) if a[0].ndim == 2 else np.stack(a),
                                                  np.concatenate(b) if b[0].ndim == 2 else np.stack(b)),
                   samples_generated=sum(len(x) for x in a), samples_ground_truth=sum(len(x) for x in b))
    if report.values.get("e_fid") is not None:
        report.details["e_fid"]["label"] = ("paper protocol: expression network from --weights" if expr_net is not None else
                                            "OFFLINE landmark descriptor (MediaPipe mesh, pose removed), not the paper's "
                                            "Deep3DFaceRecon parameters: not comparable with the paper's E-FID")

    # Per-video means.
    pv = report.per_video.values()
    no_video = "no generated video could be scored"
    faces = sum(v.get("face_frames", 0) for v in pv)
    frames = sum(v.get("frames", 0) for v in pv)
    no_face = f"faces found in only {faces} of {frames} generated frames" if faces < 10 * max(1, len(pv)) else None
    for key, reason in (("sync_c", no_face or no_video), ("sync_d", no_face or no_video),
                        ("f_sim", no_face or "no face in the sampled generated frames"),
                        ("lipsync_r", no_face or "fewer than 10 frames with a face, or a constant mouth, in every video"),
                        ("identity_sim", no_face or "needs the synthetic world's identity centre "
                                         "(assets/synth_identity_center.safetensors; retrain: python -m "
                                         "emoportrait.evaluation.mouth_regressor)"),
                        ("speed_adherence", no_face or "no head pose could be measured"), ("jitter", no_video),
                        ("seam", "videos shorter than one clip + 1 frame")):
        if key in report.reasons and report.values.get(key) is None and not any(v.get(key) is not None for v in pv):
            continue  # tool unavailable: keep its reason
        val = finite_mean(v.get(key) for v in pv)
        gt = finite_mean(v.get(f"{key}_gt") for v in pv)
        report.set(key, val, reason, **({"ground_truth": gt} if gt is not None else {}),
                   videos=sum(v.get(key) is not None for v in pv))
    if report.values.get("f_sim") is not None and report.details["f_sim"].get("ground_truth") is not None:
        report.details["f_sim"]["gap_to_ground_truth"] = abs(report.values["f_sim"] - report.details["f_sim"]["ground_truth"])
    if not has_truth:
        for k in ("lipsync_r", "identity_sim"):
            report.set(k, None, "needs a synthetic-world set with per-frame ground-truth sidecars")
    missing = [k for k in METRIC_KEYS if k not in report.values]
    assert not missing
    return report


def _evaluate_clip(clip: EvalClip, videos_dir: Path, o: EvalOptions, report: EvalReport, acc: dict, locals_: dict):
    """All per-video measurements of one clip (see `evaluate_set`)."""
    from emoportrait.evaluation import fid, fsim, fvd, mouth_regressor, syncnet, synthetic

    t = locals_
    gen_path = videos_dir / f"{clip.name}.mp4"
    if not gen_path.is_file():
        raise EMOError(f"{clip.name}: no generated video {gen_path}; the clip is skipped")
    gt = t["read_video"](clip.video, max_frames=o.max_frames)
    gen = t["read_video"](gen_path, max_frames=o.max_frames)
    n = min(len(gt), len(gen))
    if abs(len(gt) - len(gen)) > 2:
        report.note(f"{clip.name}: generated video has {len(gen)} frames, ground truth {len(gt)}; using the first {n}")
    gt, gen = gt[:n], gen[:n]
    row: dict[str, float | None] = {}
    report.per_video[clip.name] = row
    try:
        audio = t["read_audio"](gen_path)
    except EMOError:
        try:
            audio = t["read_audio"](clip.video)
            report.note(f"{gen_path.name}: has no audio stream; lip sync is scored against the ground-truth clip's audio")
        except EMOError:
            audio = None
            report.note(f"{clip.name}: neither the generated nor the ground-truth video has audio; SyncNet skips it")

    gt_track = t["analyzer"].analyze_frames(gt)
    gen_track = t["analyzer"].analyze_frames(gen)
    ref_box = _first_box(gt_track)
    reference = gt[int(np.flatnonzero(gt_track.found)[0])] if ref_box is not None else gt[0]
    gen_has_face = bool(gen_track.found.any())
    row["frames"], row["face_frames"] = n, int(gen_track.found.sum())
    if not gen_has_face:
        report.note(f"{gen_path.name}: no face found in any frame; face metrics skip it")
    elif gen_track.found.sum() < n / 2:
        report.note(f"{gen_path.name}: a face was found in only {int(gen_track.found.sum())} of {n} frames")
    if ref_box is None:
        report.note(f"{clip.name}: no face found in the ground-truth video; face metrics skip it")
    picks = np.linspace(0, n - 1, min(SHEET_FRAMES, n)).round().astype(int)
    report.sheets[clip.name] = (gt[picks], gen[picks])

    # FID / FVD features (ground truth resized to the generated frame size).
    gt_same = _resize_to(gt, gen.shape[1:3])
    if t["fid_net"] is not None:
        acc["fid_gen"].append(fid.inception_features(t["fid_net"], gen[::o.frame_stride]))
        acc["fid_gt"].append(fid.inception_features(t["fid_net"], gt_same[::o.frame_stride]))
    if t["i3d"] is not None:
        cg, ct = fvd.video_clips(gen), fvd.video_clips(gt_same)
        if cg:
            acc["fvd_gen"].append(fvd.i3d_features(t["i3d"], cg))
            acc["fvd_gt"].append(fvd.i3d_features(t["i3d"], ct))

    # SyncNet on both, the ground truth as the reading reference.
    if t["sync_net"] is not None and audio is not None:
        for suffix, frames, track in (("", gen, gen_track), ("_gt", gt, gt_track)):
            if track.found.sum() < 6:
                continue
            boxes = _fill_boxes(track.boxes)
            s = syncnet.sync_scores(t["sync_net"], syncnet.crop_faces(frames, boxes), audio)
            row[f"sync_c{suffix}"], row[f"sync_d{suffix}"] = s.confidence, s.distance

    # F-SIM (generated and ground truth vs the reference) and identity similarity, one
    # descriptor per sampled frame shared by both.
    if t["embedder"] is not None and ref_box is not None:
        ref_desc = t["embedder"].embed(reference, ref_box)
        synth_id = clip.truth is not None and t["center"] is not None
        for suffix, frames, track in (("", gen, gen_track), ("_gt", gt, gt_track)):
            if not track.found.any():
                continue
            descs = fsim.descriptors(t["embedder"], frames, track.boxes, o.sim_every)
            row[f"f_sim{suffix}"] = fsim.mean_similarity(descs, ref_desc)
            if synth_id:
                row[f"identity_sim{suffix}"] = fsim.mean_similarity(descs, ref_desc, t["center"])

    # E-FID descriptors.
    if ref_box is not None and (t["mesh"] is not None or t["expr_net"] is not None):
        for key, frames, track in (("efid_gen", gen, gen_track), ("efid_gt", gt, gt_track)):
            d = _expression(t, frames[::o.frame_stride], track.boxes[::o.frame_stride], reference, ref_box)
            if d is not None:
                acc[key].append(d)

    # Synthetic-world ground-truth metrics.
    if clip.truth is not None:
        truth = clip.truth.mouth_open[:n]
        if t["regressor"] is not None:
            m_gen = mouth_regressor.predict_mouth(t["regressor"], gen, gen_track.boxes)
            m_gt = mouth_regressor.predict_mouth(t["regressor"], gt, gt_track.boxes)
            row["lipsync_r"], row["lipsync_r_gt"] = synthetic.lipsync_r(m_gen, truth), synthetic.lipsync_r(m_gt, truth)
            row["lipsync_r_raw"] = synthetic.lipsync_r(m_gen, truth, raw=True)
            report.curves[clip.name] = {"ground truth": _unit(truth), "generated (measured)": _unit(m_gen),
                                        "ground-truth video (measured)": _unit(m_gt)}
    if gen_track.found.sum() >= 2 and gt_track.found.sum() >= 2:
        # The ground-truth clip moves at the requested speed; measuring both videos with the same
        # face tool cancels the tool's bias (its reading of the ground truth is the target).
        measured_gt = float(np.mean(gt_track.speed[gt_track.found]))
        row["speed_adherence"] = synthetic.speed_error(gen_track.speed[gen_track.found], measured_gt)
        row["speed_measured"], row["speed_measured_gt"] = float(np.mean(gen_track.speed[gen_track.found])), measured_gt
        if clip.truth is not None and clip.truth.speed is not None:
            row["speed_requested"] = clip.truth.speed
    hf_gen, hf_gt = synthetic.temporal_hf_energy(gen), synthetic.temporal_hf_energy(gt)
    if hf_gen is not None and hf_gt:
        row["jitter"] = hf_gen / hf_gt
    f, ov, source = clip_layout(gen_path, o)
    acc["clip_layout"].append((f, ov, source))  # for the protocol
    row["seam"] = synthetic.seam_ratio(gen, f, ov)
    row["seam_gt"] = synthetic.seam_ratio(gt, f, ov)


def clip_layout(path: Path, o: EvalOptions) -> tuple[int, int, str]:
    """(F, O, where they came from) for the seams of the generated video `path` (see `EvalOptions`)."""
    from emoportrait.data.media import read_clip_layout
    from emoportrait.pipelines.overlap import checked_overlap

    if o.clip_frames is not None or o.clip_overlap is not None:
        f, ov, source = o.clip_frames or DEFAULT_CLIP_FRAMES, o.clip_overlap or 0, "given"
    else:
        recorded = read_clip_layout(path)
        f, ov, source = (*recorded, "recorded in the video") if recorded else (DEFAULT_CLIP_FRAMES, 0, "default")
    if f < 1:
        raise EMOError(f"{path.name}: clip frames must be at least 1, got {f}")
    return f, checked_overlap(ov, f, name=f"{path.name}: clip overlap"), source


def _unit(x: np.ndarray) -> list[float]:
    """z-score a curve for plotting (NaN kept), so measured and true openings share an axis."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    if ok.sum() < 2 or np.std(x[ok]) < 1e-12:
        return x.tolist()
    return ((x - np.nanmean(x)) / np.nanstd(x)).tolist()


def _fill_boxes(boxes: np.ndarray) -> np.ndarray:
    """Fill frames without a box by the nearest detected box (SyncNet needs a crop per frame)."""
    boxes = boxes.copy()
    ok = np.flatnonzero(np.isfinite(boxes).all(1))
    for t in np.flatnonzero(~np.isfinite(boxes).all(1)):
        boxes[t] = boxes[ok[np.argmin(np.abs(ok - t))]]
    return boxes


def _expression(t: dict, frames: np.ndarray, boxes: np.ndarray, reference: np.ndarray, ref_box: np.ndarray):
    """(K, D) expression descriptors of the frames with a face, or None."""
    from emoportrait.evaluation import efid
    from emoportrait.evaluation.mouth_regressor import face_crop

    if t["expr_net"] is not None:
        crops = [face_crop(f, b, 224) for f, b in zip(frames, boxes) if np.isfinite(b).all()]
        return efid.model_expression(t["expr_net"], np.stack(crops)) if crops else None
    ref_mesh = t["mesh"](reference)
    if ref_mesh is None:
        return None
    out = [efid.landmark_expression(m, ref_mesh) for m in (t["mesh"](f) for f in frames) if m is not None]
    return np.stack(out) if out else None
