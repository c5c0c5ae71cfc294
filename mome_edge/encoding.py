"""Feature spec and encoders: raw rows -> (categorical ids, scaled numericals).

numpy only (no torch, no pandas): the device-side runtime encodes raw rows with exactly
this code, from the JSON that the trainer stored with the run and the compiler put into the
artifact. Id 0 of every categorical field is reserved for out-of-vocabulary and missing
values, so any unseen category maps to a trained embedding row instead of failing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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


@dataclass(frozen=True, kw_only=True)
class CategoricalEncoder:
    """One categorical field: value -> id (1..len(vocabulary)); anything else -> OOV_ID."""

    name: str
    vocabulary: tuple[str, ...]
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {v: i + 1 for i, v in enumerate(self.vocabulary)})

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


@dataclass(frozen=True, kw_only=True)
class NumericalScaler:
    """One numerical field: (t(x) - mean) / std with training statistics; missing -> policy.

    t is the identity, or with ``log1p`` the signed log sign(x) * log1p(|x|) (equal to
    log1p for x >= 0), which tames heavy-tailed money columns; mean and std are statistics
    of t(x). Recording the transform here keeps the runtime in step with the trainer.
    """

    name: str
    mean: float
    std: float
    missing: str = "mean"  # "mean": fill with the training mean (0 after scaling); "error": raise
    log1p: bool = False

    def __post_init__(self) -> None:
        if self.missing not in NUMERICAL_MISSING_POLICIES:
            raise DataError(
                f"numerical field {self.name!r}: missing-value policy {self.missing!r} is not "
                f"supported; use one of {NUMERICAL_MISSING_POLICIES}"
            )
        if not (math.isfinite(self.std) and self.std > 0):
            raise DataError(f"numerical field {self.name!r}: std must be finite and > 0, got {self.std}")

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


@dataclass(frozen=True, kw_only=True)
class FeatureSpec:
    """Everything needed to turn raw rows into model inputs, and to name the outputs."""

    dataset: str
    categorical: tuple[CategoricalEncoder, ...]
    numerical: tuple[NumericalScaler, ...]
    tasks: tuple[str, ...]
    # label definitions (column + positive values or threshold), kept for documentation and
    # for encoding labelled raw files; free-form JSON.
    label_sources: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise DataError(f"data set {self.dataset!r} defines no task; add at least one task")
        names = [c.name for c in self.categorical] + [n.name for n in self.numerical]
        if not names:
            raise DataError(f"data set {self.dataset!r} has no feature; add categorical or numerical features")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"feature names must be unique, repeated: {dupes}")

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
