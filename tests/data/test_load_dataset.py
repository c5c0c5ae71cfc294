"""load_dataset argument handling, data folder resolution, the lean-import rule, and the
encoders the loaders rely on (log1p scalers, JSON round trip, raw dict rows)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mome_edge.data import DATASET_NAMES, default_data_dir, load_dataset, make_mmoe_synthetic
from mome_edge.data.synthetic import DEFAULT_CORRELATION
from mome_edge.data import paths as data_paths
from mome_edge.encoding import CategoricalEncoder, FeatureSpec, NumericalScaler
from mome_edge.errors import DataError


def test_dataset_names() -> None:
    assert DATASET_NAMES == ("census-income", "aliexpress", "synthetic", "synthetic-aliexpress")


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DataError, match="unknown data set 'census'; use one of census-income, aliexpress, synthetic"):
        load_dataset("census")


@pytest.mark.parametrize(
    "kwargs",
    [pytest.param({}, id="neither"), pytest.param({"name": "synthetic", "spec_path": "x.toml"}, id="both")],
)
def test_exactly_one_of_name_or_spec(kwargs: dict) -> None:
    with pytest.raises(DataError, match="give exactly one of a data set name"):
        load_dataset(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_rows": 0}, "max_rows=0 must be a positive integer"),
        ({"synthetic_rows": -5}, "synthetic_rows=-5 must be a positive integer"),
        ({"seed": -1}, "seed=-1 must be a non-negative integer"),
        ({"task_group": "income-age"}, "unknown task group 'income-age'; use one of"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset("census-income", **kwargs)


@pytest.mark.parametrize("value", [1.5, -1.01, float("nan"), float("inf"), True, "0.2"])
def test_synthetic_correlation_out_of_range_is_refused(value: object) -> None:
    with pytest.raises(DataError, match=r"synthetic_correlation=.* is not a task correlation; pass a number in \[-1, 1\]"):
        load_dataset("synthetic", synthetic_rows=500, synthetic_correlation=value)


@pytest.mark.parametrize("name", ["census-income", "synthetic-aliexpress"])
def test_synthetic_correlation_only_for_the_synthetic_set(name: str) -> None:
    # refused before any file is looked for: no data folder is needed to get this error
    with pytest.raises(DataError, match=f"applies only to the 'synthetic' data set, not '{name}'"):
        load_dataset(name, synthetic_correlation=0.2)


def test_synthetic_correlation_reaches_the_generator() -> None:
    low = load_dataset("synthetic", synthetic_rows=3_000, synthetic_correlation=0.2)
    expected = make_mmoe_synthetic(3_000, correlation=0.2)
    np.testing.assert_array_equal(low.train.labels, expected.train.labels)
    assert low.spec.label_sources["task1"]["correlation"] == 0.2  # recorded in the feature spec (and so in artifacts)
    default = load_dataset("synthetic", synthetic_rows=3_000)
    assert not np.array_equal(low.train.labels, default.train.labels)  # task 2's labels depend on p
    np.testing.assert_array_equal(low.train.labels[:, 0], default.train.labels[:, 0])  # task 1's do not (w1 = c u1)


def test_synthetic_correlation_default_is_unchanged() -> None:
    # named contract: without the option the data is exactly what it always was (p = 0.5)
    default = load_dataset("synthetic", synthetic_rows=3_000)
    explicit = load_dataset("synthetic", synthetic_rows=3_000, synthetic_correlation=0.5)
    assert DEFAULT_CORRELATION == 0.5
    np.testing.assert_array_equal(default.train.labels, explicit.train.labels)
    assert default.spec.to_json() == explicit.spec.to_json()


def test_max_rows_caps_synthetic_rows() -> None:
    splits = load_dataset("synthetic", synthetic_rows=5_000, max_rows=1_000)
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 1_000


def test_no_data_dir_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MOME_DATA_DIR", raising=False)
    monkeypatch.setattr(data_paths, "WORKPLACE_DATA_DIR", tmp_path / "absent")
    assert default_data_dir() is None
    with pytest.raises(DataError, match="set --data-dir or MOME_DATA_DIR to the folder holding census-income/"):
        load_dataset("census-income")
    with pytest.raises(DataError, match="set --data-dir or MOME_DATA_DIR to the folder holding the AliExpress"):
        load_dataset("aliexpress")


def test_default_data_dir_prefers_the_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOME_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("MOME_DATA_DIR")
    monkeypatch.setattr(data_paths, "WORKPLACE_DATA_DIR", tmp_path)
    assert default_data_dir() == tmp_path


def test_nonexistent_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist; set --data-dir or MOME_DATA_DIR"):
        load_dataset("census-income", data_dir=tmp_path / "nope")


def test_folder_without_census_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no census-income file .* set --data-dir or MOME_DATA_DIR"):
        load_dataset("census-income", data_dir=tmp_path)


def test_data_package_does_not_import_torch() -> None:
    code = "import sys, mome_edge.data; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --- encoders as the loaders use them ---


def test_log1p_scaler_encodes_like_the_loader_and_round_trips() -> None:
    scaler = NumericalScaler(name="gains", mean=1.5, std=2.0, log1p=True)
    raw = ["0", 99999, " 12.5 ", "?", None, -3.0]
    expected = np.array([0.0, np.log1p(99999), np.log1p(12.5), 1.5, 1.5, -np.log1p(3.0)])
    np.testing.assert_allclose(scaler.encode(raw), ((expected - 1.5) / 2.0).astype(np.float32), rtol=1e-6)
    assert scaler.to_json()["log1p"] is True
    assert "log1p" not in NumericalScaler(name="age", mean=0.0, std=1.0).to_json()  # old JSON unchanged


def test_scaler_error_policy_still_names_the_row() -> None:
    scaler = NumericalScaler(name="age", mean=0.0, std=1.0, missing="error")
    with pytest.raises(DataError, match="'age' has a missing or non-finite value at row 1"):
        scaler.scale(np.array([1.0, np.nan]))


def test_feature_spec_json_round_trip_and_raw_rows() -> None:
    spec = FeatureSpec(
        dataset="toy",
        categorical=(CategoricalEncoder(name="color", vocabulary=("blue", "red")),),
        numerical=(
            NumericalScaler(name="age", mean=40.0, std=10.0),
            NumericalScaler(name="gains", mean=1.0, std=2.0, log1p=True),
        ),
        tasks=("click",),
        label_sources={"click": {"column": "clicked", "positive": ["1"]}},
    )
    data = json.loads(json.dumps(spec.to_json()))
    assert FeatureSpec.from_json(data) == spec
    legacy = {**data, "numerical": [{k: v for k, v in n.items() if k != "log1p"} for n in data["numerical"]]}
    assert FeatureSpec.from_json(legacy).numerical[1].log1p is False  # specs written before log1p
    categorical, numerical = spec.encode_rows(
        [{"color": " red ", "age": "50", "gains": 0}, {"color": "green", "age": "?"}, {}]
    )
    np.testing.assert_array_equal(categorical[:, 0], [2, 0, 0])
    np.testing.assert_allclose(numerical[:, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(numerical[:, 1], [-0.5, 0.0, 0.0])
