"""Synthetic-world metrics measure what they claim, on the synthetic world's own clips."""

import json

import numpy as np
import pytest

from emoportrait.data.faces import FaceAnalyzer
from emoportrait.data.media import read_video
from emoportrait.evaluation import synthetic
from emoportrait.evaluation.dataset import load_set
from emoportrait.evaluation.fsim import FaceEmbedder
from emoportrait.evaluation.mouth_regressor import (
    HELDOUT_SEED,
    load_mouth_regressor,
    per_identity_r,
    predict_mouth,
    render_samples,
)


@pytest.fixture(scope="module")
def clips(world):
    """Every clip of the world: name -> (frames, face boxes, ground-truth mouth, identity)."""
    out = {}
    with FaceAnalyzer() as fa:
        for clip in load_set(world, ("all",)):
            frames = read_video(clip.video)
            out[clip.name] = (frames, fa.analyze_frames(frames).boxes, clip.truth.mouth_open, clip.truth.identity)
    return out


def test_set_reads_manifest_splits_and_sidecars(world):
    held = load_set(world)  # default: identity-disjoint held-out split
    manifest = json.loads((world / "manifest.json").read_text())
    assert [c.name for c in held] == manifest["splits"]["heldout_identity"] and held
    every = load_set(world, ("all",))
    assert len(every) == len(manifest["clips"])
    c = every[0]
    assert c.truth.mouth_open.shape == (60,) and c.truth.boxes.shape == (60, 4) and c.truth.speed is not None


def test_regressor_generalises_to_heldout_identities():
    # Identities of a namespace never trained on, 128 and 256 px, no augmentation.
    x, y, ids = render_samples(HELDOUT_SEED, range(100, 104), 30, rng_seed=5, augment=False)
    model = load_mouth_regressor()
    import torch

    with torch.no_grad():
        pred = model(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0).numpy()
    assert np.corrcoef(pred, y)[0, 1] >= 0.9
    assert per_identity_r(pred, y, ids) >= 0.9


def test_lipsync_high_with_own_audio_low_with_shuffled(clips):
    model = load_mouth_regressor()
    names = sorted(clips)
    own, shuffled = [], []
    for i, name in enumerate(names):
        frames, boxes, mouth, _ = clips[name]
        measured = predict_mouth(model, frames, boxes)
        own.append(synthetic.lipsync_r(measured, mouth))
        other = clips[names[(i + 1) % len(names)]][2]  # another clip's audio ground truth
        shuffled.append(synthetic.lipsync_r(measured, other))
    assert min(own) > 0.7 and np.mean(own) > 0.85
    assert np.mean(np.abs(shuffled)) < 0.2 and max(np.abs(shuffled)) < 0.4


def test_identity_similarity_same_high_different_low(clips):
    emb, center = FaceEmbedder(), synthetic.load_identity_center()
    assert center is not None and center.shape == (128,)
    by_id = {}
    for name in sorted(clips):
        by_id.setdefault(clips[name][3], []).append(name)
    same, diff = [], []
    for ident, names in by_id.items():
        frames, boxes, _, _ = clips[names[0]]
        ref_frames, ref_boxes, _, _ = clips[names[1]]  # reference from another clip of the same person
        same.append(synthetic.identity_similarity(emb, frames, boxes, ref_frames[0], ref_boxes[0], center, every=6))
        other = next(n for i, ns in by_id.items() if i != ident for n in ns)
        o_frames, o_boxes, _, _ = clips[other]
        diff.append(synthetic.identity_similarity(emb, frames, boxes, o_frames[0], o_boxes[0], center, every=6))
    assert min(same) > max(diff) + 0.2
    assert np.mean(same) > 0.4 and np.mean(diff) < 0.2


def test_motion_measures():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (1, 32, 32, 3)).astype(np.float64)
    smooth = np.clip(base + np.linspace(0, 60, 40)[:, None, None, None], 0, 255).astype(np.uint8)
    noisy = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
    assert synthetic.temporal_hf_energy(noisy) > 5 * synthetic.temporal_hf_energy(smooth)
    seams = smooth.astype(np.float64)
    seams[12:] += 30
    seams[24:] += 30
    assert synthetic.seam_ratio(np.clip(seams, 0, 255).astype(np.uint8), 12) > 5
    assert synthetic.seam_ratio(smooth, 12) == pytest.approx(1.0, abs=0.3)
    assert synthetic.speed_error(np.array([1.0, 1.2, np.nan]), 0.5) == pytest.approx(0.6)
    assert synthetic.pearson(np.arange(5.0), np.arange(5.0)) is None  # too few frames


def test_clip_hf_energy_is_the_jitter_of_each_clip():
    rng = np.random.default_rng(0)
    still = np.full((24, 32, 32, 3), 128, np.uint8)
    video = still.copy()
    video[12:] = np.clip(128 + rng.normal(0, 20, (12, 32, 32, 3)), 0, 255).astype(np.uint8)  # the second clip flickers
    first, second = synthetic.clip_hf_energy(video, 12)
    assert first < second / 3  # of the first clip's centred differences only the last reaches a flickering frame
    assert second == pytest.approx(synthetic.temporal_hf_energy(video[11:]))  # frames 11-23: centred at 12-22
    assert synthetic.clip_hf_energy(still, 12) == [0.0, 0.0]
    assert synthetic.clip_hf_energy(still[:2], 12) == []
