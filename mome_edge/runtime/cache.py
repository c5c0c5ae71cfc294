"""A least-recently-used cache bounded in bytes, safe to share between threads."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable

import numpy as np


@dataclass(frozen=True)
class CacheStats:
    capacity_bytes: int
    bytes: int
    peak_bytes: int
    entries: int
    hits: int
    misses: int
    evictions: int
    uncacheable: int  # values larger than the whole budget: used once, never stored

    def to_json(self) -> dict:
        return dict(self.__dict__)


class ByteLRU:
    """key -> numpy array; the arrays held never exceed `capacity_bytes` in total.

    `get` counts a hit or a miss; `put` evicts the least recently used arrays until the new
    one fits. One lock guards the bookkeeping only: callers compute values outside it, so
    two threads may occasionally rebuild the same value (harmless, counted as two misses).
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = int(capacity_bytes)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._peak = 0
        self._hits = self._misses = self._evictions = self._uncacheable = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return value

    def put(self, key: Hashable, value: np.ndarray) -> None:
        size = int(value.nbytes)
        with self._lock:
            if size > self.capacity_bytes:
                self._uncacheable += 1
                return
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= int(old.nbytes)
            while self._bytes + size > self.capacity_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= int(evicted.nbytes)
                self._evictions += 1
            self._items[key] = value
            self._bytes += size
            self._peak = max(self._peak, self._bytes)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                capacity_bytes=self.capacity_bytes, bytes=self._bytes, peak_bytes=self._peak, entries=len(self._items),
                hits=self._hits, misses=self._misses, evictions=self._evictions, uncacheable=self._uncacheable,
            )
