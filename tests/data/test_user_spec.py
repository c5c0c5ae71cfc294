"""User TOML data specs: labels, whitespace, missing values, CSV/Parquet, and every error path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mome_edge.data import DataSplits, load_dataset, read_user_spec, split_indices
from mome_edge.data.splits import SplitFractions
from mome_edge.errors import DataError

N = 60
SPEC = """
[data]
path = "{path}"
[features]
categorical = ["workclass", "education"]
numerical = ["age", "hours-per-week"]
[tasks.income]
column = "Salary"
positive = [">50K"]
[tasks.never_married]
column = "marital-status"
positive = ["Never-married"]
[tasks.busy]
column = "score"
threshold = 0.5
"""


def rows() -> pd.DataFrame:
    """N rows with padded values and every kind of missing value at known rows."""
    i = np.arange(N)
    workclass = np.array([" Private ", "Private", "Self-emp", "State-gov", "?", ""], dtype=object)[i % 6]
    age = (20 + i).astype(object)
    age[7], age[8] = "?", ""  # missing numbers
    return pd.DataFrame(
        {
            "workclass": workclass,
            "education": np.array(["HS", "BA", "MA", " PhD"], dtype=object)[i % 4],
            "age": age,
            "hours-per-week": 30.0 + (i % 5) * 5,
            "Salary": np.array([" >50K", "<=50K", "<=50K"], dtype=object)[i % 3],
            "marital-status": np.array(["Never-married ", "Married"], dtype=object)[i % 2],
            "score": (i % 10) / 10.0,
            "unused": "x",
        }
    )


def write(tmp_path: Path, frame: pd.DataFrame, *, data_name: str = "rows.csv", spec: str = SPEC) -> Path:
    data = tmp_path / data_name
    if data_name.endswith(".parquet"):
        frame.to_parquet(data, index=False)
    else:
        frame.to_csv(data, index=False)
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(spec.format(path=data_name))
    return spec_path


def in_file_order(splits: DataSplits, field: str, *, seed: int = 0) -> np.ndarray:
    index = split_indices(N, fractions=SplitFractions(), seed=seed)
    order = np.concatenate([index.train, index.validation, index.test])
    stacked = np.concatenate([getattr(splits.get(s), field) for s in ("train", "validation", "test")])
    out = np.empty_like(stacked)
    out[order] = stacked
    return out


@pytest.mark.parametrize("data_name", ["rows.csv", "rows.csv.gz", "rows.parquet"])
def test_labels_stripping_and_missing_values(tmp_path: Path, data_name: str) -> None:
    frame = rows()
    if data_name.endswith(".parquet"):
        frame["age"] = pd.to_numeric(frame["age"], errors="coerce")  # parquet columns are typed
    splits = load_dataset(spec_path=write(tmp_path, frame, data_name=data_name))
    spec = splits.spec
    assert spec.dataset == "spec" and spec.tasks == ("income", "never_married", "busy")
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (36, 12, 12)
    labels = in_file_order(splits, "labels")
    i = np.arange(N)
    np.testing.assert_array_equal(labels[:, 0], i % 3 == 0)  # " >50K" stripped
    np.testing.assert_array_equal(labels[:, 1], i % 2 == 0)  # "Never-married " stripped
    np.testing.assert_array_equal(labels[:, 2], (i % 10) / 10.0 >= 0.5)
    workclass = spec.categorical[0]
    assert workclass.vocabulary == ("Private", "Self-emp", "State-gov")  # " Private " == "Private"
    ids = in_file_order(splits, "categorical")[:, 0]
    assert (ids[i % 6 >= 4] == 0).all()  # "?" and "" -> OOV
    assert ids[0] == ids[1] == 1
    numerical = in_file_order(splits, "numerical")
    assert numerical[7, 0] == 0.0 and numerical[8, 0] == 0.0  # missing -> training mean -> 0
    assert spec.label_sources["busy"] == {"column": "score", "threshold": 0.5, "rule": "value >= threshold"}
    assert spec.label_sources["income"] == {"column": "Salary", "positive": [">50K"]}


def test_split_table_sets_fractions_and_seed(tmp_path: Path) -> None:
    spec = SPEC.replace("[data]", "[split]\nvalidation = 0.1\ntest = 0.25\nseed = 9\n[data]")
    path = write(tmp_path, rows(), spec=spec)
    a = load_dataset(spec_path=path, seed=0)
    b = load_dataset(spec_path=path, seed=1)  # the spec's seed wins
    assert (len(a.train), len(a.validation), len(a.test)) == (39, 6, 15)
    np.testing.assert_array_equal(a.train.numerical, b.train.numerical)
    assert read_user_spec(path).seed == 9


def test_max_rows(tmp_path: Path) -> None:
    splits = load_dataset(spec_path=write(tmp_path, rows()), max_rows=30)
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 30


def test_name_from_data_table(tmp_path: Path) -> None:
    spec = SPEC.replace('[data]\npath = "{path}"', '[data]\npath = "{path}"\nname = "adult"')
    assert load_dataset(spec_path=write(tmp_path, rows(), spec=spec)).spec.dataset == "adult"


# (id, text in SPEC, its replacement, expected message); "" as the text appends the replacement
ERRORS = [
    ("missing-file", 'path = "{path}"', 'path = "absent.csv"', r"does not exist; fix \[data\] path"),
    ("extension", 'path = "{path}"', 'path = "rows.xlsx"', "unsupported extension"),
    ("columns", '"hours-per-week"]', '"hours", "weight"]', r"lacks the columns \['hours', 'weight'\]"),
    ("leakage", '"education"]', '"education", "Salary"]', r"label columns \['Salary'\] .* leaks"),
    ("label-feature", 'column = "score"', 'column = "workclass"', r"label columns \['workclass'\]"),
    ("unknown-top", "", "\n[extra]\nx = 1\n", r"unknown keys \['extra'\] in the spec"),
    ("unknown-data", "[features]", 'encoding = "latin-1"\n[features]', r"unknown keys \['encoding'\] in \[data\]"),
    ("unknown-format", "[features]", 'format = "xlsx"\n[features]', r"\[data\] format 'xlsx' is unknown"),
    ("long-separator", "[features]", 'separator = ";;"\n[features]', r"separator ';;' must be one character"),
    ("unknown-task", "", "weight = 2\n", r"unknown keys \['weight'\] in \[tasks.busy\]"),
    ("typo-table", "[features]", "[featurez]", r"unknown keys \['featurez'\]"),
    ("both", "", "positive = [1]\n", "exactly one of 'positive' .* or 'threshold'"),
    ("neither", "threshold = 0.5", "", "exactly one of 'positive' .* or 'threshold'"),
    ("no-positive", 'positive = [">50K"]', 'positive = ["rich"]', "task 'income' has no positive row"),
    ("no-negative", "threshold = 0.5", "threshold = -1", "task 'busy' has no negative row"),
    ("threshold-type", "threshold = 0.5", 'threshold = "high"', "threshold must be a number"),
    ("features-type", 'categorical = ["workclass", "education"]', "categorical = 3", "must be a list of column names"),
    ("split", "[data]", "[split]\ntest = 0.9\n[data]", "leave no training rows"),
    ("toml", "", "[tasks.broken\n", "not valid TOML"),
]


@pytest.mark.parametrize("old, new, message", [pytest.param(*e[1:], id=e[0]) for e in ERRORS])
def test_errors_name_the_problem(tmp_path: Path, old: str, new: str, message: str) -> None:
    spec = SPEC + new if not old else SPEC.replace(old, new)
    with pytest.raises(DataError, match=message):
        load_dataset(spec_path=write(tmp_path, rows(), spec=spec.replace("{path}", "rows.csv")))


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data spec .* does not exist"):
        load_dataset(spec_path=tmp_path / "nope.toml")


def test_no_task(tmp_path: Path) -> None:
    spec = SPEC.split("[tasks.income]")[0] + "[tasks]\n"
    with pytest.raises(DataError, match="defines no task"):
        load_dataset(spec_path=write(tmp_path, rows(), spec=spec))


def test_missing_label_value(tmp_path: Path) -> None:
    frame = rows()
    frame.loc[4, "Salary"] = "?"
    with pytest.raises(DataError, match="task 'income': 1 rows have a missing .* label column 'Salary' .* fill or drop"):
        load_dataset(spec_path=write(tmp_path, frame))


def test_non_numeric_threshold_label(tmp_path: Path) -> None:
    frame = rows()
    frame["score"] = frame["score"].astype(object)
    frame.loc[2, "score"] = "high"
    with pytest.raises(DataError, match="task 'busy': 1 rows have a missing or non-numeric value"):
        load_dataset(spec_path=write(tmp_path, frame))


def test_spec_is_parsed_without_reading_data(tmp_path: Path) -> None:
    spec = read_user_spec(write(tmp_path, rows()))
    assert spec.categorical == ("workclass", "education")
    assert spec.columns == ("workclass", "education", "age", "hours-per-week", "Salary", "marital-status", "score")
    assert spec.path == tmp_path / "rows.csv"


@pytest.mark.parametrize("data_name", ["rows.csv", "rows.parquet"])
def test_numeric_positive_values_match_their_text(tmp_path: Path, data_name: str) -> None:
    frame = rows()
    frame["flag"] = np.arange(N) % 4 == 0
    frame["flag"] = frame["flag"].astype(int)
    frame["age"] = pd.to_numeric(frame["age"], errors="coerce")
    spec = SPEC.replace('column = "Salary"\npositive = [">50K"]', 'column = "flag"\npositive = [1.0]')
    splits = load_dataset(spec_path=write(tmp_path, frame, data_name=data_name, spec=spec))
    np.testing.assert_array_equal(in_file_order(splits, "labels")[:, 0], np.arange(N) % 4 == 0)
    assert splits.spec.label_sources["income"]["positive"] == ["1"]


def test_missing_marker_as_positive_value(tmp_path: Path) -> None:
    spec = SPEC.replace('positive = [">50K"]', 'positive = ["?"]')
    with pytest.raises(DataError, match="positive lists a missing-value marker"):
        load_dataset(spec_path=write(tmp_path, rows(), spec=spec))


@pytest.mark.parametrize("data_name, separator", [("rows.data", ","), ("rows.tsv", "\t"), ("rows.txt", ";")])
def test_format_and_separator_read_files_of_any_name(tmp_path: Path, data_name: str, separator: str) -> None:
    """`format = "csv"` (+ separator) reads .data/.tsv/.txt files exactly as the same rows in a .csv."""
    reference = load_dataset(spec_path=write(tmp_path, rows()))
    other = tmp_path / "other"
    other.mkdir()
    rows().to_csv(other / data_name, index=False, sep=separator)
    table = f'[data]\npath = "{data_name}"\nformat = "csv"\n' + (f'separator = "{separator}"\n'.replace("\t", "\\t") if separator != "," else "")
    spec_path = other / "spec.toml"
    spec_path.write_text(SPEC.replace('[data]\npath = "{path}"\n', table))
    splits = load_dataset(spec_path=spec_path)
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(splits.get(split).categorical, reference.get(split).categorical)
        np.testing.assert_array_equal(splits.get(split).numerical, reference.get(split).numerical)
        np.testing.assert_array_equal(splits.get(split).labels, reference.get(split).labels)


def test_a_file_of_another_name_without_format_says_how_to_read_it(tmp_path: Path) -> None:
    rows().to_csv(tmp_path / "rows.data", index=False)
    (tmp_path / "spec.toml").write_text(SPEC.format(path="rows.data"))
    with pytest.raises(DataError, match=r'unsupported extension; .* format = "csv"'):
        read_user_spec(tmp_path / "spec.toml")


def test_the_streamed_reader_honours_the_separator(tmp_path: Path) -> None:
    """`prepare --spec` (streamed, pyarrow) reads a tab-separated .tsv like the in-memory loader."""
    from mome_edge.data.stream_source import iter_raw_chunks, stream_source

    frame = rows()
    frame.to_csv(tmp_path / "rows.tsv", index=False, sep="\t")
    (tmp_path / "spec.toml").write_text(SPEC.replace('path = "{path}"', 'path = "rows.tsv"\nformat = "csv"\nseparator = "\\t"'))
    source = stream_source(spec_path=tmp_path / "spec.toml")
    chunks = list(iter_raw_chunks(source, source.files[0], seed=0))
    labels = np.concatenate([c.labels for c in chunks])
    numerical = np.concatenate([c.numerical for c in chunks])
    i = np.arange(N)
    np.testing.assert_array_equal(labels[:, 0], i % 3 == 0)  # " >50K" read from its own column
    np.testing.assert_array_equal(numerical[:, 1], 30.0 + (i % 5) * 5)  # hours-per-week, not a merged field
