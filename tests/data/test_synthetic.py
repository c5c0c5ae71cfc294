"""Synthetic data: the MMoE generator (shapes, rates, correlation knob, learnability) and the
streamed AliExpress-layout generator (bounded chunks, determinism, writers)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from mome_edge.data import (
    iter_aliexpress_chunks,
    load_dataset,
    make_aliexpress_frame,
    make_mmoe_arrays,
    make_mmoe_synthetic,
    write_aliexpress_csv,
    write_aliexpress_parquet,
)
from mome_edge.data.aliexpress import COLUMNS
from mome_edge.data.synthetic_aliexpress import BLOCK_ROWS, CARDINALITIES
from mome_edge.errors import DataError

# --- MMoE synthetic ---


def test_mmoe_shapes_and_rates() -> None:
    splits = make_mmoe_synthetic(5_000, n_features=12, n_categorical=3, seed=1)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (3_000, 1_000, 1_000)
    assert splits.train.numerical.shape == (3_000, 12) and splits.train.categorical.shape == (3_000, 3)
    assert splits.spec.tasks == ("task1", "task2")
    assert splits.spec.vocab_sizes == (11, 21, 31)  # 10/20/30 buckets + OOV
    rates = np.concatenate([splits.train.labels, splits.test.labels, splits.validation.labels]).mean(axis=0)
    np.testing.assert_allclose(rates, 0.5, atol=1e-3)  # median threshold


def test_mmoe_default_via_load_dataset() -> None:
    splits = load_dataset("synthetic", synthetic_rows=2_000, seed=3)
    assert len(splits.train) == 1_200 and splits.spec.dataset == "synthetic"
    assert splits.train.numerical.shape[1] == 32 and splits.train.categorical.shape[1] == 4


def test_mmoe_correlation_knob_controls_target_correlation() -> None:
    def target_corr(p: float) -> float:
        arrays = make_mmoe_arrays(20_000, correlation=p, seed=0)
        return float(np.corrcoef(arrays.targets.T)[0, 1])

    low, high = target_corr(0.1), target_corr(0.9)
    assert high > low + 0.5
    weights = make_mmoe_arrays(10, correlation=0.3, seed=0).weights
    cosine = weights[0] @ weights[1] / np.linalg.norm(weights[0]) / np.linalg.norm(weights[1])
    assert cosine == pytest.approx(0.3)


def test_mmoe_is_learnable_from_numericals() -> None:
    splits = make_mmoe_synthetic(6_000, seed=0)
    for t in range(2):
        model = LogisticRegression(max_iter=300).fit(splits.train.numerical, splits.train.labels[:, t])
        auc = roc_auc_score(splits.test.labels[:, t], model.predict_proba(splits.test.numerical)[:, 1])
        assert auc > 0.6, f"task {t}: AUC {auc:.3f}"


def test_mmoe_deterministic_per_seed() -> None:
    a, b, c = (make_mmoe_arrays(500, seed=s) for s in (4, 4, 5))
    np.testing.assert_array_equal(a.numerical, b.numerical)
    np.testing.assert_array_equal(a.categorical, b.categorical)
    assert not np.array_equal(a.targets, c.targets)


def test_mmoe_bad_arguments() -> None:
    with pytest.raises(DataError, match="correlation=1.5 must be in"):
        make_mmoe_arrays(10, correlation=1.5)
    with pytest.raises(DataError, match="n_rows=0 must be >= 1"):
        make_mmoe_arrays(0)


# --- AliExpress-layout generator ---


def test_chunks_are_bounded_and_in_the_processed_layout() -> None:
    sizes = []
    for chunk in iter_aliexpress_chunks(10_000, chunk_rows=3_000, seed=0):
        sizes.append(len(chunk))
        assert list(chunk.columns) == list(COLUMNS)
    assert sizes == [3_000, 3_000, 3_000, 1_000]


def test_rows_do_not_depend_on_chunk_size_or_total() -> None:
    n = 2 * BLOCK_ROWS + 123  # spans three generation blocks
    whole = pd.concat(list(iter_aliexpress_chunks(n, chunk_rows=n, seed=7)), ignore_index=True)
    small = pd.concat(list(iter_aliexpress_chunks(n, chunk_rows=1_000, seed=7)), ignore_index=True)
    pd.testing.assert_frame_equal(whole, small)
    prefix = make_aliexpress_frame(5_000, seed=7)
    pd.testing.assert_frame_equal(prefix, whole.iloc[:5_000])
    other = make_aliexpress_frame(5_000, seed=8)
    assert not prefix.equals(other)


@pytest.fixture(scope="module")
def generated() -> pd.DataFrame:
    return make_aliexpress_frame(200_000, seed=0)


def test_generated_values_and_rates(generated: pd.DataFrame) -> None:
    for j, size in enumerate(CARDINALITIES):
        values = generated[f"categorical_{j + 1}"]
        assert values.min() >= 0 and values.max() < size
    numerical = generated[[c for c in COLUMNS if c.startswith("numerical_")]].to_numpy()
    assert numerical.min() >= 0.0 and numerical.max() <= 1.0 and (numerical == 0).mean() > 0.1
    click, conversion = generated["click"].to_numpy(), generated["conversion"].to_numpy()
    assert 0.018 < click.mean() < 0.026  # ~2.2 %
    assert 0.0004 < conversion.mean() < 0.001  # ~0.066 %
    assert (conversion <= click).all()
    assert generated["search_id"].is_monotonic_increasing


def test_generated_labels_are_learnable(generated: pd.DataFrame) -> None:
    numerical = generated[[c for c in COLUMNS if c.startswith("numerical_")]].to_numpy()
    train, test = slice(0, 150_000), slice(150_000, None)
    click = generated["click"].to_numpy()
    model = LogisticRegression(max_iter=300).fit(numerical[train], click[train])
    assert roc_auc_score(click[test], model.predict_proba(numerical[test])[:, 1]) > 0.65


def test_load_synthetic_aliexpress_splits_80_10_10() -> None:
    splits = load_dataset("synthetic-aliexpress", synthetic_rows=30_000, seed=2)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (24_000, 3_000, 3_000)
    assert splits.spec.dataset == "synthetic-aliexpress" and splits.spec.tasks == ("ctr", "ctcvr")
    assert splits.train.categorical.shape[1] == 16 and splits.train.numerical.shape[1] == 63


@pytest.mark.parametrize("name", ["rows.csv", "rows.csv.gz"])
def test_csv_writer_round_trip(tmp_path: Path, name: str) -> None:
    path = write_aliexpress_csv(tmp_path / name, 3_000, seed=1, chunk_rows=700)
    read = pd.read_csv(path)
    pd.testing.assert_frame_equal(read, make_aliexpress_frame(3_000, seed=1), check_dtype=False)
    assert path.read_bytes() == write_aliexpress_csv(tmp_path / ("again-" + name), 3_000, seed=1).read_bytes()
    assert list(tmp_path.glob("*.tmp")) == []
    if name.endswith(".gz"):
        with gzip.open(path, "rt") as handle:
            assert handle.readline().strip() == ",".join(COLUMNS)


def test_parquet_writer_round_trip(tmp_path: Path) -> None:
    path = write_aliexpress_parquet(tmp_path / "rows.parquet", 3_000, seed=1, chunk_rows=1_000)
    assert pq.ParquetFile(path).num_row_groups == 3
    pd.testing.assert_frame_equal(pd.read_parquet(path), make_aliexpress_frame(3_000, seed=1))


def test_generator_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="n_rows=0 must be a positive integer"):
        iter_aliexpress_chunks(0)
    with pytest.raises(DataError, match="chunk_rows=0 must be a positive integer"):
        iter_aliexpress_chunks(10, chunk_rows=0)
    with pytest.raises(DataError, match="use a .csv or .csv.gz file name"):
        write_aliexpress_csv(tmp_path / "rows.txt", 10)
    with pytest.raises(DataError, match="use a .parquet file name"):
        write_aliexpress_parquet(tmp_path / "rows.csv", 10)
