"""Per-task AUC and logloss over streamed predictions, in bounded memory.

``StreamingTaskMetrics`` keeps, per task, a histogram of the predicted probabilities of
positive and of negative rows, and the logloss sum; no row's features or prediction are kept.

AUC: probabilities are clipped to [PROB_EPS, 1 - PROB_EPS] (as ``metrics.task_metrics``)
and binned by the top bits of their float32 representation: the float32 exponent and
``MANTISSA_BITS`` = 14 mantissa bits, i.e. bins of relative width 2**-14 (6.1e-5) at every
scale, so probabilities of 1e-6 are resolved as finely as those of 0.5. The AUC is then exact
for the binned scores, with the pairs of a positive and a negative row in the same bin
counted as ties (half credit, as sklearn counts exact ties). Its distance to the exact AUC is
at most ``auc_error_bound()`` = half the share of (positive, negative) pairs sharing a bin,
which is about 1e-5 or less for continuous predictions. ``exact=True`` instead holds every
label (float32) and probability (float64), 12 bytes per row and task, and uses
``metrics.task_metrics``.

Logloss is the exact mean over rows (float64 sums) of the clipped probabilities.

The state (``counts``, ``loss_sum``, ``rows``) is additive: ranks of a distributed run can
all-reduce (sum) it and then call ``result()``; ``merge`` does the same in-process.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from mome_edge.errors import ConfigError
from mome_edge.metrics import PROB_EPS, task_metrics

MANTISSA_BITS = 14
_SHIFT = 23 - MANTISSA_BITS
_LOW = int(np.array([PROB_EPS], dtype=np.float32).view(np.uint32)[0]) >> _SHIFT
_HIGH = int(np.array([1 - PROB_EPS], dtype=np.float32).view(np.uint32)[0]) >> _SHIFT
BINS = _HIGH - _LOW + 1
_FLUSH_ROWS = 1 << 20  # bin indices buffered before one bincount


class StreamingTaskMetrics:
    """Accumulate labels and probabilities batch by batch; ``result()`` -> {task: {"auc", "logloss"}}."""

    def __init__(self, tasks: Sequence[str], *, exact: bool = False) -> None:
        self.tasks = tuple(tasks)
        self.exact = exact
        n = len(self.tasks)
        self.counts = np.zeros((n, 2, BINS), dtype=np.int64)  # [T, (negative, positive), BINS]
        self.loss_sum = np.zeros(n, dtype=np.float64)
        self.rows = 0
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # (bin int64 [B, T], positive bool [B, T])
        self._pending_rows = 0
        self._held: list[tuple[np.ndarray, np.ndarray]] = []  # exact mode: (labels, probs)

    def update(self, labels: np.ndarray, probs: np.ndarray) -> None:
        """Add a batch: labels 0/1 [B, T], probabilities [B, T]."""
        labels = np.asarray(labels, dtype=np.float64).reshape(-1, len(self.tasks))  # (B, T)
        probs = np.asarray(probs, dtype=np.float64).reshape(labels.shape)  # (B, T)
        if self.exact:
            self._held.append((labels.astype(np.float32), probs.copy()))
        p = np.clip(probs, PROB_EPS, 1 - PROB_EPS)
        self.loss_sum += -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).sum(axis=0)
        self.rows += labels.shape[0]
        bins = (p.astype(np.float32).view(np.uint32) >> np.uint32(_SHIFT)).astype(np.int64) - _LOW  # (B, T)
        self._pending.append((np.clip(bins, 0, BINS - 1), labels > 0.5))
        self._pending_rows += labels.shape[0]
        if self._pending_rows >= _FLUSH_ROWS:
            self._flush()

    def merge(self, other: "StreamingTaskMetrics") -> None:
        """Add another accumulator's rows (e.g. another shard's)."""
        if other.tasks != self.tasks:
            raise ConfigError(f"cannot merge metrics of tasks {other.tasks} into {self.tasks}")
        self._flush()
        other._flush()
        self.counts += other.counts
        self.loss_sum += other.loss_sum
        self.rows += other.rows
        self._held += other._held

    def result(self) -> dict[str, dict[str, float | None]]:
        """{task: {"auc": float | None, "logloss": float | None}}; AUC is None when a class is absent."""
        self._flush()
        if self.exact and self._held:
            labels = np.concatenate([h[0] for h in self._held])
            probs = np.concatenate([h[1] for h in self._held])
            return task_metrics(labels, probs, self.tasks)
        out: dict[str, dict[str, float | None]] = {}
        for t, task in enumerate(self.tasks):
            negative, positive = self.counts[t]
            logloss = float(self.loss_sum[t] / self.rows) if self.rows else None
            out[task] = {"auc": _histogram_auc(negative, positive), "logloss": logloss}
        return out

    def auc_error_bound(self) -> dict[str, float | None]:
        """Per task, the largest possible |binned AUC - exact AUC|: half the share of same-bin pairs."""
        self._flush()
        out: dict[str, float | None] = {}
        for t, task in enumerate(self.tasks):
            negative, positive = self.counts[t].astype(np.float64)
            pairs = negative.sum() * positive.sum()
            out[task] = float(0.5 * (negative * positive).sum() / pairs) if pairs else None
        return out

    def flush(self) -> None:
        """Fold buffered rows into `counts` (before all-reducing the state across ranks)."""
        self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        bins = np.concatenate([p[0] for p in self._pending])  # (N, T)
        positive = np.concatenate([p[1] for p in self._pending])  # (N, T)
        for t in range(len(self.tasks)):
            self.counts[t, 1] += np.bincount(bins[positive[:, t], t], minlength=BINS)
            self.counts[t, 0] += np.bincount(bins[~positive[:, t], t], minlength=BINS)
        self._pending, self._pending_rows = [], 0


def streaming_task_metrics(
    predict_fn: Callable[[np.ndarray, np.ndarray], Any],
    dataset: Any,
    split: str,
    batch_size: int,
    *,
    exact: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, dict[str, float | None]]:
    """{task: {"auc", "logloss"}} of ``predict_fn`` over a prepared split, read batch by batch.

    Args:
        predict_fn: (int64 [B, F] ids, float32 [B, D] numericals) -> probabilities [B, T]
            (numpy, or anything ``np.asarray`` accepts, e.g. a CPU tensor without grad).
        dataset: a ``PreparedDataset``.
        exact: hold labels and probabilities and compute sklearn's AUC (see module doc).
        rank, world_size: evaluate only this rank's rows (``iter_split``); to combine ranks,
            use ``StreamingTaskMetrics`` directly and sum its state across ranks.
    """
    metrics = StreamingTaskMetrics(dataset.tasks, exact=exact)
    for cat, num, labels in dataset.iter_split(split, batch_size, rank=rank, world_size=world_size):
        metrics.update(labels, np.asarray(predict_fn(cat, num)))
    return metrics.result()


def _histogram_auc(negative: np.ndarray, positive: np.ndarray) -> float | None:
    n_neg, n_pos = int(negative.sum()), int(positive.sum())
    if n_neg == 0 or n_pos == 0:
        return None
    negative = negative.astype(np.float64)
    below = np.cumsum(negative) - negative  # negatives in lower bins
    wins = (positive.astype(np.float64) * (below + 0.5 * negative)).sum()
    return float(wins / (float(n_neg) * float(n_pos)))
