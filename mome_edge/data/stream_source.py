"""Raw sources read in bounded chunks: the AliExpress layout and user TOML specs.

A ``StreamSource`` names the files and how their columns become features and labels; the
reader yields ``RawChunk``s of at most about ``chunk_rows`` rows, whatever the file size:

- CSV and CSV.gz through pyarrow's streaming CSV reader (``pyarrow.csv.open_csv``), the
  block size set from the file's measured bytes per row;
- Parquet through ``pyarrow.parquet.ParquetFile.iter_batches``.

Values follow the in-memory loaders' rules (``frames.py``), so a streamed preparation and
``load_dataset`` encode the same rows the same way:

- categorical and ``positive``-label columns are read as text; each chunk is
  dictionary-encoded and only its *distinct* values go through ``normalise_token`` (user
  specs) or ``aliexpress_token`` (AliExpress: ids, so ``"3"``, ``"03"`` and ``"3.0"`` are
  all the category ``"3"``, as pandas reads an all-numeric column);
- numerical and ``threshold``-label columns are parsed as float64 by pyarrow, with the
  missing tokens of pandas and of ``encoding.MISSING_TOKENS`` as NaN. A text that is no
  number (pandas: an object column, parsed per value by ``parse_number``) makes the reader
  restart the file once in text mode, where such values become NaN like in memory.

Split assignment is per row and needs no row count: row i of a file goes to validation when
``row_uniform(seed, i) < validation`` (and to test below ``validation + test`` for user specs),
with ``row_uniform`` a splitmix64 hash, so any chunking gives the same split.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from mome_edge.data import aliexpress
from mome_edge.data.paths import resolve_data_dir
from mome_edge.data.user_spec import SUFFIXES, TaskSource, read_user_spec
from mome_edge.encoding import MISSING_TOKENS, normalise_token, parse_number
from mome_edge.errors import ConfigError, DataError

LAYOUTS: tuple[str, ...] = ("aliexpress", "spec")

# role of a file: "train" rows are split into train/validation, "test" rows are all test,
# "all" rows are split into train/validation/test
ROLES: tuple[str, ...] = ("train", "test", "all")
TRAIN, VALIDATION, TEST = 0, 1, 2
DEFAULT_CHUNK_ROWS = 8_192
# what pandas reads as NaN by default, plus the encoders' missing tokens
NULL_TOKENS: tuple[str, ...] = tuple(
    sorted(
        set(MISSING_TOKENS)
        | {
            "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
            "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
        }
    )
)
_TEXT, _NUMBER = "text", "number"
# pyarrow's streaming CSV reader reads up to 32 blocks ahead in a background thread: small
# blocks keep that read-ahead small (32 MiB at most), and blocks are merged into chunks here.
_MIN_BLOCK_BYTES, _MAX_BLOCK_BYTES = 16 << 10, 1048576
_PROBE_BYTES = 1 << 20


@dataclass(frozen=True, kw_only=True)
class SourceFile:
    """One input file and which splits its rows go to (see ROLES)."""

    path: Path
    role: str
    file_format: str | None = None  # csv or parquet; None = by the file name
    separator: str = ","  # CSV only

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"source file role {self.role!r} is unknown; use one of {ROLES}")

    @property
    def is_parquet(self) -> bool:
        if self.file_format is not None:
            return self.file_format == "parquet"
        return self.path.name.lower().endswith(".parquet")


@dataclass(frozen=True, kw_only=True)
class StreamSource:
    """Files plus the column roles of a data set that is read in chunks.

    Build one with ``stream_source``. ``validation`` is the share of "train"/"all" rows that
    goes to validation; ``test`` the share of "all" rows that goes to test (None when the
    test rows come from their own file). ``seed`` is a split seed fixed by the source (a
    spec's ``[split] seed``), which wins over the seed given to ``prepare_dataset``.
    """

    dataset: str
    layout: str
    files: tuple[SourceFile, ...]
    categorical: tuple[str, ...]
    numerical: tuple[str, ...]
    tasks: tuple[str, ...]
    label_sources: Mapping[str, Any]
    task_rules: tuple[TaskSource, ...] = ()
    validation: float = aliexpress.VALIDATION_FRACTION
    test: float | None = None
    seed: int | None = None
    spec_file: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"source layout {self.layout!r} is unknown; use one of {LAYOUTS}")
        _check_fraction("validation fraction", self.validation)
        if self.test is not None:
            _check_fraction("test fraction", self.test)
            if self.validation + self.test >= 1.0:
                raise ConfigError(
                    f"validation {self.validation} + test {self.test} fractions leave no training rows; make their sum < 1"
                )

    @property
    def label_columns(self) -> tuple[str, ...]:
        if self.layout == "aliexpress":
            return aliexpress.LABEL_COLUMNS
        return tuple(dict.fromkeys(t.column for t in self.task_rules))

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Columns a file must have (the AliExpress layout also requires search_id, like the in-memory loader)."""
        if self.layout == "aliexpress":
            return aliexpress.COLUMNS
        return tuple(dict.fromkeys([*self.categorical, *self.numerical, *self.label_columns]))

    def column_kinds(self) -> dict[str, str]:
        """Columns to read -> "text" (categorical, positive labels) or "number"."""
        kinds = {name: _TEXT for name in self.categorical}
        kinds.update({name: _NUMBER for name in self.numerical})
        if self.layout == "aliexpress":
            kinds.update({name: _NUMBER for name in aliexpress.LABEL_COLUMNS})
        else:
            for task in self.task_rules:
                if task.positive is not None:
                    kinds[task.column] = _TEXT
                else:
                    kinds.setdefault(task.column, _NUMBER)
        return kinds

    def token(self, value: Any) -> str | None:
        """The category of one raw value of a categorical column of this source."""
        return aliexpress_token(value) if self.layout == "aliexpress" else normalise_token(value)

    def describe(self) -> dict[str, Any]:
        """JSON description without absolute paths (file names, sizes, fractions)."""
        files = []
        for f in self.files:
            size = f.path.stat().st_size if f.path.is_file() else None
            files.append({"name": f.path.name, "role": f.role, "bytes": size})
        out: dict[str, Any] = {"layout": self.layout, "dataset": self.dataset, "files": files}
        if self.spec_file is not None:
            out["spec_file"] = self.spec_file
        return out


@dataclass(frozen=True)
class TokenColumn:
    """A categorical column of one chunk: codes int64 [n] into ``tokens`` (-1 = null); a token None = missing."""

    codes: np.ndarray
    tokens: tuple[str | None, ...]

    def take(self, index: np.ndarray) -> "TokenColumn":
        return TokenColumn(self.codes[index], self.tokens)


@dataclass(frozen=True)
class RawChunk:
    """Parsed rows of one chunk, before fitting or encoding."""

    start: int  # row number in its file of the first row (0 = first data row)
    categorical: tuple[TokenColumn, ...]  # one per categorical field
    numerical: np.ndarray  # float64 [n, D], NaN = missing (not transformed)
    labels: np.ndarray  # float32 [n, T] in {0, 1}
    split: np.ndarray  # int8 [n]: TRAIN, VALIDATION or TEST

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: np.ndarray) -> "RawChunk":
        return RawChunk(
            self.start,
            tuple(c.take(index) for c in self.categorical),
            self.numerical[index],
            self.labels[index],
            self.split[index],
        )


def stream_source(
    name: str | None = None, *, spec_path: str | Path | None = None, data_dir: str | Path | None = None
) -> StreamSource:
    """The source of ``prepare_dataset``: ``name="aliexpress"`` (with ``data_dir``) or a TOML ``spec_path``.

    Raises:
        DataError: missing or ambiguous files, a malformed spec.
        ConfigError: both or neither of name and spec_path, or a data set that cannot be streamed.
    """
    if (name is None) == (spec_path is None):
        raise ConfigError("give exactly one of a data set name (aliexpress) or a spec path (a TOML data spec)")
    if spec_path is not None:
        spec = read_user_spec(spec_path)  # checks the file's format (by name or [data] format)
        if not spec.path.is_file():
            raise DataError(f"data file {str(spec.path)!r} does not exist; fix [data] path (it is relative to the spec file)")
        return StreamSource(
            dataset=spec.name,
            layout="spec",
            files=(SourceFile(path=spec.path, role="all", file_format=spec.file_format, separator=spec.separator),),
            categorical=spec.categorical,
            numerical=spec.numerical,
            tasks=tuple(t.name for t in spec.tasks),
            label_sources={t.name: t.label_source() for t in spec.tasks},
            task_rules=spec.tasks,
            validation=float(spec.split.validation),
            test=float(spec.split.test),
            seed=spec.seed,
            spec_file=Path(spec_path).name,
        )
    if name != "aliexpress":
        raise ConfigError(
            f"data set {name!r} cannot be prepared for streaming; use aliexpress (processed train/test files) "
            "or describe your file with a TOML spec (--spec)"
        )
    train, test = find_aliexpress_sources(resolve_data_dir(data_dir, holds=aliexpress.HOLDS))
    return StreamSource(
        dataset=aliexpress.DATASET,
        layout="aliexpress",
        files=(SourceFile(path=train, role="train"), SourceFile(path=test, role="test")),
        categorical=aliexpress.CATEGORICAL,
        numerical=aliexpress.NUMERICAL,
        tasks=aliexpress.TASKS,
        label_sources=aliexpress.LABEL_SOURCES,
        validation=aliexpress.VALIDATION_FRACTION,
    )


def find_aliexpress_sources(data_dir: str | Path) -> tuple[Path, Path]:
    """(train, test) files (.csv, .csv.gz or .parquet), searched like ``aliexpress.find_aliexpress_files``."""
    return aliexpress.find_aliexpress_files(data_dir, suffixes=SUFFIXES)


def aliexpress_token(value: Any) -> str | None:
    """An AliExpress categorical value as its id: numbers in canonical form ("03", "3.0" -> "3")."""
    text = normalise_token(value)
    if text is None:
        return None
    try:
        return str(int(text))
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number.is_integer():
        return str(int(number))
    return str(number)


def row_uniforms(seed: int, start: int, n: int) -> np.ndarray:
    """float64 [n] in [0, 1): a fixed hash of (seed, row number) for rows start..start+n-1."""
    with np.errstate(over="ignore"):
        key = _splitmix64(np.array([seed], dtype=np.uint64))[0]
        rows = np.arange(start, start + n, dtype=np.uint64)
        bits = _splitmix64(rows ^ key)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def assign_splits(role: str, *, seed: int, start: int, n: int, validation: float, test: float | None) -> np.ndarray:
    """int8 [n] split codes (TRAIN, VALIDATION, TEST) of rows start..start+n-1 of a file with ``role``."""
    if role == "test":
        return np.full(n, TEST, dtype=np.int8)
    u = row_uniforms(seed, start, n)
    split = np.where(u < validation, VALIDATION, TRAIN).astype(np.int8)
    if role == "all":
        split[(u >= validation) & (u < validation + float(test or 0.0))] = TEST
    return split


def file_columns(source: StreamSource, file: SourceFile) -> dict[str, str]:
    """Spec/layout column name -> the column's name in the file; DataError naming missing columns."""
    path = file.path
    try:
        if file.is_parquet:
            import pyarrow.parquet as pq

            names = list(pq.read_schema(path).names)
        else:
            names = _csv_header(path, file.separator)
    except DataError:
        raise
    except Exception as exc:  # pyarrow, gzip and csv raise many kinds on a corrupt file
        raise _unreadable(path, exc) from exc
    strip = source.layout == "spec" and not file.is_parquet  # the in-memory loader strips CSV headers of specs
    found: dict[str, str] = {}
    for raw in names:
        found.setdefault(raw.strip() if strip else raw, raw)
    missing = [c for c in source.required_columns if c not in found]
    if missing:
        if source.layout == "aliexpress":
            raise DataError(
                f"AliExpress file {str(path)!r} lacks the columns {missing}; expected the processed layout "
                "search_id, categorical_1..16, numerical_1..63, click, conversion"
            )
        raise DataError(
            f"data file {str(path)!r} lacks the columns {missing} named in the spec; its columns are "
            f"{list(found)[:50]}; fix the names in the spec"
        )
    return {name: found[name] for name in source.column_kinds()}


def iter_raw_chunks(
    source: StreamSource,
    file: SourceFile,
    *,
    seed: int,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[RawChunk]:
    """Parsed chunks of one file, in file order, each with its rows' split codes.

    Args:
        seed: split seed (see ``assign_splits``).
        on_progress: called with (units done, units total) after each chunk; units are
            compressed bytes for CSV and rows for Parquet.
    Raises:
        DataError: unreadable file, missing columns, or bad labels (naming the data row).
    """
    columns = file_columns(source, file)
    kinds = source.column_kinds()
    batches = (
        _parquet_batches(file.path, columns, chunk_rows, on_progress)
        if file.is_parquet
        else _csv_batches(file.path, columns, kinds, chunk_rows, on_progress, separator=file.separator)
    )
    start = 0
    for batch in batches:
        n = batch.num_rows
        if n == 0:
            continue
        split = assign_splits(file.role, seed=seed, start=start, n=n, validation=source.validation, test=source.test)
        yield _parse(source, file, batch, columns, kinds, start, split)
        start += n


# --- reading --------------------------------------------------------------------------------


def _csv_header(path: Path, separator: str = ",") -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:  # type: ignore[operator]
        header = next(csv.reader(handle, delimiter=separator), None)
    if not header:
        raise DataError(f"data file {str(path)!r} is empty; it needs a header row and data rows")
    return header


def _block_bytes(path: Path, chunk_rows: int) -> int:
    """pyarrow block size: about ``chunk_rows`` rows (measured on the first MiB), at most _MAX_BLOCK_BYTES."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:  # type: ignore[operator]
            probe = handle.read(_PROBE_BYTES)
    except (OSError, EOFError) as exc:
        raise _unreadable(path, exc) from exc
    lines = max(1, probe.count(b"\n"))
    per_row = max(1.0, len(probe) / lines)
    return int(min(_MAX_BLOCK_BYTES, max(_MIN_BLOCK_BYTES, chunk_rows * per_row)))


class _CountingFile(io.RawIOBase):
    """A read-only file that counts the bytes read (for progress)."""

    def __init__(self, path: Path) -> None:
        self._handle = open(path, "rb")
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self._handle.readinto(buffer)
        self.bytes_read += n or 0
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self._handle.close()
        super().close()


def _csv_batches(
    path: Path,
    columns: Mapping[str, str],
    kinds: Mapping[str, str],
    chunk_rows: int,
    on_progress: Callable[[int, int], None] | None,
    *,
    separator: str = ",",
) -> Iterator[Any]:
    """RecordBatches (columns named as in the file) of a CSV file; restarts once in text mode (see module doc)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    total = path.stat().st_size
    block = _block_bytes(path, chunk_rows)
    done = 0
    numbers_as_text = False
    while True:
        raw = _CountingFile(path)
        skip = done  # rows already yielded by a fast-mode attempt
        try:
            stream = pa.PythonFile(raw, mode="r")
            if path.name.lower().endswith(".gz"):
                stream = pa.CompressedInputStream(stream, "gzip")
            types = {
                columns[name]: (pa.string() if kind == _TEXT or numbers_as_text else pa.float64())
                for name, kind in kinds.items()
            }
            reader = pa_csv.open_csv(
                stream,
                read_options=pa_csv.ReadOptions(block_size=block),
                parse_options=pa_csv.ParseOptions(delimiter=separator),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=list(dict.fromkeys(columns.values())),
                    column_types=types,
                    null_values=list(NULL_TOKENS),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            pending, pending_rows = [], 0
            for batch in reader:
                if skip:
                    if batch.num_rows <= skip:
                        skip -= batch.num_rows
                        continue
                    batch, skip = batch.slice(skip), 0
                pending.append(batch)
                pending_rows += batch.num_rows
                if pending_rows >= chunk_rows:
                    done += pending_rows
                    if on_progress is not None:
                        on_progress(min(raw.bytes_read, total), total)
                    yield _merge(pending)
                    pending, pending_rows = [], 0
            if pending_rows:
                done += pending_rows
                if on_progress is not None:
                    on_progress(total, total)
                yield _merge(pending)
            return
        except pa.ArrowInvalid as exc:
            if numbers_as_text or not _is_conversion_error(exc):
                raise _unreadable(path, exc) from exc
            numbers_as_text = True  # a numerical column holds text: parse such values as pandas would
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise _unreadable(path, exc) from exc
        finally:
            raw.close()


def _merge(batches: list[Any]) -> Any:
    """One RecordBatch of consecutive batches (each column one contiguous array)."""
    if len(batches) == 1:
        return batches[0]
    import pyarrow as pa

    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _is_conversion_error(exc: Exception) -> bool:
    return "conversion error" in str(exc).lower() or "cannot convert" in str(exc).lower()


def _parquet_batches(
    path: Path, columns: Mapping[str, str], chunk_rows: int, on_progress: Callable[[int, int], None] | None
) -> Iterator[Any]:
    import pyarrow.parquet as pq

    try:
        # pre_buffer=False: with pyarrow's default pre-buffering, iter_batches over a whole file
        # held on to what it had read (measured here: 1.9 GB of RSS after 4M AliExpress rows,
        # 5 GB for `prepare` on 11M rows); unbuffered it stays flat (about 300 MB)
        parquet = pq.ParquetFile(path, pre_buffer=False)
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    total = parquet.metadata.num_rows
    done = 0
    try:
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(dict.fromkeys(columns.values()))):
            done += batch.num_rows
            if on_progress is not None:
                on_progress(done, total)
            yield batch
    except DataError:
        raise
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    finally:
        parquet.close()


# --- parsing --------------------------------------------------------------------------------


def _parse(
    source: StreamSource,
    file: SourceFile,
    batch: Any,
    columns: Mapping[str, str],
    kinds: Mapping[str, str],
    start: int,
    split: np.ndarray,
) -> RawChunk:
    n = batch.num_rows
    text: dict[str, TokenColumn] = {}
    for name, kind in kinds.items():
        if kind == _TEXT:
            text[name] = _tokens(batch.column(columns[name]), source.token)
    num = np.empty((n, len(source.numerical)), dtype=np.float64)  # (n, D)
    for j, name in enumerate(source.numerical):
        num[:, j] = _floats(batch.column(columns[name]))
    if source.layout == "aliexpress":
        labels = _aliexpress_labels(batch, columns, file, start)
    else:
        labels = _spec_labels(source, batch, columns, text, start)
    return RawChunk(start, tuple(text[name] for name in source.categorical), num, labels, split)


def _tokens(array: Any, token: Callable[[Any], str | None]) -> TokenColumn:
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = array if pa.types.is_dictionary(array.type) else pc.dictionary_encode(array)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return TokenColumn(codes, tuple(token(v) for v in encoded.dictionary.to_pylist()))


def _floats(array: Any) -> np.ndarray:
    """float64 [n] of an arrow column; NaN where null or (text columns) not a number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind):
        array, kind = array.cast(kind.value_type), kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) or pa.types.is_decimal(kind):
        return pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        trimmed = pc.utf8_trim_whitespace(array)
        missing = pc.is_in(trimmed, value_set=pa.array(list(NULL_TOKENS), type=kind))
        cleaned = pc.if_else(missing, pa.scalar(None, kind), trimmed)
        try:
            return pc.cast(cleaned, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # some value is no number: parse each distinct value like the in-memory loader
    encoded = pc.dictionary_encode(array)
    values = np.array([parse_number(v) for v in encoded.dictionary.to_pylist()] + [math.nan], dtype=np.float64)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return values[codes]


def _aliexpress_labels(batch: Any, columns: Mapping[str, str], file: SourceFile, start: int) -> np.ndarray:
    parts = []
    for column in aliexpress.LABEL_COLUMNS:
        values = _floats(batch.column(columns[column]))
        bad = ~np.isin(values, (0.0, 1.0))
        if bad.any():
            row = start + int(np.flatnonzero(bad)[0])
            raise DataError(
                f"column {column!r} of {file.path.name} must hold only 0 and 1 (data row {row} does not); "
                "fix or drop the other rows"
            )
        parts.append(values)
    click, conversion = parts
    return np.stack([click, click * conversion], axis=1).astype(np.float32)  # (n, 2)


def _spec_labels(
    source: StreamSource, batch: Any, columns: Mapping[str, str], text: Mapping[str, TokenColumn], start: int
) -> np.ndarray:
    n = batch.num_rows
    labels = np.zeros((n, len(source.task_rules)), dtype=np.float32)  # (n, T)
    for t, task in enumerate(source.task_rules):
        if task.positive is not None:
            column = text[task.column]
            wanted = set(task.positive)
            hit = np.array([tok is not None and tok in wanted for tok in column.tokens] + [False])
            absent = np.array([tok is None for tok in column.tokens] + [True])
            labels[:, t], missing = hit[column.codes], absent[column.codes]
        else:
            if task.column in text:  # also a positive-label column: read as text, parse per value
                column = text[task.column]
                lookup = np.array([parse_number(tok) if tok is not None else math.nan for tok in column.tokens] + [math.nan])
                values = lookup[column.codes]
            else:
                values = _floats(batch.column(columns[task.column]))
            missing = ~np.isfinite(values)
            labels[:, t] = np.where(missing, 0.0, values >= task.threshold)
        if missing.any():
            first = start + int(np.flatnonzero(missing)[0])
            raise DataError(
                f"task {task.name!r}: a missing or non-numeric value in label column {task.column!r} at data row "
                f"{first} ({int(missing.sum())} such rows among data rows {start}..{start + n - 1}); fill or drop "
                "those rows"
            )
    return labels


# --- helpers --------------------------------------------------------------------------------


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _check_fraction(what: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ConfigError(f"{what} {value!r} must be a number in (0, 1), e.g. 0.1")


def _unreadable(path: Path, exc: BaseException) -> DataError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataError(f"cannot read data file {str(path)!r} ({detail}); check that it is a valid {_kind(path)} file")


def _kind(path: Path) -> str:
    name = path.name.lower()
    return ".csv.gz" if name.endswith(".csv.gz") else path.suffix or "data"

