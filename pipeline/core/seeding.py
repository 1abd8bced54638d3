"""Derive independent, reproducible seeds from the one seed in params.yaml."""

from __future__ import annotations

import zlib

import numpy as np


def derive_seed(seed: int, *tags: str) -> int:
    """A 31-bit seed for the purpose named by `tags` (e.g. "shadows").

    Different tags give unrelated streams; the same seed and tags always
    give the same number, so every random choice traces back to `seed`.
    """
    words = [seed] + [zlib.crc32(tag.encode()) for tag in tags]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def rng_for(seed: int, *tags: str) -> np.random.Generator:
    """A NumPy generator seeded by `derive_seed(seed, *tags)`."""
    return np.random.default_rng(derive_seed(seed, *tags))
