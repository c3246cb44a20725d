"""The one integer-hash finaliser (xor-shift / multiply rounds on uint32, MurmurHash3 fmix32 style).

Used by the procedural terrain (lattice hashes) and by the memory's map grid (row labels); each keeps its
own constants so that worlds and maps stay bit-identical to what they always were.
"""

from __future__ import annotations

import numpy as np

FMIX32 = ((16, 13, 16), (0x85EBCA6B, 0xC2B2AE35))    # MurmurHash3's fmix32
TERRAIN_MIX = ((15, 13, 16), (0x5BD1E995, 0x8DA6B343))  # the procedural world's lattice hash


def mix32(h: np.ndarray, rounds: tuple[tuple[int, int, int], tuple[int, int]] = FMIX32) -> np.ndarray:
    """Finalise uint32 hashes in place and return them: h ^= h >> s0; h *= m0; h ^= h >> s1; h *= m1;
    h ^= h >> s2 (multiplications wrap mod 2^32). ``h``: uint32 array, any shape."""
    (s0, s1, s2), (m0, m1) = rounds
    with np.errstate(over="ignore"):
        h ^= h >> np.uint32(s0)
        h *= np.uint32(m0)
        h ^= h >> np.uint32(s1)
        h *= np.uint32(m1)
        h ^= h >> np.uint32(s2)
    return h
