"""The one in-memory data type that every stage consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mome_edge.contract import SPLITS
from mome_edge.encoding import FeatureSpec
from mome_edge.errors import DataError


@dataclass(frozen=True, kw_only=True)
class MultiTaskData:
    """Encoded rows of one split: ids, scaled numericals and 0/1 labels, plus their spec."""

    categorical: np.ndarray  # int64 [N, F], 0 = OOV
    numerical: np.ndarray  # float32 [N, D]
    labels: np.ndarray  # float32 [N, T], values in {0, 1}
    spec: FeatureSpec

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        checks = [
            (self.categorical.dtype == np.int64 and self.categorical.ndim == 2, "categorical must be int64 [N, F]"),
            (self.numerical.dtype == np.float32 and self.numerical.ndim == 2, "numerical must be float32 [N, D]"),
            (self.labels.dtype == np.float32 and self.labels.ndim == 2, "labels must be float32 [N, T]"),
            (self.categorical.shape[0] == n and self.numerical.shape[0] == n, "row counts differ"),
            (self.categorical.shape[1] == len(self.spec.categorical), "categorical width != spec"),
            (self.numerical.shape[1] == len(self.spec.numerical), "numerical width != spec"),
            (self.labels.shape[1] == len(self.spec.tasks), "label width != number of tasks"),
        ]
        for ok, what in checks:
            if not ok:
                raise DataError(f"inconsistent MultiTaskData: {what}; this is a loader bug, please report it")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: np.ndarray) -> "MultiTaskData":
        return MultiTaskData(
            categorical=self.categorical[index],
            numerical=self.numerical[index],
            labels=self.labels[index],
            spec=self.spec,
        )

    def positive_rates(self) -> dict[str, float]:
        return {t: float(self.labels[:, i].mean()) if len(self) else float("nan") for i, t in enumerate(self.spec.tasks)}


@dataclass(frozen=True, kw_only=True)
class DataSplits:
    train: MultiTaskData
    validation: MultiTaskData
    test: MultiTaskData

    @property
    def spec(self) -> FeatureSpec:
        return self.train.spec

    def get(self, split: str) -> MultiTaskData:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; use train, validation or test")
        return getattr(self, split)
