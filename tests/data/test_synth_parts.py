"""Parts of the synthetic world: split planning, speech and singing, dynamics, renderer."""

from __future__ import annotations

import numpy as np
import pytest

from emoportrait.data.media import SAMPLE_RATE
from emoportrait.data.synth import dynamics, speech
from emoportrait.data.synth.config import SynthConfig
from emoportrait.data.synth.identity import make_identity
from emoportrait.data.synth.render import FrameState, Renderer
from emoportrait.data.synth.world import plan_world
from emoportrait.errors import EMOError


def test_split_plan_is_fixed_by_seed_and_keeps_held_out_material_apart():
    cfg = SynthConfig(identities=20, clips_per_identity=10, seed=3)
    plan = plan_world(cfg)
    assert plan_world(cfg) == plan
    assert plan_world(SynthConfig(identities=20, clips_per_identity=10, seed=4)).clips != plan.clips
    held_ids = {i for i, s in plan.identity_split.items() if s == "heldout_identity"}
    assert len(held_ids) == 2
    held_sentences = {s for s, p in plan.sentence_split.items() if p == "heldout"}
    for lang in ("en", "de", "zh", "sing"):
        assert any(s.startswith(lang + "-") for s in held_sentences)
    splits = {c.split for c in plan.clips}
    assert splits == {"train", "heldout_identity", "heldout_sentence"}
    for c in plan.clips:
        assert (c.identity_id in held_ids) == (c.split == "heldout_identity")
        uses_held = {s in held_sentences for s in c.sentence_ids}
        assert uses_held == ({True} if c.split == "heldout_sentence" else {False}), c
    kinds = {(c.kind, c.language) for c in plan.clips}
    assert {("speech", "en"), ("speech", "de"), ("speech", "zh"), ("sung", "vocalise")} <= kinds
    levels = np.bincount([c.speed_level for c in plan.clips], minlength=4)
    assert levels.min() == levels.max() == 50  # balanced over the four speed levels
    voices = {c.voice for c in plan.clips if c.identity_index == 0 and c.kind == "speech"}
    assert len({v.split("+")[1] for v in voices}) == 1  # one voice variant per identity


def test_config_errors_are_one_line():
    for bad in (SynthConfig(size=100), SynthConfig(identities=0), SynthConfig(seconds=0.1),
                SynthConfig(languages=("fr",), language_weights=(1.0,))):
        with pytest.raises(EMOError) as e:
            bad.check()
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("sid,voice,rate", [("en-000", "en-us+m3", 170), ("de-000", "de+f2", 170),
                                            ("zh-000", "cmn+m1", 270)])
def test_espeak_speaks_every_language(sid, voice, rate):
    audio = speech.espeak(speech.sentence_text(sid), voice, rate=rate, pitch=50)
    assert audio.dtype == np.float32 and 1.0 < len(audio) / SAMPLE_RATE < 4.5
    assert np.sqrt(np.mean(audio**2)) > 0.02
    faster = speech.espeak(speech.sentence_text(sid), voice, rate=int(rate * 1.5), pitch=50)
    assert len(faster) < 0.85 * len(audio)


def test_speech_clip_has_exact_length_and_known_silences():
    rng = np.random.default_rng(0)
    clip = speech.speech_clip(["en-001"], "en-gb+f1", 160, 55, 4.0, rng)
    assert len(clip.audio) == 4 * SAMPLE_RATE and clip.texts == [speech.sentence_text("en-001")]
    t = np.arange(len(clip.audio)) / SAMPLE_RATE
    inside = np.zeros(len(t), bool)
    for s, e in clip.segments:
        inside |= (t >= s) & (t < e)
    assert np.abs(clip.audio[~inside]).max() < 0.003  # only the faint noise floor outside the segments
    assert np.sqrt(np.mean(clip.audio[inside] ** 2)) > 0.03


def test_singing_holds_vowels_on_the_melody():
    rng = np.random.default_rng(1)
    notes = [(0, "a", 2.0), (7, "i", 2.0), (4, "u", 2.0)]
    audio, segs = speech.sing(notes, base_hz=200.0, bpm=120, feminine=True, rng=rng)
    assert len(segs) == 3 and all(abs((e - s) - 1.0) < 1e-3 for s, e in segs)
    for (semi, vowel, _), (s, e) in zip(notes, segs):
        seg = audio[int((s + 0.3) * SAMPLE_RATE) : int((e - 0.2) * SAMPLE_RATE)]
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
        freqs = np.fft.rfftfreq(len(seg), 1 / SAMPLE_RATE)
        band = (freqs > 100) & (freqs < 2 * 200 * 2 ** (semi / 12) * 0.75)
        f0 = freqs[band][np.argmax(spec[band])]
        assert abs(f0 - 200 * 2 ** (semi / 12)) < 12, (vowel, f0)
    # /a/ opens the mouth more than /i/ and /u/ at the same loudness; /i/ spreads the lips.
    feat = dynamics.audio_features(audio, int(len(audio) / SAMPLE_RATE * 25))
    opening, width = dynamics.mouth_track(feat)
    mid = [int((s + e) / 2 * 25) for s, e in segs]
    assert opening[mid[0]] > opening[mid[1]] and opening[mid[0]] > opening[mid[2]]
    assert width[mid[1]] > width[mid[2]]


def test_mouth_is_closed_in_silence_and_opens_with_sound():
    # An /a/-like vowel (150 Hz harmonics peaking at 700 Hz) swelling and fading, between silences.
    audio = np.zeros(2 * SAMPLE_RATE, np.float32)
    t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
    vowel = sum(np.exp(-(((k * 150) - 700) / 300) ** 2) * np.sin(2 * np.pi * k * 150 * t) for k in range(1, 20))
    audio[SAMPLE_RATE // 2 : SAMPLE_RATE] = 0.3 * vowel * np.sin(np.pi * t / 0.5)
    feat = dynamics.audio_features(audio, 50)
    opening, width = dynamics.mouth_track(feat)
    assert np.all(opening[:10] == 0) and np.all(opening[29:] == 0)
    assert opening[18] > 0.6 and opening[18] > opening[14] > opening[13] and np.all(width[:10] == 1.0)
    assert feat.active[18] and not feat.active[5]


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_head_track_hits_the_speed_level(level):
    audio = np.random.default_rng(0).normal(0, 0.1, 3 * SAMPLE_RATE).astype(np.float32)
    feat = dynamics.audio_features(audio, 75)
    head = dynamics.head_track(feat, level, np.random.default_rng(level))
    assert abs(head.speed.mean() - dynamics.SPEED_LEVELS[level]) < 0.02 * dynamics.SPEED_LEVELS[level]
    assert np.all(np.abs(head.yaw) <= dynamics.ANGLE_LIMITS[0]) and np.all(np.abs(head.pitch) <= 20)


def test_blinks_are_brief_and_periodic():
    blink = dynamics.blink_track(25 * 60, 3.0, np.random.default_rng(0))
    starts = np.flatnonzero((blink[1:] > 0.9) & (blink[:-1] <= 0.9))
    assert 12 <= len(starts) <= 30  # ~20 blinks per minute
    assert 0.02 < np.mean(blink > 0.5) < 0.15


def test_renderer_follows_pose_and_mouth_and_is_anti_aliased():
    ident = make_identity(0, 5)
    r = Renderer(ident, size=128)
    frame0, info0 = r.render(FrameState())
    frame1, info1 = r.render(FrameState(yaw=25))
    frame2, info2 = r.render(FrameState(mouth_open=1.0))
    assert frame0.shape == (128, 128, 3) and frame0.dtype == np.uint8
    # Turning the head toward the viewer's right moves the nose tip right of the eyes' midpoint.
    nose0 = info0["keypoints"][2, 0] - info0["keypoints"][:2, 0].mean()
    nose1 = info1["keypoints"][2, 0] - info1["keypoints"][:2, 0].mean()
    assert nose1 - nose0 > 3
    assert info2["mouth_open_px"] > 6 and info0["mouth_open_px"] < 0.5
    # Anti-aliasing: edges have intermediate colours (many distinct values, no hard 2-colour steps).
    assert len(np.unique(frame0.reshape(-1, 3), axis=0)) > 500
    # Larger frames show the same face, scaled.
    _, big = Renderer(ident, size=256).render(FrameState())
    np.testing.assert_allclose(np.array(big["box"]) / 2, info0["box"], atol=1.0)


def test_identities_are_deterministic_and_varied():
    assert make_identity(5, 2) == make_identity(5, 2)
    people = [make_identity(5, i) for i in range(40)]
    assert len({p.hair_style for p in people}) >= 5
    assert len({p.skin for p in people}) == 40
    assert any(p.glasses for p in people) and any(p.beard for p in people)
