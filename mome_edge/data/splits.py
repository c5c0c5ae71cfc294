"""Deterministic, seeded row splits (train / validation / test).

One rule everywhere: ``np.random.default_rng(seed).permutation(n)``, then the first rows of
the permutation go to validation, the next to test and the rest to train. Split sizes are
rounded and every split gets at least one row, so tiny subsets (``max_rows``) still work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mome_edge.errors import DataError


@dataclass(frozen=True, kw_only=True)
class SplitFractions:
    """Fractions of the rows that go to validation and test; train gets the rest."""

    validation: float = 0.2
    test: float = 0.2

    def __post_init__(self) -> None:
        for name in ("validation", "test"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 < float(value) < 1.0):
                raise DataError(f"split fraction {name}={value!r} must be a number in (0, 1); e.g. 0.2")
        if self.validation + self.test >= 1.0:
            raise DataError(
                f"split fractions validation={self.validation} + test={self.test} leave no training "
                "rows; make their sum < 1 (e.g. 0.2 and 0.2)"
            )

    @property
    def train(self) -> float:
        return 1.0 - self.validation - self.test


@dataclass(frozen=True, kw_only=True)
class SplitIndex:
    """Row numbers (into the loaded frame) of each split, in seeded random order."""

    train: np.ndarray  # int64 [N_train]
    validation: np.ndarray  # int64 [N_val]
    test: np.ndarray  # int64 [N_test]

    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.validation), len(self.test)


def split_indices(n_rows: int, *, fractions: SplitFractions = SplitFractions(), seed: int = 0) -> SplitIndex:
    """Seeded train/validation/test split of ``n_rows`` rows (default 60/20/20)."""
    if n_rows < 3:
        raise DataError(f"{n_rows} rows cannot be split into train, validation and test; load at least 3 rows")
    n_val = max(1, round(n_rows * fractions.validation))
    n_test = max(1, round(n_rows * fractions.test))
    if n_rows - n_val - n_test < 1:
        raise DataError(f"{n_rows} rows leave no training row after the split; load more rows")
    perm = np.random.default_rng(seed).permutation(n_rows).astype(np.int64)
    return SplitIndex(
        validation=perm[:n_val], test=perm[n_val : n_val + n_test], train=perm[n_val + n_test :]
    )


def holdout_indices(n_rows: int, *, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (kept, held_out) split of ``n_rows`` rows; at least one row is held out."""
    if n_rows < 2:
        raise DataError(f"{n_rows} training rows cannot spare a validation row; load at least 2 training rows")
    if not 0.0 < fraction < 1.0:
        raise DataError(f"hold-out fraction {fraction!r} must be in (0, 1); e.g. 0.1")
    n_out = min(n_rows - 1, max(1, round(n_rows * fraction)))
    perm = np.random.default_rng(seed).permutation(n_rows).astype(np.int64)
    return perm[n_out:], perm[:n_out]
