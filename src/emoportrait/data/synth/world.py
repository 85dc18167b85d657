"""The synthetic talking-head world: plan identities x clips, render them in parallel, write a manifest.

Layout of a world folder::

    DIR/synth_config.json     settings the world was made with (written first; resume key)
    DIR/clips/<clip_id>.mp4   H.264 25 fps + AAC 16 kHz mono
    DIR/clips/<clip_id>.json  per-frame ground truth (see `SIDECAR_UNITS`)
    DIR/manifest.json         splits and per-clip info (written last: the world is complete)

Everything is a pure function of the settings: identity i is drawn from (seed, i), clip k of
identity i from (seed, i, k), so the files do not depend on the number of workers or on the
order in which they finish, and the same seed gives byte-identical files (x264 runs
single-threaded here because its output depends on its thread count).
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from emoportrait.atomic import atomic_write_text
from emoportrait.data.media import FPS, SAMPLE_RATE, VideoWriter
from emoportrait.data.synth import dynamics, speech
from emoportrait.data.synth.config import SynthConfig
from emoportrait.data.synth.identity import Identity, make_identity
from emoportrait.data.synth.render import FrameState, Renderer
from emoportrait.errors import EMOError

FORMAT_VERSION = 1
SPLITS = ("train", "heldout_identity", "heldout_sentence")
SIDECAR_UNITS = {
    "box": "face box (x0, y0, x1, y1) in pixels of the frame; eyebrows-to-chin, cheek to cheek",
    "yaw": "degrees; > 0 turns the face toward the viewer's right",
    "pitch": "degrees; > 0 tilts the face up",
    "roll": "degrees; > 0 tilts the head clockwise as the viewer sees it (R = Rz(roll) Rx(pitch) Ry(yaw))",
    "speed": "degrees per frame; geodesic angle between the head rotations of frames t-1 and t (w_0 = w_1)",
    "mouth_open": "0 closed .. 1 the identity's widest opening (inner-lip gap / max gap)",
    "mouth_width": "mouth width relative to the identity's neutral mouth (1 = neutral)",
    "mouth_open_px": "inner-lip gap at the mouth centre, pixels (after rotation and projection)",
    "mouth_width_px": "corner-to-corner mouth width, pixels",
    "blink": "eyelid closure, 0 open .. 1 closed",
    "brow_raise": "eyebrow raise, head units (the head's half-width is 1)",
    "active": "1 where the audio is above the silence gate, else 0",
    "keypoints": "(7, 2) pixels: eye centres (image left, right), nose tip, mouth centre, "
                 "mouth corners (image left, right), chin",
    "segments": "seconds (start, end) of each utterance / sung note in the audio",
    "speed_target": "the speed level's mean rotation speed, degrees per frame",
}


@dataclass
class ClipSpec:
    """Everything needed to render one clip (see `plan_world`)."""

    clip_id: str
    identity_index: int
    clip_index: int
    identity_id: str
    split: str
    kind: str  # "speech" or "sung"
    language: str  # "en", "de", "zh" or "vocalise"
    sentence_ids: list[str]
    voice: str  # espeak-ng voice+variant, or "formant-f" / "formant-m" for sung clips
    rate: float  # espeak-ng words per minute, or beats per minute for sung clips
    pitch: float  # espeak-ng pitch 0..99, or the singer's base frequency in Hz
    speed_level: int
    seconds: float
    size: int
    seed: int


@dataclass
class WorldPlan:
    clips: list[ClipSpec]
    identity_split: dict[str, str]  # identity id -> "train" | "heldout_identity"
    sentence_split: dict[str, str] = field(default_factory=dict)  # sentence id -> "train" | "heldout"


def _pools(cfg: SynthConfig) -> dict[str, str]:
    """Sentence id -> "train" / "heldout", held-out ones drawn per language (and for melodies)."""
    rng = np.random.default_rng([cfg.seed, 0])
    out = {}
    groups = {lang: [f"{lang}-{i:03d}" for i in range(len(speech.SENTENCES[lang]))] for lang in speech.SENTENCES}
    groups["sing"] = [f"sing-{i:03d}" for i in range(speech.NUM_MELODIES)]
    for _, ids in groups.items():
        k = max(1, int(round(cfg.heldout_sentence_fraction * len(ids))))
        held = set(rng.permutation(ids)[:k].tolist())
        out.update({i: "heldout" if i in held else "train" for i in ids})
    return out


def plan_world(cfg: SynthConfig) -> WorldPlan:
    """Decide every clip's identity, split, sentences, voice and speed level (deterministic in the seed)."""
    cfg.check()
    sentence_split = _pools(cfg)
    rng = np.random.default_rng([cfg.seed, 0, 1])
    n_held = 0 if cfg.identities < 3 else max(1, int(round(cfg.heldout_identity_fraction * cfg.identities)))
    held_ids = set(rng.permutation(cfg.identities)[:n_held].tolist())
    identity_split = {f"id{i:04d}": "heldout_identity" if i in held_ids else "train" for i in range(cfg.identities)}
    weights = np.array(cfg.language_weights, np.float64) / np.sum(cfg.language_weights)
    n_sentences = max(1, int(cfg.seconds // 3.5))
    clips = []
    for i in range(cfg.identities):
        ident = make_identity(cfg.seed, i)
        feminine = ident.voice_variant.startswith("f")
        for k in range(cfg.clips_per_identity):
            crng = np.random.default_rng([cfg.seed, 2, i, k])
            sung = crng.random() < cfg.sung_fraction
            if i in held_ids:
                split, pool = "heldout_identity", "train"
            elif crng.random() < cfg.heldout_sentence_clips:
                split, pool = "heldout_sentence", "heldout"
            else:
                split, pool = "train", "train"
            lang = "sing" if sung else cfg.languages[crng.choice(len(cfg.languages), p=weights)]
            ids = sorted(s for s, p in sentence_split.items() if p == pool and s.startswith(lang + "-"))
            chosen = [str(s) for s in crng.permutation(ids)[: min(n_sentences, len(ids))]]
            if sung:
                voice = "formant-f" if feminine else "formant-m"
                rate = round(float(crng.uniform(70, 120)), 1)
                pitch = round(float(crng.uniform(196, 262) if feminine else crng.uniform(110, 147)), 1)
            else:
                options = speech.VOICES[lang]
                voice = f"{options[crng.integers(len(options))]}+{ident.voice_variant}"
                # espeak-ng's Mandarin is slow at a given words-per-minute rate: speed it up.
                rate = int(crng.integers(135, 191) * (1.6 if lang == "zh" else 1.0))
                pitch = int(np.clip(ident.voice_pitch + crng.integers(-8, 9), 0, 99))
            clips.append(ClipSpec(
                clip_id=f"{ident.identity_id}_c{k:03d}", identity_index=i, clip_index=k,
                identity_id=ident.identity_id, split=split, kind="sung" if sung else "speech",
                language="vocalise" if sung else lang, sentence_ids=chosen, voice=voice, rate=rate, pitch=pitch,
                speed_level=(k + i) % len(dynamics.SPEED_LEVELS), seconds=cfg.seconds, size=cfg.size, seed=cfg.seed,
            ))
    return WorldPlan(clips, identity_split, sentence_split)


# --------------------------------------------------------------------------------- rendering
class _SynthWriter(VideoWriter):
    """VideoWriter with single-threaded x264: its output then no longer depends on the CPU count."""

    def _open_video(self, height: int, width: int) -> None:
        super()._open_video(height, width)
        self._vstream.codec_context.thread_count = 1


def _r(values, nd: int = 4):
    """Round floats (nested lists / arrays) for a compact, deterministic JSON sidecar."""
    return np.round(np.asarray(values, np.float64), nd).tolist()


def clip_audio(spec: ClipSpec, ident: Identity, rng: np.random.Generator) -> speech.ClipAudio:
    """The clip's soundtrack (speech via espeak-ng, or formant-synthesized singing)."""
    if spec.kind == "sung":
        return speech.sung_clip(spec.sentence_ids, spec.pitch, spec.rate, spec.voice == "formant-f", spec.seconds, rng)
    return speech.speech_clip(spec.sentence_ids, spec.voice, int(spec.rate), int(spec.pitch), spec.seconds, rng)


def render_clip(spec: ClipSpec, out_dir: str | os.PathLike) -> dict:
    """Render one clip to `out_dir/<clip_id>.mp4` and `.json` (atomically); returns its manifest entry."""
    out_dir = Path(out_dir)
    ident = make_identity(spec.seed, spec.identity_index)
    rng = np.random.default_rng([spec.seed, 3, spec.identity_index, spec.clip_index])
    sound = clip_audio(spec, ident, rng)
    num_frames = int(round(spec.seconds * FPS))
    feat = dynamics.audio_features(sound.audio, num_frames)
    opening, width = dynamics.mouth_track(feat)
    head = dynamics.head_track(feat, spec.speed_level, rng)
    blink = dynamics.blink_track(num_frames, ident.blink_interval, rng)
    gaze_x, gaze_y = dynamics.gaze_track(num_frames, head.yaw, rng)
    renderer = Renderer(ident, spec.size)
    boxes, open_px, width_px, keypoints = [], [], [], []
    with _SynthWriter(out_dir / f"{spec.clip_id}.mp4", fps=FPS, audio=sound.audio, sample_rate=SAMPLE_RATE) as writer:
        for t in range(num_frames):
            frame, info = renderer.render(FrameState(
                yaw=float(head.yaw[t]), pitch=float(head.pitch[t]), roll=float(head.roll[t]),
                tx=float(head.tx[t]), ty=float(head.ty[t]), mouth_open=float(opening[t]),
                mouth_width=float(width[t]), blink=float(blink[t]), brow_raise=float(head.brow[t]),
                gaze_x=float(gaze_x[t]), gaze_y=float(gaze_y[t]),
            ))
            writer.write(frame)
            boxes.append(info["box"])
            open_px.append(info["mouth_open_px"])
            width_px.append(info["mouth_width_px"])
            keypoints.append(info["keypoints"])
    entry = {
        "clip_id": spec.clip_id,
        "video": f"clips/{spec.clip_id}.mp4",
        "sidecar": f"clips/{spec.clip_id}.json",
        "identity_id": spec.identity_id,
        "split": spec.split,
        "kind": spec.kind,
        "language": spec.language,
        "voice": spec.voice,
        "rate": spec.rate,
        "pitch": spec.pitch,
        "sentence_ids": spec.sentence_ids,
        "speed_level": spec.speed_level,
        "speed_name": dynamics.SPEED_NAMES[spec.speed_level],
        "speed_target": dynamics.SPEED_LEVELS[spec.speed_level],
        "seconds": spec.seconds,
        "num_frames": num_frames,
        "size": spec.size,
    }
    sidecar = {
        **entry,
        "format_version": FORMAT_VERSION,
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
        "texts": sound.texts,
        "segments": _r(sound.segments),
        "units": SIDECAR_UNITS,
        "frames": {
            "box": _r(boxes, 2),
            "yaw": _r(head.yaw, 3), "pitch": _r(head.pitch, 3), "roll": _r(head.roll, 3),
            "speed": _r(head.speed, 4),
            "mouth_open": _r(opening), "mouth_width": _r(width),
            "mouth_open_px": _r(open_px, 3), "mouth_width_px": _r(width_px, 3),
            "blink": _r(blink, 3), "brow_raise": _r(head.brow),
            "active": feat.active.astype(int).tolist(),
            "keypoints": _r(keypoints, 2),
        },
    }
    atomic_write_text(out_dir / f"{spec.clip_id}.json", json.dumps(sidecar, separators=(",", ":")) + "\n")
    return entry


def read_sidecar(path: str | os.PathLike) -> dict:
    """Load a clip sidecar; per-frame fields under "frames" become numpy arrays (see `SIDECAR_UNITS`)."""
    with open(path) as f:
        data = json.load(f)
    data["frames"] = {k: np.asarray(v) for k, v in data["frames"].items()}
    return data


# --------------------------------------------------------------------------------- orchestration
def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates us

    def _stop(signum, frame):  # noqa: ARG001
        raise SystemExit(1)  # unwinds atomic writes (no partial file is left), exits without a traceback

    signal.signal(signal.SIGTERM, _stop)


def _render_task(args: tuple[ClipSpec, str]) -> dict:
    return render_clip(*args)


def synthesize_world(cfg: SynthConfig, out: str | os.PathLike, workers: int = 1, progress: bool = True,
                     overwrite: bool = False) -> dict:
    """Render the world described by `cfg` into folder `out` and return its manifest.

    Re-running with the same settings resumes: clips whose sidecar exists are kept. A folder
    made with other settings is refused, unless `overwrite` (then its world files are deleted).
    """
    from tqdm import tqdm

    cfg.check()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EMOError(f"{out} exists and is not a folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    clips_dir = out / "clips"
    clips_dir.mkdir(exist_ok=True)
    settings = {"format_version": FORMAT_VERSION, **asdict(cfg)}
    settings_path = out / "synth_config.json"
    text = json.dumps(settings, indent=2) + "\n"
    if settings_path.exists() and json.loads(settings_path.read_text()) != json.loads(text):
        if not overwrite:
            raise EMOError(f"{out} holds a world made with other settings; choose another --out or add --overwrite")
        for old in [*clips_dir.glob("*.mp4"), *clips_dir.glob("*.json"), out / "manifest.json",
                    out / "contact_sheet.png", settings_path]:
            old.unlink(missing_ok=True)
    if not settings_path.exists():
        atomic_write_text(settings_path, text)
    for stale in clips_dir.glob(".*"):  # temporary files of an interrupted run
        stale.unlink(missing_ok=True)

    plan = plan_world(cfg)
    todo = [s for s in plan.clips
            if not ((clips_dir / f"{s.clip_id}.json").exists() and (clips_dir / f"{s.clip_id}.mp4").exists())]
    entries = {}
    bar = tqdm(total=len(plan.clips), initial=len(plan.clips) - len(todo), desc="synth", unit="clip",
               disable=not progress, dynamic_ncols=True)
    tasks = [(s, str(clips_dir)) for s in todo]
    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                entries[task[0].clip_id] = _render_task(task)
                bar.update()
        else:
            import multiprocessing as mp

            # spawn, not fork: a forked child of a parent that already used OpenCV's (or torch's) thread
            # pool deadlocks in cv2.setNumThreads; the task functions live in this module, so spawned
            # workers import them (scripts read from stdin work too).
            pool = mp.get_context("spawn").Pool(min(workers, len(tasks)), initializer=_init_worker)
            try:
                for entry in pool.imap_unordered(_render_task, tasks):
                    entries[entry["clip_id"]] = entry
                    bar.update()
                pool.close()
            except BaseException:
                pool.terminate()
                raise
            finally:
                pool.join()
    finally:
        bar.close()

    manifest = _manifest(cfg, plan, clips_dir, entries)
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def _manifest(cfg: SynthConfig, plan: WorldPlan, clips_dir: Path, entries: dict) -> dict:
    clips = []
    for spec in plan.clips:
        entry = entries.get(spec.clip_id)
        if entry is None:  # rendered by an earlier run: read it back from the sidecar
            side = json.loads((clips_dir / f"{spec.clip_id}.json").read_text())
            entry = {k: side[k] for k in ("clip_id", "video", "sidecar", "identity_id", "split", "kind", "language",
                                          "voice", "rate", "pitch", "sentence_ids", "speed_level", "speed_name",
                                          "speed_target", "seconds", "num_frames", "size")}
        clips.append(entry)
    identities = {}
    for i in range(cfg.identities):
        ident = make_identity(cfg.seed, i)
        identities[ident.identity_id] = {"split": plan.identity_split[ident.identity_id], **ident.to_dict()}
    return {
        "format_version": FORMAT_VERSION,
        "generator": "emoportrait synth",
        "config": asdict(cfg),
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
        "speed_levels": {"target_deg_per_frame": list(dynamics.SPEED_LEVELS), "names": list(dynamics.SPEED_NAMES)},
        "units": SIDECAR_UNITS,
        "splits": {s: [c["clip_id"] for c in clips if c["split"] == s] for s in SPLITS},
        "sentences": {sid: {"split": p, "text": speech.sentence_text(sid)} for sid, p in sorted(plan.sentence_split.items())},
        "identities": identities,
        "clips": clips,
    }
