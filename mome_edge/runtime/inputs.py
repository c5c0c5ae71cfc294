"""Input checks of the device runtime: one clear DataError per problem, before any compute.

Encoded inputs are `categorical` int64 (B, F) ids (0 = OOV; anything outside a table's range
is read as OOV by the engines, never out of bounds) and `numerical` float32 (B, D) already
standardised values. Non-finite numericals follow each field's recorded missing-value
policy: "mean" -> 0.0 (the training mean after standardising), "error" -> DataError.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mome_edge.encoding import FeatureSpec
from mome_edge.errors import DataError


def check_inputs(spec: FeatureSpec, categorical: Any, numerical: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated (int64 (B, F) C-contiguous, float32 (B, D) finite) copies or views of the inputs."""
    fields, width = len(spec.categorical), len(spec.numerical)
    cat = _as_array(categorical, "categorical", fields, other=numerical)
    num = _as_array(numerical, "numerical", width, other=categorical)
    if cat.dtype.kind not in "iu":
        raise DataError(
            f"categorical ids must be integers (int64), got dtype {cat.dtype}; cast them with .astype(np.int64), "
            "or pass raw rows to predict_rows to encode them"
        )
    if num.dtype.kind not in "fiu":
        raise DataError(f"numerical values must be floats (float32), got dtype {num.dtype}; cast them with .astype(np.float32)")
    for name, array, expected in (("categorical", cat, fields), ("numerical", num, width)):
        if array.ndim != 2:
            raise DataError(f"{name} must be a 2-D array (batch, {expected}), got shape {array.shape}; add the batch axis, e.g. x[None, :]")
        if array.shape[1] != expected:
            names = spec.field_names if name == "categorical" else spec.numerical_names
            raise DataError(
                f"{name} has {array.shape[1]} columns but the model reads {expected} ({', '.join(names) or 'none'}); "
                "pass the columns in the model's feature spec order"
            )
    if cat.shape[0] != num.shape[0]:
        raise DataError(f"categorical has {cat.shape[0]} rows but numerical has {num.shape[0]}; pass the same rows to both")
    if cat.shape[0] == 0:
        raise DataError("empty batch (0 rows); pass at least one row")
    if cat.dtype != np.int64:
        if cat.dtype == np.uint64:  # ids above int64's range are out of every vocabulary: read as OOV
            cat = np.where(cat > np.iinfo(np.int64).max, np.uint64(0), cat)
        cat = cat.astype(np.int64)
    num = np.ascontiguousarray(num, dtype=np.float32)
    return np.ascontiguousarray(cat), _apply_missing_policy(spec, num)


OVERFLOW_MESSAGE = "the model's outputs are not finite"


def check_outputs(probs: np.ndarray) -> np.ndarray:
    """`probs` (B, T) unchanged when every value is finite; else DataError naming the rows.

    Finite inputs can still overflow float32 inside the network (numerical values around
    1e38, or extreme weights in a hand-edited file): NaN must never be returned as a probability.
    """
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        raise DataError(
            f"{OVERFLOW_MESSAGE} for {int(bad.sum())} of {len(probs)} rows (first: row {int(np.argmax(bad))}): values overflow "
            "float32; check those rows for extreme numerical values, or re-create the model file if its weights are corrupt"
        )
    return probs


def _as_array(value: Any, name: str, columns: int, *, other: Any) -> np.ndarray:
    if value is None:
        if columns:
            raise DataError(f"{name} is missing; the model reads {columns} {name} columns")
        rows = len(other) if other is not None else 0
        return np.zeros((rows, 0), dtype=np.int64 if name == "categorical" else np.float32)
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} cannot be read as an array ({exc}); pass a numpy array") from None


def _apply_missing_policy(spec: FeatureSpec, num: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(num)
    if not bad.any():
        return num
    num = num.copy()  # never write into the caller's array
    for j, scaler in enumerate(spec.numerical):
        rows = np.flatnonzero(bad[:, j])
        if not len(rows):
            continue
        if scaler.missing == "error":
            raise DataError(
                f"numerical field {scaler.name!r} has a NaN or infinite value at row {int(rows[0])}, and the model "
                "records the 'error' missing-value policy for it; fill the value before predicting"
            )
        num[rows, j] = 0.0  # 'mean' policy: the training mean, which is 0 after standardising
    return num
