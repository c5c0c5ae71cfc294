"""Vocabularies and numerical statistics built in one pass over chunks of training rows.

- ``VocabularyCounter``: exact per-value counts of one categorical field. With a vocabulary
  cap the field keeps its ``max_vocab`` most frequent values, ties broken by the value's
  text (ascending), and the vocabulary is then sorted like the in-memory loader's, so that
  without a cap both give the same ``CategoricalEncoder``. Memory grows with the number of
  *distinct* values, not rows; with a cap, a field whose distinct values exceed
  ``capacity`` is pruned to its ``capacity // 2`` most frequent values whenever it overflows
  (lossy counting: deterministic for a given file and chunking, exact for the values that
  are frequent enough to survive every pruning; ``exact`` reports whether it ever happened).
- ``RunningMoments``: count, mean and M2 of every numerical column, merged chunk by chunk
  with Chan et al.'s parallel update (float64), over finite values of t(x) where t is the
  scaler's transform (``log1p`` where configured), as ``frames.fit_numerical`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

import numpy as np

from mome_edge.data.stream_source import TokenColumn
from mome_edge.encoding import CategoricalEncoder, FeatureSpec, NumericalScaler
from mome_edge.errors import ConfigError, DataError

DEFAULT_CAPACITY_FACTOR = 10  # with a cap, count up to 10 x max_vocab distinct values ...
MIN_CAPACITY = 1_000_000  # ... but never fewer than a million before pruning


class VocabularyCounter:
    """Counts of the values of one categorical field over the rows it is shown."""

    def __init__(self, name: str, *, capacity: int | None = None) -> None:
        if capacity is not None and capacity < 2:
            raise ConfigError(f"vocabulary counter capacity {capacity} must be >= 2 (or None for exact counts)")
        self.name = name
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        self.rows = 0
        self.missing_rows = 0
        self.pruned = False

    @property
    def exact(self) -> bool:
        return not self.pruned

    @property
    def distinct(self) -> int:
        return len(self.counts)

    def add(self, column: TokenColumn) -> None:
        """Count the values of one chunk's column."""
        codes = column.codes
        self.rows += len(codes)
        present = codes[codes >= 0]
        self.missing_rows += len(codes) - len(present)
        per_code = np.bincount(present, minlength=len(column.tokens))
        counts = self.counts
        for code in np.flatnonzero(per_code):
            token = column.tokens[code]
            c = int(per_code[code])
            if token is None:
                self.missing_rows += c
            else:
                counts[token] = counts.get(token, 0) + c
        if self.capacity is not None and len(counts) > self.capacity:
            self._prune(self.capacity // 2)

    def top(self, k: int | None) -> list[str]:
        """The k most frequent values (all values when k is None), ties by text, in rank order."""
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        if k is not None:
            ranked = ranked[:k]
        return [token for token, _ in ranked]

    def vocabulary(self, max_vocab: int | None) -> tuple[str, ...]:
        """The encoder's vocabulary: the kept values, sorted like the in-memory loader's."""
        return tuple(sorted(self.counts if max_vocab is None else self.top(max_vocab)))

    def oov_rows(self, vocabulary: Collection[str]) -> int:
        """Counted rows that encode to the OOV id (missing or not in ``vocabulary``)."""
        kept = sum(self.counts.get(v, 0) for v in vocabulary)
        return self.rows - kept

    def _prune(self, keep: int) -> None:
        self.counts = {token: self.counts[token] for token in self.top(keep)}
        self.pruned = True


class RunningMoments:
    """Count, mean and M2 of D columns over finite values, merged chunk by chunk (Chan et al.)."""

    def __init__(self, width: int) -> None:
        self.count = np.zeros(width, dtype=np.int64)
        self.mean = np.zeros(width, dtype=np.float64)
        self.m2 = np.zeros(width, dtype=np.float64)

    def add(self, values: np.ndarray) -> None:
        """Fold in a float64 [n, D] chunk; non-finite entries are ignored."""
        finite = np.isfinite(values)  # (n, D)
        n_b = finite.sum(axis=0)  # (D,)
        if not n_b.any():
            return
        x = np.where(finite, values, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_b = np.where(n_b > 0, x.sum(axis=0) / np.maximum(n_b, 1), 0.0)
        m2_b = np.where(finite, (x - mean_b) ** 2, 0.0).sum(axis=0)
        n_a = self.count
        n = n_a + n_b
        safe_n = np.maximum(n, 1).astype(np.float64)
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / safe_n)
        self.m2 = self.m2 + m2_b + delta**2 * (n_a.astype(np.float64) * n_b / safe_n)
        self.count = n

    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0, as numpy's default), float64 [D]."""
        return np.sqrt(np.maximum(self.m2, 0.0) / np.maximum(self.count, 1))


@dataclass(frozen=True, kw_only=True)
class FieldReport:
    """How one categorical field's vocabulary was built."""

    name: str
    distinct: int  # distinct values counted in the training rows
    kept: int  # vocabulary size (without OOV)
    oov_rows: int  # training rows that encode to OOV (missing or cut by the cap)
    exact: bool  # counts were exact (no pruning)

    def to_json(self) -> dict:
        return {"distinct": self.distinct, "kept": self.kept, "oov_rows": self.oov_rows, "exact": self.exact}


def counter_capacity(max_vocab: int | None) -> int | None:
    """Default pruning threshold of the counters: None (exact) without a cap."""
    if max_vocab is None:
        return None
    return max(DEFAULT_CAPACITY_FACTOR * max_vocab, MIN_CAPACITY)


def fit_spec(
    *,
    dataset: str,
    counters: Sequence[VocabularyCounter],
    moments: RunningMoments,
    numerical: Sequence[str],
    log1p: Collection[str],
    tasks: Sequence[str],
    label_sources: Mapping,
    max_vocab: int | None,
) -> tuple[FeatureSpec, tuple[FieldReport, ...]]:
    """The FeatureSpec of the counted training rows, and a report per categorical field.

    Raises:
        DataError: a numerical column has no finite value in the training rows.
    """
    encoders, reports = [], []
    for counter in counters:
        vocabulary = counter.vocabulary(max_vocab)
        encoders.append(CategoricalEncoder(name=counter.name, vocabulary=vocabulary))
        reports.append(
            FieldReport(
                name=counter.name, distinct=counter.distinct, kept=len(vocabulary),
                oov_rows=counter.oov_rows(vocabulary), exact=counter.exact,
            )
        )
    scalers = []
    std = moments.std()
    for j, name in enumerate(numerical):
        if moments.count[j] == 0:
            raise DataError(
                f"numerical column {name!r} has no numeric value in the training rows; "
                "fix the column or list it as categorical"
            )
        s = float(std[j])
        # a constant column carries no signal but must not divide by zero
        scalers.append(
            NumericalScaler(name=name, mean=float(moments.mean[j]), std=s if s > 0 else 1.0, log1p=name in log1p)
        )
    spec = FeatureSpec(
        dataset=dataset, categorical=tuple(encoders), numerical=tuple(scalers), tasks=tuple(tasks),
        label_sources=dict(label_sources),
    )
    return spec, tuple(reports)
