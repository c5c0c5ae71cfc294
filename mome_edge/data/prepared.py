"""A prepared data set: encoded Parquet shards plus ``prepared.json``, and its streaming reader.

Format ``mome-edge-prepared`` version 1 (written by ``streaming.prepare_dataset``)::

    OUT/prepared.json               written last: its presence marks a complete preparation
    OUT/train/part-00000.parquet    encoded training rows, in source-file order
    OUT/train/part-00001.parquet    ...
    OUT/validation/part-00000.parquet
    OUT/test/part-00000.parquet

Every shard holds at most ``shard_rows`` rows in row groups of at most ``row_group_rows``
rows, with one flat column per value (no nesting, readable by any Parquet tool):

- ``c0`` .. ``c{F-1}``: int64 categorical ids of the spec's categorical fields, in spec order
  (0 = out-of-vocabulary or missing);
- ``n0`` .. ``n{D-1}``: float32 scaled numericals, in spec order (``NumericalScaler.scale``);
- ``y0`` .. ``y{T-1}``: float32 0/1 labels of the spec's tasks, in order.

``prepared.json`` holds: ``format``, ``format_version``, ``created_by``, ``feature_spec``
(``FeatureSpec.to_json``: the vocabularies and statistics that training, evaluation and
compile reuse), ``tasks``, ``columns``, ``rows`` per split, ``shards`` per split (relative
path, rows, rows of each row group), ``source`` (file names, roles and sizes: no absolute
path), ``settings`` (seed, fractions, caps, sizes), ``vocabulary`` (per field: distinct
values, kept, training rows sent to OOV, exact) and ``positive_rates`` per split.

Reading for training (``PreparedDataset.iter_batches``) works on streams, one row group
(a "block") at a time:

- blocks of the split are put in a seeded order per (seed, epoch) (the file order when not
  shuffling), the same on every rank;
- rank r of world_size W takes blocks r, r + W, r + 2W, ... of that order: ranks read
  disjoint rows, and each reads only its own blocks;
- every rank then yields exactly ``rows_per_rank`` rows, the minimum over ranks of their
  blocks' rows (a rank with more rows drops its last ones for this epoch), so all ranks
  run the same number of batches, as DistributedDataParallel needs. The rows dropped per
  epoch are fewer than W row groups' worth, and differ between epochs;
- within a rank a shuffle buffer of ``shuffle_buffer`` rows mixes rows of several blocks:
  whenever the pool holds that many rows it is permuted and all but half of it is emitted.

Everything depends only on (seed, epoch, rank, world_size) and the prepared files.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from mome_edge.data.types import MultiTaskData
from mome_edge.encoding import FeatureSpec
from mome_edge.contract import SPLITS
from mome_edge.errors import ConfigError, DataError

FORMAT = "mome-edge-prepared"
FORMAT_VERSION = 1
MANIFEST = "prepared.json"
DEFAULT_SHUFFLE_BUFFER = 131_072  # rows; about 50 MB at the AliExpress width (16 + 63 + 2 columns)
_PREFETCH_BLOCKS = 2
_EMIT_ROWS = 8_192
_OPEN_FILES = 16
_BLOCK_ORDER_SALT = 0x5EED_B10C
_BUFFER_SALT = 0x5EED_B0FF

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # int64 [B, F], float32 [B, D], float32 [B, T]


def categorical_columns(n: int) -> list[str]:
    return [f"c{j}" for j in range(n)]


def numerical_columns(n: int) -> list[str]:
    return [f"n{j}" for j in range(n)]


def label_columns(n: int) -> list[str]:
    return [f"y{t}" for t in range(n)]


@dataclass(frozen=True, kw_only=True)
class ShardInfo:
    """One Parquet shard of a split: path relative to the prepared folder, rows, rows per row group."""

    path: str
    rows: int
    row_groups: tuple[int, ...]

    def to_json(self) -> dict:
        return {"path": self.path, "rows": self.rows, "row_groups": list(self.row_groups)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ShardInfo":
        return cls(path=str(data["path"]), rows=int(data["rows"]), row_groups=tuple(int(r) for r in data["row_groups"]))


@dataclass(frozen=True)
class _Block:
    shard: int
    row_group: int
    rows: int


class PreparedDataset:
    """Read a folder written by ``prepare_dataset``: spec, row counts, batches and splits.

    Args:
        path: the prepared folder (holding prepared.json).
    Raises:
        DataError: no prepared.json (not prepared, or the preparation did not finish), an
            unknown format version, a malformed manifest or a missing shard.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise DataError(
                f"{str(self.path)!r} holds no {MANIFEST}: it is not a prepared data set, or its preparation did not "
                f"finish; run `mome-edge prepare ... --out {self.path}`"
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{str(manifest_path)!r} is not valid JSON ({exc}); prepare the data set again") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise DataError(f"{str(manifest_path)!r} is not a {FORMAT} manifest; prepare the data set again")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"{str(manifest_path)!r} has format version {manifest.get('format_version')!r}, this mome-edge reads "
                f"{FORMAT_VERSION}; prepare the data set again with this version"
            )
        try:
            self.spec = FeatureSpec.from_json(manifest["feature_spec"])
            self._shards = {s: tuple(ShardInfo.from_json(x) for x in manifest["shards"][s]) for s in SPLITS}
            self._rows = {s: int(manifest["rows"][s]) for s in SPLITS}
            columns = manifest["columns"]
            self._cat = [str(c) for c in columns["categorical"]]
            self._num = [str(c) for c in columns["numerical"]]
            self._lab = [str(c) for c in columns["labels"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{str(manifest_path)!r} is malformed ({exc!r}); prepare the data set again") from exc
        self.manifest: Mapping[str, Any] = manifest
        shapes = (len(self._cat), len(self._num), len(self._lab))
        if shapes != (len(self.spec.categorical), len(self.spec.numerical), len(self.spec.tasks)):
            raise DataError(f"{str(manifest_path)!r}: columns do not match the feature spec; prepare the data set again")
        for split in SPLITS:
            if sum(s.rows for s in self._shards[split]) != self._rows[split]:
                raise DataError(f"{str(manifest_path)!r}: shard rows of {split} do not add up; prepare the data set again")
            for shard in self._shards[split]:
                if not (self.path / shard.path).is_file():
                    raise DataError(
                        f"prepared data set {str(self.path)!r} lacks its shard {shard.path}; prepare it again "
                        "(mome-edge prepare ... --overwrite)"
                    )

    # --- description ---------------------------------------------------------------------

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.spec.tasks

    def rows(self, split: str) -> int:
        return self._rows[_check_split(split)]

    def shards(self, split: str) -> tuple[ShardInfo, ...]:
        return self._shards[_check_split(split)]

    def rows_per_rank(
        self, split: str, *, shuffle: bool = True, seed: int = 0, epoch: int = 0, world_size: int = 1
    ) -> int:
        """Rows every rank yields from ``iter_batches`` with these arguments (all rows when world_size is 1)."""
        _, common = self._plan(split, shuffle=shuffle, seed=seed, epoch=epoch, rank=0, world_size=world_size)
        return common

    def num_batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> int:
        """Batches every rank gets from ``iter_batches`` with the same arguments."""
        _check_positive("batch_size", batch_size)
        rows = self.rows_per_rank(split, shuffle=shuffle, seed=seed, epoch=epoch, world_size=world_size)
        return rows // batch_size if drop_last else math.ceil(rows / batch_size)

    # --- reading -------------------------------------------------------------------------

    def iter_batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Batches (int64 [B, F], float32 [B, D], float32 [B, T]) of this rank's share of a split.

        Every rank yields ``num_batches(...)`` batches of ``batch_size`` rows (the last one
        smaller unless ``drop_last``); see the module docstring for the order and sharding.
        """
        _check_positive("batch_size", batch_size)
        if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise ConfigError(f"shuffle_buffer={shuffle_buffer!r} must be an integer >= 0 (rows)")
        blocks, limit = self._plan(split, shuffle=shuffle, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
        if drop_last:
            limit -= limit % batch_size
        parts = self._read_blocks(split, blocks)
        if shuffle:
            rng = np.random.default_rng([seed, epoch, rank, world_size, _BUFFER_SALT])
            parts = _shuffle_buffer(parts, rng, shuffle_buffer)
        return _batches(parts, batch_size, limit)

    def iter_split(self, split: str, batch_size: int, *, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """All rows of a split in file order (rank r of W: row groups r, r + W, ...; nothing dropped)."""
        _check_positive("batch_size", batch_size)
        _check_rank(rank, world_size)
        blocks = self._blocks(split)[rank::world_size]
        return _batches(self._read_blocks(split, blocks), batch_size, sum(b.rows for b in blocks))

    def load_split(self, split: str) -> MultiTaskData:
        """A whole split in memory, rows in file order (for splits that fit: about 4 B per value)."""
        import pyarrow.parquet as pq

        parts = []
        for shard in self.shards(split):
            table = pq.read_table(self.path / shard.path, columns=[*self._cat, *self._num, *self._lab])
            parts.append(self._arrays(table))
        if parts:
            cat, num, y = (np.concatenate([p[i] for p in parts]) for i in range(3))
        else:
            cat, num, y = self._empty()
        return MultiTaskData(categorical=cat, numerical=num, labels=y, spec=self.spec)

    # --- internals -----------------------------------------------------------------------

    def _blocks(self, split: str) -> list[_Block]:
        return [
            _Block(i, g, rows)
            for i, shard in enumerate(self.shards(split))
            for g, rows in enumerate(shard.row_groups)
            if rows > 0
        ]

    def _plan(
        self, split: str, *, shuffle: bool, seed: int, epoch: int, rank: int, world_size: int
    ) -> tuple[list[_Block], int]:
        """(this rank's blocks in reading order, rows every rank yields)."""
        _check_rank(rank, world_size)
        for name, value in (("seed", seed), ("epoch", epoch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigError(f"{name}={value!r} must be a non-negative integer")
        blocks = self._blocks(split)
        if len(blocks) < world_size:
            raise DataError(
                f"the {split} split of {str(self.path)!r} has {len(blocks)} row groups, fewer than world_size "
                f"{world_size}, so some rank would get no rows; prepare it with smaller --shard-rows or row groups"
            )
        order = (
            np.random.default_rng([int(seed), int(epoch), _BLOCK_ORDER_SALT]).permutation(len(blocks))
            if shuffle
            else np.arange(len(blocks))
        )
        per_rank = [sum(blocks[i].rows for i in order[r::world_size]) for r in range(world_size)]
        return [blocks[i] for i in order[rank::world_size]], min(per_rank)

    def _read_blocks(self, split: str, blocks: Sequence[_Block]) -> Iterator[Batch]:
        """The blocks' rows in order; a background thread reads ahead (pyarrow decodes without the GIL)."""
        shards = self.shards(split)
        files: OrderedDict[int, Any] = OrderedDict()

        def read(block: _Block) -> Batch:
            import pyarrow.parquet as pq

            handle = files.get(block.shard)
            if handle is None:
                # unbuffered, as in stream_source: only the row group being read is held
                handle = pq.ParquetFile(self.path / shards[block.shard].path, pre_buffer=False)
                files[block.shard] = handle
                if len(files) > _OPEN_FILES:
                    files.popitem(last=False)[1].close()
            else:
                files.move_to_end(block.shard)
            return self._arrays(handle.read_row_group(block.row_group, columns=[*self._cat, *self._num, *self._lab]))

        def generate() -> Iterator[Batch]:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mome-prepared-reader")
            pending: list[Future] = []
            try:
                for block in blocks:
                    pending.append(pool.submit(read, block))
                    if len(pending) > _PREFETCH_BLOCKS:
                        yield pending.pop(0).result()
                for future in pending:
                    yield future.result()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                for handle in files.values():
                    handle.close()

        return generate()

    def _arrays(self, table: Any) -> Batch:
        n = table.num_rows
        cat = np.empty((n, len(self._cat)), dtype=np.int64)  # (n, F)
        for j, name in enumerate(self._cat):
            cat[:, j] = table.column(name).to_numpy()
        num = np.empty((n, len(self._num)), dtype=np.float32)  # (n, D)
        for j, name in enumerate(self._num):
            num[:, j] = table.column(name).to_numpy()
        y = np.empty((n, len(self._lab)), dtype=np.float32)  # (n, T)
        for t, name in enumerate(self._lab):
            y[:, t] = table.column(name).to_numpy()
        return cat, num, y

    def _empty(self) -> Batch:
        return (
            np.zeros((0, len(self._cat)), dtype=np.int64),
            np.zeros((0, len(self._num)), dtype=np.float32),
            np.zeros((0, len(self._lab)), dtype=np.float32),
        )


def _shuffle_buffer(parts: Iterator[Batch], rng: np.random.Generator, size: int) -> Iterator[Batch]:
    """Mix rows across blocks: when the pool reaches ``size`` rows, permute it and emit all but size // 2.

    The pool is one preallocated set of arrays; emitted rows leave it in pieces of
    _EMIT_ROWS rows, so memory is about 1.5 x ``size`` rows.
    """
    pool: list[np.ndarray] | None = None
    fill = 0
    try:
        for part in parts:
            n = len(part[0])
            if pool is None or fill + n > len(pool[0]):
                grown = [np.empty((max(size, 1) + n, *a.shape[1:]), dtype=a.dtype) for a in part]
                if pool is not None:
                    for new, old in zip(grown, pool):
                        new[:fill] = old[:fill]
                pool = grown
            for a, p in zip(pool, part):
                a[fill : fill + n] = p
            fill += n
            if fill >= max(size, 1):
                perm = rng.permutation(fill)
                n_out = fill - size // 2
                for start in range(0, n_out, _EMIT_ROWS):
                    index = perm[start : min(start + _EMIT_ROWS, n_out)]
                    yield tuple(a[index] for a in pool)  # type: ignore[misc]
                keep = perm[n_out:]
                for a in pool:
                    a[: len(keep)] = a[keep]
                fill = len(keep)
        if fill:
            perm = rng.permutation(fill)
            for start in range(0, fill, _EMIT_ROWS):
                index = perm[start : start + _EMIT_ROWS]
                yield tuple(a[index] for a in pool)  # type: ignore[misc, union-attr]
    finally:
        _close(parts)


def _batches(parts: Iterator[Batch], batch_size: int, limit: int) -> Iterator[Batch]:
    """Cut a stream of row pieces into batches of ``batch_size`` rows; stop after ``limit`` rows.

    Batches inside a piece are views of it; only a batch spanning two pieces is copied.
    """
    carry: Batch | None = None  # fewer than batch_size rows left over from earlier pieces
    remaining = limit
    try:
        for part in parts:
            if remaining <= 0:
                break
            if len(part[0]) > remaining:
                part = _slice(part, 0, remaining)
            remaining -= len(part[0])
            start = 0
            if carry is not None:
                start = min(batch_size - len(carry[0]), len(part[0]))
                carry = _concat([carry, _slice(part, 0, start)])
                if len(carry[0]) < batch_size:
                    continue
                yield carry
                carry = None
            n = len(part[0])
            while n - start >= batch_size:
                yield _slice(part, start, start + batch_size)
                start += batch_size
            if start < n:
                carry = tuple(a[start:].copy() for a in part)  # type: ignore[assignment]
        if carry is not None and len(carry[0]):
            yield carry
    finally:
        _close(parts)


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    return tuple(a[start:stop] for a in batch)  # type: ignore[return-value]


def _close(parts: Iterator[Batch]) -> None:
    close = getattr(parts, "close", None)
    if close is not None:
        close()


def _concat(parts: Sequence[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use train, validation or test")
    return split


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name}={value!r} must be a positive integer")


def _check_rank(rank: int, world_size: int) -> None:
    _check_positive("world_size", world_size)
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
        raise ConfigError(f"rank={rank!r} must be an integer in [0, world_size={world_size})")
