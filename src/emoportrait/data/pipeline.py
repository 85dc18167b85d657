"""`emoportrait preprocess` over a corpus: shard plan, workers, resume, manifest.

Output folder layout::

    OUT/plan.json              settings + which videos go to which shard (fixed for the folder)
    OUT/shard-000000.tar ...   webdataset shards (`data/shards.py` layout), whole videos each
    OUT/parts/shard-000000.json  per-shard results (clips, skipped items); marks the shard done
    OUT/manifest.json          merged parts: every clip, every skip with its reason, totals
    OUT/.work/                 per-video results of unfinished shards (removed when merged)

Shard plan (deterministic): videos are ordered by the SHA-1 of their relative name and cut
into groups of `videos_per_shard`; shard j holds group j. The plan depends only on the video
list and the settings, so a rerun, or `--shard I/N` (shards j with j % N == I) on N machines,
produces exactly the shards of one unsharded run. Hash order also mixes identities across
shards, which is what webdataset's shard shuffling wants.

Resume: a shard is done when its part file exists; a video is done when its `.work` result
exists. Every file is written atomically, so an interrupted run leaves only finished files and
a rerun continues where it stopped, producing byte-identical shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from emoportrait.atomic import atomic_write_text
from emoportrait.config import config_to_dict
from emoportrait.data.preprocess import REASONS, PreprocessConfig, VideoEntry, list_videos, process_video
from emoportrait.data.shards import TarSampleWriter, iter_tar_samples
from emoportrait.errors import EMOError

FORMAT = "emoportrait-clips"
VERSION = 1


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def plan_shards(videos: list[VideoEntry], videos_per_shard: int) -> list[list[VideoEntry]]:
    """Videos ordered by SHA-1 of their relative name, in groups of `videos_per_shard`."""
    ordered = sorted(videos, key=lambda v: (v.digest, v.rel))
    return [ordered[i : i + videos_per_shard] for i in range(0, len(ordered), videos_per_shard)]


def parse_shard_spec(spec: str | None) -> tuple[int, int]:
    """"I/N" -> (I, N); None -> (0, 1)."""
    if spec is None:
        return 0, 1
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise EMOError(f"--shard {spec!r} must look like I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise EMOError(f"--shard {spec!r}: need 0 <= I < N")
    return i, n


@dataclass
class PreprocessSummary:
    """What one run did (the CLI prints `line()`)."""

    clips: int = 0  # kept, in the whole output folder
    clip_seconds: float = 0.0
    videos: int = 0
    video_seconds: float = 0.0  # decoded, in the whole output folder
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    processed_videos: int = 0  # by this run
    processed_seconds: float = 0.0  # video seconds decoded by this run
    processed_clip_seconds: float = 0.0
    wall_seconds: float = 0.0
    shards_done: int = 0
    shards_planned: int = 0

    def line(self) -> str:
        skipped = ", ".join(f"{r} {n}" for r, n in sorted(self.skipped.items())) or "none"
        rate = self.processed_clip_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0
        return (
            f"kept {self.clips} clips ({self.clip_seconds / 3600:.3f} h) from {self.videos} videos "
            f"({self.video_seconds / 3600:.3f} h); skipped: {skipped}; shards {self.shards_done}/{self.shards_planned}; "
            f"this run: {self.processed_videos} videos, {self.processed_seconds / 3600:.3f} h in "
            f"{self.wall_seconds:.1f} s ({rate:.2f} clip-s/s)"
        )


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------

_WORKER: dict = {}


def make_analyzer(cfg: PreprocessConfig):
    """The `FaceAnalyzer` preprocessing uses (landmark tracking within each video)."""
    from emoportrait.data.faces import FaceAnalyzer

    return FaceAnalyzer(cfg.backend, cfg.min_confidence, cfg.analysis_max_side, cfg.speed_sigma, cfg.pose, video=True)


def _exit_worker(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)  # unwinds atomic writes (temporary files removed), no traceback


def _worker_init(cfg_dict: dict) -> None:
    # Ctrl-C reaches the whole process group: the parent decides, then terminates the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_worker)
    cfg = PreprocessConfig(**cfg_dict)
    _WORKER["cfg"] = cfg
    _WORKER["analyzer"] = make_analyzer(cfg)


def _work_paths(work: Path, entry: VideoEntry) -> tuple[Path, Path]:
    return work / f"{entry.video_id}.tar", work / f"{entry.video_id}.json"


def _run_video(entry: VideoEntry, work: str, plan_hash: str, cfg: PreprocessConfig | None = None,
               analyzer=None) -> dict:
    """Process one video and store its result in the work folder (in a worker or in-process)."""
    cfg = cfg or _WORKER["cfg"]
    analyzer = analyzer or _WORKER["analyzer"]
    tar, res = _work_paths(Path(work), entry)
    try:
        result = process_video(entry, cfg, analyzer, tar)
    except EMOError as e:
        result = {"video": entry.rel, "video_id": entry.video_id, "seconds": 0.0, "clips": [],
                  "skipped": [{"video": entry.rel, "reason": "unreadable", "detail": str(e).replace(entry.path, entry.rel)}]}
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # never fatal: one bad file must not stop a corpus run
        result = {"video": entry.rel, "video_id": entry.video_id, "seconds": 0.0, "clips": [],
                  "skipped": [{"video": entry.rel, "reason": "error", "detail": f"{e.__class__.__name__}: {e}"}]}
        tar.unlink(missing_ok=True)
    result["plan"] = plan_hash
    atomic_write_text(res, json.dumps(result, sort_keys=True))
    return result


def _pool_task(task: tuple) -> tuple:
    j, v, work, plan_hash = task
    return j, v, _run_video(v, work, plan_hash)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _load_or_write_plan(out: Path, videos: list[VideoEntry], cfg: PreprocessConfig, overwrite: bool):
    groups = plan_shards(videos, cfg.videos_per_shard)
    plan = {
        "format": FORMAT, "version": VERSION, "config": config_to_dict(cfg),
        "shards": {shard_name(j): [v.rel for v in g] for j, g in enumerate(groups)},
    }
    text = json.dumps(plan, sort_keys=True, indent=1)
    plan_hash = hashlib.sha1(text.encode()).hexdigest()[:16]
    path = out / "plan.json"
    if path.is_file() and not overwrite:
        old = path.read_text()
        if old != text:
            raise EMOError(
                f"{out} was made from other videos or settings (plan.json differs); use a new --out or pass --overwrite"
            )
    if overwrite:
        for p in list(out.glob("shard-*.tar")) + list((out / "parts").glob("*.json")) + list((out / ".work").glob("*")):
            p.unlink()
        from emoportrait.data.audio_cache import CACHE_DIR as AUDIO_CACHE
        from emoportrait.data.latent_cache import CACHE_DIR as LATENT_CACHE

        for cache in (AUDIO_CACHE, LATENT_CACHE):  # they belong to the shards being replaced
            shutil.rmtree(out / cache, ignore_errors=True)
    atomic_write_text(path, text)
    return groups, plan_hash


def _assemble_shard(out: Path, work: Path, index: int, group: list[VideoEntry], plan_hash: str) -> None:
    """Concatenate the finished videos of one shard into its tar and write its part file."""
    name = shard_name(index)
    results = [json.loads(_work_paths(work, v)[1].read_text()) for v in group]
    clips = [c | {"shard": f"{name}.tar"} for r in results for c in r["clips"]]
    if clips:
        with TarSampleWriter(out / f"{name}.tar") as writer:
            for v in group:
                tar = _work_paths(work, v)[0]
                if tar.is_file():
                    for key, files in iter_tar_samples(tar):
                        writer.write(key, files)
    part = {
        "shard": name, "tar": f"{name}.tar" if clips else None, "plan": plan_hash,
        "videos": [{"video": r["video"], "seconds": r["seconds"]} for r in results],
        "clips": clips, "skipped": [s for r in results for s in r["skipped"]],
    }
    atomic_write_text(out / "parts" / f"{name}.json", json.dumps(part, sort_keys=True, indent=1))
    for v in group:
        for p in _work_paths(work, v):
            p.unlink(missing_ok=True)


def write_manifest(out: str | os.PathLike) -> PreprocessSummary:
    """Merge the finished part files of an output folder into `manifest.json`; return totals."""
    out = Path(out)
    if not (out / "plan.json").is_file():
        raise EMOError(f"{out} is not a preprocess output folder (no plan.json)")
    plan = json.loads((out / "plan.json").read_text())
    plan_hash = hashlib.sha1(json.dumps(plan, sort_keys=True, indent=1).encode()).hexdigest()[:16]
    parts = []
    for name in sorted(plan["shards"]):
        p = out / "parts" / f"{name}.json"
        if p.is_file():
            part = json.loads(p.read_text())
            if part.get("plan") == plan_hash:
                parts.append(part)
    clips = [c for p in parts for c in p["clips"]]
    skipped = [s for p in parts for s in p["skipped"]]
    summary = PreprocessSummary(
        clips=len(clips), clip_seconds=sum(c["seconds"] for c in clips),
        videos=sum(len(p["videos"]) for p in parts), video_seconds=sum(v["seconds"] for p in parts for v in p["videos"]),
        skipped=Counter(s["reason"] for s in skipped), shards_done=len(parts), shards_planned=len(plan["shards"]),
    )
    speeds = sorted(c["speed_mean"] for c in clips)
    manifest = {
        "format": FORMAT, "version": VERSION, "plan": plan_hash, "config": plan["config"],
        "complete": len(parts) == len(plan["shards"]),
        "shards": [{"name": p["tar"], "num_clips": len(p["clips"]), "num_frames": sum(c["num_frames"] for c in p["clips"])}
                   for p in parts if p["tar"]],
        "clips": clips, "skipped": skipped, "skip_reasons": REASONS,
        "stats": {
            "clips": summary.clips, "hours": summary.clip_seconds / 3600, "videos": summary.videos,
            "video_hours": summary.video_seconds / 3600, "skipped_by_reason": dict(summary.skipped),
            "clips_with_audio": sum(c["has_audio"] for c in clips),
            "speed_mean_percentiles": {q: speeds[min(len(speeds) - 1, int(q / 100 * len(speeds)))] for q in (10, 50, 90)}
            if speeds else {},
        },
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return summary


def run_preprocess(videos: str | os.PathLike, out: str | os.PathLike, cfg: PreprocessConfig, workers: int = 1,
                   shard: str | None = None, overwrite: bool = False, progress: bool = True) -> PreprocessSummary:
    """Preprocess a corpus into shards + manifest (see the module docstring); returns the totals.

    Args:
        videos: a folder of videos, a text list of video paths, or one video file.
        out: output folder (created if missing; its parent must exist).
        cfg: preprocessing settings.
        workers: processes working on videos in parallel (1 = in this process).
        shard: "I/N" to process only shards j with j % N == I (cluster splitting).
        overwrite: start over in a folder made with other videos or settings.
        progress: show a tqdm progress bar (videos).
    """
    from tqdm import tqdm

    cfg.validate()
    index, count = parse_shard_spec(shard)
    out = Path(out)
    if not out.parent.is_dir():
        raise EMOError(f"output folder's parent {out.parent} does not exist; create it first")
    entries = list_videos(videos)
    t0 = time.monotonic()
    for sub in (out, out / "parts", out / ".work"):
        sub.mkdir(exist_ok=True)
    groups, plan_hash = _load_or_write_plan(out, entries, cfg, overwrite)
    work = out / ".work"
    mine = [j for j in range(len(groups)) if j % count == index and not (out / "parts" / f"{shard_name(j)}.json").is_file()]
    remaining = {j: [v for v in groups[j] if not _video_done(work, v, plan_hash)] for j in mine}
    todo = [(j, v) for j in mine for v in remaining[j]]
    processed: list[dict] = []

    def finish(j: int, v: VideoEntry | None, result: dict | None) -> None:
        if v is not None:
            remaining[j].remove(v)
            processed.append(result)
        if not remaining[j]:
            _assemble_shard(out, work, j, groups[j], plan_hash)

    bar = tqdm(total=len(todo), unit="video", desc="preprocess", disable=not progress or None, dynamic_ncols=True)
    try:
        for j in mine:  # shards whose videos were all finished by an earlier run
            if not remaining[j]:
                finish(j, None, None)
        if workers <= 1:
            with make_analyzer(cfg) as fa:
                for j, v in todo:
                    finish(j, v, _run_video(v, str(work), plan_hash, cfg, fa))
                    bar.update(1)
        else:
            ctx = get_context("spawn")  # no fork: the parent may hold threads (torch, tqdm)
            pool = ctx.Pool(workers, initializer=_worker_init, initargs=(dataclasses.asdict(cfg),))
            try:
                tasks = [(j, v, str(work), plan_hash) for j, v in todo]
                for j, v, result in pool.imap_unordered(_pool_task, tasks, chunksize=1):
                    finish(j, v, result)
                    bar.update(1)
                pool.close()
            except BaseException:
                pool.terminate()  # SIGTERM: workers delete their temporary files and exit
                raise
            finally:
                pool.join()
    finally:
        bar.close()
    summary = write_manifest(out)
    if count == 1 and not any(work.iterdir()):  # (with --shard, other jobs may still use it)
        work.rmdir()
    summary.processed_videos = len(processed)
    summary.processed_seconds = sum(r["seconds"] for r in processed)
    summary.processed_clip_seconds = sum(c["seconds"] for r in processed for c in r["clips"])
    summary.wall_seconds = time.monotonic() - t0
    return summary


def _video_done(work: Path, entry: VideoEntry, plan_hash: str) -> bool:
    res = _work_paths(work, entry)[1]
    if not res.is_file():
        return False
    try:
        return json.loads(res.read_text()).get("plan") == plan_hash
    except (json.JSONDecodeError, OSError):
        return False
