"""Audio of the synthetic world: espeak-ng speech and formant-synthesized sung vowels.

Speech clips say one or more sentences of a fixed bank (English, German, Mandarin) with an
espeak-ng voice, rate and pitch; the sentence may be split at a word boundary by a pause, and
silence fills the clip before and after, so every clip has silent stretches whose position is
known exactly (`segments`). Sung clips ("vocalise") hold vowels on the notes of a melody with
vibrato, synthesized as harmonics shaped by vowel formants (source-filter model).

All audio is mono float32 at 16 kHz (`emoportrait.data.media.SAMPLE_RATE`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import resample_poly

from emoportrait.data.media import SAMPLE_RATE
from emoportrait.errors import EMOError

SENTENCES: dict[str, list[str]] = {
    "en": [
        "The quick brown fox jumps over the lazy dog.",
        "Please call Stella and ask her to bring these things from the store.",
        "I never thought the river would be this cold in the middle of summer.",
        "We should meet again next week to talk about the new project.",
        "Could you open the window a little, it is getting warm in here.",
        "My grandmother planted apple trees behind the old yellow house.",
        "Every morning the baker wakes up before the sun rises.",
        "The museum will be closed on Monday for a private event.",
        "She sells sea shells by the sea shore every afternoon.",
        "Honestly, I think the second option is much better than the first.",
        "The train to Boston leaves from platform nine at half past six.",
        "Music can change the way people feel about the world.",
        "Nobody expected the little team to win the championship.",
        "Remember to water the plants while I am away on holiday.",
        "A good cup of coffee makes a long day feel a lot shorter.",
        "The weather report says it will rain all weekend.",
        "Thank you all for coming, it means a great deal to me.",
        "Our neighbours are painting their fence bright blue.",
        "Why would anyone leave a bicycle in the middle of the road?",
        "The children laughed as the puppy chased its own tail.",
        "Light travels much faster than sound through the air.",
        "I would like a table for two by the window, please.",
        "Yesterday we walked along the beach until the stars came out.",
        "Reading before bed helps me fall asleep more quickly.",
    ],
    "de": [
        "Der Zug nach Berlin hat heute leider zwanzig Minuten Verspätung.",
        "Am Wochenende fahren wir mit den Kindern an den See.",
        "Kannst du mir bitte das Salz und den Pfeffer reichen?",
        "Die Bibliothek ist montags bis freitags geöffnet.",
        "Mein Bruder spielt seit zehn Jahren Geige im Orchester.",
        "Im Herbst fallen die bunten Blätter von den Bäumen.",
        "Wir haben gestern Abend einen sehr spannenden Film gesehen.",
        "Der Bäcker an der Ecke backt das beste Brot der Stadt.",
        "Ich freue mich schon auf den Urlaub in den Bergen.",
        "Bitte schließen Sie die Tür, wenn Sie den Raum verlassen.",
        "Unsere Katze schläft am liebsten auf der warmen Heizung.",
        "Morgen wird es sonnig und ungefähr fünfundzwanzig Grad warm.",
        "Das Konzert beginnt um acht Uhr im großen Saal.",
        "Sie hat ihren Schlüssel schon wieder im Büro vergessen.",
        "Zwischen den Häusern liegt ein kleiner, ruhiger Garten.",
        "Vielen Dank für die Einladung, wir kommen sehr gerne.",
    ],
    "zh": [
        "今天天气很好，我们一起去公园散步吧。",
        "我每天早上七点起床，然后喝一杯咖啡。",
        "这家饭馆的饺子非常好吃，价格也不贵。",
        "请问去火车站应该怎么走？",
        "他的中文说得越来越流利了。",
        "周末我打算在家里看书和听音乐。",
        "小猫在阳台上晒太阳，看起来很舒服。",
        "我们下个星期一起去北京旅行。",
        "妈妈在厨房里做晚饭，香味飘满了房间。",
        "这个问题有点难，我们需要再想一想。",
        "秋天到了，树叶慢慢变成了金黄色。",
        "谢谢你的帮助，我真的非常感激。",
        "图书馆里很安静，大家都在认真学习。",
        "明天早上可能会下雨，记得带伞。",
        "他每天坚持跑步，身体越来越好。",
        "我们的老师讲课很有意思。",
    ],
}
# espeak-ng voices per language; an identity adds its variant (e.g. "en-us+f2").
VOICES = {"en": ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp"), "de": ("de",), "zh": ("cmn",)}
NUM_MELODIES = 12
# Vowel formants (F1, F2, F3) in Hz for an adult male voice (Peterson & Barney style averages).
VOWELS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010), "o": (570, 840, 2410),
          "u": (300, 870, 2240)}
PENTATONIC = (0, 2, 4, 7, 9, 12, 14)


def sentence_ids() -> list[str]:
    """All sentence ids of the bank: "en-000" ... and sung melodies "sing-000" ..."""
    ids = [f"{lang}-{i:03d}" for lang, texts in SENTENCES.items() for i in range(len(texts))]
    return ids + [f"sing-{i:03d}" for i in range(NUM_MELODIES)]


def sentence_text(sentence_id: str) -> str:
    lang, idx = sentence_id.split("-")
    if lang == "sing":
        return "vocalise: " + " ".join(f"{v}({n:+d}, {b:g} beats)" for n, v, b in melody(int(idx)))
    return SENTENCES[lang][int(idx)]


def melody(index: int) -> list[tuple[int, str, float]]:
    """Notes of melody `index`: (semitones above the singer's base, vowel, duration in beats)."""
    rng = np.random.default_rng([4242, index])
    notes = []
    for _ in range(int(rng.integers(5, 9))):
        notes.append((int(rng.choice(PENTATONIC)), str(rng.choice(list(VOWELS))), float(rng.choice([1, 1, 2, 2, 3]))))
    return notes


# ---------------------------------------------------------------------------------- espeak-ng
def _parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Parse espeak-ng's streamed 16-bit mono WAV (its size fields may be placeholders)."""
    if data[:4] != b"RIFF" or b"fmt " not in data[:64]:
        raise EMOError("espeak-ng produced no WAV data; check that `espeak-ng --version` works")
    fmt = data.index(b"fmt ")
    rate = int.from_bytes(data[fmt + 12 : fmt + 16], "little")
    pos = data.index(b"data", fmt) + 8
    pcm = np.frombuffer(data[pos : pos + (len(data) - pos) // 2 * 2], dtype="<i2")
    return pcm.astype(np.float32) / 32768.0, rate


def espeak(text: str, voice: str, rate: int = 160, pitch: int = 50) -> np.ndarray:
    """Synthesize `text` with espeak-ng.

    Args:
        voice: espeak-ng voice, optionally with a variant ("en-us+f2").
        rate: words per minute (80..450). pitch: 0..99.

    Returns:
        (S,) float32 mono audio at 16 kHz, leading/trailing silence trimmed.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EMOError("espeak-ng is not installed; run `make install` or `apt-get install espeak-ng`")
    cmd = [exe, "-v", voice, "-s", str(int(rate)), "-p", str(int(pitch)), "-a", "120", "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise EMOError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace').strip()}")
    audio, sr = _parse_wav(proc.stdout)
    g = np.gcd(SAMPLE_RATE, sr)
    audio = resample_poly(audio, SAMPLE_RATE // g, sr // g).astype(np.float32)
    return trim(audio)


def trim(audio: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Cut leading and trailing samples quieter than `threshold` (keeps 10 ms of margin)."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio[:0]
    margin = SAMPLE_RATE // 100
    return audio[max(0, loud[0] - margin) : loud[-1] + margin]


def split_text(text: str, language: str, fraction: float) -> tuple[str, str]:
    """Split a sentence near `fraction` of its length at a word (or, for Mandarin, character) boundary."""
    if language == "zh":
        chars = text
        cut = int(np.clip(round(fraction * len(chars)), 2, len(chars) - 3))
        return chars[:cut], chars[cut:]
    words = re.split(r"\s+", text.strip())
    cut = int(np.clip(round(fraction * len(words)), 1, len(words) - 1))
    return " ".join(words[:cut]), " ".join(words[cut:])


# ---------------------------------------------------------------------------------- singing
def sing(notes: list[tuple[int, str, float]], base_hz: float, bpm: float, feminine: bool,
         rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Formant-synthesized held vowels on `notes` (semitone, vowel, beats), with vibrato and breaths.

    Returns:
        audio (S,) float32 at 16 kHz and the (start, end) seconds of every sung note.
    """
    sr = SAMPLE_RATE
    beat = 60.0 / bpm
    out, segments, t0 = [], [], 0.0
    formant_scale = 1.15 if feminine else 1.0
    for i, (semi, vowel, beats) in enumerate(notes):
        dur = beats * beat
        n = int(dur * sr)
        t = np.arange(n) / sr
        f0 = base_hz * 2 ** (semi / 12)
        onset = np.clip(t / 0.25, 0, 1)
        vib = 1 + 0.025 * onset * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 2 * np.pi))
        phase = 2 * np.pi * np.cumsum(f0 * vib) / sr
        F = np.array(VOWELS[vowel], np.float64) * formant_scale
        B = np.array([80.0, 90.0, 120.0])
        sig = np.zeros(n)
        for k in range(1, int(7000 / f0) + 1):
            f = k * f0
            gain = np.prod(F**2 / np.sqrt((F**2 - f**2) ** 2 + (B * f) ** 2)) / k
            sig += gain * np.sin(k * phase)
        env = np.minimum(np.clip(t / 0.06, 0, 1), np.clip((dur - t) / 0.08, 0, 1))
        sig = sig * env
        sig += rng.normal(0, 0.01, n) * env * np.abs(sig).max()  # a little breath noise
        out.append(sig)
        segments.append((t0, t0 + dur))
        t0 += dur
        gap = 0.0 if rng.random() < 0.5 and i < len(notes) - 1 else rng.uniform(0.15, 0.5)
        out.append(np.zeros(int(gap * sr)))
        t0 += len(out[-1]) / sr
    audio = np.concatenate(out)
    audio /= np.abs(audio).max() + 1e-9
    return audio.astype(np.float32), segments


# ---------------------------------------------------------------------------------- clips
@dataclass
class ClipAudio:
    """A clip's audio and where speech / singing happens in it."""

    audio: np.ndarray  # (S,) float32 at 16 kHz, exactly seconds * 16000 samples
    segments: list[tuple[float, float]] = field(default_factory=list)  # (start, end) seconds of sound
    texts: list[str] = field(default_factory=list)


def _place(parts: list[tuple[np.ndarray, float]], seconds: float, lead: float, rng: np.random.Generator) -> ClipAudio:
    """Lay out (audio, pause-after) parts after `lead` seconds of silence, cut/pad to `seconds`."""
    total = int(round(seconds * SAMPLE_RATE))
    audio = np.zeros(total, np.float32)
    pos = int(lead * SAMPLE_RATE)
    segments = []
    for part, pause in parts:
        if pos >= total - SAMPLE_RATE // 10:
            break
        n = min(len(part), total - pos)
        chunk = part[:n].copy()
        if n < len(part):  # fade out a cut utterance
            fade = min(n, SAMPLE_RATE // 25)
            chunk[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
        audio[pos : pos + n] = chunk
        segments.append((pos / SAMPLE_RATE, (pos + n) / SAMPLE_RATE))
        pos += n + int(pause * SAMPLE_RATE)
    return ClipAudio(audio, segments)


def speech_clip(sentences: list[str], voice: str, rate: int, pitch: int, seconds: float,
                rng: np.random.Generator) -> ClipAudio:
    """Speak the sentence ids in order with pauses, filling `seconds`.

    When the speech would not fit, it is re-synthesized faster (up to 1.5x `rate`); what still
    does not fit is cut with a short fade.
    """
    lead = rng.uniform(0.15, 0.6)
    plan = []  # (text, pause after)
    texts = []
    for sid in sentences:
        lang = sid.split("-")[0]
        text = sentence_text(sid)
        texts.append(text)
        if rng.random() < 0.6:  # a silent stretch inside the sentence
            first, second = split_text(text, lang, rng.uniform(0.3, 0.7))
            plan += [(first, rng.uniform(0.4, 0.9)), (second, rng.uniform(0.4, 0.8))]
        else:
            plan.append((text, rng.uniform(0.4, 0.8)))
    parts = [(espeak(text, voice, rate, pitch), pause) for text, pause in plan]
    speech = sum(len(p) for p, _ in parts) / SAMPLE_RATE
    pauses = sum(pause for _, pause in plan[:-1])
    room = seconds - lead - pauses - 0.2
    if speech > room:
        faster = int(round(rate * min(1.5, 1.03 * speech / max(room, 1e-3))))
        parts = [(espeak(text, voice, faster, pitch), pause) for text, pause in plan]
    clip = _place(parts, seconds, lead, rng)
    clip.texts = texts
    return _finish(clip, rng)


def sung_clip(melody_ids: list[str], base_hz: float, bpm: float, feminine: bool, seconds: float,
              rng: np.random.Generator) -> ClipAudio:
    """Sing the melodies in order, filling `seconds`."""
    parts = []
    for mid in melody_ids:
        audio, notes = sing(melody(int(mid.split("-")[1])), base_hz, bpm, feminine, rng)
        # Keep note boundaries as separate parts so `segments` marks each held vowel.
        for k, (s, e) in enumerate(notes):
            nxt = notes[k + 1][0] if k + 1 < len(notes) else e + rng.uniform(0.4, 0.8)
            parts.append((audio[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)], nxt - e))
    clip = _place(parts, seconds, rng.uniform(0.15, 0.5), rng)
    clip.texts = [sentence_text(m) for m in melody_ids]
    return _finish(clip, rng)


def _finish(clip: ClipAudio, rng: np.random.Generator) -> ClipAudio:
    """Normalise to a random peak level (-9..-1 dBFS) and add a faint noise floor (-66 dBFS rms)."""
    peak = np.abs(clip.audio).max()
    if peak > 0:
        clip.audio *= 10 ** (rng.uniform(-9, -1) / 20) / peak
    clip.audio += rng.normal(0, 10 ** (-66 / 20), clip.audio.shape).astype(np.float32)
    clip.audio = np.clip(clip.audio, -1, 1).astype(np.float32)
    return clip
