"""Statistics of the rebuilt experts the numpy runtime holds (mome_edge.runtime.numpy_engine).

The on-demand engine once kept rebuilt experts in a byte-bounded LRU. Softmax routing reads
every expert in a fixed cycle, the LRU's worst case: any budget below the whole set evicted
each expert just before its next use (measured: 0.5 MiB gave 80 rebuilds in 5 calls, 0 hits).
It now keeps a fixed resident subset chosen at load; CacheStats keeps the statistics' JSON
shape (Predictor.stats()["cache"])."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CacheStats:
    capacity_bytes: int
    bytes: int
    peak_bytes: int
    entries: int
    hits: int
    misses: int
    evictions: int
    uncacheable: int  # experts outside the resident subset: rebuilt on every call, never kept

    def to_json(self) -> dict:
        return dict(self.__dict__)
