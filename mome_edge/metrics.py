"""Per-task AUC and logloss."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

PROB_EPS = 1e-7


def task_metrics(labels: np.ndarray, probs: np.ndarray, tasks: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """{task: {"auc": float | None, "logloss": float}}; AUC is None when a split has one class."""
    from sklearn.metrics import roc_auc_score  # the training side; lazy so the device CLI loads without it

    out: dict[str, dict[str, float | None]] = {}
    for i, task in enumerate(tasks):
        y, p = labels[:, i].astype(np.float64), np.clip(probs[:, i].astype(np.float64), PROB_EPS, 1 - PROB_EPS)
        auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None
        logloss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else None
        out[task] = {"auc": auc, "logloss": logloss}
    return out


def mean_auc(metrics: dict[str, dict[str, float | None]]) -> float:
    """Mean AUC over tasks that have one; -inf when none has (never selected)."""
    aucs = [m["auc"] for m in metrics.values() if m["auc"] is not None]
    return float(np.mean(aucs)) if aucs else -math.inf
