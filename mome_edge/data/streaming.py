"""Streaming data: data sets larger than memory, prepared once into encoded Parquet shards.

``prepare_dataset(stream_source(...), out_dir)`` reads a CSV, CSV.gz or Parquet source
(the AliExpress layout or a user TOML spec) in chunks, twice:

1. statistics: one pass over the training rows builds the vocabularies (with an optional
   per-field cap: the most frequent values are kept, rare values go to OOV) and the
   numerical statistics (streaming mean/variance), giving a ``FeatureSpec`` of the same
   form as the in-memory loaders' (``stream_stats.py``);
2. encoding: a second pass encodes every row with that spec and writes it to the shards of
   its split (``prepared.py`` documents the folder format and the reader).

Memory stays bounded by a few chunks, a row group per split and the vocabularies (which
grow with the number of distinct values, not with rows), whatever the file size.

Splits are decided per row by a seeded hash of the row number (``stream_source.py``), so
they need no row count and no permutation in memory. They therefore differ from
``load_dataset``'s permutation splits of the same file (same fractions on average, other rows):
AliExpress: the test file is the test split and a seeded ``validation_fraction`` (default
0.1) of the training file is validation; user specs: each row goes to validation/test/train
with the spec's fractions, seeded by the spec's ``[split] seed`` when it sets one.

No torch here: numpy, pyarrow and rich (progress bars on stderr) only.
"""

from __future__ import annotations

import dataclasses
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping

import numpy as np

from mome_edge.atomic import atomic_write_json, fsync_folder
from mome_edge.data.prepared import (
    DEFAULT_SHUFFLE_BUFFER,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SPLITS,
    PreparedDataset,
    ShardInfo,
    categorical_columns,
    label_columns,
    numerical_columns,
)
from mome_edge.data.stream_source import (
    DEFAULT_CHUNK_ROWS,
    TRAIN,
    VALIDATION,
    RawChunk,
    SourceFile,
    StreamSource,
    iter_raw_chunks,
    stream_source,
)
from mome_edge.data.stream_stats import (
    FieldReport,
    RunningMoments,
    VocabularyCounter,
    counter_capacity,
    fit_spec,
)
from mome_edge.encoding import OOV_ID, FeatureSpec, NumericalScaler
from mome_edge.errors import ConfigError, DataError

DEFAULT_SHARD_ROWS = 262_144
DEFAULT_ROW_GROUP_ROWS = 16_384

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_ROW_GROUP_ROWS",
    "DEFAULT_SHARD_ROWS",
    "DEFAULT_SHUFFLE_BUFFER",
    "PreparedDataset",
    "PreparedInfo",
    "ShardInfo",
    "StreamSource",
    "prepare_dataset",
    "stream_source",
]


@dataclass(frozen=True, kw_only=True)
class PreparedInfo:
    """What ``prepare_dataset`` wrote: the spec, rows and shards per split, and how long it took."""

    path: Path
    spec: FeatureSpec
    rows: Mapping[str, int]
    shards: Mapping[str, tuple[ShardInfo, ...]]
    fields: tuple[FieldReport, ...]
    source: Mapping[str, Any]
    seconds: float

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def rows_per_second(self) -> float:
        """Source rows per second of the whole preparation (both passes, writing included)."""
        return self.total_rows / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (what ``mome-edge prepare --json`` prints)."""
        return {
            "out": str(self.path),
            "dataset": self.spec.dataset,
            "tasks": list(self.spec.tasks),
            "rows": dict(self.rows),
            "shards": {split: len(self.shards[split]) for split in SPLITS},
            "vocab_sizes": {c.name: c.size for c in self.spec.categorical},
            "vocabulary": {f.name: f.to_json() for f in self.fields},
            "numerical": len(self.spec.numerical),
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
        }


def prepare_dataset(
    source: StreamSource,
    out_dir: str | Path,
    *,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    max_vocab: int | None = None,
    seed: int = 0,
    validation_fraction: float | None = None,
    log1p: Collection[str] = (),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    overwrite: bool = False,
    progress: bool = True,
) -> PreparedInfo:
    """Convert a (large) source into encoded Parquet shards and ``prepared.json`` in ``out_dir``.

    Args:
        source: from ``stream_source("aliexpress", data_dir=...)`` or ``stream_source(spec_path=...)``.
        shard_rows: rows per Parquet shard (the last shard of a split holds the rest).
        row_group_rows: rows per row group, the unit of shuffling and of rank sharding.
        max_vocab: keep at most this many values per categorical field (the most frequent;
            ties by text); None keeps every value seen in the training rows.
        seed: split seed; a spec's own ``[split] seed`` wins, as in ``load_dataset``.
        validation_fraction: AliExpress only: share of the training file held out (default 0.1).
            User specs take their fractions from the spec.
        log1p: numerical columns standardised after sign(x) * log1p(|x|).
        chunk_rows: rows parsed at a time (about; CSV chunks are sized in bytes).
        overwrite: replace an existing preparation in ``out_dir``.
        progress: rich progress bars on stderr.
    Returns:
        PreparedInfo; ``PreparedDataset(out_dir)`` reads the result.
    Raises:
        ConfigError: a bad argument, or ``out_dir`` already prepared without ``overwrite``.
        DataError: unreadable or malformed data, an empty split, an unlearnable task.
    """
    started = time.perf_counter()
    for name, value in (("shard_rows", shard_rows), ("row_group_rows", row_group_rows), ("chunk_rows", chunk_rows)):
        _check_positive(name, value)
    if max_vocab is not None:
        _check_positive("max_vocab", max_vocab)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be a non-negative integer")
    if validation_fraction is not None:
        if source.layout != "aliexpress":
            raise ConfigError(
                "validation_fraction applies to the AliExpress layout only; a spec sets its fractions in [split]"
            )
        source = dataclasses.replace(source, validation=validation_fraction)
    log1p = tuple(log1p)
    unknown = sorted(set(log1p) - set(source.numerical))
    if unknown:
        raise ConfigError(f"log1p columns {unknown} are not numerical columns of {source.dataset}; list numerical columns only")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; choose a folder for the prepared data set")
    if (out / MANIFEST).exists() and not overwrite:
        raise ConfigError(
            f"{str(out)!r} already holds a prepared data set ({MANIFEST}); pass --overwrite to replace it, "
            "or choose another --out"
        )
    split_seed = int(source.seed if source.seed is not None else seed)
    row_group_rows = min(row_group_rows, shard_rows)

    with _progress_bars(progress) as bars:
        spec, fields, counts = _fit(source, seed=split_seed, max_vocab=max_vocab, log1p=log1p, chunk_rows=chunk_rows, bars=bars)
        out.mkdir(parents=True, exist_ok=True)
        if overwrite:
            (out / MANIFEST).unlink(missing_ok=True)  # from here on the folder is an incomplete preparation
        writers = {
            split: _ShardWriter(out, split, spec, shard_rows=shard_rows, row_group_rows=row_group_rows)
            for split in SPLITS
        }
        try:
            positives = _encode(source, spec, writers, seed=split_seed, chunk_rows=chunk_rows, bars=bars)
            shards = {split: writers[split].close() for split in SPLITS}
            rows = {split: sum(s.rows for s in shards[split]) for split in SPLITS}
            empty = [split for split in SPLITS if rows[split] == 0]
            if empty:
                raise DataError(
                    f"the {' and '.join(empty)} split of {source.dataset} got no row ({rows}); use more rows or "
                    "larger split fractions"
                )
            if rows["train"] != counts[TRAIN] or rows["validation"] != counts[VALIDATION]:
                raise DataError(f"{source.dataset} changed while it was being prepared; prepare it again")
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
    _fsync_folder(out)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_by": f"mome-edge {_version()}",
        "tasks": list(spec.tasks),
        "columns": {
            "categorical": categorical_columns(len(spec.categorical)),
            "numerical": numerical_columns(len(spec.numerical)),
            "labels": label_columns(len(spec.tasks)),
        },
        "rows": rows,
        "shards": {split: [s.to_json() for s in shards[split]] for split in SPLITS},
        "source": source.describe(),
        "settings": {
            "seed": split_seed,
            "validation_fraction": source.validation,
            "test_fraction": source.test,
            "max_vocab": max_vocab,
            "shard_rows": shard_rows,
            "row_group_rows": row_group_rows,
            "log1p": list(log1p),
        },
        "vocabulary": {f.name: f.to_json() for f in fields},
        "positive_rates": {
            split: {task: positives[split][t] / rows[split] for t, task in enumerate(spec.tasks)} for split in SPLITS
        },
        "feature_spec": spec.to_json(),
    }
    atomic_write_json(out / MANIFEST, manifest)  # last: its presence marks a complete preparation
    return PreparedInfo(
        path=out, spec=spec, rows=rows, shards=shards, fields=fields, source=manifest["source"],
        seconds=time.perf_counter() - started,
    )


def fit_streaming_spec(
    source: StreamSource,
    *,
    seed: int = 0,
    max_vocab: int | None = None,
    log1p: Collection[str] = (),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: bool = False,
) -> tuple[FeatureSpec, tuple[FieldReport, ...]]:
    """Only the statistics pass of ``prepare_dataset``: the FeatureSpec of the source's training rows."""
    split_seed = int(source.seed if source.seed is not None else seed)
    with _progress_bars(progress) as bars:
        spec, fields, _ = _fit(source, seed=split_seed, max_vocab=max_vocab, log1p=tuple(log1p), chunk_rows=chunk_rows, bars=bars)
    return spec, fields


# --- pass 1: statistics -----------------------------------------------------------------------


def _fit(
    source: StreamSource,
    *,
    seed: int,
    max_vocab: int | None,
    log1p: tuple[str, ...],
    chunk_rows: int,
    bars: "_Bars",
) -> tuple[FeatureSpec, tuple[FieldReport, ...], list[int]]:
    capacity = counter_capacity(max_vocab)
    counters = [VocabularyCounter(name, capacity=capacity) for name in source.categorical]
    moments = RunningMoments(len(source.numerical))
    transforms = [NumericalScaler(name=n, mean=0.0, std=1.0, log1p=n in log1p) for n in source.numerical]
    any_log = any(t.log1p for t in transforms)
    counts = [0, 0, 0]  # rows per split seen in this pass (test only for "all" files)
    positives = np.zeros(len(source.tasks), dtype=np.int64)
    for file in source.files:
        if file.role == "test":
            continue
        for chunk in _chunks(source, file, seed=seed, chunk_rows=chunk_rows, bars=bars, verb="statistics"):
            for code, n in enumerate(np.bincount(chunk.split, minlength=3)):
                counts[code] += int(n)
            train = chunk.take(np.flatnonzero(chunk.split == TRAIN))
            if not len(train):
                continue
            for counter, column in zip(counters, train.categorical):
                counter.add(column)
            values = train.numerical
            if any_log:
                values = np.column_stack([t.transform(values[:, j]) for j, t in enumerate(transforms)])
            moments.add(values)
            positives += (train.labels > 0.5).sum(axis=0)
    if counts[TRAIN] == 0:
        raise DataError(f"{source.dataset} has no training row; check the files and the split fractions")
    for t, task in enumerate(source.tasks):
        if positives[t] == 0 or positives[t] == counts[TRAIN]:
            which = "positive" if positives[t] == 0 else "negative"
            raise DataError(
                f"task {task!r} has no {which} row among the {counts[TRAIN]} training rows, so it "
                "cannot be learned; check its label definition or load more rows"
            )
    spec, fields = fit_spec(
        dataset=source.dataset, counters=counters, moments=moments, numerical=source.numerical, log1p=log1p,
        tasks=source.tasks, label_sources=source.label_sources, max_vocab=max_vocab,
    )
    return spec, fields, counts


# --- pass 2: encoding ---------------------------------------------------------------------------


def encode_chunk(spec: FeatureSpec, chunk: RawChunk) -> tuple[np.ndarray, np.ndarray]:
    """(int64 [n, F] ids, float32 [n, D] scaled numericals) of a parsed chunk, with the spec's encoders."""
    n = len(chunk)
    cat = np.empty((n, len(spec.categorical)), dtype=np.int64)  # (n, F)
    for j, (encoder, column) in enumerate(zip(spec.categorical, chunk.categorical)):
        ids = encoder.encode(column.tokens) if column.tokens else np.zeros(0, dtype=np.int64)
        lookup = np.append(ids, OOV_ID).astype(np.int64)  # code -1 (null) picks the trailing OOV
        cat[:, j] = lookup[column.codes]
    num = np.empty((n, len(spec.numerical)), dtype=np.float32)  # (n, D)
    for j, scaler in enumerate(spec.numerical):
        num[:, j] = scaler.scale(chunk.numerical[:, j])
    return cat, num


def _encode(
    source: StreamSource,
    spec: FeatureSpec,
    writers: Mapping[str, "_ShardWriter"],
    *,
    seed: int,
    chunk_rows: int,
    bars: "_Bars",
) -> dict[str, np.ndarray]:
    positives = {split: np.zeros(len(spec.tasks), dtype=np.int64) for split in SPLITS}
    for file in source.files:
        for chunk in _chunks(source, file, seed=seed, chunk_rows=chunk_rows, bars=bars, verb="encoding"):
            cat, num = encode_chunk(spec, chunk)
            for code, split in enumerate(SPLITS):
                rows = np.flatnonzero(chunk.split == code)
                if len(rows) == len(chunk):
                    writers[split].add(cat, num, chunk.labels)
                elif len(rows):
                    writers[split].add(cat[rows], num[rows], chunk.labels[rows])
                positives[split] += (chunk.labels[rows] > 0.5).sum(axis=0)
    return {split: positives[split].tolist() for split in SPLITS}  # type: ignore[misc]


def _chunks(
    source: StreamSource, file: SourceFile, *, seed: int, chunk_rows: int, bars: "_Bars", verb: str
) -> Iterator[RawChunk]:
    unit = "rows" if file.is_parquet else "bytes"
    with bars.task(f"{verb} {file.path.name}", unit) as update:
        rows = 0
        for chunk in iter_raw_chunks(source, file, seed=seed, chunk_rows=chunk_rows, on_progress=update.position):
            rows += len(chunk)
            update.rows(rows)
            yield chunk


class _ShardWriter:
    """Encoded rows of one split -> part-NNNNN.parquet files (temp + fsync + rename each)."""

    def __init__(self, out: Path, split: str, spec: FeatureSpec, *, shard_rows: int, row_group_rows: int) -> None:
        import pyarrow as pa

        self.folder = out / split
        self.split = split
        self.shard_rows = shard_rows
        self.row_group_rows = row_group_rows
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in [*self.folder.glob("part-*.parquet"), *self.folder.glob(".part-*.parquet.tmp")]:
            stale.unlink()  # leftovers of an overwritten or interrupted preparation
        self.names = (
            categorical_columns(len(spec.categorical)),
            numerical_columns(len(spec.numerical)),
            label_columns(len(spec.tasks)),
        )
        types = (pa.int64(), pa.float32(), pa.float32())
        self.schema = pa.schema([pa.field(n, t, nullable=False) for names, t in zip(self.names, types) for n in names])
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.pending_rows = 0
        self.writer: Any = None
        self.shard_rows_written = 0
        self.row_groups: list[int] = []
        self.shards: list[ShardInfo] = []
        self.written: list[Path] = []

    def add(self, cat: np.ndarray, num: np.ndarray, labels: np.ndarray) -> None:
        self.pending.append((cat, num, labels))
        self.pending_rows += len(labels)
        while self.pending_rows >= self._target():
            self._write_group(self._target())

    def close(self) -> tuple[ShardInfo, ...]:
        if self.pending_rows:
            self._write_group(self.pending_rows)
        if self.writer is not None:
            self._finish_shard()
        return tuple(self.shards)

    def abort(self) -> None:
        """Remove what this writer wrote (the preparation failed)."""
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - best effort while an error propagates
                pass
            self.writer = None
        for path in [*self.written, self._tmp_path()]:
            path.unlink(missing_ok=True)

    def _target(self) -> int:
        return min(self.row_group_rows, self.shard_rows - self.shard_rows_written)

    def _write_group(self, n: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cat, num, labels = (np.concatenate([p[i] for p in self.pending]) for i in range(3))
        rest = (cat[n:], num[n:], labels[n:])
        self.pending = [rest] if len(rest[2]) else []
        self.pending_rows = len(rest[2])
        columns = [pa.array(cat[:n, j]) for j in range(cat.shape[1])]
        columns += [pa.array(num[:n, j]) for j in range(num.shape[1])]
        columns += [pa.array(labels[:n, t]) for t in range(labels.shape[1])]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        if self.writer is None:
            self.writer = pq.ParquetWriter(
                self._tmp_path(), self.schema, compression="snappy", use_dictionary=[*self.names[0], *self.names[2]],
                write_statistics=False,
            )
        self.writer.write_table(table, row_group_size=n)
        self.row_groups.append(n)
        self.shard_rows_written += n
        if self.shard_rows_written >= self.shard_rows:
            self._finish_shard()

    def _finish_shard(self) -> None:
        self.writer.close()
        self.writer = None
        tmp = self._tmp_path()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.folder / _shard_name(len(self.shards))
        os.replace(tmp, final)
        self.written.append(final)
        self.shards.append(
            ShardInfo(path=f"{self.split}/{final.name}", rows=self.shard_rows_written, row_groups=tuple(self.row_groups))
        )
        self.shard_rows_written = 0
        self.row_groups = []

    def _tmp_path(self) -> Path:
        return self.folder / f".{_shard_name(len(self.shards))}.tmp"


def _shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


# --- progress bars --------------------------------------------------------------------------


class _Update:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task
        self.total: int | None = None

    def position(self, done: int, total: int) -> None:
        self.total = total
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)

    def rows(self, rows: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, rows=rows)


class _Bars:
    def __init__(self, progress: Any) -> None:
        self._progress = progress

    @contextmanager
    def task(self, description: str, unit: str) -> Iterator[_Update]:
        if self._progress is None:
            yield _Update(None, None)
            return
        update = _Update(self._progress, self._progress.add_task(description, total=None, rows=0, unit=unit))
        try:
            yield update
        finally:
            if update.total is not None:  # CSV readers read ahead: show the file as done
                self._progress.update(update._task, completed=update.total)


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[_Bars]:
    if not enabled:
        yield _Bars(None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with progress:
        yield _Bars(progress)


# --- helpers ---------------------------------------------------------------------------------


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name}={value!r} must be a positive integer")


def _fsync_folder(out: Path) -> None:
    for folder in (out, *(out / s for s in SPLITS)):
        fsync_folder(folder)


def _version() -> str:
    from mome_edge import __version__

    return __version__

