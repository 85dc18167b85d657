"""Stage datasets over shards whose contents encode frame indices, so every alignment is checkable."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from emoportrait.data.audio_cache import build_audio_cache
from emoportrait.data.clips import SAMPLES_PER_FRAME
from emoportrait.data.datasets import ImageClipDataset, VideoClipDataset, stage_dataset
from emoportrait.data.shards import TarSampleWriter, encode_clip
from emoportrait.data.streaming import StreamingClipDataset
from emoportrait.errors import EMOError
from emoportrait.models.speed import speed_to_buckets

SIZE, CTX = 32, 3
BOX = (8.0, 6.0, 24.0, 26.0)  # the union box of every clip (crop pixels)


def frame_level(video_frame: int) -> int:
    return 4 * (video_frame % 60) + 8  # gray level that names the frame (JPEG-safe spacing)


def write_folder(root: Path, clip_frames: list[int], clips_per_shard: int = 2, no_audio: tuple[int, ...] = ()) -> Path:
    """Shards of synthetic clips: frame i of clip c is gray frame_level(start + i); the audio sample
    value of video frame f is f / 1000; speed of frame i is 0.1 * i; boxes wobble inside BOX."""
    root.mkdir(parents=True, exist_ok=True)
    clips, shards = [], []
    groups = [list(range(len(clip_frames)))[i : i + clips_per_shard] for i in range(0, len(clip_frames), clips_per_shard)]
    for j, group in enumerate(groups):
        name = f"shard-{j:06d}.tar"
        with TarSampleWriter(root / name) as w:
            for c in group:
                t, start = clip_frames[c], 5 * c
                key = f"clip{c:03d}"
                images = [cv2.imencode(".jpg", np.full((SIZE, SIZE, 3), frame_level(start + i), np.uint8))[1].tobytes()
                          for i in range(t)]
                frames_idx = np.arange(start - CTX, start + t + CTX)
                audio = np.repeat(np.where(frames_idx >= 0, frames_idx / 1000, 0.0), SAMPLES_PER_FRAME).astype(np.float32)
                boxes = np.tile(np.array(BOX, np.float32), (t, 1))
                boxes[1::2] += np.array([2, 2, -2, -2], np.float32)  # inner boxes: the union is still BOX
                has_audio = c not in no_audio
                meta = {"key": key, "num_frames": t, "image_format": "jpg", "audio_context": CTX, "has_audio": has_audio,
                        "start_frame": start, "size": SIZE}
                arrays = {"boxes": boxes, "found": np.ones(t, np.uint8), "rotation": np.tile(np.eye(3, dtype=np.float32), (t, 1, 1)),
                          "ypr": np.zeros((t, 3), np.float32), "speed": (0.1 * np.arange(t)).astype(np.float32),
                          "audio": audio if has_audio else np.zeros_like(audio)}
                w.write(key, encode_clip(key, meta, arrays, images))
                clips.append({"key": key, "shard": name, "num_frames": t, "has_audio": has_audio, "seconds": t / 25})
        shards.append({"name": name, "num_clips": len(group)})
    manifest = {"config": {"size": SIZE, "audio_context": CTX}, "shards": shards, "clips": clips, "complete": True}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def level(img: torch.Tensor) -> int:
    """Frame index named by a decoded (3, H, W) [-1, 1] frame."""
    gray = float((img.mean() + 1) * 127.5)
    return int(round((gray - 8) / 4))


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "shards", [20, 30, 18, 40, 25, 16, 22, 35])


def test_stage1_items(folder):
    ds = ImageClipDataset(folder, samples_per_clip=3, seed=1)
    assert len(ds) == 8 * 3
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"pixel_values", "reference", "face_mask"}
        assert item["pixel_values"].shape == item["reference"].shape == (3, SIZE, SIZE)
        assert item["pixel_values"].min() >= -1 and item["pixel_values"].max() <= 1
        c = i // 3
        start, t = 5 * c, ds.clips[c].num_frames
        target, ref = level(item["pixel_values"]), level(item["reference"])
        assert target != ref  # a different frame ...
        assert (target - start) % 60 < t and (ref - start) % 60 < t  # ... of the same clip
        mask = item["face_mask"]
        assert mask.shape == (1, SIZE, SIZE) and set(mask.unique().tolist()) == {0.0, 1.0}
        assert mask[0, 6:26, 8:24].all() and mask.sum() == 16 * 20  # exactly the union of the boxes
    # Deterministic per (seed, epoch, index); epochs differ.
    again = ImageClipDataset(folder, samples_per_clip=3, seed=1)
    assert torch.equal(again[5]["pixel_values"], ds[5]["pixel_values"])
    picks = [level(ds[i]["pixel_values"]) for i in range(len(ds))]
    ds.set_epoch(1)
    assert [level(ds[i]["pixel_values"]) for i in range(len(ds))] != picks


def test_stage1_resize_and_window_mask(folder):
    item = ImageClipDataset(folder, size=64, mask_scope="window")[1]
    assert item["pixel_values"].shape == (3, 64, 64)
    assert item["face_mask"].sum() in (32 * 40, 24 * 32)  # one frame's box, scaled x2


def test_stage2_items_are_aligned(folder):
    n, f, m = 4, 12, 2
    ds = VideoClipDataset(folder, num_frames=f, num_motion_frames=n, window=m, seed=3, samples_per_clip=4)
    assert len(ds) == 8 * 4  # every clip has >= 16 frames
    centers, radii = (0.0, 0.5, 1.0), (0.5, 0.5, 1.0)
    ds_b = VideoClipDataset(folder, speed_centers=centers, speed_radii=radii)
    for i in range(len(ds)):
        item = ds[i]
        c = i // 4
        start, t = 5 * c, ds.clips[c].num_frames
        frames = [level(x) for x in item["pixel_values"]]
        assert item["pixel_values"].shape == (n + f, 3, SIZE, SIZE)
        s = (frames[0] - start) % 60  # window start inside the clip
        assert frames == [(start + s + k) % 60 for k in range(n + f)]  # contiguous
        assert 0 <= s <= t - (n + f)
        ref = (level(item["reference"]) - start) % 60
        if t > n + f:
            assert not s <= ref < s + n + f  # the reference lies outside the window
        # Audio: ((N+F+2m)*640,), row r = video frame start + s - m + r (value frame / 1000, 0 before 0).
        audio = item["audio"]
        assert audio.shape == ((n + f + 2 * m) * SAMPLES_PER_FRAME,) and audio.dtype == torch.float32
        rows = audio.view(-1, SAMPLES_PER_FRAME)
        expected = [max(0, start + s - m + r) / 1000 for r in range(n + f + 2 * m)]
        assert torch.allclose(rows[:, 0], torch.tensor(expected), atol=1e-6)
        assert (rows == rows[:, :1]).all()
        assert torch.allclose(item["speed"], 0.1 * torch.arange(s, s + n + f, dtype=torch.float32))
        assert item["speed_buckets"].shape == (n + f, 9)  # the model config's buckets by default
        mask = item["face_mask"]  # the clip's face region: the union of its boxes (paper 3.2)
        assert mask.shape == (1, SIZE, SIZE) and mask[0, 6:26, 8:24].all() and mask.sum() == 16 * 20
    item = ds_b[0]
    assert torch.allclose(item["speed_buckets"], speed_to_buckets(item["speed"], torch.tensor(centers), torch.tensor(radii)))


def test_stage2_zero_audio_outside_recording_and_short_clips(tmp_path):
    root = write_folder(tmp_path / "s", [16, 10, 17], no_audio=(2,))
    ds = VideoClipDataset(root, window=5)  # m > stored context: zeros beyond it
    assert [c.key for c in ds.clips] == ["clip000"]  # 10 frames too short, clip002 has no audio
    item = ds[0]
    rows = item["audio"].view(-1, SAMPLES_PER_FRAME)[:, 0]
    assert rows.shape == (16 + 10,)
    assert (rows[:5] == 0).all()  # before the recording (clip 0 starts at video frame 0)
    assert torch.allclose(rows[5:21], torch.arange(16) / 1000)
    assert torch.allclose(rows[21:24], torch.arange(16, 19) / 1000)  # stored context after the clip
    assert (rows[24:] == 0).all()  # beyond the stored context
    with pytest.raises(EMOError, match="no clip has >= 16 frames and audio"):
        VideoClipDataset(write_folder(tmp_path / "t", [10, 12]))


def test_audio_feature_cache(folder):
    def encoder(waveform, num_frames):  # row t = the audio value at frame t's first sample, x2 channels
        rows = waveform[:, ::SAMPLES_PER_FRAME][:, :num_frames]  # (1, T)
        return torch.stack([rows, -rows], dim=-1)[:, :, None, :]  # (1, T, 1, 2)

    assert "audio_features" not in VideoClipDataset(folder)[0]
    cache = build_audio_cache(folder, encoder, progress=False)
    assert json.loads((cache / "info.json").read_text())["shape"] == [1, 2]
    ds = VideoClipDataset(folder, window=2, samples_per_clip=2)
    for i in range(len(ds)):
        item = ds[i]
        feats = item["audio_features"]
        assert feats.shape == (4 + 12 + 4, 1, 2)
        rows = item["audio"].view(-1, SAMPLES_PER_FRAME)[:, 0]
        assert torch.allclose(feats[:, 0, 0], rows, atol=1e-3)  # the same frames as the waveform
    assert "audio_features" not in VideoClipDataset(folder, audio_features=None)[0]
    assert build_audio_cache(folder, encoder, progress=False) == cache  # resumable: nothing redone


def test_map_style_with_workers(folder):
    ds = stage_dataset("2", folder, seed=0, num_frames=12, num_motion_frames=4, window=2)
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["pixel_values"].shape == (4, 16, 3, SIZE, SIZE)
    assert torch.equal(batches[1]["audio"], torch.stack([ds[i]["audio"] for i in range(4, 8)]))
    assert isinstance(stage_dataset(1, folder, num_frames=12), ImageClipDataset)  # video keys ignored
    with pytest.raises(EMOError, match="unknown training stage"):
        stage_dataset("4", folder)


def window_of(item: dict, m: int = 2) -> tuple[int, int]:
    """(clip start frame, window start s) of a stage-2 item: speed names s, audio names start + s."""
    s = round(float(item["speed"].flatten()[0]) * 10)
    first = round(float(item["audio"].view(-1, SAMPLES_PER_FRAME)[m, 0]) * 1000)
    return first - s, s


def test_streaming_splits_ranks_and_workers(folder):
    # Stage 2 with 1 sample per clip and speed = 0.1 * window start: identify samples by (clip, start).
    def items(rank: int, workers: int) -> list[tuple[int, int]]:
        ds = StreamingClipDataset(VideoClipDataset(folder, seed=5), shuffle_buffer=3, rank=rank, world_size=2)
        return [window_of(b) for b in DataLoader(ds, batch_size=None, num_workers=workers)]

    r0, r1 = items(0, 2), items(1, 2)
    assert len(r0) == len(r1) == 4  # 8 clips / 2 ranks, exactly
    assert sorted(start for start, _ in r0 + r1) == [5 * c for c in range(8)]  # every clip once per epoch
    assert items(0, 2) == r0  # deterministic
    assert sorted(items(0, 1) + items(1, 1)) != []  # other worker counts work too


def test_streaming_epochs_and_resume(folder):
    ds = StreamingClipDataset(ImageClipDataset(folder, seed=2, samples_per_clip=3), shuffle_buffer=4,
                              rank=0, world_size=1)
    assert len(ds) == 24

    def run(start_batch: int = 0, epoch: int = 0) -> list[torch.Tensor]:
        ds.set_epoch(epoch, start_batch=start_batch, batch_size=2)
        return [b["pixel_values"] for b in DataLoader(ds, batch_size=2, num_workers=2)]

    full = run()
    assert len(full) == 12
    resumed = run(start_batch=5)
    assert len(resumed) == 7 and all(torch.equal(a, b) for a, b in zip(resumed, full[5:]))
    other = run(epoch=1)
    assert not all(torch.equal(a, b) for a, b in zip(other, full))
    # More streams than shards and an uneven split: every rank still yields len() samples.
    for rank in range(3):
        ds3 = StreamingClipDataset(ImageClipDataset(folder), rank=rank, world_size=3)
        assert len(list(DataLoader(ds3, batch_size=None, num_workers=2))) == len(ds3) == 8 // 3


def test_missing_manifest(tmp_path):
    with pytest.raises(EMOError, match="run `emoportrait preprocess"):
        ImageClipDataset(tmp_path)


def test_audio_feature_cache_from_a_model_folder(folder, tmp_path, capsys):
    from emoportrait.cli import main
    from emoportrait.models import LogMelAudioEncoder

    encoder = LogMelAudioEncoder()
    encoder.save_pretrained(tmp_path / "model" / "audio_encoder")
    assert main(["preprocess", "--out", str(folder), "--audio-features", str(tmp_path / "model"), "--no-progress"]) == 0
    assert "audio features in" in capsys.readouterr().out
    item = VideoClipDataset(folder)[0]
    feats = item["audio_features"]
    assert feats.shape == (20, 1, encoder.feature_dim) and torch.isfinite(feats).all()
    assert main(["preprocess", "--out", str(folder), "--audio-features", str(tmp_path / "nothing")]) == 2


def _rect(size: int, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    m = torch.zeros(1, size, size)
    m[:, y0:y1, x0:x1] = 1.0
    return m


def test_mouth_masks_follow_each_target_frame_box(folder):
    n, f = 4, 12
    ds = VideoClipDataset(folder, num_frames=f, num_motion_frames=n, window=2, seed=1, with_mouth_mask=True)
    assert "mouth_mask" not in VideoClipDataset(folder, num_frames=f, num_motion_frames=n)[0]  # only when asked
    # BOX (8, 6, 24, 26) on even clip frames, (10, 8, 22, 24) on odd ones; the mouth is the lower
    # 45 % of the box and its middle 60 %, rounded outwards.
    outer, inner = _rect(SIZE, 11, 17, 21, 26), _rect(SIZE, 12, 16, 20, 24)
    for i in range(0, len(ds), 3):
        item = ds[i]
        c = i // ds.samples_per_clip
        s = (level(item["pixel_values"][0]) - 5 * c) % 60
        masks = item["mouth_mask"]
        assert masks.shape == (f, 1, SIZE, SIZE)
        for k in range(f):
            assert torch.equal(masks[k], outer if (s + n + k) % 2 == 0 else inner)
    assert "mouth_mask" not in stage_dataset("1", folder, with_mouth_mask=True)[0]  # stage 1 ignores it


def test_mouth_mask_is_empty_where_no_face_was_found():
    from emoportrait.data.datasets import mouth_mask

    boxes = np.array([[8, 6, 24, 26], [np.nan] * 4], np.float32)
    masks = mouth_mask(boxes, stored_size=32, size=64)  # boxes in 32 px crops, masks at 64 px
    assert masks.shape == (2, 1, 64, 64) and masks[1].sum() == 0
    assert torch.equal(masks[0], _rect(64, 22, 34, 42, 52))


def test_shard_clip_audio_offsets_by_the_stored_context_and_pads_with_zeros():
    from emoportrait.data.shards import Clip

    ctx = 2  # the stored audio starts 2 frames before frame 0; value = frame index (-2..4) + 10
    audio = np.repeat(np.arange(-2, 5) + 10.0, SAMPLES_PER_FRAME).astype(np.float32)
    clip = Clip("c", {"audio_context": ctx}, {"audio": audio}, images=[b""] * 3)
    out = clip.audio_frames(-3, 6)  # frames -3..5: one before the stored audio, one past it
    assert out.shape == (9 * SAMPLES_PER_FRAME,) and out.dtype == np.float32
    assert out.reshape(9, SAMPLES_PER_FRAME)[:, 0].tolist() == [0, 8, 9, 10, 11, 12, 13, 14, 0]
    assert clip.audio_frames(7, 9).tolist() == [0.0] * (2 * SAMPLES_PER_FRAME)  # all outside
