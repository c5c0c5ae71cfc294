"""Predictions from an artifact: raw CSV rows through the artifact's encoders, data set splits."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from compiled_factory import make_compiled, make_spec
from mome_edge.artifact.reader import read_artifact
from mome_edge.artifact.writer import write_artifact
from mome_edge.errors import DataError
from mome_edge.runtime.predict import evaluate_artifact, predict_artifact, read_csv_columns, reference_predict

CSV_PROB_TOLERANCE = 1e-6  # numericals go through text with repr() precision; float32 rounding only


def _raw_rows(spec, data, rows: int) -> list[dict[str, str]]:
    """Undo the encoders: ids -> vocabulary words, scaled numericals -> raw numbers (as text)."""
    out = []
    for i in range(rows):
        row = {}
        for j, enc in enumerate(spec.categorical):
            row[enc.name] = enc.vocabulary[data.categorical[i, j] - 1] if data.categorical[i, j] > 0 else "never-seen"
        for j, scaler in enumerate(spec.numerical):
            row[scaler.name] = repr(float(data.numerical[i, j]) * scaler.std + scaler.mean)
        out.append(row)
    return out


def _write_csv(path, rows: list[dict[str, str]], columns: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_raw_rows_predict_like_the_encoded_split(tiny_artifact, tiny_splits, tmp_path) -> None:
    path = tiny_artifact("mome", "fp32")
    model = read_artifact(path).model
    data = tiny_splits.test
    rows = _raw_rows(model.spec, data, 40)
    columns = ["extra", *reversed([*model.spec.field_names, *model.spec.numerical_names])]  # any order, extras ignored
    for row in rows:
        row["extra"] = "ignored"
    _write_csv(tmp_path / "rows.csv", rows, columns)
    result = predict_artifact(path, input_csv=tmp_path / "rows.csv")
    expected = reference_predict(model, data.categorical[:40], data.numerical[:40])
    assert result.tasks == model.tasks and result.probs.shape == (40, len(model.tasks))
    np.testing.assert_allclose(result.probs, expected, atol=CSV_PROB_TOLERANCE)


def test_unknown_categories_map_to_oov_and_missing_numericals_to_the_mean(tiny_artifact, tiny_splits, tmp_path) -> None:
    path = tiny_artifact("mome", "fp32")
    model = read_artifact(path).model
    data = tiny_splits.test
    rows = _raw_rows(model.spec, data, 2)
    first_field, first_numerical = model.spec.field_names[0], model.spec.numerical_names[0]
    rows[0][first_field] = "a category training never saw"
    rows[1][first_numerical] = ""
    _write_csv(tmp_path / "rows.csv", rows, [*model.spec.field_names, *model.spec.numerical_names])
    cat, num = data.categorical[:2].copy(), data.numerical[:2].copy()
    cat[0, 0] = 0  # OOV
    num[1, 0] = 0.0  # the training mean, after scaling
    np.testing.assert_allclose(predict_artifact(path, input_csv=tmp_path / "rows.csv").probs,
                               reference_predict(model, cat, num), atol=CSV_PROB_TOLERANCE)


def test_missing_values_follow_an_error_policy(tmp_path) -> None:
    path = tmp_path / "m.mome"
    write_artifact(path, make_compiled("mmoe", spec=make_spec(numerical=2, missing="error"), prune=False))
    (tmp_path / "rows.csv").write_text("cat0,cat1,cat2,cat3,num0,num1\nv1,v2,v0,v3,1.5,\n", encoding="utf-8")
    with pytest.raises(DataError, match="numerical field 'num1' has a missing or non-finite value at row 0"):
        predict_artifact(path, input_csv=tmp_path / "rows.csv")


def test_missing_columns_are_named(tiny_artifact, tmp_path) -> None:
    (tmp_path / "rows.csv").write_text("bucket1\n3\n", encoding="utf-8")
    with pytest.raises(DataError, match="input rows lack the feature columns"):
        predict_artifact(tiny_artifact("mome", "fp32"), input_csv=tmp_path / "rows.csv")


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "is empty"), ("a,a\n1,2\n", "repeats a column name"), ("a,b\n1,2,3\n", "line 2 has 3 fields, the header names 2")],
    ids=["empty", "repeated-column", "long-row"],
)
def test_malformed_csv_files(text: str, message: str, tmp_path) -> None:
    (tmp_path / "rows.csv").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_csv_columns(tmp_path / "rows.csv")


def test_short_rows_and_blank_lines(tmp_path) -> None:
    (tmp_path / "rows.csv").write_text("a,b\n1\n\n3,4\n", encoding="utf-8")
    assert read_csv_columns(tmp_path / "rows.csv") == {"a": ["1", "3"], "b": ["", "4"]}


def test_a_dataset_split_uses_the_recorded_split_settings(tiny_artifact, tiny_splits) -> None:
    path = tiny_artifact("mome", "int8")
    result = predict_artifact(path, dataset="synthetic", split="test")
    np.testing.assert_array_equal(result.labels, tiny_splits.test.labels)
    model = read_artifact(path).model
    np.testing.assert_array_equal(result.probs, reference_predict(model, tiny_splits.test.categorical, tiny_splits.test.numerical))
    report = evaluate_artifact(path, dataset="synthetic", split="test")
    assert report.rows == len(tiny_splits.test) and set(report.metrics) == set(model.tasks)


def test_a_dataset_that_encodes_differently_is_refused(tmp_path) -> None:
    path = tmp_path / "m.mome"
    write_artifact(path, make_compiled("mmoe"))
    with pytest.raises(DataError, match="does not encode like this artifact's feature spec"):
        predict_artifact(path, dataset="synthetic")


def test_exactly_one_source_of_rows(tiny_artifact, tmp_path) -> None:
    with pytest.raises(DataError, match="exactly one of --dataset NAME or --input ROWS.csv"):
        predict_artifact(tiny_artifact("mome", "fp32"))
