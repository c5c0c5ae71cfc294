"""Where the trainer's rows come from: in-memory splits, or prepared Parquet shards streamed
in bounded memory. Both give each rank its share of every global batch and evaluate with
metrics reduced across ranks.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol

import numpy as np
import torch

from mome_edge.data.types import DataSplits, MultiTaskData
from mome_edge.train.distributed import DistributedContext
from mome_edge.encoding import FeatureSpec
from mome_edge.metrics import task_metrics

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # int64 (B, F), float32 (B, D), float32 (B, T)
Metrics = dict[str, dict[str, float | None]]
PredictFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (cat, num) -> probs (B, T)
EVAL_BATCH = 8192


class TrainingData(Protocol):
    spec: FeatureSpec

    def train_rows(self) -> int: ...

    def num_train_batches(self, *, batch_size: int, seed: int, epoch: int, ctx: DistributedContext) -> int: ...

    def train_batches(self, *, batch_size: int, seed: int, epoch: int, ctx: DistributedContext) -> Iterator[Batch]: ...

    def evaluate(self, predict: PredictFn, split: str, ctx: DistributedContext) -> Metrics: ...


def global_batches(n_rows: int, batch_size: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """Row indices of each global batch; the order depends only on (seed, epoch), so a
    resumed run (or any rank) sees the same batches."""
    order = np.random.default_rng([seed, epoch]).permutation(n_rows)
    for start in range(0, n_rows, batch_size):
        index = order[start : start + batch_size]
        if len(index) >= 2:  # batch norm needs two rows
            yield index


class InMemoryData:
    """DataSplits held in memory (census-income, user specs, synthetic sets)."""

    def __init__(self, splits: DataSplits, *, max_train_rows: int | None = None) -> None:
        self.splits = splits
        self.spec = splits.spec
        train = splits.train
        if max_train_rows is not None and max_train_rows < len(train):
            train = train.take(np.arange(max_train_rows))
        self.train = train
        self._tensors = (torch.from_numpy(train.categorical), torch.from_numpy(train.numerical), torch.from_numpy(train.labels))

    def train_rows(self) -> int:
        return len(self.train)

    def num_train_batches(self, *, batch_size: int, seed: int, epoch: int, ctx: DistributedContext) -> int:
        return sum(1 for _ in global_batches(len(self.train), batch_size, seed, epoch))

    def train_batches(self, *, batch_size: int, seed: int, epoch: int, ctx: DistributedContext) -> Iterator[Batch]:
        cat, num, labels = self._tensors
        for index in global_batches(len(self.train), batch_size, seed, epoch):
            if ctx.enabled:  # this rank's equal slice; remainder rows of the batch are dropped
                share = len(index) // ctx.world_size
                index = index[ctx.rank * share : (ctx.rank + 1) * share]
            idx = torch.from_numpy(index)
            yield cat[idx], num[idx], labels[idx]

    def evaluate(self, predict: PredictFn, split: str, ctx: DistributedContext) -> Metrics:
        data: MultiTaskData = self.splits.get(split)
        if not ctx.enabled:
            return task_metrics(data.labels, _predict_in_batches(predict, data), data.spec.tasks)
        local = data.take(np.arange(ctx.rank, len(data), ctx.world_size))  # every W-th row
        probs = ctx.gather_rows(torch.from_numpy(_predict_in_batches(predict, local)), len(data)).numpy()
        return task_metrics(data.labels, probs, data.spec.tasks)


def _predict_in_batches(predict: PredictFn, data: MultiTaskData) -> np.ndarray:
    parts = [predict(data.categorical[i : i + EVAL_BATCH], data.numerical[i : i + EVAL_BATCH]) for i in range(0, len(data), EVAL_BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, len(data.spec.tasks)), dtype=np.float32)


class PreparedData:
    """Parquet shards written by `mome-edge prepare`, streamed: memory stays bounded by a few
    row groups and the shuffle buffer whatever the number of rows."""

    def __init__(self, path: str) -> None:
        from mome_edge.data.prepared import PreparedDataset

        self.dataset = PreparedDataset(path)
        self.spec = self.dataset.spec

    def train_rows(self) -> int:
        return self.dataset.rows("train")

    def _local_batch(self, batch_size: int, ctx: DistributedContext) -> int:
        return max(2, batch_size // ctx.world_size)

    def num_train_batches(self, *, batch_size: int, seed: int, epoch: int, ctx: DistributedContext) -> int:
        return self.dataset.num_batches("train", self._local_batch(batch_size, ctx), shuffle=True, seed=seed, epoch=epoch, world_size=ctx.world_size)

    def train_batches(self, *, batch_size: int, seed: int, epoch: int, ctx: DistributedContext) -> Iterator[Batch]:
        batches = self.dataset.iter_batches(
            "train", self._local_batch(batch_size, ctx), shuffle=True, seed=seed, epoch=epoch, rank=ctx.rank, world_size=ctx.world_size
        )
        for cat, num, labels in batches:
            if len(labels) >= 2:  # equal batch sizes on every rank: all skip together
                yield torch.from_numpy(cat), torch.from_numpy(num), torch.from_numpy(labels)

    def evaluate(self, predict: PredictFn, split: str, ctx: DistributedContext) -> Metrics:
        from mome_edge.streaming_metrics import StreamingTaskMetrics

        metrics = StreamingTaskMetrics(self.spec.tasks)
        for cat, num, labels in self.dataset.iter_split(split, EVAL_BATCH, rank=ctx.rank, world_size=ctx.world_size):
            metrics.update(labels, predict(cat, num))
        if ctx.enabled:
            import torch.distributed as dist

            metrics.flush()
            for name in ("counts", "loss_sum"):
                shared = torch.from_numpy(np.ascontiguousarray(getattr(metrics, name)))
                dist.all_reduce(shared)
                setattr(metrics, name, shared.numpy())
            rows = torch.tensor([metrics.rows], dtype=torch.int64)
            dist.all_reduce(rows)
            metrics.rows = int(rows.item())
        return metrics.result()
