"""A user's own tabular data, described by a small TOML spec.

Example::

    [data]
    path = "rows.csv"              # relative to the spec file; .csv, .csv.gz or .parquet
    name = "my-data"               # optional; default: the spec file's stem
    format = "csv"                 # optional; needed for other names (.data, .txt, .tsv): csv or parquet
    separator = "\t"               # optional; CSV only, one character (default ",")
    [features]
    categorical = ["workclass"]
    numerical = ["age"]
    [tasks.income]
    column = "Salary"
    positive = [">50K"]            # 1 where the stripped value is one of these
    [tasks.old]
    column = "age_next_year"
    threshold = 65                 # or: 1 where the numeric value is >= threshold
    [split]                        # optional
    validation = 0.2
    test = 0.2
    seed = 7                       # optional; when given it wins over load_dataset(seed=...)

Values are stripped of surrounding whitespace; empty, ``?`` and NaN are missing
(categorical -> OOV id 0, numerical -> training mean). A missing label is an error.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from mome_edge.data.frames import build_splits, column_floats, positive_label
from mome_edge.data.splits import SplitFractions, split_indices
from mome_edge.data.types import DataSplits
from mome_edge.encoding import normalise_token
from mome_edge.errors import DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz", ".parquet")
FILE_FORMATS: tuple[str, ...] = ("csv", "parquet")
_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"data", "features", "tasks", "split"}),
    "data": frozenset({"path", "name", "format", "separator"}),
    "features": frozenset({"categorical", "numerical"}),
    "task": frozenset({"column", "positive", "threshold"}),
    "split": frozenset({"validation", "test", "seed"}),
}


@dataclass(frozen=True, kw_only=True)
class TaskSource:
    """How one task's 0/1 label is computed from a column: ``positive`` values or ``threshold``."""

    name: str
    column: str
    positive: tuple[str, ...] | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if (self.positive is None) == (self.threshold is None):
            raise DataError(
                f"task {self.name!r} must set exactly one of 'positive' (list of values) or 'threshold' "
                "(number); set one and remove the other"
            )
        if self.positive is not None and not self.positive:
            raise DataError(f"task {self.name!r} has an empty 'positive' list; list the values that mean 1")

    def label_source(self) -> dict:
        if self.positive is not None:
            return {"column": self.column, "positive": list(self.positive)}
        return {"column": self.column, "threshold": self.threshold, "rule": "value >= threshold"}


@dataclass(frozen=True, kw_only=True)
class UserDataSpec:
    """A parsed and checked TOML data spec."""

    name: str
    path: Path
    categorical: tuple[str, ...]
    numerical: tuple[str, ...]
    tasks: tuple[TaskSource, ...]
    split: SplitFractions = SplitFractions()
    seed: int | None = None
    file_format: str = "csv"  # csv (optionally gzip-compressed, by a .gz name) or parquet
    separator: str = ","

    def __post_init__(self) -> None:
        if self.file_format not in FILE_FORMATS:
            raise DataError(f"[data] format {self.file_format!r} is unknown; use one of {list(FILE_FORMATS)}")
        if not self.tasks:
            raise DataError("the spec defines no task; add a [tasks.<name>] table with column and positive/threshold")
        if not (self.categorical or self.numerical):
            raise DataError("the spec lists no feature; add [features] categorical = [...] and/or numerical = [...]")
        features = [*self.categorical, *self.numerical]
        repeated = sorted({f for f in features if features.count(f) > 1})
        if repeated:
            raise DataError(f"features {repeated} are listed more than once; list each column once")
        leaking = sorted({t.column for t in self.tasks} & set(features))
        if leaking:
            raise DataError(
                f"label columns {leaking} are also listed as features, which leaks the label into the "
                "inputs; remove them from [features]"
            )

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the spec reads, each once."""
        return tuple(dict.fromkeys([*self.categorical, *self.numerical, *(t.column for t in self.tasks)]))


def read_user_spec(spec_path: str | Path) -> UserDataSpec:
    """Parse and check a TOML data spec (no data is read)."""
    spec_path = Path(spec_path).expanduser()
    if not spec_path.is_file():
        raise DataError(f"data spec {str(spec_path)!r} does not exist; check the --spec path")
    try:
        raw = tomllib.loads(spec_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"data spec {str(spec_path)!r} is not valid TOML ({exc}); fix the syntax") from exc
    _check_keys(raw, "", "the spec")
    data = _table(raw, "data", required=True)
    _check_keys(data, "data", "[data]")
    if not isinstance(data.get("path"), str) or not data["path"].strip():
        raise DataError("[data] needs path = \"rows.csv\" (a .csv, .csv.gz or .parquet file, relative to the spec)")
    path = (spec_path.parent / data["path"]).expanduser()
    features = _table(raw, "features", required=True)
    _check_keys(features, "features", "[features]")
    tasks_table = _table(raw, "tasks", required=True)
    tasks = []
    for task_name, task in tasks_table.items():
        if not isinstance(task, Mapping):
            raise DataError(
                f"tasks.{task_name} must be a table ([tasks.{task_name}]) with column and positive/threshold"
            )
        _check_keys(task, "task", f"[tasks.{task_name}]")
        if not isinstance(task.get("column"), str):
            raise DataError(f"[tasks.{task_name}] needs column = \"<label column name>\"")
        positive = task.get("positive")
        if positive is not None and (
            not isinstance(positive, list) or not all(isinstance(v, (str, int, float, bool)) for v in positive)
        ):
            raise DataError(f"[tasks.{task_name}] positive must be a list of values, e.g. positive = [\">50K\"]")
        threshold = task.get("threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise DataError(f"[tasks.{task_name}] threshold must be a number, e.g. threshold = 0.5")
        if positive is not None:
            # the encoders' token rule, so positive = [1] and [1.0] both match a cell "1"
            tokens = [normalise_token(v) for v in positive]
            if None in tokens:
                raise DataError(
                    f"[tasks.{task_name}] positive lists a missing-value marker (empty, '?', 'nan', ...); "
                    "list real values only"
                )
            positive = tokens
        tasks.append(
            TaskSource(
                name=str(task_name),
                column=task["column"],
                positive=None if positive is None else tuple(positive),
                threshold=None if threshold is None else float(threshold),
            )
        )
    split = _table(raw, "split", required=False)
    _check_keys(split, "split", "[split]")
    seed = split.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise DataError(f"[split] seed must be an integer, got {seed!r}")
    name = data.get("name", spec_path.stem)
    if not isinstance(name, str) or not name.strip():
        raise DataError("[data] name must be a non-empty string")
    file_format, separator = _file_format(data, path)
    return UserDataSpec(
        name=name.strip(),
        path=path,
        categorical=_names(features, "categorical"),
        numerical=_names(features, "numerical"),
        tasks=tuple(tasks),
        split=SplitFractions(validation=split.get("validation", 0.2), test=split.get("test", 0.2)),
        seed=seed,
        file_format=file_format,
        separator=separator,
    )


def _file_format(data: Mapping[str, Any], path: Path) -> tuple[str, str]:
    """(format, separator) from [data] format/separator, or from the file name (.csv, .csv.gz, .parquet)."""
    given = data.get("format")
    if given is not None and given not in FILE_FORMATS:
        raise DataError(f"[data] format {given!r} is unknown; use one of {list(FILE_FORMATS)}")
    named = "parquet" if path.name.lower().endswith(".parquet") else "csv" if path.name.lower().endswith((".csv", ".csv.gz")) else None
    file_format = given or named
    if file_format is None:
        raise DataError(
            f"data file {str(path)!r} has an unsupported extension; name it {' / '.join(SUFFIXES)}, or say what it holds "
            "in [data]: format = \"csv\" (and separator = \"\\t\" for tab-separated values)"
        )
    separator = data.get("separator", ",")
    if not isinstance(separator, str) or len(separator) != 1 or separator in "\"\r\n":
        raise DataError(f"[data] separator {separator!r} must be one character (not a quote or line break), e.g. separator = \";\"")
    if file_format == "parquet" and "separator" in data:
        raise DataError("[data] separator applies to CSV files only; remove it for a Parquet file")
    return file_format, separator


def read_user_rows(spec: UserDataSpec, *, max_rows: int | None = None) -> pd.DataFrame:
    """The columns the spec needs, from its CSV or Parquet file, at most ``max_rows`` rows."""
    path = spec.path
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist; fix [data] path (it is relative to the spec file)")
    parquet = spec.file_format == "parquet"
    try:
        if parquet:
            import pyarrow.parquet as pq

            available = pq.read_schema(path).names
        else:
            available = list(pd.read_csv(path, nrows=0, sep=spec.separator).columns.str.strip())
    except Exception as exc:  # pyarrow and pandas raise many kinds on a corrupt file
        raise _unreadable(path, exc) from exc
    missing = [c for c in spec.columns if c not in available]
    if missing:
        raise DataError(
            f"data file {str(path)!r} lacks the columns {missing} named in the spec; its columns are "
            f"{available[:50]}; fix the names in the spec"
        )
    try:
        if parquet:
            frame = pd.read_parquet(path, columns=list(spec.columns))
            if max_rows is not None:
                frame = frame.head(max_rows)
        else:
            # categorical and label columns stay text, so "007" and "7" stay distinct categories
            text_columns = [*spec.categorical, *(t.column for t in spec.tasks if t.positive is not None)]
            frame = pd.read_csv(
                path,
                nrows=max_rows,
                sep=spec.separator,
                skipinitialspace=True,
                dtype={c: str for c in text_columns},
            )
            frame.columns = frame.columns.str.strip()
            frame = frame[list(spec.columns)]
    except DataError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    return frame


def user_labels(spec: UserDataSpec, frame: pd.DataFrame) -> np.ndarray:
    """float32 [N, T] labels of the spec's tasks; DataError on missing or non-numeric labels."""
    labels = np.zeros((len(frame), len(spec.tasks)), dtype=np.float32)  # (N, T)
    for t, task in enumerate(spec.tasks):
        if task.positive is not None:
            labels[:, t], missing = positive_label(frame[task.column], task.positive)
        else:
            values = column_floats(frame[task.column])
            missing = ~np.isfinite(values)
            labels[:, t] = np.where(missing, 0.0, values >= task.threshold)
        if missing.any():
            first = int(np.flatnonzero(missing)[0])
            raise DataError(
                f"task {task.name!r}: {int(missing.sum())} rows have a missing or non-numeric value in label "
                f"column {task.column!r} (first at data row {first}); fill or drop those rows"
            )
    return labels


def load_user_spec(spec_path: str | Path, *, seed: int = 0, max_rows: int | None = None) -> DataSplits:
    """The data set a TOML spec describes, as seeded DataSplits with train-fitted encoders."""
    spec = read_user_spec(spec_path)
    frame = read_user_rows(spec, max_rows=max_rows)
    return build_splits(
        frame,
        user_labels(spec, frame),
        split_indices(len(frame), fractions=spec.split, seed=spec.seed if spec.seed is not None else seed),
        dataset=spec.name,
        categorical=spec.categorical,
        numerical=spec.numerical,
        tasks=[t.name for t in spec.tasks],
        label_sources={t.name: t.label_source() for t in spec.tasks},
    )


def _check_keys(table: Mapping[str, Any], kind: str, where: str) -> None:
    unknown = sorted(set(table) - _KEYS[kind])
    if unknown:
        raise DataError(f"unknown keys {unknown} in {where}; allowed keys are {sorted(_KEYS[kind])}")


def _table(raw: Mapping[str, Any], key: str, *, required: bool) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        if required:
            raise DataError(f"the spec has no [{key}] table; add it (see the data spec format in the docs)")
        return {}
    if not isinstance(value, Mapping):
        raise DataError(f"'{key}' must be a table ([{key}]), got {type(value).__name__}")
    return value


def _names(features: Mapping[str, Any], key: str) -> tuple[str, ...]:
    names = features.get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise DataError(f"[features] {key} must be a list of column names, e.g. {key} = [\"age\"]")
    return tuple(n.strip() for n in names)


def _unreadable(path: Path, exc: Exception) -> DataError:
    return DataError(f"cannot read data file {str(path)!r} ({exc}); check that it is a valid {path.suffix} file")
