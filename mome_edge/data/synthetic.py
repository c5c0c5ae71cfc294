"""The MMoE paper's synthetic two-task data (Ma et al., KDD 2018, section 3.2), with a knob for task relatedness.

Two regression targets share inputs x ~ N(0, I_d). With orthonormal u1, u2 and correlation p
(the cosine of the two weight vectors):

    w1 = c u1,   w2 = c (p u1 + sqrt(1 - p^2) u2)
    y_i = w_i^T x + sum_{j=1..m} sin(alpha_j w_i^T x + beta_j) + eps_i,   eps_i ~ N(0, noise_std^2)

Each y_i becomes a 0/1 label by thresholding at its median (so ~50 % positive). The last
``n_categorical`` input dimensions are exposed only as quantile buckets (categorical fields
with 10-50 values), so models exercise the embedding path; the rest are numerical features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mome_edge.data.frames import build_splits
from mome_edge.data.splits import SplitFractions, split_indices
from mome_edge.data.types import DataSplits
from mome_edge.errors import DataError

DATASET = "synthetic"
DEFAULT_ROWS = 20_000  # a demo trains on this in well under a minute on 2 CPU cores
DEFAULT_CORRELATION = 0.5  # task correlation p when none is given (`--synthetic-correlation`)
BUCKET_SIZES: tuple[int, ...] = (10, 20, 30, 50)  # cycled over the categorical fields
TASKS: tuple[str, ...] = ("task1", "task2")
SPLIT = SplitFractions(validation=0.2, test=0.2)


@dataclass(frozen=True, kw_only=True)
class MMoESyntheticArrays:
    """Raw generator output, before any encoding."""

    numerical: np.ndarray  # float32 [N, D]: input dims shown as numbers
    categorical: np.ndarray  # int64 [N, F]: bucket ids 0..K_f-1 of the other input dims
    targets: np.ndarray  # float64 [N, 2]: the continuous y1, y2
    labels: np.ndarray  # float32 [N, 2]: y_i > median(y_i)
    weights: np.ndarray  # float64 [2, D + F]: w1, w2
    bucket_sizes: tuple[int, ...]  # K_f of each categorical field


def make_mmoe_arrays(
    n_rows: int,
    *,
    correlation: float = DEFAULT_CORRELATION,
    n_features: int = 32,
    n_categorical: int = 4,
    n_sines: int = 10,
    scale: float = 1.0,
    noise_std: float = 0.1,
    seed: int = 0,
) -> MMoESyntheticArrays:
    """Generate the MMoE synthetic data as raw arrays (see the module docstring for the model).

    Args:
        n_rows: number of examples.
        correlation: p in [-1, 1], cosine between the two tasks' weight vectors.
        n_features: numerical input dims; n_categorical: input dims shown as buckets.
        n_sines: m, the number of sinusoids; scale: c; noise_std: std of eps.
    Raises:
        DataError: an argument is out of range.
    """
    _check(n_rows >= 1, f"n_rows={n_rows} must be >= 1")
    _check(-1.0 <= correlation <= 1.0, f"correlation={correlation} must be in [-1, 1]")
    _check(n_features >= 0 and n_categorical >= 0, "n_features and n_categorical must be >= 0")
    _check(n_features + n_categorical >= 2, "n_features + n_categorical must be >= 2 (two orthogonal task vectors)")
    _check(n_sines >= 0 and scale > 0 and noise_std >= 0, "n_sines >= 0, scale > 0 and noise_std >= 0 are required")
    rng = np.random.default_rng(seed)
    dim = n_features + n_categorical
    # orthonormal u1, u2 from a QR of a Gaussian matrix
    basis, _ = np.linalg.qr(rng.standard_normal((dim, 2)))
    u1, u2 = basis[:, 0], basis[:, 1]
    weights = np.stack([scale * u1, scale * (correlation * u1 + math.sqrt(1.0 - correlation**2) * u2)])  # (2, dim)
    alpha = rng.standard_normal(n_sines)
    beta = rng.standard_normal(n_sines)
    x = rng.standard_normal((n_rows, dim))  # (N, dim)
    linear = x @ weights.T  # (N, 2)
    targets = np.empty_like(linear)
    for i in range(2):
        waves = np.sin(linear[:, i : i + 1] * alpha + beta).sum(axis=1)  # (N,)
        targets[:, i] = linear[:, i] + waves + rng.normal(0.0, noise_std, n_rows)
    labels = (targets > np.median(targets, axis=0)).astype(np.float32)
    sizes = tuple(BUCKET_SIZES[j % len(BUCKET_SIZES)] for j in range(n_categorical))
    categorical = np.zeros((n_rows, n_categorical), dtype=np.int64)
    for j, size in enumerate(sizes):
        # equal-probability buckets of a standard normal dim: fixed edges, independent of n_rows
        categorical[:, j] = np.searchsorted(_normal_quantiles(size), x[:, n_features + j])
    return MMoESyntheticArrays(
        numerical=x[:, :n_features].astype(np.float32),
        categorical=categorical,
        targets=targets,
        labels=labels,
        weights=weights,
        bucket_sizes=sizes,
    )


def make_mmoe_synthetic(
    n_rows: int = DEFAULT_ROWS,
    *,
    correlation: float = DEFAULT_CORRELATION,
    n_features: int = 32,
    n_categorical: int = 4,
    seed: int = 0,
) -> DataSplits:
    """MMoE synthetic data as DataSplits: seeded 60/20/20 split, encoders fitted on train."""
    arrays = make_mmoe_arrays(
        n_rows, correlation=correlation, n_features=n_features, n_categorical=n_categorical, seed=seed
    )
    numerical = [f"x{j + 1}" for j in range(n_features)]
    categorical = [f"bucket{j + 1}" for j in range(n_categorical)]
    frame = pd.DataFrame(
        {
            **{name: arrays.numerical[:, j] for j, name in enumerate(numerical)},
            **{name: arrays.categorical[:, j] for j, name in enumerate(categorical)},
        }
    )
    source = {"generator": "MMoE synthetic (Ma et al. KDD 2018)", "correlation": correlation, "seed": seed}
    return build_splits(
        frame,
        arrays.labels,
        split_indices(n_rows, fractions=SPLIT, seed=seed),
        dataset=DATASET,
        categorical=categorical,
        numerical=numerical,
        tasks=TASKS,
        label_sources={t: {**source, "rule": f"y{i + 1} > median(y{i + 1})"} for i, t in enumerate(TASKS)},
    )


def _normal_quantiles(n_buckets: int) -> np.ndarray:
    """The n_buckets - 1 inner edges that split N(0, 1) into equal-probability buckets."""
    edges = []
    for k in range(1, n_buckets):
        target, lo, hi = k / n_buckets, -10.0, 10.0
        for _ in range(60):  # bisection on the normal CDF; numpy has no inverse erf
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < target else (lo, mid)
        edges.append(0.5 * (lo + hi))
    return np.asarray(edges)


def _check(ok: bool, problem: str) -> None:
    if not ok:
        raise DataError(f"synthetic data: {problem}; pass a value in range")
