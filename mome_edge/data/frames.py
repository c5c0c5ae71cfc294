"""Raw pandas columns -> fitted FeatureSpec -> encoded DataSplits.

Vectorised on purpose: each column is factorised once, and the encoders' own per-value rules
(``normalise_token``, ``parse_number``) run on its *distinct* values only, so the ids and
scaled values are exactly what the numpy runtime computes from raw rows, at pandas speed.
Vocabularies and statistics come from the training rows only.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from mome_edge.data.splits import SplitIndex
from mome_edge.data.types import DataSplits, MultiTaskData
from mome_edge.encoding import (
    OOV_ID,
    CategoricalEncoder,
    FeatureSpec,
    NumericalScaler,
    normalise_token,
    parse_number,
)
from mome_edge.errors import DataError


def column_floats(column: pd.Series) -> np.ndarray:
    """float64 [N] of a raw column; NaN where missing or not a number."""
    if pd.api.types.is_bool_dtype(column.dtype) or pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    values = np.array([parse_number(u) for u in uniques] + [np.nan], dtype=np.float64)
    return values[codes]  # code -1 (missing) picks the trailing NaN


def column_tokens(column: pd.Series) -> tuple[np.ndarray, list[str | None]]:
    """(codes int64 [N], token of each code); code -1 and token None both mean missing."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return codes.astype(np.int64), [normalise_token(u) for u in uniques]


def fit_categorical(name: str, column: pd.Series, train: np.ndarray) -> tuple[CategoricalEncoder, np.ndarray]:
    """Encoder with the sorted vocabulary of the training rows, and ids int64 [N] of all rows."""
    codes, tokens = column_tokens(column)
    seen = np.unique(codes[train])
    vocabulary = sorted({tokens[c] for c in seen if c >= 0 and tokens[c] is not None})
    encoder = CategoricalEncoder(name=name, vocabulary=tuple(vocabulary))
    lookup = np.append(encoder.encode(tokens), OOV_ID).astype(np.int64)
    return encoder, lookup[codes]


def fit_numerical(
    name: str, column: pd.Series, train: np.ndarray, *, log1p: bool = False
) -> tuple[NumericalScaler, np.ndarray]:
    """Scaler with training mean/std (of the transformed values) and scaled float32 [N] of all rows."""
    raw = column_floats(column)
    probe = NumericalScaler(name=name, mean=0.0, std=1.0, log1p=log1p)
    train_values = probe.transform(raw[train])
    train_values = train_values[np.isfinite(train_values)]
    if train_values.size == 0:
        raise DataError(
            f"numerical column {name!r} has no numeric value in the training rows; "
            "fix the column or list it as categorical"
        )
    mean = float(train_values.mean())
    std = float(train_values.std())
    # a constant column carries no signal but must not divide by zero
    scaler = NumericalScaler(name=name, mean=mean, std=std if std > 0 else 1.0, log1p=log1p)
    return scaler, scaler.scale(raw)


def build_splits(
    frame: pd.DataFrame,
    labels: np.ndarray,
    index: SplitIndex,
    *,
    dataset: str,
    categorical: Sequence[str],
    numerical: Sequence[str],
    tasks: Sequence[str],
    label_sources: Mapping[str, Any],
    log1p: Collection[str] = (),
) -> DataSplits:
    """Fit encoders on ``index.train`` rows of ``frame``, encode all rows, and split them.

    Args:
        frame: raw columns, one row per example (other columns are ignored).
        labels: float32-compatible 0/1 [N, T], aligned with ``frame`` rows and ``tasks``.
        index: which rows of ``frame`` go to each split.
    Raises:
        DataError: a task has no positive or no negative training row.
    """
    n_rows = len(frame)
    labels = np.asarray(labels, dtype=np.float32).reshape(n_rows, len(tasks))  # (N, T)
    for t, task in enumerate(tasks):
        train_labels = labels[index.train, t]
        positives = int(train_labels.sum())
        if positives == 0 or positives == len(train_labels):
            which = "positive" if positives == 0 else "negative"
            raise DataError(
                f"task {task!r} has no {which} row among the {len(train_labels)} training rows, so it "
                "cannot be learned; check its label definition or load more rows"
            )
    cat = np.zeros((n_rows, len(categorical)), dtype=np.int64)  # (N, F)
    encoders = []
    for j, name in enumerate(categorical):
        encoder, cat[:, j] = fit_categorical(name, frame[name], index.train)
        encoders.append(encoder)
    num = np.zeros((n_rows, len(numerical)), dtype=np.float32)  # (N, D)
    scalers = []
    for j, name in enumerate(numerical):
        scaler, num[:, j] = fit_numerical(name, frame[name], index.train, log1p=name in log1p)
        scalers.append(scaler)
    spec = FeatureSpec(
        dataset=dataset,
        categorical=tuple(encoders),
        numerical=tuple(scalers),
        tasks=tuple(tasks),
        label_sources=dict(label_sources),
    )

    def part(rows: np.ndarray) -> MultiTaskData:
        return MultiTaskData(categorical=cat[rows], numerical=num[rows], labels=labels[rows], spec=spec)

    return DataSplits(train=part(index.train), validation=part(index.validation), test=part(index.test))


def positive_label(column: pd.Series, positive: Collection[str]) -> tuple[np.ndarray, np.ndarray]:
    """(label 0/1 float32 [N], missing bool [N]): 1 where the stripped value is in ``positive``."""
    codes, tokens = column_tokens(column)
    wanted = {normalise_token(p) for p in positive}
    hit = np.array([t is not None and t in wanted for t in tokens] + [False])
    absent = np.array([t is None for t in tokens] + [True])
    return hit[codes].astype(np.float32), absent[codes]
