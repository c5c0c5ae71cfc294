"""Streamed AUC/logloss: histogram AUC within its bound of sklearn's, exact mode equal, additive state."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mome_edge.data.prepared import PreparedDataset
from mome_edge.data.streaming import prepare_dataset, stream_source
from mome_edge.metrics import task_metrics
from mome_edge.streaming_metrics import StreamingTaskMetrics, streaming_task_metrics

HISTOGRAM_AUC_ATOL = 1e-4  # binned AUC vs sklearn on continuous scores (bound reported ~1e-5)
LOGLOSS_RTOL = 1e-9  # same sums in another order

SPEC = """
[data]
path = "rows.csv"
[features]
categorical = ["kind"]
numerical = ["x", "z"]
[tasks.a]
column = "a"
positive = ["1"]
[tasks.b]
column = "b"
threshold = 1
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    folder = tmp_path_factory.mktemp("metrics")
    rng = np.random.default_rng(0)
    n = 8_000
    x, z = rng.normal(size=n), rng.normal(size=n)
    pd.DataFrame(
        {
            "kind": rng.choice(["p", "q", "r"], n),
            "x": x,
            "z": z,
            "a": (x + rng.normal(size=n) > 1.0).astype(int),
            "b": (z + 0.5 * rng.normal(size=n) > 2.0).astype(int),
        }
    ).to_csv(folder / "rows.csv", index=False)
    (folder / "spec.toml").write_text(SPEC)
    prepare_dataset(stream_source(spec_path=folder / "spec.toml"), folder / "p", row_group_rows=500, progress=False)
    return PreparedDataset(folder / "p")


def predict(cat: np.ndarray, num: np.ndarray) -> np.ndarray:
    logits = np.stack([num[:, 0] * 1.5 - 2 + 0.1 * cat[:, 0], num[:, 1] * 2.0 - 4], axis=1)  # (B, 2)
    return 1.0 / (1.0 + np.exp(-logits))


@pytest.mark.parametrize("split", ["validation", "test"])
def test_streamed_metrics_match_in_memory_metrics(prepared: PreparedDataset, split: str) -> None:
    data = prepared.load_split(split)
    expected = task_metrics(data.labels, predict(data.categorical, data.numerical), data.spec.tasks)
    streamed = streaming_task_metrics(predict, prepared, split, 333)
    exact = streaming_task_metrics(predict, prepared, split, 333, exact=True)
    assert exact == expected
    for task in prepared.tasks:
        assert streamed[task]["auc"] == pytest.approx(expected[task]["auc"], abs=HISTOGRAM_AUC_ATOL)
        assert streamed[task]["logloss"] == pytest.approx(expected[task]["logloss"], rel=LOGLOSS_RTOL)


def test_histogram_auc_is_within_its_reported_bound() -> None:
    rng = np.random.default_rng(1)
    labels = (rng.random((50_000, 2)) < [0.02, 0.3]).astype(np.float32)
    probs = 1.0 / (1.0 + np.exp(-(rng.normal(-4.0, 1.5, (50_000, 2)) + labels)))
    metrics = StreamingTaskMetrics(["a", "b"])
    for start in range(0, 50_000, 4_096):
        metrics.update(labels[start : start + 4_096], probs[start : start + 4_096])
    expected = task_metrics(labels, probs, ["a", "b"])
    bound = metrics.auc_error_bound()
    for task, result in metrics.result().items():
        assert abs(result["auc"] - expected[task]["auc"]) <= bound[task] + 1e-12
        assert bound[task] < 1e-4


def test_state_is_additive_across_shards() -> None:
    rng = np.random.default_rng(2)
    labels = (rng.random((2_000, 1)) < 0.3).astype(np.float32)
    probs = rng.random((2_000, 1))
    whole, left, right = (StreamingTaskMetrics(["t"]) for _ in range(3))
    whole.update(labels, probs)
    left.update(labels[:700], probs[:700])
    right.update(labels[700:], probs[700:])
    left.merge(right)
    assert left.result()["t"]["auc"] == whole.result()["t"]["auc"]
    assert left.result()["t"]["logloss"] == pytest.approx(whole.result()["t"]["logloss"], rel=LOGLOSS_RTOL)
    np.testing.assert_array_equal(left.counts, whole.counts)


def test_one_class_gives_no_auc() -> None:
    metrics = StreamingTaskMetrics(["t"])
    metrics.update(np.zeros((10, 1)), np.full((10, 1), 0.2))
    assert metrics.result()["t"]["auc"] is None
    assert metrics.result()["t"]["logloss"] == pytest.approx(-np.log(0.8))
