"""Storage precision of artifact tensors: fp32, fp16, or int8 with per-channel scales."""

from __future__ import annotations

import numpy as np

from mome_edge.artifact.format import WEIGHT_FORMATS
from mome_edge.errors import ConfigError

INT8_LEVELS = 127  # symmetric int8: q in [-127, 127], zero point 0
FP16_MAX = float(np.finfo(np.float16).max)
STORED_FLOAT = {"fp32": "float32", "fp16": "float16", "int8": "int8"}


def check_weights(weights: str) -> None:
    """Raise ConfigError unless `weights` is one of WEIGHT_FORMATS."""
    if weights not in WEIGHT_FORMATS:
        raise ConfigError(f"--weights {weights!r} is unknown; use one of {', '.join(WEIGHT_FORMATS)}")


def quantise(name: str, array: np.ndarray, weights: str, axis: int | None) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """float32 -> (stored array, int8 scales or None, scale axis or None)."""
    if weights == "fp32":
        return np.ascontiguousarray(array), None, None
    if weights == "fp16":
        if np.abs(array).max(initial=0.0) > FP16_MAX:
            raise ConfigError(f"{name} has values beyond the float16 range (+-{FP16_MAX:g}); use --weights fp32 or int8")
        return array.astype(np.float16), None, None
    amax = np.abs(array).max(axis=axis, initial=0.0)  # one scale per slice along `axis`
    scale = (amax / INT8_LEVELS).astype(np.float32)
    scale[scale == 0] = 1.0  # an all-zero slice: any scale gives q = 0
    q = np.rint(array.astype(np.float64) / np.expand_dims(scale, axis).astype(np.float64))
    return np.clip(q, -INT8_LEVELS, INT8_LEVELS).astype(np.int8), scale, axis


def dequantise(stored: np.ndarray, scale: np.ndarray | None, axis: int | None) -> np.ndarray:
    if stored.dtype == np.int8:
        with np.errstate(over="ignore", invalid="ignore"):  # a corrupt scale overflows; the reader rejects non-finite values
            return stored.astype(np.float32) * np.expand_dims(scale, axis)
    if stored.dtype == np.float16:
        return stored.astype(np.float32)
    return stored
