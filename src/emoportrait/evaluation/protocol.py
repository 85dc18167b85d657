"""The real-data test split of the paper (4.2): HDTF, 90/10, no identity in both parts."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import numpy as np

_HDTF = re.compile(r"^(?:[A-Za-z]+_)?(?P<person>.+?)(?:_\d+)?$")


def hdtf_identity(name: str) -> str:
    """Identity of an HDTF video name: `WDA_BarackObama_000` -> `BarackObama`."""
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    m = _HDTF.match(stem)
    return m.group("person") if m else stem


def identity_split(names: Iterable[str], test_fraction: float = 0.1, seed: int = 0) -> dict[str, list[str]]:
    """Identity-disjoint split of video names into {"train": [...], "test": [...]}.

    Identities are sorted, shuffled with `numpy.random.default_rng(seed)`, and the first
    ceil(test_fraction * n) identities go to the test split with all their videos.
    """
    names = sorted(set(names))
    ids = sorted({hdtf_identity(n) for n in names})
    order = np.random.default_rng(seed).permutation(len(ids))
    test_ids = {ids[i] for i in order[: math.ceil(test_fraction * len(ids))]} if ids else set()
    return {"train": [n for n in names if hdtf_identity(n) not in test_ids],
            "test": [n for n in names if hdtf_identity(n) in test_ids]}
