"""A vectorised open-addressing hash table: int64 keys -> rows (stored as int32: a map holds < 2**31 rows),
numpy only.

Why not ``open3d.core.HashMap``: on this machine its ``find`` costs ~30 ms for the ~10k voxel keys of
one 256x256 frame, whatever the map size; this table answers the same batch in well under a millisecond.

Linear probing over a power-of-two table kept at most half full. Every operation works on a whole
batch at once: each round probes one slot for every key still unresolved, so a batch finishes in a
few rounds (the longest probe chain), not one Python iteration per key.

Growing is incremental: the full table is kept as the *old* table, a table twice its size takes new
inserts, and each later insert moves a batch of old slots across (at least four slots per key inserted,
so the move ends long before the next doubling). Lookups try the new table, then the old one. Values
never change once inserted, so a key briefly present in both answers the same. No single call pays for
rehashing the whole map (that was a 250 ms hitch at 1M voxels).
"""

from __future__ import annotations

import numpy as np

_EMPTY = np.int64(np.iinfo(np.int64).min)  # never a valid packed voxel key (those are >= 0)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _slots(keys: np.ndarray, mask: int) -> np.ndarray:
    """Home slot of each key (Fibonacci hashing of the int64 bits), (N,) int64."""
    with np.errstate(over="ignore"):
        h = keys.view(np.uint64) * _GOLDEN
    return ((h >> np.uint64(29)) ^ h).astype(np.int64) & mask


def _probe_find(table_keys: np.ndarray, table_values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Values of ``keys`` in one open-addressing table, -1 where absent."""
    out = np.full(len(keys), -1, np.int64)
    mask = len(table_keys) - 1
    pending = np.arange(len(keys))
    slot = _slots(keys, mask)
    while len(pending):
        stored = table_keys[slot]
        hit = stored == keys[pending]
        out[pending[hit]] = table_values[slot[hit]]
        go_on = ~hit & (stored != _EMPTY)
        pending, slot = pending[go_on], (slot[go_on] + 1) & mask
    return out


def _probe_insert(table_keys: np.ndarray, table_values: np.ndarray, keys: np.ndarray, values: np.ndarray) -> None:
    """Insert absent, unique ``keys`` into one table that has room for them."""
    mask = len(table_keys) - 1
    pending = np.arange(len(keys))
    slot = _slots(keys, mask)
    while len(pending):
        free = table_keys[slot] == _EMPTY
        # Claim free slots; when several keys claim one slot, the last write wins and the rest probe on.
        table_keys[slot[free]] = keys[pending[free]]
        won = free & (table_keys[slot] == keys[pending])
        table_values[slot[won]] = values[pending[won]]
        go_on = ~won
        pending, slot = pending[go_on], (slot[go_on] + 1) & mask


class Int64HashTable:
    """Maps unique int64 keys (never ``int64 min``) to row numbers in [0, 2**31) (stored int32, returned int64).
    Grows by doubling, incrementally."""

    MIN_MOVE = 8192  # old slots moved per insert call at least

    def __init__(self, capacity: int = 1 << 16):
        size = 1 << max(4, int(np.ceil(np.log2(max(2 * capacity, 16)))))
        self._keys = np.full(size, _EMPTY, np.int64)
        self._values = np.zeros(size, np.int32)
        self._count = 0
        self._old_keys: np.ndarray | None = None    # the table being moved out of, while growing
        self._old_values: np.ndarray | None = None
        self._moved = 0                             # old slots [0, _moved) are already in the new table

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        old = 0 if self._old_keys is None else self._old_keys.nbytes + self._old_values.nbytes
        return self._keys.nbytes + self._values.nbytes + old

    def find(self, keys: np.ndarray) -> np.ndarray:
        """(N,) int64 keys -> (N,) int64 values, -1 where the key is absent."""
        keys = np.ascontiguousarray(keys, dtype=np.int64).reshape(-1)
        out = _probe_find(self._keys, self._values, keys)
        if self._old_keys is not None:
            missing = np.flatnonzero(out < 0)
            if len(missing):
                out[missing] = _probe_find(self._old_keys, self._old_values, keys[missing])
        return out

    def insert(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Insert (N,) keys that are unique and not yet present, with their (N,) values."""
        keys = np.ascontiguousarray(keys, dtype=np.int64).reshape(-1)
        values = np.asarray(values).reshape(-1)
        if len(keys) == 0:
            return
        if values.min() < 0 or values.max() > np.iinfo(np.int32).max:
            raise ValueError("Int64HashTable values must be row numbers in [0, 2**31)")
        values = values.astype(np.int32)
        if self._old_keys is not None:
            self._move(max(self.MIN_MOVE, 4 * len(keys)))
        if 2 * (self._count + len(keys)) > len(self._keys):
            self._grow(self._count + len(keys))
        _probe_insert(self._keys, self._values, keys, values)
        self._count += len(keys)

    def _grow(self, needed: int) -> None:
        """Start moving into a table at least twice ``needed`` slots (finishing any earlier move first)."""
        if self._old_keys is not None:
            self._move(len(self._old_keys))
        size = len(self._keys)
        while 2 * needed > size:
            size *= 2
        self._old_keys, self._old_values, self._moved = self._keys, self._values, 0
        self._keys = np.full(size, _EMPTY, np.int64)
        self._values = np.zeros(size, np.int32)
        self._move(self.MIN_MOVE)

    def _move(self, n_slots: int) -> None:
        """Move the next ``n_slots`` slots of the old table into the new one; drop it when done."""
        lo, hi = self._moved, min(self._moved + int(n_slots), len(self._old_keys))
        block_keys = self._old_keys[lo:hi]
        used = block_keys != _EMPTY
        _probe_insert(self._keys, self._values, block_keys[used], self._old_values[lo:hi][used])
        self._moved = hi
        if hi == len(self._old_keys):
            self._old_keys = self._old_values = None
