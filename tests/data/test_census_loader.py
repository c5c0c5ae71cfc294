"""census-income loader: sizes, rates, no label leakage, train-only vocabularies, determinism."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from mome_edge.data import DataSplits, find_census_file, find_census_files, load_dataset, split_indices
from mome_edge.data import paths as data_paths
from mome_edge.data.census import COLUMNS, LOG1P, read_census
from mome_edge.encoding import FeatureSpec, normalise_token

pytestmark = pytest.mark.real_data

N_ROWS = 99_762
INCOME_RATE, MARITAL_RATE = 0.062, 0.432  # the README's rates over the whole file


def all_labels(splits: DataSplits) -> np.ndarray:
    return np.concatenate([splits.train.labels, splits.validation.labels, splits.test.labels])


def features(splits: DataSplits) -> set[str]:
    return set(splits.spec.field_names) | set(splits.spec.numerical_names)


@pytest.fixture(scope="module")
def census(shared_data_dir: Path) -> DataSplits:
    return load_dataset("census-income", data_dir=shared_data_dir)


@pytest.fixture(scope="module")
def census_education(shared_data_dir: Path) -> DataSplits:
    return load_dataset("census-income", data_dir=shared_data_dir, task_group="education-marital")


def test_row_count_and_60_20_20_split(census: DataSplits) -> None:
    sizes = [len(census.train), len(census.validation), len(census.test)]
    assert sum(sizes) == N_ROWS
    for size, fraction in zip(sizes, (0.6, 0.2, 0.2)):
        assert abs(size - fraction * N_ROWS) <= 1


def test_income_marital_tasks_and_positive_rates(census: DataSplits) -> None:
    assert census.spec.tasks == ("income", "marital")
    rates = all_labels(census).mean(axis=0)
    assert rates[0] == pytest.approx(INCOME_RATE, abs=0.001)
    assert rates[1] == pytest.approx(MARITAL_RATE, abs=0.001)
    assert census.spec.label_sources["income"]["positive"] == ["50000+."]
    assert census.spec.label_sources["marital"] == {
        "column": "marital_stat", "positive": ["Never married"], "meaning": "never married"
    }


def test_income_marital_features_exclude_labels_and_weight(census: DataSplits) -> None:
    names = features(census)
    assert not names & {"income", "marital_stat", "instance_weight"}
    assert "education" in names  # a feature when it is not a task
    assert set(census.spec.numerical_names) == {
        "age", "wage_per_hour", "capital_gains", "capital_losses", "dividends_from_stocks",
        "num_persons_worked_for_employer", "weeks_worked_in_year",
    }
    # every other column is categorical, codes such as the industry recode and year included
    assert {"detailed_industry_recode", "own_business_or_self_employed", "veterans_benefits", "year"} <= set(
        census.spec.field_names
    )
    assert len(names) == len(COLUMNS) - 3


def test_education_marital_group(census_education: DataSplits) -> None:
    spec = census_education.spec
    assert spec.tasks == ("education", "marital")
    assert not features(census_education) & {"education", "marital_stat", "income", "instance_weight"}
    rates = all_labels(census_education).mean(axis=0)
    # "at least some college": some college, associates, bachelors, masters, prof school, doctorate
    expected = (13954 + 2690 + 2079 + 9885 + 3306 + 876 + 620) / N_ROWS
    assert rates[0] == pytest.approx(expected, abs=1e-6)
    assert rates[1] == pytest.approx(MARITAL_RATE, abs=0.001)
    assert len(spec.label_sources["education"]["positive"]) == 7


def test_numericals_standardised_on_train_with_log1p_recorded(census: DataSplits) -> None:
    train = census.train.numerical
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-3)
    assert {s.name for s in census.spec.numerical if s.log1p} == set(LOG1P)


def test_vocabularies_come_from_train_rows_only(shared_data_dir: Path) -> None:
    n, seed = 600, 5  # few rows: many rare values fall only outside train
    splits = load_dataset("census-income", data_dir=shared_data_dir, max_rows=n, seed=seed)
    raw = read_census(find_census_files(shared_data_dir), max_rows=n)
    index = split_indices(n, seed=seed)
    found_unseen = 0
    for j, encoder in enumerate(splits.spec.categorical):
        tokens = [normalise_token(v) for v in raw[encoder.name]]
        train_tokens = {tokens[i] for i in index.train} - {None}
        assert encoder.vocabulary == tuple(sorted(train_tokens))
        for position, row in enumerate(index.test):
            if tokens[row] is not None and tokens[row] not in train_tokens:
                assert splits.test.categorical[position, j] == 0  # seen only outside train -> OOV
                found_unseen += 1
    assert found_unseen > 0, "the test needs at least one category that appears only outside train"


def test_loader_matches_runtime_encoding_of_raw_rows(shared_data_dir: Path) -> None:
    """The vectorised loader and FeatureSpec.encode_rows (the device path) agree exactly."""
    n, seed = 3000, 1
    splits = load_dataset("census-income", data_dir=shared_data_dir, max_rows=n, seed=seed)
    raw = read_census(find_census_files(shared_data_dir), max_rows=n)
    rows = raw.iloc[split_indices(n, seed=seed).validation].to_dict(orient="records")
    categorical, numerical = splits.spec.encode_rows(rows)
    np.testing.assert_array_equal(categorical, splits.validation.categorical)
    np.testing.assert_allclose(numerical, splits.validation.numerical, rtol=1e-6, atol=1e-6)


def test_unseen_value_maps_to_oov(census: DataSplits) -> None:
    row = {"class_of_worker": "Astronaut", "age": "40", "sex": " Female "}
    categorical, numerical = census.spec.encode_rows([row])
    names = census.spec.field_names
    assert categorical[0, names.index("class_of_worker")] == 0
    assert categorical[0, names.index("sex")] > 0  # stripped, then found
    assert categorical[0, names.index("race")] == 0  # missing key -> OOV
    assert numerical[0, census.spec.numerical_names.index("wage_per_hour")] == 0.0  # missing -> mean


def test_spec_json_round_trip(census: DataSplits) -> None:
    data = json.loads(json.dumps(census.spec.to_json()))
    assert FeatureSpec.from_json(data) == census.spec


def test_same_seed_same_arrays_other_seed_other_split(shared_data_dir: Path) -> None:
    a = load_dataset("census-income", data_dir=shared_data_dir, max_rows=5000, seed=3)
    b = load_dataset("census-income", data_dir=shared_data_dir, max_rows=5000, seed=3)
    c = load_dataset("census-income", data_dir=shared_data_dir, max_rows=5000, seed=4)
    for split in ("train", "validation", "test"):
        for field in ("categorical", "numerical", "labels"):
            np.testing.assert_array_equal(getattr(a.get(split), field), getattr(b.get(split), field))
    assert a.spec == b.spec
    assert not np.array_equal(a.train.numerical, c.train.numerical)


def test_max_rows_reads_the_first_rows(shared_data_dir: Path) -> None:
    splits = load_dataset("census-income", data_dir=shared_data_dir, max_rows=1000)
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 1000


def test_data_and_test_files_are_concatenated(shared_data_dir: Path, tmp_path: Path) -> None:
    with gzip.open(find_census_file(shared_data_dir), "rt") as handle:
        lines = [next(handle) for _ in range(300)]
    folder = tmp_path / "census-income"
    folder.mkdir()
    with gzip.open(folder / "census-income.data.gz", "wt") as handle:
        handle.writelines(lines[:200])
    (folder / "census-income.test").write_text("".join(lines[200:]))
    assert [p.name for p in find_census_files(tmp_path)] == ["census-income.data.gz", "census-income.test"]
    splits = load_dataset("census-income", data_dir=tmp_path)
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 300


def test_env_var_is_the_default_data_dir(monkeypatch: pytest.MonkeyPatch, shared_data_dir: Path) -> None:
    monkeypatch.setenv("MOME_DATA_DIR", str(shared_data_dir))
    assert data_paths.default_data_dir() == shared_data_dir
    splits = load_dataset("census-income", max_rows=100)
    assert len(splits.train) == 60
