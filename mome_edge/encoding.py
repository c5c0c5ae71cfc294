"""Feature spec and encoders: raw rows -> (categorical ids, scaled numericals).

numpy only (no torch, no pandas): the device-side runtime encodes raw rows with exactly
this code, from the JSON that the trainer stored with the run and the compiler put into the
artifact. Id 0 of every categorical field is reserved for out-of-vocabulary and missing
values, so any unseen category maps to a trained embedding row instead of failing.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from mome_edge.errors import DataError

OOV_ID = 0
MISSING_TOKENS = frozenset({"", "?", "nan", "NaN", "NA", "None", "null"})
NUMERICAL_MISSING_POLICIES = ("mean", "error")
SPEC_SCHEMA_VERSION = 1


def normalise_token(value: Any) -> str | None:
    """The canonical string of a raw categorical value, or None when it is missing."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        # 3.0 read by pandas from a column with missing values is the category "3"
        value = int(value)
    text = str(value).strip()
    return None if text in MISSING_TOKENS else text


class _Record:
    """Immutable value objects with keyword-only construction, equality, hash and repr over
    `_fields` (what a frozen dataclass gives). Written out rather than generated: the
    dataclass decorator compiles its methods each time the module is imported, and the device
    runtime imports these three classes on every cold start (tests/runtime/test_cold_start.py)."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is immutable")

    def _values(self) -> tuple:
        return tuple(getattr(self, f) for f in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in self._fields)})"

    def replace(self, **changes: Any):
        """A copy with some fields changed (validated again)."""
        return type(self)(**{**{f: getattr(self, f) for f in self._fields}, **changes})

    # immutable: a copy is the object itself (as for tuples); reduce rebuilds through __init__
    def __copy__(self):
        return self

    def __deepcopy__(self, memo: dict):
        # a FeatureSpec's label_sources is a free-form (mutable) mapping: copied, as a dataclass would
        if getattr(self, "label_sources", None):
            import copy

            return self.replace(label_sources=copy.deepcopy(dict(self.label_sources), memo))
        return self

    def __reduce__(self):
        return _rebuild, (type(self), {f: getattr(self, f) for f in self._fields})


def _rebuild(cls: type, fields: dict[str, Any]):
    return cls(**fields)


class CategoricalEncoder(_Record):
    """One categorical field: value -> id (1..len(vocabulary)); anything else -> OOV_ID."""

    __slots__ = ("name", "vocabulary", "_index")
    _fields = ("name", "vocabulary")

    def __init__(self, *, name: str, vocabulary: tuple[str, ...]) -> None:
        set_field = object.__setattr__
        set_field(self, "name", name)
        set_field(self, "vocabulary", vocabulary)
        set_field(self, "_index", {v: i + 1 for i, v in enumerate(vocabulary)})

    @property
    def size(self) -> int:
        """Rows of the embedding table: the vocabulary plus the OOV row."""
        return len(self.vocabulary) + 1

    def encode(self, values: Iterable[Any]) -> np.ndarray:
        index = self._index
        ids = [index.get(normalise_token(v), OOV_ID) for v in values]  # type: ignore[arg-type]
        return np.asarray(ids, dtype=np.int64)

    def to_json(self) -> dict:
        return {"name": self.name, "vocabulary": list(self.vocabulary)}


class NumericalScaler(_Record):
    """One numerical field: (t(x) - mean) / std with training statistics; missing -> policy.

    t is the identity, or with ``log1p`` the signed log sign(x) * log1p(|x|) (equal to
    log1p for x >= 0), which tames heavy-tailed money columns; mean and std are statistics
    of t(x). Recording the transform here keeps the runtime in step with the trainer.
    missing: "mean" fills with the training mean (0 after scaling); "error" raises.
    """

    __slots__ = ("name", "mean", "std", "missing", "log1p")
    _fields = __slots__

    def __init__(self, *, name: str, mean: float, std: float, missing: str = "mean", log1p: bool = False) -> None:
        if missing not in NUMERICAL_MISSING_POLICIES:
            raise DataError(
                f"numerical field {name!r}: missing-value policy {missing!r} is not "
                f"supported; use one of {NUMERICAL_MISSING_POLICIES}"
            )
        if not (math.isfinite(std) and std > 0):
            raise DataError(f"numerical field {name!r}: std must be finite and > 0, got {std}")
        set_field = object.__setattr__
        for key, value in (("name", name), ("mean", mean), ("std", std), ("missing", missing), ("log1p", log1p)):
            set_field(self, key, value)

    def encode(self, values: Iterable[Any]) -> np.ndarray:
        return self.scale(np.asarray([_to_float(v) for v in values], dtype=np.float64))

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """t(x) of parsed floats (float64), before standardising; NaN stays NaN."""
        raw = np.asarray(raw, dtype=np.float64)
        return np.sign(raw) * np.log1p(np.abs(raw)) if self.log1p else raw

    def scale(self, raw: np.ndarray) -> np.ndarray:
        """Encode already-parsed floats (NaN or inf = missing), vectorised: float32 [N]."""
        raw = np.asarray(raw, dtype=np.float64)
        bad = ~np.isfinite(raw)
        if bad.any() and self.missing == "error":
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"numerical field {self.name!r} has a missing or non-finite value at row {row}; "
                "fill it, or train with the 'mean' missing-value policy"
            )
        x = np.array(self.transform(raw), dtype=np.float64)  # a copy: never write into the caller's array
        x[bad] = self.mean
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_json(self) -> dict:
        data = {"name": self.name, "mean": self.mean, "std": self.std, "missing": self.missing}
        if self.log1p:  # written only when set, so specs without it keep their exact JSON
            data["log1p"] = True
        return data


def parse_number(value: Any) -> float:
    """The float of one raw numerical value; NaN when it is missing or not a number."""
    return _to_float(value)


def _to_float(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    text = str(value).strip()
    if text in MISSING_TOKENS:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


class FeatureSpec(_Record):
    """Everything needed to turn raw rows into model inputs, and to name the outputs.

    label_sources: label definitions (column + positive values or threshold), kept for
    documentation and for encoding labelled raw files; free-form JSON.
    """

    __slots__ = ("dataset", "categorical", "numerical", "tasks", "label_sources")
    _fields = __slots__

    def __init__(self, *, dataset: str, categorical: tuple[CategoricalEncoder, ...], numerical: tuple[NumericalScaler, ...],
                 tasks: tuple[str, ...], label_sources: Mapping[str, Any] | None = None) -> None:
        if not tasks:
            raise DataError(f"data set {dataset!r} defines no task; add at least one task")
        names = [c.name for c in categorical] + [n.name for n in numerical]
        if not names:
            raise DataError(f"data set {dataset!r} has no feature; add categorical or numerical features")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"feature names must be unique, repeated: {dupes}")
        set_field = object.__setattr__
        for key, value in (("dataset", dataset), ("categorical", categorical), ("numerical", numerical), ("tasks", tasks),
                           ("label_sources", {} if label_sources is None else label_sources)):
            set_field(self, key, value)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.categorical)

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        return tuple(c.size for c in self.categorical)

    @property
    def numerical_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.numerical)

    def encode_columns(self, columns: Mapping[str, Sequence[Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Encode raw columns (name -> values, e.g. a DataFrame) into (int64 [N, F], float32 [N, D])."""
        missing = [n for n in (*self.field_names, *self.numerical_names) if n not in columns]
        if missing:
            raise DataError(
                f"input rows lack the feature columns {missing}; provide every column of the "
                f"model's spec (categorical {list(self.field_names)}, numerical {list(self.numerical_names)})"
            )
        n_rows = len(columns[(self.field_names or self.numerical_names)[0]])
        cat = np.zeros((n_rows, len(self.categorical)), dtype=np.int64)
        for j, enc in enumerate(self.categorical):
            cat[:, j] = enc.encode(columns[enc.name])
        num = np.zeros((n_rows, len(self.numerical)), dtype=np.float32)
        for j, scaler in enumerate(self.numerical):
            num[:, j] = scaler.encode(columns[scaler.name])
        return cat, num

    def encode_rows(self, rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Encode a list of dict rows; a missing key counts as a missing value, other keys are ignored."""
        names = (*self.field_names, *self.numerical_names)
        columns = {n: [row.get(n) for row in rows] for n in names}
        return self.encode_columns(columns)

    def check_row_keys(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """DataError when a row has a key that is neither a feature nor a label column.

        For the device API (`Predictor.predict_rows`), where rows are written by hand: a misspelled
        feature name would otherwise be read as a missing value, silently.
        """
        names = (*self.field_names, *self.numerical_names)
        known = set(names) | self.label_columns()
        for i, row in enumerate(rows):
            unknown = [key for key in row if key not in known]
            if unknown:
                raise DataError(
                    f"row {i} has keys the model does not read: {sorted(map(str, unknown))[:5]}; "
                    f"use the feature names {list(names)[:20]}{' ...' if len(names) > 20 else ''} (a key left out counts as missing)"
                )

    def label_columns(self) -> set[str]:
        """The raw columns the task labels are read from (rows may carry them; they are ignored)."""
        columns: set[str] = set()
        for source in self.label_sources.values():
            if isinstance(source, Mapping):
                columns.update(str(c) for c in ([source["column"]] if "column" in source else source.get("columns", [])))
        return columns

    def to_json(self) -> dict:
        return {
            "schema_version": SPEC_SCHEMA_VERSION,
            "dataset": self.dataset,
            "categorical": [c.to_json() for c in self.categorical],
            "numerical": [n.to_json() for n in self.numerical],
            "tasks": list(self.tasks),
            "label_sources": dict(self.label_sources),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FeatureSpec":
        try:
            version = data["schema_version"]
            if version != SPEC_SCHEMA_VERSION:
                raise DataError(
                    f"feature spec schema version {version} is not supported (this mome-edge reads "
                    f"{SPEC_SCHEMA_VERSION}); re-create the run or artifact with this version"
                )
            return cls(
                dataset=str(data["dataset"]),
                categorical=tuple(
                    CategoricalEncoder(name=str(c["name"]), vocabulary=tuple(str(v) for v in c["vocabulary"]))
                    for c in data["categorical"]
                ),
                numerical=tuple(
                    NumericalScaler(
                        name=str(n["name"]), mean=float(n["mean"]), std=float(n["std"]),
                        missing=str(n.get("missing", "mean")), log1p=bool(n.get("log1p", False)),
                    )
                    for n in data["numerical"]
                ),
                tasks=tuple(str(t) for t in data["tasks"]),
                label_sources=dict(data.get("label_sources", {})),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"feature spec JSON is malformed ({exc!r}); re-create it with mome-edge") from exc
