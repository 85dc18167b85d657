"""Settings of a synthetic world (kept free of heavy imports so the CLI's --help stays instant)."""

from __future__ import annotations

from dataclasses import dataclass

from emoportrait.errors import EMOError

LANGUAGES = ("en", "de", "zh")  # languages of the sentence bank (speech.SENTENCES)


@dataclass
class SynthConfig:
    """Settings of a synthetic world (everything that changes the files)."""

    identities: int = 8
    clips_per_identity: int = 4
    seconds: float = 4.0  # clip length
    size: int = 128  # frame side in pixels (128, 256, 512 are typical)
    seed: int = 0
    heldout_identity_fraction: float = 0.1  # identities whose clips are all held out (>= 1 when identities >= 3)
    heldout_sentence_fraction: float = 0.15  # sentences / melodies of each language held out (>= 1 each)
    heldout_sentence_clips: float = 0.1  # share of train identities' clips that speak held-out sentences
    sung_fraction: float = 0.15  # share of clips that sing held vowels instead of speaking
    languages: tuple[str, ...] = ("en", "de", "zh")
    language_weights: tuple[float, ...] = (0.5, 0.25, 0.25)

    def check(self) -> None:
        if self.identities < 1 or self.clips_per_identity < 1:
            raise EMOError("--identities and --clips-per-identity must be at least 1")
        if not 0.5 <= self.seconds <= 120:
            raise EMOError(f"--seconds {self.seconds} is out of range; use 0.5 to 120 seconds per clip")
        if self.size < 64 or self.size % 16:
            raise EMOError(f"--size {self.size} must be a multiple of 16 and at least 64 (e.g. 128, 256, 512)")
        if set(self.languages) - set(LANGUAGES) or len(self.language_weights) != len(self.languages):
            raise EMOError(f"languages must be among {list(LANGUAGES)} with one weight each")
        if not (0 <= self.heldout_identity_fraction < 1 and 0 <= self.heldout_sentence_fraction < 1
                and 0 <= self.heldout_sentence_clips <= 1 and 0 <= self.sung_fraction <= 1):
            raise EMOError("held-out and sung fractions must lie in [0, 1)")
