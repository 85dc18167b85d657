"""Generate one video per set clip through `emoportrait.EMOPipeline` (for `evaluate --model`).

Protocol: reference image = frame 0 of the ground-truth clip, driving audio = the clip's audio,
requested head speed = the clip's sidecar speed when it has one (synthetic world) else the
model's default; one mp4 per clip, same file name, audio muxed in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from emoportrait.errors import EMOError
from emoportrait.evaluation.dataset import EvalClip


def generate_for_set(model: str, clips: list[EvalClip], out_dir: Path, num_inference_steps: int = 40,
                     seed: int = 0, device: str = "auto", max_frames: int | None = None,
                     log: Callable[[str], None] = lambda m: None, audio_from: dict[str, Path] | None = None,
                     speed: float | None = None, pipe=None, clip_overlap: int | None = None) -> tuple[int, int]:
    """Write `out_dir/<clip>.mp4` for every clip; returns the model's frames per clip F and clip overlap O
    (where its seams are: `synthetic.seam_ratio`).

    `audio_from` (clip name -> video or audio file) drives a clip with other audio (the shuffled-
    audio control); `speed` replaces the clip's requested head speed; `pipe` reuses a loaded pipeline;
    `clip_overlap` replaces the model's clip overlap (`pipelines/overlap.py`).
    """
    try:
        from emoportrait.pipelines.loading import load_pipeline
    except ImportError as e:
        raise EMOError(f"--model needs emoportrait.EMOPipeline, which is not available here ({e}); use --videos") from None
    import torch

    from emoportrait.data.faces import FaceDetector
    from emoportrait.data.media import FPS, SAMPLE_RATE, VideoWriter, clip_layout_tags, read_audio, read_video

    pipe = pipe if pipe is not None else load_pipeline(model, device=device)
    pipe.set_progress_bar_config(disable=True)
    overlap = pipe.resolve_clip_overlap(clip_overlap, name="--clip-overlap")
    with FaceDetector() as detector:
        for i, clip in enumerate(clips):
            try:
                reference = read_video(clip.video, max_frames=1)[0]
                audio = read_audio((audio_from or {}).get(clip.name, clip.video))
            except EMOError as e:
                log(f"{clip.name}: not generated: {e}")
                continue
            if max_frames is not None:
                audio = audio[: int(max_frames * SAMPLE_RATE / FPS)]
            box = detector.detect(reference)
            if box is None:
                log(f"{clip.name}: not generated: no face in its first frame")
                continue
            kwargs = {}
            if speed is not None:
                kwargs["speed"] = speed
            elif clip.truth is not None and clip.truth.speed is not None:
                kwargs["speed"] = clip.truth.speed
            log(f"[{i + 1}/{len(clips)}] generating {clip.name}")
            generator = torch.Generator(device="cpu").manual_seed(seed)
            with VideoWriter(out_dir / f"{clip.name}.mp4", fps=FPS, audio=audio, sample_rate=SAMPLE_RATE,
                             metadata=clip_layout_tags(pipe.num_frames, overlap)) as writer:
                for frame in pipe.iter_frames(reference, audio, num_inference_steps=num_inference_steps,
                                              generator=generator, face_box=box, clip_overlap=overlap, **kwargs):
                    writer.write(frame)
    return int(pipe.num_frames), overlap
