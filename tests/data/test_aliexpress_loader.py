"""aliexpress loader: the real sample rows, file discovery, and files written by the generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mome_edge.data import DataSplits, find_aliexpress_files, load_dataset, write_aliexpress_csv
from mome_edge.data.aliexpress import CATEGORICAL, NUMERICAL
from mome_edge.errors import DataError


@pytest.fixture(scope="module")
def sample(shared_data_dir: Path) -> DataSplits:
    return load_dataset("aliexpress", data_dir=shared_data_dir)


@pytest.mark.real_data
def test_sample_sizes_shapes_and_tasks(sample: DataSplits) -> None:
    assert (len(sample.train), len(sample.validation), len(sample.test)) == (90, 10, 20)
    assert sample.spec.tasks == ("ctr", "ctcvr")
    assert sample.spec.field_names == CATEGORICAL and len(CATEGORICAL) == 16
    assert sample.spec.numerical_names == NUMERICAL and len(NUMERICAL) == 63
    assert sample.train.categorical.shape == (90, 16) and sample.test.numerical.shape == (20, 63)
    assert "search_id" not in sample.spec.field_names + sample.spec.numerical_names


@pytest.mark.real_data
def test_sample_labels_match_the_file(sample: DataSplits, shared_data_dir: Path) -> None:
    _, test_path = find_aliexpress_files(shared_data_dir)
    raw = pd.read_csv(test_path)
    np.testing.assert_array_equal(sample.test.labels[:, 0], raw["click"])  # test rows keep file order
    np.testing.assert_array_equal(sample.test.labels[:, 1], raw["click"] * raw["conversion"])
    for part in (sample.train, sample.validation, sample.test):
        assert (part.labels[:, 1] <= part.labels[:, 0]).all()  # a buy needs a click


@pytest.mark.real_data
def test_sample_max_rows_caps_each_file(shared_data_dir: Path) -> None:
    splits = load_dataset("aliexpress", data_dir=shared_data_dir, max_rows=80)
    assert (len(splits.train) + len(splits.validation), len(splits.test)) == (80, 20)


@pytest.mark.real_data
def test_sample_found_directly_in_its_folder(shared_data_dir: Path) -> None:
    train, test = find_aliexpress_files(shared_data_dir / "aliexpress-sample")
    assert (train.name, test.name) == ("aliexpress_train_sample.csv", "aliexpress_test_sample.csv")


def test_generated_files_load_like_the_real_layout(tmp_path: Path) -> None:
    folder = tmp_path / "aliexpress"
    folder.mkdir()
    write_aliexpress_csv(folder / "train.csv.gz", 20_000, seed=1)
    write_aliexpress_csv(folder / "test.csv", 2_000, seed=2)
    splits = load_dataset("aliexpress", data_dir=tmp_path, seed=0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (18_000, 2_000, 2_000)
    assert splits.spec.dataset == "aliexpress"


def test_missing_columns_are_listed(tmp_path: Path) -> None:
    write_aliexpress_csv(tmp_path / "train.csv", 50)
    frame = pd.read_csv(tmp_path / "train.csv").drop(columns=["numerical_7", "conversion"])
    frame.to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DataError, match=r"lacks the columns \['numerical_7', 'conversion'\]"):
        load_dataset("aliexpress", data_dir=tmp_path)


def test_two_train_files_are_ambiguous(tmp_path: Path) -> None:
    for name in ("a_train.csv", "b_train.csv", "test.csv"):
        write_aliexpress_csv(tmp_path / name, 10)
    with pytest.raises(DataError, match="exactly one .*train.*b_train.csv"):
        load_dataset("aliexpress", data_dir=tmp_path)


def test_no_files_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no AliExpress .*set --data-dir or MOME_DATA_DIR"):
        load_dataset("aliexpress", data_dir=tmp_path)


def test_non_binary_label_is_refused(tmp_path: Path) -> None:
    write_aliexpress_csv(tmp_path / "train.csv", 50)
    frame = pd.read_csv(tmp_path / "train.csv")
    frame.loc[3, "click"] = 2
    frame.to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DataError, match="'click' .* must hold only 0 and 1"):
        load_dataset("aliexpress", data_dir=tmp_path)
